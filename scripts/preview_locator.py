#!/usr/bin/env python
"""Where scan mode looks: the spine locator's bodies and region over real studies -> docs/images/locator_region.png.

Each panel: the sagittal slice through the bodies found, the locator's body probability (red, 0.5
contour) and the region scan mode searches (yellow outline), on the study's own image resampled to
the locator's 4 mm grid.

Usage: python scripts/preview_locator.py LOCATOR_FOLDER [study folder ...]
(LOCATOR_FOLDER: a model folder with a locator, or a release `locator` stage's folder)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from spinelesion.io.study import load_study_folder
from spinelesion.labels import SEQUENCES
from spinelesion.localize.model import load_locator
from spinelesion.localize.region import body_probability, locator_input, spine_region

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT = [
    SHARED / "real-normals" / "vb2_07",
    SHARED / "real-multisite" / "vb1_02",
    SHARED / "real-multisite" / "vb1_03",
    SHARED / "real-multisite" / "vb1_11",
]


def main() -> None:
    folder = Path(sys.argv[1])
    meta = json.loads(
        (folder / ("metadata.json" if (folder / "metadata.json").is_file() else "locator.json")).read_text()
    )
    locator = load_locator(folder, meta if "locator" in meta else {"locator": meta})
    assert locator is not None
    studies = [Path(p) for p in sys.argv[2:]] or DEFAULT
    fig, axes = plt.subplots(1, len(studies), figsize=(3.2 * len(studies), 4.2))
    for ax, path in zip(np.atleast_1d(axes), studies, strict=True):
        study = load_study_folder(path)
        seqs = [s for s in SEQUENCES if s in study.volumes]
        ref = study.volumes[seqs[0]]
        array = np.stack(
            [
                study.volumes[s].array.astype(np.float32) if s == seqs[0] else np.zeros(ref.shape, np.float32)
                for s in SEQUENCES
            ]
        )
        available = np.array([s == seqs[0] for s in SEQUENCES])
        prob, grid = body_probability(locator, array, ref.affine, available)
        region = spine_region(prob, grid, locator.settings)
        image = locator_input(array, ref.affine, available, locator.settings)[0][0]
        x = int(np.argmax((prob >= 0.5).sum(axis=(1, 2)))) if (prob >= 0.5).any() else prob.shape[0] // 2
        # LPS grid: show y (anterior left .. posterior right) against z (superior up)
        ax.imshow(image[x].T, cmap="gray", origin="lower", vmin=0, vmax=1.2)
        ax.contour(prob[x].T, levels=[0.5], colors="red", linewidths=0.8, origin="lower")
        ax.contour(region[x].T.astype(float), levels=[0.5], colors="yellow", linewidths=0.8, origin="lower")
        share = float(region[image != 0].mean()) if (image != 0).any() else 0.0
        ax.set_title(f"{path.name} ({seqs[0]})\nregion {share:.0%} of the field of view", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("spine locator: bodies (red) and where scan mode looks (yellow)", fontsize=9)
    fig.tight_layout()
    out = ROOT / "docs" / "images" / "locator_region.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
