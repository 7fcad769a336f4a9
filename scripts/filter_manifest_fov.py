#!/usr/bin/env python
"""Drop manifest rows whose ROI centre lies outside the study's reference sequence.

The generator applies the same rule since 2026-11-22; this brings manifests written before
that change to exactly what the generator writes now (pixel data never changed).
Usage: python scripts/filter_manifest_fov.py data/train600
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from spinelesion.io.reader import read_geometry
from spinelesion.io.resample import REFERENCE_ORDER


def keep_mask(folder: Path, name: str) -> list[bool]:
    rows = list(csv.DictReader(open(folder / name, newline="")))
    cache: dict[str, tuple] = {}
    keep = []
    for r in rows:
        ref = next(s for s in REFERENCE_ORDER if r[s])
        path = str(folder / r[ref])
        if path not in cache:
            cache[path] = read_geometry(path)
        shape, aff = cache[path]
        ijk = np.linalg.inv(aff)[:3] @ np.array([float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"]), 1.0])
        keep.append(bool(np.all(ijk >= -0.5) and np.all(ijk <= np.asarray(shape) - 0.5)))
    return keep


def splits_for(rows: list[dict[str, str]], folder: Path) -> dict[str, str]:
    """Patient splits exactly as the generator computes them on the rows it writes."""
    import json

    from spinelesion.data.manifest import Row
    from spinelesion.data.splits import assign_splits

    info = json.loads((folder / "dataset.json").read_text())
    ratios = {"train": 0.7, "val": 0.15, "test": 0.15}
    parsed = [
        Row(
            case_id=r["case_id"],
            study_id=r["study_id"],
            patient_id=r["patient_id"],
            center_lps=np.zeros(3),
            sequences={},
            labels={"compartment": r["compartment"], "fracture": r["fracture"]},
        )
        for r in rows
    ]
    return assign_splits(parsed, ratios, int(info["seed"]))


def main() -> None:
    folder = Path(sys.argv[1])
    keep = keep_mask(
        folder, "manifest_nifti.csv" if (folder / "manifest_nifti.csv").exists() else "manifest.csv"
    )
    with open(folder / "manifest.csv", newline="") as fh:
        main_rows = [r for r, k in zip(csv.DictReader(fh), keep, strict=True) if k]
    split_of = splits_for([dict(r, split="") for r in main_rows], folder)
    for name in ("manifest.csv", "manifest_nifti.csv"):
        path = folder / name
        if not path.exists():
            continue
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows, header = list(reader), reader.fieldnames
        kept = [dict(r, split=split_of[r["patient_id"]]) for r, k in zip(rows, keep, strict=True) if k]
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=header)
            w.writeheader()
            w.writerows(kept)
        print(f"{path}: kept {len(kept)} of {len(rows)} rows")


if __name__ == "__main__":
    main()
