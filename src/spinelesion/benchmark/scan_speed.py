"""Scan mode's cost per study: the lattice scan against the scan it replaced, in the same run.

For each study folder: the MONAI reference (every window, MONAI's blend:
:mod:`spinelesion.benchmark.scan_reference`) once, the lattice scan (``repeats`` times, the
median), their ratio, how many windows each classified, and whether they propose the same
candidates (within 3 mm: the blend of interpolated windows may move a peak by a voxel); for a
model with a spine locator also the scan prediction runs (locator, then the windows near the spine).
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def compare_scan(
    predictor: Any, folders: list[Path], repeats: int = 2, reference: bool = True
) -> dict[str, Any]:
    from spinelesion.benchmark.scan_reference import monai_scan_maps
    from spinelesion.inference.scan import scan_study
    from spinelesion.io.study import load_study_folder

    rows = []
    for folder in folders:
        array, affine, available, _ = predictor.prepare(load_study_folder(folder))
        args = (predictor.net, array, affine, available, predictor.spec, predictor.cfg.scan, predictor.device)
        scan_study(*args)  # warm-up: imports and first-call allocations are not the scan's cost
        times = []
        for _ in range(max(repeats, 1)):
            t0 = time.perf_counter()
            result = scan_study(*args)
            times.append(time.perf_counter() - t0)
        row: dict[str, Any] = {
            "study": folder.name,
            "shape": list(array.shape[1:]),
            "lattice_s": round(statistics.median(times), 2),
            "windows": result.windows,
            "steps_s": {k: round(v, 2) for k, v in result.timings.items()},
            "candidates": len(result.candidates),
        }
        if getattr(predictor, "locator", None) is not None and predictor.cfg.scan.spine_locator:
            # what prediction runs: the locator, then the scan within its region
            t0 = time.perf_counter()
            located, _, _ = predictor.scan(array, affine, available)
            row["spine_s"] = round(time.perf_counter() - t0, 2)
            row["spine_windows"] = located.windows
            row["spine_candidates"] = len(located.candidates)
        if reference:
            t0 = time.perf_counter()
            maps = monai_scan_maps(*args)
            row["reference_s"] = round(time.perf_counter() - t0, 2)
            row["ratio"] = round(row["reference_s"] / row["lattice_s"], 1)
            row["same_candidates"] = _same_candidates(result, maps, predictor, array, affine)
        log.info("scan %s: %s", folder.name, row)
        rows.append(row)
    summary: dict[str, Any] = {"studies": rows}
    if rows:
        summary["median_lattice_s"] = round(statistics.median(r["lattice_s"] for r in rows), 2)
        if reference:
            summary["median_ratio"] = round(statistics.median(r["ratio"] for r in rows), 1)
    return summary


def _same_candidates(
    result: Any, maps: dict[str, np.ndarray], predictor: Any, array: np.ndarray, affine: np.ndarray
) -> bool:
    """The reference maps' candidates (same region, same peak rule) within 3 mm of the lattice's."""
    from spinelesion.inference.scan import candidate_region, find_peaks

    cfg = predictor.cfg.scan
    region = candidate_region(
        array, affine, result.affine, maps["compartment"].shape[1:], predictor.spec, cfg
    )
    score = np.maximum(1.0 - maps["compartment"][0], 1.0 - maps["fracture"][0])
    expected = find_peaks(np.where(region, score, 0.0), result.affine, predictor.spec.spacing, cfg)
    if len(expected) != len(result.candidates):
        return False
    return all(
        np.linalg.norm(c - e) <= 3.0 for (c, _), (e, _) in zip(result.candidates, expected, strict=True)
    )
