"""PNG previews: the sagittal plane through each ROI, every sequence side by side, ROI marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from spinelesion.atomic import atomic_path  # noqa: E402
from spinelesion.io.resample import sample_grid  # noqa: E402
from spinelesion.phantom.acquisition import SEQ_NAMES  # noqa: E402
from spinelesion.phantom.study import RenderedStudy  # noqa: E402

LABELS = {"t1": "T1", "t2": "T2", "stir": "STIR", "t1c": "T1 + Gd (FS)"}


def sagittal(
    volume_array: np.ndarray,
    affine: np.ndarray,
    x_mm: float,
    y_mm: float,
    z_mm: float,
    view: float = 180.0,
    pixel: float = 0.75,
) -> np.ndarray:
    n = int(view / pixel)
    a = np.eye(4)
    a[:3, :3] = np.diag([1.0, pixel, pixel])
    a[:3, 3] = [x_mm, y_mm - pixel * (n - 1) / 2, z_mm - pixel * (n - 1) / 2]
    return sample_grid(volume_array[None], affine, a, (1, n, n))[0, 0, 0].numpy()


def write_preview(study: RenderedStudy, path: str | Path, roi_index: int = 0, view: float = 180.0) -> Path:
    roi = study.rois[roi_index]
    x, y, z = (float(v) for v in roi.center)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6), dpi=80)
    half = view / 2
    for ax, seq in zip(axes, SEQ_NAMES, strict=True):
        ax.set_xticks([])
        ax.set_yticks([])
        if seq not in study.volumes:
            ax.set_facecolor("black")
            ax.set_title(f"{LABELS[seq]}: missing", fontsize=10)
            continue
        vol = study.volumes[seq]
        img = sagittal(vol.array, vol.affine, x, y, z, view)
        vmax = np.percentile(img[img > 0], 99.5) if np.any(img > 0) else 1.0
        ax.imshow(img.T, origin="lower", cmap="gray", vmin=0, vmax=vmax, extent=(-half, half, -half, half))
        ax.add_patch(Rectangle((-36, -36), 72, 72, fill=False, ec="yellow", lw=0.8, ls="--"))
        ax.plot(0, 0, "+", color="yellow", ms=8)
        ax.set_title(LABELS[seq], fontsize=10)
    fig.suptitle(
        f"{study.study_id} ({study.info['region']}): {roi.finding} | compartment={roi.compartment}, "
        f"fracture={roi.fracture}, level {roi.level} | anterior left, superior up",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
