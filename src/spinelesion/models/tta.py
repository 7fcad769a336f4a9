"""Test-time mirroring: a ROI's logits averaged over the ROI and its left-right mirror image.

nnU-Net and nnDetection mirror at test time by default. Here only the left-right mirror is
label-preserving (compartments and fractures have no side; the anterior-posterior and
cranio-caudal axes are oriented, see :mod:`spinelesion.data.augment`), and the training
augmentation already draws it. A model's ``metadata.json['tta']`` names the mirrors its
temperatures and decision rule were fitted with; every path that classifies ROIs
(prediction, evaluation, hard-negative mining, the MONAI bundle) reads it from there, so
they give the same numbers. Logits are averaged (not probabilities) so that the stored
temperatures apply unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

# ROI batches are (B, C, X, Y, Z) on an LPS-aligned grid: X runs right to left.
MIRROR_DIMS: dict[str, int] = {"lr": 2}


def mirrors_of(value: Any, where: str = "tta") -> tuple[str, ...]:
    """Validated mirror names from a config or metadata value (None / [] -> no mirroring)."""
    if value is None or value is False:
        return ()
    if isinstance(value, str):
        value = [value]
    names = tuple(str(v) for v in value)
    unknown = [n for n in names if n not in MIRROR_DIMS]
    if unknown:
        raise ValueError(
            f"{where}: unknown mirror(s) {unknown}; allowed: {sorted(MIRROR_DIMS)} "
            "(anterior-posterior and cranio-caudal mirrors change what a ROI shows)"
        )
    return tuple(dict.fromkeys(names))


def mirrors_from_meta(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The mirrors a model folder was calibrated with (none for models from before mirroring)."""
    return mirrors_of(meta.get("tta"), "metadata.json tta")


def forward_tta(
    net: Callable[[torch.Tensor, torch.Tensor], Sequence[torch.Tensor]],
    image: torch.Tensor,
    available: torch.Tensor,
    mirrors: Sequence[str] = (),
) -> tuple[torch.Tensor, ...]:
    """Per-task logits (float32) of ``image``, averaged with those of its mirror images."""
    outs = [net(image, available)]
    for name in mirrors:
        outs.append(net(image.flip(MIRROR_DIMS[name]), available))
    if len(outs) == 1:
        return tuple(lg.float() for lg in outs[0])
    return tuple(torch.stack([o[i].float() for o in outs]).mean(0) for i in range(len(outs[0])))
