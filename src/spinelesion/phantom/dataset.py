"""Generate a whole dataset: studies in parallel, then the manifests and a summary."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from spinelesion import __version__
from spinelesion.atomic import write_json
from spinelesion.data.manifest import Row, write_manifest
from spinelesion.data.splits import assign_splits
from spinelesion.parallel import map_jobs
from spinelesion.phantom.study import render_study
from spinelesion.phantom.writer import manifest_records, write_study

log = logging.getLogger(__name__)


def patient_plan(seed: int, studies: int, followup_rate: float) -> list[tuple[str, str, int]]:
    """(study_id, patient_id, patient index) per study; some patients come back for a second study."""
    rng = np.random.default_rng([seed, 7])
    plan: list[tuple[str, str, int]] = []
    n_patients = 0
    for k in range(studies):
        if plan and rng.random() < followup_rate:
            p = int(rng.integers(0, n_patients))
        else:
            p = n_patients
            n_patients += 1
        plan.append((f"S{seed:04d}{k:05d}", f"P{seed:04d}{p:05d}", p))
    return plan


def _one(args: tuple[int, int, str, str, int, dict[str, Any], str, list[str], int]) -> dict[str, Any]:
    seed, k, study_id, patient_id, p, phantom, out_dir, formats, previews = args
    study = render_study(
        [seed, k], phantom, patient_seed=[seed, 100000 + p], study_id=study_id, patient_id=patient_id
    )
    written = write_study(study, Path(out_dir), formats, seed)
    preview = None
    if k < previews and study.rois:
        from spinelesion.phantom.preview import write_preview

        preview = str(write_preview(study, Path(out_dir) / "previews" / f"{study_id}.png"))
    return {
        "study_id": study_id,
        "dicom": manifest_records(study, written["dicom"]),
        "nifti": manifest_records(study, written["nifti"]),
        "info": study.info,
        "preview": preview,
    }


def generate_dataset(cfg: Any) -> Path:
    """Render ``cfg.studies`` studies into ``cfg.output_dir``; returns the manifest path."""
    from omegaconf import OmegaConf

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    phantom = (
        OmegaConf.to_container(cfg.phantom, resolve=True)
        if not isinstance(cfg.phantom, dict)
        else cfg.phantom
    )
    formats = list(cfg.formats)
    if not formats or any(f not in ("dicom", "nifti") for f in formats):
        raise ValueError(f"formats must be a non-empty subset of [dicom, nifti], got {formats}")
    seed = int(cfg.seed)
    plan = patient_plan(seed, int(cfg.studies), float(cfg.followup_rate))
    jobs = [
        (seed, k, sid, pid, p, phantom, str(out), formats, int(cfg.get("previews", 0)))
        for k, (sid, pid, p) in enumerate(plan)
    ]
    start = time.perf_counter()
    results = list(
        tqdm(map_jobs(_one, jobs, int(cfg.workers)), total=len(jobs), desc="studies", unit="study")
    )
    seconds = time.perf_counter() - start
    main_format = "dicom" if "dicom" in formats else "nifti"
    records = [r for res in results for r in res[main_format]]
    rows = [
        Row(
            case_id=str(r["case_id"]),
            study_id=str(r["study_id"]),
            patient_id=str(r["patient_id"]),
            center_lps=np.zeros(3),
            sequences={},
            # Stratified by what was drawn: which sequences a study happened to get (and with them
            # which labels are knowable) does not move its patient to another split.
            labels={"compartment": str(r["drawn_compartment"]), "fracture": str(r["fracture"])},
        )
        for r in records
    ]
    split_of = assign_splits(rows, dict(cfg.splits), seed)
    for fmt in formats:
        recs = [dict(r, split=split_of[str(r["patient_id"])]) for res in results for r in res[fmt]]
        write_manifest(out / ("manifest.csv" if fmt == main_format else f"manifest_{fmt}.csv"), recs)
    summary = {
        "generator": f"spinelesion {__version__}",
        "seed": seed,
        "studies": len(plan),
        "patients": len({p for _, p, _ in plan}),
        "rois": len(records),
        "seconds": round(seconds, 1),
        "studies_per_second": round(len(plan) / max(seconds, 1e-9), 3),
        "workers": int(cfg.workers),
        "counts": {
            "compartment": dict(Counter(str(r["compartment"]) for r in records)),
            "fracture": dict(Counter(str(r["fracture"]) for r in records)),
            "finding": dict(Counter(str(r["finding"]) for r in records)),
            "split": dict(Counter(split_of[str(r["patient_id"])] for r in records)),
            "region": dict(Counter(str(res["info"]["region"]) for res in results)),
        },
        "config": phantom,
    }
    write_json(out / "dataset.json", summary)
    log.info(
        "%d studies, %d ROIs in %.0f s (%.2f studies/s) -> %s",
        len(plan),
        len(records),
        seconds,
        summary["studies_per_second"],
        out / "manifest.csv",
    )
    return out / "manifest.csv"
