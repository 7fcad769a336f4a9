"""PNG per ROI: the sagittal slice through the ROI centre with saliency overlaid and the answers on it.

The slice is an LPS-aligned sagittal plane sampled through the study's geometry, so it is a
true sagittal view with anterior on the left and superior up whatever the acquisition
orientation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from spinelesion.atomic import atomic_path  # noqa: E402
from spinelesion.data.roi import RoiSpec, sample_grid  # noqa: E402
from spinelesion.labels import SEQUENCES, TASKS  # noqa: E402

VIEW_MM = 150.0
PIXEL_MM = 0.75


def sagittal_plane(center_lps: np.ndarray, view_mm: float = VIEW_MM, pixel_mm: float = PIXEL_MM) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape (1, Ny, Nz) of a sagittal plane (axes: P, S) centred on a point."""
    n = int(round(view_mm / pixel_mm))
    affine = np.eye(4)
    affine[:3, :3] = np.diag([1.0, pixel_mm, pixel_mm])
    affine[:3, 3] = np.asarray(center_lps, dtype=np.float64) - np.array([0.0, pixel_mm, pixel_mm]) * (n - 1) / 2
    return affine, (1, n, n)


def background_channel(available: np.ndarray, prefer: tuple[str, ...] = ("t2", "t1", "stir", "t1c")) -> int:
    for name in prefer:
        c = SEQUENCES.index(name)
        if available[c]:
            return c
    return 0


def write_roi_png(path: str | Path, array: np.ndarray, affine: np.ndarray, available: np.ndarray,
                  center_lps: np.ndarray, spec: RoiSpec, roi_maps: Mapping[str, np.ndarray],
                  predictions: Mapping[str, Mapping[str, object]], title: str) -> Path:
    """Two panels (compartment, fracture saliency) over the sagittal slice through the ROI."""
    plane_affine, plane_shape = sagittal_plane(center_lps)
    ch = background_channel(available)
    image = sample_grid(array[ch:ch + 1], affine, plane_affine, plane_shape)[0, 0, 0].numpy()
    roi_affine = spec.affine(np.asarray(center_lps), context=False)
    lo, hi = np.percentile(image[image > 0], [1, 99.5]) if np.any(image > 0) else (0.0, 1.0)
    half = VIEW_MM / 2
    extent = (-half, half, -half, half)  # mm from the ROI centre: posterior right, superior up
    fig, axes = plt.subplots(1, len(TASKS), figsize=(5.2 * len(TASKS), 5.6), dpi=100)
    for ax, task in zip(np.atleast_1d(axes), TASKS, strict=True):
        sal = sample_grid(roi_maps[task][None].astype(np.float32), roi_affine, plane_affine, plane_shape)[0, 0, 0].numpy()
        ax.imshow(image.T, origin="lower", cmap="gray", vmin=lo, vmax=hi, extent=extent)
        ax.imshow(np.ma.masked_less(sal.T, 0.05), origin="lower", cmap="inferno", alpha=0.45, vmin=0, vmax=1,
                  extent=extent)
        ext = spec.extent_mm
        ax.add_patch(Rectangle((-ext[1] / 2, -ext[2] / 2), ext[1], ext[2], fill=False, ec="cyan", lw=1, ls="--"))
        ax.plot(0, 0, "+", color="cyan", ms=10)
        pred = predictions[task]
        probs = pred["probabilities"]  # type: ignore[index]
        text = "\n".join(f"{c}: {probs[c]:.2f}" for c in TASKS[task])  # type: ignore[index]
        ax.set_title(f"{task}: {pred['label']}", fontsize=11)
        ax.text(0.02, 0.02, text, transform=ax.transAxes, color="white", fontsize=8, va="bottom",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 3})
        ax.set_xlabel("A  <-  mm  ->  P")
        ax.set_ylabel("I  <-  mm  ->  S")
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{title}  [{SEQUENCES[ch]} background, saliency overlaid]", fontsize=10)
    fig.text(0.5, 0.005, "Demonstration model trained on synthetic data - not for clinical use",
             ha="center", fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
