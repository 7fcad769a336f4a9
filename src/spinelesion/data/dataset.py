"""ROI crops in memory, and the torch Dataset that augments them on the fly.

Building the bank goes study by study (each study read once, from the disk cache when
possible), crops every ROI of that study with its context margin, normalises it and keeps
it in memory as float16. Epochs after that touch no file at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from spinelesion.data.cache import StudyCache
from spinelesion.data.manifest import Row
from spinelesion.data.normalize import robust_unit_range
from spinelesion.data.roi import RoiSpec, center_crop, crop_rois
from spinelesion.labels import SEQUENCES, TASKS, encode

log = logging.getLogger(__name__)


@dataclass
class StudyFailure:
    """A study that could not be prepared, with the manifest rows it takes down."""

    study_id: str
    rows: list[int]
    reason: str

    def __str__(self) -> str:
        return f"study '{self.study_id}' (manifest rows {', '.join(map(str, self.rows))}): {self.reason}"


class BadStudiesError(RuntimeError):
    def __init__(self, failures: Sequence[StudyFailure]):
        self.failures = list(failures)
        lines = "\n".join(f"  - {f}" for f in self.failures)
        super().__init__(f"{len(self.failures)} study(ies) could not be read:\n{lines}")


@dataclass
class RoiBank:
    """Normalised context crops (N, C, *context_shape) float16 and their targets."""

    rows: list[Row]
    images: torch.Tensor
    available: torch.Tensor  # (N, C) float
    targets: dict[str, torch.Tensor]  # task -> (N,) long, IGNORE_INDEX for unknown
    failures: list[StudyFailure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def crop_study_rois(
    array: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    available: np.ndarray,
    centers: Sequence[np.ndarray],
    spec: RoiSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Context crops of one prepared study, normalised: (R, C, *context), and flags (R, C)."""
    crops = crop_rois(torch.as_tensor(array), affine, centers, spec, context=True)
    flags = torch.as_tensor(np.asarray(available), dtype=torch.float32).expand(len(centers), -1).clone()
    return robust_unit_range(crops, flags), flags


def build_roi_bank(
    rows: Sequence[Row], cache: StudyCache, spec: RoiSpec, on_error: str = "raise", progress: bool = True
) -> RoiBank:
    """Crop every ROI of ``rows``.

    Args:
        on_error: ``"raise"``: read every study, then raise :class:`BadStudiesError` listing
            all that failed (training must not start on a partly broken set);
            ``"skip"``: leave them out and list them in ``bank.failures``.
    """
    by_study: dict[str, list[Row]] = {}
    for r in rows:
        by_study.setdefault(r.study_id, []).append(r)
    kept: list[Row] = []
    images: list[torch.Tensor] = []
    flags: list[torch.Tensor] = []
    failures: list[StudyFailure] = []
    for study_id, study_rows in tqdm(by_study.items(), desc="ROIs", unit="study", disable=not progress):
        try:
            prepared = cache.get(study_id, study_rows[0].sequences)
            crops, avail = crop_study_rois(
                prepared.array, prepared.affine, prepared.available, [r.center_lps for r in study_rows], spec
            )
        except Exception as exc:  # noqa: BLE001 - any failure of one study is reported, not fatal
            failures.append(
                StudyFailure(study_id, [r.row_number for r in study_rows], f"{type(exc).__name__}: {exc}")
            )
            continue
        kept.extend(study_rows)
        images.append(crops.half())
        flags.append(avail)
    if failures and on_error == "raise":
        raise BadStudiesError(failures)
    for f in failures:
        log.warning("skipped %s", f)
    n_ch = len(SEQUENCES)
    targets = {t: torch.tensor([encode(t, r.labels[t]) for r in kept], dtype=torch.long) for t in TASKS}
    return RoiBank(
        rows=kept,
        images=torch.cat(images)
        if images
        else torch.zeros((0, n_ch, *spec.context_shape), dtype=torch.float16),
        available=torch.cat(flags) if flags else torch.zeros((0, n_ch)),
        targets=targets,
        failures=failures,
    )


class RoiDataset(Dataset):
    """Items of a :class:`RoiBank` subset, by position in the subset or by bank index.

    Returns dicts with ``image`` (C, *shape) float32 (the whole context box when
    ``context=True``: training batches are augmented and cropped on the device, see
    :mod:`spinelesion.data.augment`), ``available`` (C,), one long target per task, and
    ``index`` (position in the bank).
    """

    def __init__(self, bank: RoiBank, indices: Sequence[int], spec: RoiSpec, context: bool = False):
        self.bank = bank
        self.indices = list(indices)
        self.spec = spec
        self.context = context

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | BankIndex) -> dict[str, torch.Tensor]:
        # Samplers yield bank indices (BankIndex); plain integers are positions in the subset.
        index = int(key) if isinstance(key, BankIndex) else self.indices[key]
        image = self.bank.images[index].float()
        if not self.context:
            image = center_crop(image, self.spec.shape).contiguous()
        item = {"image": image, "available": self.bank.available[index].clone(), "index": torch.tensor(index)}
        for task in TASKS:
            item[task] = self.bank.targets[task][index]
        return item


class BankIndex(int):
    """An index into the bank itself (what the samplers yield), not into a subset."""
