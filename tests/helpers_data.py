"""The ROI bank computed from its primitives, study by study, without MONAI and without a cache:
read and resample (``prepare_study``), round to float16 (``to_half``), refuse the ROIs that cannot
be answered (``roi_problems``), crop and normalise (``crop_rois``, ``robust_unit_range``). The data path
(``spinelesion.data.monai_pipeline.build_roi_bank``) must give exactly this."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from spinelesion.data.cache import prepare_study, to_half
from spinelesion.data.dataset import RoiBank, StudyFailure, roi_problems
from spinelesion.data.normalize import robust_unit_range
from spinelesion.data.roi import RoiSpec, crop_rois
from spinelesion.labels import TASKS, encode


def crop_study_rois(
    array: np.ndarray, affine: np.ndarray, available: np.ndarray, centers: Sequence[Any], spec: RoiSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Context crops of one prepared study, normalised: (R, C, *context), and flags (R, C)."""
    crops = crop_rois(torch.as_tensor(array), affine, centers, spec, context=True)
    flags = torch.as_tensor(np.asarray(available), dtype=torch.float32).expand(len(centers), -1).clone()
    return robust_unit_range(crops, flags), flags


def primitive_bank(
    rows: Sequence[Any], spec: RoiSpec, refuse_unanswerable: bool = False
) -> tuple[list[Any], torch.Tensor, torch.Tensor, list[str]]:
    """(rows kept, float16 crops, availability flags, failures as text) of ``rows``."""
    by_study: dict[str, list[Any]] = {}
    for r in rows:
        by_study.setdefault(r.study_id, []).append(r)
    kept: list[Any] = []
    crops, flags, failures = [], [], []
    for study_id, group in by_study.items():
        try:
            prepared = prepare_study(study_id, group[0].sequences)
        except Exception as exc:  # noqa: BLE001 - the reason is compared, whatever it is
            failures.append(
                StudyFailure(study_id, [r.row_number for r in group], f"{type(exc).__name__}: {exc}")
            )
            continue
        array = to_half(prepared.array).astype(np.float32)
        if refuse_unanswerable:
            centres = [r.center_lps for r in group]
            problems = roi_problems(array, prepared.affine, prepared.available, centres, spec)
            failures += [
                StudyFailure(study_id, [r.row_number], f"ROI {r.case_id}: {why}")
                for r, why in zip(group, problems, strict=True)
                if why
            ]
            group = [r for r, why in zip(group, problems, strict=True) if not why]
            if not group:
                continue
        c, f = crop_study_rois(
            array, prepared.affine, prepared.available, [r.center_lps for r in group], spec
        )
        kept += group
        crops.append(c.half())
        flags.append(f)
    empty = torch.zeros((0, 4, *spec.context_shape), dtype=torch.float16)
    return (
        kept,
        torch.cat(crops) if crops else empty,
        torch.cat(flags) if flags else torch.zeros((0, 4)),
        [str(f) for f in failures],
    )


def assert_bank_is_the_primitives(
    bank: RoiBank, rows: Sequence[Any], spec: RoiSpec, refuse_unanswerable: bool = False
) -> None:
    """``bank`` holds the primitives' rows, crops and flags bit for bit, and their failures word for word."""
    kept, crops, flags, failures = primitive_bank(rows, spec, refuse_unanswerable)
    assert [r.case_id for r in bank.rows] == [r.case_id for r in kept]
    assert bank.images.dtype == torch.float16 and torch.equal(bank.images.dense(), crops)
    assert torch.equal(bank.available, flags)
    assert [str(f) for f in bank.failures] == failures
    for task in TASKS:
        assert bank.targets[task].tolist() == [encode(task, r.labels[task]) for r in kept]
