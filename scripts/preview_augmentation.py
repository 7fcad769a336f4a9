#!/usr/bin/env python
"""Picture of what training augmentation does to real ROIs (docs/images/augmentation.png).

Each row is one ROI of a manifest: its plain centre crop, then four augmented draws
(mid-sagittal slice of the first available channel, shown with anterior to the left and
cranial up, as a radiologist reads a sagittal image). Look for: anatomy never flipped front
to back or top to bottom, small rotations, intensity and noise changes, an occasional
blurred or low-resolution draw, and a dropped sequence shown as a blank panel.

Usage: python scripts/preview_augmentation.py data/test150/manifest.csv [--rows 6] [--out PNG]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from spinelesion.data.augment import AugmentConfig, BatchAugment  # noqa: E402
from spinelesion.data.datamodule import SpineDataModule  # noqa: E402
from spinelesion.data.manifest import subset_manifest  # noqa: E402
from spinelesion.data.roi import center_crop  # noqa: E402
from spinelesion.labels import SEQUENCES  # noqa: E402

log = logging.getLogger("preview_augmentation")


def sagittal(volume: torch.Tensor) -> torch.Tensor:
    """(i->L, j->P, k->S) -> the mid-sagittal slice as rows superior..inferior, columns anterior..posterior."""
    return volume[volume.shape[0] // 2].T.flip(0)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("docs/images/augmentation.png"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sub = subset_manifest(args.manifest, Path(tmp) / "manifest.csv", args.rows)
        dm = SpineDataModule(
            sub,
            cache_dir=Path(tmp) / "cache",
            splits={"train": 1.0},
            progress=False,
            check_geometry=False,
            build_all=True,
        )
        dm.setup("fit")
    bank = dm.bank
    assert bank is not None
    picks = torch.linspace(0, len(bank.rows) - 1, args.rows).round().long().tolist()
    context = bank.images[picks].float()
    available = bank.available[picks].float()
    aug = BatchAugment(AugmentConfig(), dm.spec)
    draws = [aug(context, available, aug.generator(context.device, 7, d, 0)) for d in range(args.draws)]
    plain = center_crop(context, dm.spec.shape)

    fig, axes = plt.subplots(args.rows, args.draws + 1, figsize=(2.0 * (args.draws + 1), 2.4 * args.rows))
    for r, i in enumerate(picks):
        channel = int(torch.nonzero(available[r])[0])
        row = bank.rows[i]
        panels = [(plain[r, channel], "centre crop")]
        panels += [
            (img[r, channel], f"draw {d + 1}" + ("" if flags[r, channel] else " (dropped)"))
            for d, (img, flags) in enumerate(draws)
        ]
        for c, (vol, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(
                sagittal(vol).numpy(),
                cmap="gray",
                vmin=0,
                vmax=1,
                aspect=dm.spec.spacing[2] / dm.spec.spacing[1],
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(f"{row.finding}\n{SEQUENCES[channel]}", fontsize=8)
    fig.suptitle("Training augmentation (mid-sagittal; anterior left, cranial up)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
