"""``data.pipeline`` and ``data.transforms``, checked without importing MONAI (the bank path stays light)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PIPELINES = ("bank", "monai")
AUGMENT_MODES = ("batched", "monai")


def pipeline_options(pipeline: str, transforms: Mapping[str, Any] | None) -> tuple[str, list[Any], str]:
    """(pipeline, extra transforms, augmentation mode), or a ValueError naming the option.

    ``transforms.extra``: MONAI dictionary transforms (Hydra ``_target_`` entries) applied to
    training items of the MONAI path; ``transforms.augment``: ``batched`` (the on-device
    batch augmentation, both paths) or ``monai`` (MONAI's per-item transforms, MONAI path only).
    """
    if str(pipeline) not in PIPELINES:
        raise ValueError(f"data.pipeline={pipeline!r}: expected one of {', '.join(PIPELINES)}")
    values = dict(transforms or {})
    unknown = sorted(set(values) - {"extra", "augment"})
    if unknown:
        raise ValueError(f"data.transforms: unknown key(s) {', '.join(unknown)} (allowed: extra, augment)")
    extra = list(values.get("extra") or [])
    mode = str(values.get("augment") or "batched")
    if mode not in AUGMENT_MODES:
        raise ValueError(f"data.transforms.augment={mode!r}: expected one of {', '.join(AUGMENT_MODES)}")
    if pipeline == "bank" and (extra or mode == "monai"):
        raise ValueError("data.transforms.extra and data.transforms.augment=monai need data.pipeline=monai")
    if extra:
        from spinelesion.data.monai_pipeline import instantiate_transforms

        extra = instantiate_transforms(extra)
    return str(pipeline), extra, mode
