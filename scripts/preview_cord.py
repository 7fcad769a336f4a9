#!/usr/bin/env python
"""Picture of the lower thoracic cord and conus: real lumbar T2 beside the phantom's, before and
after the lumbosacral enlargement (2026-12-06).

    python scripts/preview_cord.py [REAL_NORMALS_DIR] [OUT.png]

Real: the mid-sagittal slice of three ``real-normals/vb2_*`` studies around T10-L2 (anterior
left). Phantom: the mid-sagittal canal of the same lumbar phantom patients drawn without the
enlargement and with a 14 mm conus (as before) and as now. A model that learnt the canal from a
thin cord in a wide bright CSF column called the real conus an intramedullary or intradural mass.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spinelesion.io.reader import read_volume  # noqa: E402
from spinelesion.io.volume import dominant_axes  # noqa: E402
from spinelesion.phantom import anatomy  # noqa: E402
from spinelesion.phantom.config import default_phantom_config  # noqa: E402
from spinelesion.phantom.preview import sagittal  # noqa: E402
from spinelesion.phantom.study import render_study  # noqa: E402

log = logging.getLogger("preview_cord")
REAL = ("vb2_07", "vb2_14", "vb2_16")
SEEDS = (3, 11)


def real_panel(folder: Path) -> np.ndarray:
    """The mid-sagittal slice (LPS: rows anterior to posterior, columns inferior to superior),
    the upper 130 mm of the field of view around the canal."""
    vol = read_volume(folder / "t2.nii.gz")
    axes = np.argsort(dominant_axes(vol.affine))  # the voxel axis along each of L, P, S

    def lps(array: np.ndarray) -> np.ndarray:  # indices growing towards L, P, S
        out = np.transpose(array, axes)
        for k in range(3):
            if vol.affine[k, axes[k]] < 0:
                out = np.flip(out, k)
        return out

    arr = lps(vol.array)
    mask = lps(
        read_volume(folder / "vertebral_bodies.nii.gz").array
    )  # the same grid (tested in the insertion)
    x = arr.shape[0] // 2
    top = mask[x, :, -130:] > 0  # the bodies in the upper 130 mm
    back = int(np.nonzero(top.any(1))[0].max())  # their posterior wall: the canal lies behind it
    return arr[x, max(back - 30, 0) : back + 22, -130:]


def phantom_panel(seed: int, before: bool) -> np.ndarray:
    saved = anatomy.ENLARGEMENT, anatomy.CONUS_LENGTH_MM
    if before:
        anatomy.ENLARGEMENT, anatomy.CONUS_LENGTH_MM = (0.0, 0.0), (14.0, 14.0)
    try:
        st = render_study(seed, default_phantom_config(), region="lumbar")
    finally:
        anatomy.ENLARGEMENT, anatomy.CONUS_LENGTH_MM = saved
    an = st.anatomy
    z = float(an.conus_z if an.conus_z is not None else 0.0) + 20.0
    yc = float(an.sac_geometry(np.array([z]))[0][0])
    vol = st.volumes["t2"]
    img = sagittal(vol.array, vol.affine, 0.0, yc, z, 130, pixel=1.0)  # rows: A-P, columns: I-S
    return img[35:90]


def main(real_root: Path, out: Path) -> None:
    panels = [(f"real {s} (T2 TSE)", real_panel(real_root / s)) for s in REAL if (real_root / s).is_dir()]
    for seed in SEEDS:
        panels.append((f"phantom {seed}, before", phantom_panel(seed, before=True)))
        panels.append((f"phantom {seed}, now", phantom_panel(seed, before=False)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 6), dpi=90)
    for ax, (title, img) in zip(axes, panels, strict=True):
        ax.imshow(img.T, origin="lower", cmap="gray", vmin=0, vmax=np.percentile(img, 99.5))
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Lower thoracic cord and conus, mid-sagittal (anterior left, superior up, 1 mm pixels)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    log.info("wrote %s", out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/real-normals")
    main(root, Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/images/cord_real_vs_phantom.png"))
