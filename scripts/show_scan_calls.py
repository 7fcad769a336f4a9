#!/usr/bin/env python
"""Sagittal and axial crops through each ROI of a ``spinelesion-predict`` output, with its call:
where scan mode looked and what it said, for a reader to judge the calls (one column per ROI).

Planes are sampled in LPS millimetres through the point (anterior left, superior up; axial seen
from below, the patient's left on the right), so an oblique or RAS-stored study shows as any other.

Usage: python scripts/show_scan_calls.py IMAGE.nii.gz PREDICTIONS.csv OUT.png [--study ID] [--half-mm 40]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from spinelesion.io.nifti import read_nifti
from spinelesion.io.resample import sample_plane


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("predictions", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--study", default=None, help="only this study's rows")
    ap.add_argument("--half-mm", type=float, default=40.0)
    a = ap.parse_args()
    volume = read_nifti(a.image)
    with open(a.predictions, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if a.study in (None, r["study_id"])]
    if not rows:
        raise SystemExit(f"{a.predictions}: no rows{f' of study {a.study}' if a.study else ''}")
    lo, hi = np.percentile(volume.array, [1, 99.5])
    fig, axes = plt.subplots(2, len(rows), figsize=(2.8 * len(rows), 5.8), squeeze=False)
    for k, r in enumerate(rows):
        p = np.array([float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"])])
        sagittal = sample_plane(volume.array, volume.affine, p, (0.0, 1.0, 0.0), (0.0, 0.0, -1.0), a.half_mm)
        axial = sample_plane(volume.array, volume.affine, p, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), a.half_mm)
        for ax, img in zip(axes[:, k], (sagittal, axial), strict=True):
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            ax.plot([a.half_mm], [a.half_mm], "r+", ms=10)
            ax.axis("off")
        label = f"{r['compartment_label']}/{r['fracture_label']}"
        axes[0, k].set_title(
            f"{r['roi_id']}: {label}\np(none) {float(r['compartment_p_none']):.2f}", fontsize=7
        )
    fig.suptitle(f"{a.image.name}: sagittal (top), axial (bottom); + the ROI centre", fontsize=8)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=90)


if __name__ == "__main__":
    main()
