#!/usr/bin/env python
"""Picture of scan mode's depth limit: the air around the body, the limit, and scan candidates.

    python scripts/preview_body_outline.py STUDY.nii.gz PREDICTIONS.csv OUT.png [min_depth_mm]

``PREDICTIONS.csv`` is a ``spinelesion-predict`` output for that study; run it with
``scan.min_depth_mm=0`` to see what the limit removes. One panel per scan candidate (the
sagittal slice through it): the air (red), the depth limit (yellow), the candidate (cyan cross)
with its labels and p(none).
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spinelesion.io.body_outline import depth_under_skin_mm  # noqa: E402
from spinelesion.io.reader import read_volume  # noqa: E402
from spinelesion.io.volume import apply_affine  # noqa: E402

log = logging.getLogger("preview_body_outline")


def main(study: Path, predictions: Path, out: Path, min_depth_mm: float = 10.0) -> None:
    volume = read_volume(study)
    spacing = volume.spacing
    depth = depth_under_skin_mm(volume.array[None].astype(np.float32), spacing)
    with open(predictions, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"] == "scan"]
    if not rows:
        raise SystemExit(f"{predictions}: no scan candidate to draw")
    lr = int(np.argmax(np.abs(volume.affine[0, :3])))  # the voxel axis along left-right
    ap, si = (int(np.argmax(np.abs(volume.affine[k, :3]))) for k in (1, 2))
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 4.6), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        point = np.array([float(row[k]) for k in ("x_mm", "y_mm", "z_mm")])
        ijk = np.round(apply_affine(np.linalg.inv(volume.affine), point)).astype(int)
        index: list[slice | int] = [slice(None)] * 3
        index[lr] = int(np.clip(ijk[lr], 0, volume.array.shape[lr] - 1))
        image, d = volume.array[tuple(index)], depth[tuple(index)]
        if ap > si:  # rows: anterior-posterior, columns: superior-inferior
            image, d = image.T, d.T
        ax.imshow(image.T, cmap="gray", origin="lower", aspect=spacing[si] / spacing[ap])
        if np.isfinite(d).any():
            ax.contour(d.T, [0.5], colors="red", linewidths=0.8)
            ax.contour(d.T, [min_depth_mm], colors="yellow", linewidths=0.8)
        ax.plot(ijk[ap], ijk[si], "c+", ms=18, mew=2)
        ax.set_title(
            f"{row['roi_id']}: {row['compartment_label']} / {row['fracture_label']}\n"
            f"p(none) {float(row['compartment_p_none']):.2f}, depth {float(d[ijk[ap], ijk[si]]):.0f} mm",
            fontsize=9,
        )
        if volume.affine[2, si] < 0:  # index runs inferior: superior up
            ax.invert_yaxis()
        if volume.affine[1, ap] < 0:  # index runs anterior (LPS y is posterior): anterior left
            ax.invert_xaxis()
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"{study.parent.name}: air (red), {min_depth_mm:g} mm under the skin (yellow), scan candidates",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    log.info("wrote %s", out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(sys.argv) not in (4, 5):
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), *(float(a) for a in sys.argv[4:]))
