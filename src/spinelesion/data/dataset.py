"""ROI crops in memory (the bank), and the torch Dataset that serves them.

The bank holds every ROI's context crop, normalised, as float16; it is built study by study
by :func:`spinelesion.data.monai_pipeline.build_roi_bank` (each study read once, or its crops
loaded from the cache), so epochs after that touch no file at all. :func:`roi_problems` says which
ROIs cannot be answered (train, evaluate and predict all ask it); cropping and normalisation are
the study transforms of :mod:`spinelesion.data.monai_transforms`, which predict runs too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from spinelesion.data.manifest import Row
from spinelesion.data.normalize import quantiles_of_valid
from spinelesion.data.roi import RoiSpec, center_crop
from spinelesion.labels import SEQUENCES, TASKS


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


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (Linux ``MemAvailable``), or None."""
    from spinelesion.io.limits import meminfo_bytes

    return meminfo_bytes("MemAvailable")


class PackedCrops:
    """The bank's context crops, read as an (N, C, *context) float16 tensor, stored with only the
    channels each ROI's study has: a real exam is one sequence of four (T2, or T1, or STIR), so a
    mix of mostly real ROIs needs about a third of a dense tensor's memory (the 2026-12-07 fine-tuning
    mix, 18,435 ROIs: 19.8 GiB dense, refused on the 24 GiB machine). The channels a ROI lacks read
    as exact zeros, as the normalisation writes them. ``crops[i]`` is ROI i's (C, *context) tensor;
    ``crops[i, c]`` one channel of it; ``dense()`` the whole tensor (tests, small banks)."""

    def __init__(self, slots: torch.Tensor, start: torch.Tensor, present: torch.Tensor):
        self.slots = slots  # (S, *context): every ROI's stored channels, one after another
        self.start = start  # (N + 1,) long: ROI i's channels are slots[start[i]:start[i + 1]]
        self.present = present  # (N, C) bool: which channels ROI i stored

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self.present.shape[1], *self.slots.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.slots.dtype

    @property
    def nbytes(self) -> int:
        return self.slots.element_size() * self.slots.numel()

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def __getitem__(self, key: int | slice | Sequence[int] | torch.Tensor | tuple[Any, ...]) -> torch.Tensor:
        if isinstance(key, tuple):
            return self[key[0]][key[1:]] if isinstance(key[0], int) else self[key[0]][(slice(None), *key[1:])]
        if isinstance(key, slice):
            return self[range(*key.indices(len(self)))]
        if not isinstance(key, int) and (isinstance(key, Sequence | range) or getattr(key, "ndim", 0) > 0):
            return torch.stack([self[int(i)] for i in key]) if len(key) else torch.zeros((0, *self.shape[1:]))
        i = int(key)
        out = torch.zeros(self.shape[1:], dtype=self.slots.dtype)
        self._fill(out, i + len(self) if i < 0 else i)
        return out

    def dense(self) -> torch.Tensor:
        out = torch.zeros(self.shape, dtype=self.slots.dtype)
        for i in range(len(self)):
            self._fill(out[i], i)
        return out

    def _fill(self, out: torch.Tensor, i: int) -> None:
        """Write ROI i's stored channels into ``out`` (C, *context), zeros elsewhere."""
        out[self.present[i]] = self.slots[int(self.start[i]) : int(self.start[i + 1])]


class BankBuffer:
    """The bank's crops, written study by study into one preallocated float16 store
    (:class:`PackedCrops`: each ROI's own channels only).

    Concatenating per-study pieces at the end held the bank twice: a 9,600-ROI training mix
    (11 GiB of context crops) was killed for memory on a 24 GiB machine. Before allocating,
    the size is checked against the memory available, so a mix that cannot fit fails at once
    with the numbers instead of being killed mid-way. ``channels``: how many sequences each ROI's
    study has (its manifest row's), which sizes the store; None: all of them."""

    def __init__(
        self, n_rois: int, spec: RoiSpec, headroom: float = 0.85, channels: Sequence[int] | None = None
    ):
        n_ch = len(SEQUENCES)
        capacity = n_rois * n_ch if channels is None else int(sum(channels))
        need = capacity * int(np.prod(spec.context_shape)) * 2
        free = available_memory()
        if free is not None and need > headroom * free:
            from spinelesion.io.limits import ResourceLimitError, human

            raise ResourceLimitError(
                f"{n_rois} ROIs need about {human(need)} of context crops in memory "
                f"(float16, {capacity} sequence channels of {'x'.join(map(str, spec.context_shape))}), "
                f"but only {human(free)} is available: train or evaluate on fewer ROIs (fewer manifests, "
                "a split), or on a machine with more memory"
            )
        self.slots = torch.empty((capacity, *spec.context_shape), dtype=torch.float16)
        self.start = torch.zeros(n_rois + 1, dtype=torch.long)
        self.present = torch.zeros((n_rois, n_ch), dtype=torch.bool)
        self.available = torch.zeros((n_rois, n_ch))
        self.filled = 0

    def add(self, crops: torch.Tensor, available: torch.Tensor) -> None:
        n = int(crops.shape[0])
        # a channel is stored when the study has it, or (never expected) when it is not all zeros
        present = (available > 0) | crops.flatten(2).ne(0).any(-1)
        counts = present.sum(1)
        at, k = int(self.start[self.filled]), int(counts.sum())
        if at + k > self.slots.shape[0]:
            raise RuntimeError(
                f"ROI bank: {k} more sequence channels than the manifest rows promised "
                f"({self.slots.shape[0]} in all, {at} used)"
            )
        self.slots[at : at + k] = crops[present]  # cast to float16 in place
        self.start[self.filled + 1 : self.filled + n + 1] = at + torch.cumsum(counts, 0)
        self.present[self.filled : self.filled + n] = present
        self.available[self.filled : self.filled + n] = available
        self.filled += n

    def tensors(self) -> tuple[PackedCrops, torch.Tensor]:
        """The filled part (views: rows of failed studies were never written, so never paged in)."""
        used = int(self.start[self.filled])
        crops = PackedCrops(self.slots[:used], self.start[: self.filled + 1], self.present[: self.filled])
        return crops, self.available[: self.filled]


@dataclass
class RoiBank:
    """Normalised context crops (N, C, *context_shape) float16 and their targets."""

    rows: list[Row]
    images: PackedCrops  # (N, C, *context_shape) as read
    available: torch.Tensor  # (N, C) float
    targets: dict[str, torch.Tensor]  # task -> (N,) long, IGNORE_INDEX for unknown
    failures: list[StudyFailure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


_BLANK_Q = torch.tensor([0.01, 0.99])


def roi_problems(
    array: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    available: np.ndarray,
    centers: Sequence[np.ndarray],
    spec: RoiSpec,
) -> list[str | None]:
    """Why each ROI cannot be answered (None when it can): its centre lies outside the study (the
    crop would be padding, or mostly so), or every available sequence is blank inside its box
    (one value across the 1st-99th percentile: a constant image, or one voxel apart).

    The network answers such a crop with its blank-input answer (none, 0.99 confident): an answer
    from nothing. Predict and evaluate both ask here, so the two refuse the same ROIs. A ROI near
    the edge of a thin slab is answered (its box may reach far outside: a 16 mm axial slab).
    """
    shape = np.asarray(array.shape[1:], dtype=float)
    inverse = np.linalg.inv(np.asarray(affine, dtype=float))
    used = np.flatnonzero(np.asarray(available, dtype=bool))
    out: list[str | None] = []
    inside: list[int] = []
    for k, centre in enumerate(centers):
        ijk = inverse[:3, :3] @ np.asarray(centre, dtype=float) + inverse[:3, 3]
        if not (np.all(np.isfinite(ijk)) and np.all(ijk >= -0.5) and np.all(ijk <= shape - 0.5)):
            out.append("its centre lies outside the study (the crop would be padding)")
        else:
            out.append(None)
            inside.append(k)
    # Blank: judged on the study's own voxels under the box (a crop's padding is not the image).
    data = torch.as_tensor(array)
    half = np.asarray(spec.shape, dtype=float) * np.asarray(spec.spacing, dtype=float) / 2.0
    corners = np.stack(np.meshgrid(*[[-1.0, 1.0]] * 3, indexing="ij"), -1).reshape(-1, 3) * half
    for k in inside:
        ijk = (np.asarray(centers[k], dtype=float) + corners) @ inverse[:3, :3].T + inverse[:3, 3]
        lo = np.clip(np.floor(ijk.min(0)), 0, shape - 1).astype(int)
        hi = np.clip(np.ceil(ijk.max(0)) + 1, 1, shape).astype(int)
        # the box first, then the channels: indexing by channel list first copied the whole study per ROI
        block = data[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][used].reshape(len(used), -1).float()
        if block.shape[1] > 200_000:  # a quantile of a subsample is as telling
            block = block[:, :: block.shape[1] // 200_000 + 1].contiguous()
        # torch.quantile's values by a partial sort: 3x faster a ROI (9 -> 3 ms on one quiet core,
        # 2026-12-06); evaluate asks this of every ROI
        spread = quantiles_of_valid(block[None], torch.ones(block[None].shape, dtype=torch.bool), _BLANK_Q)[
            :, 0
        ]
        scale = block.abs().amax(1).clamp(min=1.0)
        if len(used) and bool(torch.all(spread[1] - spread[0] <= 1e-6 * scale)):
            out[k] = "every sequence is blank inside its box (one value between its 1st and 99th percentile)"
    return out


class RoiDataset(Dataset):
    """Items of a :class:`RoiBank` subset, by position in the subset or by bank index.

    Returns dicts with ``image`` (C, *shape) float32 (the whole context box when
    ``context=True``: training batches are augmented and cropped on the device, see
    :mod:`spinelesion.data.augment`), ``available`` (C,), one long target per task, and
    ``index`` (position in the bank).

    ``transform``: a dictionary transform applied to each item (the MONAI ``Compose`` that
    :func:`spinelesion.data.monai_pipeline.roi_dataset` builds from ``data.transforms``); its
    ``image`` comes back as a plain float32 tensor (a MetaTensor's metadata dropped), so every
    batch collates alike. This module imports no MONAI: ``spinelesion-predict`` reads it.
    """

    def __init__(
        self,
        bank: RoiBank,
        indices: Sequence[int],
        spec: RoiSpec,
        context: bool = False,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ):
        self.bank = bank
        self.indices = list(indices)
        self.spec = spec
        self.context = context
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | BankIndex) -> dict[str, Any]:
        # Samplers yield bank indices (BankIndex); plain integers are positions in the subset.
        index = int(key) if isinstance(key, BankIndex) else self.indices[key]
        image = self.bank.images[index].float()
        if not self.context:
            image = center_crop(image, self.spec.shape).contiguous()
        item: dict[str, Any] = {
            "image": image,
            "available": self.bank.available[index].clone(),
            "index": torch.tensor(index),
        }
        for task in TASKS:
            item[task] = self.bank.targets[task][index]
        if self.transform is not None:
            item = self.transform(item)
            item["image"] = torch.as_tensor(item["image"]).as_subclass(torch.Tensor).float()
        return item


class BankIndex(int):
    """An index into the bank itself (what the samplers yield), not into a subset."""
