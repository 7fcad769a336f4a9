"""The MONAI data path (``data.pipeline: monai``): the same ROIs as the bank path, built from
MONAI data components.

* Each study is a dictionary item (sequence paths, ROI centres, a key that fingerprints the
  files and settings) sent through :func:`~spinelesion.data.monai_transforms.study_transforms`
  (load with :class:`~spinelesion.io.monai_reader.SpineSeriesReader`, reference grid, float16
  as the bank caches it, context crops, normalisation), cached on disk by
  :class:`monai.data.PersistentDataset` (in memory without a cache folder).
* The crops are kept as a :class:`~spinelesion.data.dataset.RoiBank`, so splits, sampling,
  class counts and the batched augmentation are shared with the bank path.
* :class:`MonaiRoiDataset` (a :class:`monai.data.Dataset`) serves ROI items and applies the
  user's transforms (``data.transforms.extra``, MONAI ``_target_`` entries) to training
  items; :func:`monai_augmentation` is MONAI's per-item counterpart of the batched augmentation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset, MetaTensor, PersistentDataset
from monai.transforms import CastToTyped, Compose, Randomizable
from tqdm.auto import tqdm

from spinelesion.data.augment import AugmentConfig
from spinelesion.data.cache import study_key
from spinelesion.data.dataset import BadStudiesError, BankBuffer, BankIndex, RoiBank, StudyFailure
from spinelesion.data.manifest import Row
from spinelesion.data.monai_transforms import study_transforms
from spinelesion.data.roi import RoiSpec, center_crop
from spinelesion.labels import TASKS, encode

log = logging.getLogger(__name__)

PIPELINE_VERSION = "monai-3"  # 2: crops kept as float16 (as the bank holds them); 3: and each ROI's problems


def study_items(
    rows: Sequence[Row], spec: RoiSpec, reference: str
) -> tuple[list[dict[str, Any]], list[list[Row]]]:
    """One item per study (first appearance order) and the manifest rows it holds.

    ``key`` hashes the files (size, mtime) and settings, so ``PersistentDataset`` (which
    hashes the item) never serves a stale entry after a file or a setting changed.
    """
    by_study: dict[str, list[Row]] = {}
    for r in rows:
        by_study.setdefault(r.study_id, []).append(r)
    items, groups = [], []
    for study_id, group in by_study.items():
        seqs = {s: str(p) for s, p in group[0].sequences.items()}
        settings = {
            "pipeline": PIPELINE_VERSION,
            "reference": reference,
            "roi": [spec.shape, spec.spacing, spec.margin],
        }
        items.append(
            {
                "study_id": study_id,
                **seqs,
                "rois": [[float(v) for v in r.center_lps] for r in group],
                "key": study_key(group[0].sequences, settings),
            }
        )
        groups.append(group)
    return items, groups


def study_dataset(
    items: Sequence[dict[str, Any]],
    spec: RoiSpec,
    reference: str = "auto",
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Study items -> normalised context crops, cached by ``PersistentDataset`` under ``cache_dir/monai``.

    The crops are kept as float16, the bank's own type (:class:`BankBuffer` casts them so
    anyway): half the disk, and the same bank. A later training whose studies carry the same
    ROIs loads them instead of cropping again (the release recipe's stages share one cache)."""
    transform = Compose(
        [
            *study_transforms(spec, reference=reference, half=True, problems=True),
            CastToTyped(keys="image", dtype=torch.float16),
        ]
    )
    if cache_dir is None:
        return Dataset(list(items), transform)
    return PersistentDataset(list(items), transform, cache_dir=Path(cache_dir) / "monai")


def warm_cache(
    rows: Sequence[Row],
    spec: RoiSpec,
    cache_dir: str | Path,
    reference: str = "auto",
    progress: bool = True,
) -> int:
    """Fill the PersistentDataset with every study of ``rows`` without keeping the crops: the
    number of studies that failed (setup reads them again and raises with their rows). Building
    a bank here held every crop in memory, and Lightning's second ``prepare_data`` inside ``fit``
    asked for a second bank beside the datamodule's: a 14,376-ROI mix (15.4 GiB) was refused on
    a 24 GiB machine (2026-12-06)."""
    items, _ = study_items(rows, spec, reference)
    ds = study_dataset(items, spec, reference, cache_dir)
    failed = 0
    for i in tqdm(range(len(items)), desc="cache (monai)", unit="study", disable=not progress):
        try:
            ds[i]
        except Exception:  # noqa: BLE001 - reported with its rows by setup
            failed += 1
    return failed


def build_roi_bank_monai(
    rows: Sequence[Row],
    spec: RoiSpec,
    cache_dir: str | Path | None = None,
    reference: str = "auto",
    on_error: str = "raise",
    progress: bool = True,
    refuse_unanswerable: bool = False,
) -> RoiBank:
    """:func:`~spinelesion.data.dataset.build_roi_bank`'s result through the MONAI study dataset
    (the same arguments, the same ROIs, rows and failures)."""
    items, groups = study_items(rows, spec, reference)
    ds = study_dataset(items, spec, reference, cache_dir)
    kept: list[Row] = []
    buffer = BankBuffer(len(rows), spec)
    failures: list[StudyFailure] = []
    for i in tqdm(range(len(items)), desc="ROIs (monai)", unit="study", disable=not progress):
        try:
            out = ds[i]
        except Exception as exc:  # noqa: BLE001 - any failure of one study is reported, not fatal
            cause = exc.__cause__ or exc  # MONAI wraps transform errors; name the original
            failures.append(
                StudyFailure(
                    items[i]["study_id"],
                    [r.row_number for r in groups[i]],
                    f"{type(cause).__name__}: {cause}",
                )
            )
            continue
        group, image, available = groups[i], torch.as_tensor(out["image"]), torch.as_tensor(out["available"])
        if refuse_unanswerable:
            problems = out["problems"]
            for r, why in zip(group, problems, strict=True):
                if why:
                    failures.append(
                        StudyFailure(items[i]["study_id"], [r.row_number], f"ROI {r.case_id}: {why}")
                    )
            keep = [k for k, why in enumerate(problems) if not why]
            if not keep:
                continue
            group, image, available = [group[k] for k in keep], image[keep], available[keep]
        kept.extend(group)
        buffer.add(image, available.float())
    if failures and on_error == "raise":
        raise BadStudiesError(failures)
    for f in failures:
        log.warning("skipped %s", f)
    targets = {t: torch.tensor([encode(t, r.labels[t]) for r in kept], dtype=torch.long) for t in TASKS}
    images, available = buffer.tensors()
    return RoiBank(
        rows=kept,
        images=images,
        available=available,
        targets=targets,
        failures=failures,
    )


def instantiate_transforms(specs: Sequence[Any] | None) -> list[Callable[..., Any]]:
    """``data.transforms.extra`` -> transform objects (Hydra already instantiates ``_target_``
    entries of the datamodule config; plain mappings given in code are instantiated here)."""
    out = []
    for spec in specs or []:
        if isinstance(spec, Mapping) or type(spec).__name__ == "DictConfig":
            from hydra.utils import instantiate

            spec = instantiate(spec)
        if not callable(spec):
            raise TypeError(
                f"data.transforms.extra: {spec!r} is not a transform (give MONAI _target_ entries)"
            )
        out.append(spec)
    return out


class MonaiRoiDataset(Dataset):
    """ROI items of a bank subset, as :class:`~spinelesion.data.dataset.RoiDataset` returns
    them (``image``, ``available``, one target per task, ``index``), with ``transform``
    (MONAI dictionary transforms on ``image`` (C, X, Y, Z)) applied to each item.

    Random transforms are seeded once from ``seed`` (``set_random_state``); each DataLoader
    worker then follows MONAI's own per-worker seeding.
    """

    def __init__(
        self,
        bank: RoiBank,
        indices: Sequence[int],
        spec: RoiSpec,
        context: bool = False,
        transform: Sequence[Callable[..., Any]] | None = None,
        seed: int = 0,
    ):
        self.bank, self.indices, self.spec, self.context = bank, list(indices), spec, context
        compose = Compose(list(transform or []))
        if isinstance(compose, Randomizable):
            compose.set_random_state(seed=int(seed) % (2**32))
        super().__init__(data=self.indices, transform=compose if transform else None)

    def __getitem__(self, key: Any) -> dict[Hashable, Any]:
        index = int(key) if isinstance(key, BankIndex) else self.indices[key]
        image = self.bank.images[index].float()
        if not self.context:
            image = center_crop(image, self.spec.shape).contiguous()
        item: dict[Hashable, Any] = {
            "image": image,
            "available": self.bank.available[index].clone(),
            "index": torch.tensor(index),
        }
        for task in TASKS:
            item[task] = self.bank.targets[task][index]
        if self.transform is not None:
            item = self.transform(item)
            img = item["image"]  # MetaTensor -> plain tensor, as the bank path collates
            item["image"] = (img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)).float()
        return item


def monai_roi_dataset(dm: Any, split: str, augment: bool) -> MonaiRoiDataset:
    """The datamodule's dataset for ``split`` on the MONAI path.

    Training items (``augment``) get, in order: MONAI's per-item augmentation when
    ``data.transforms.augment=monai`` (ending with the centre crop), then
    ``data.transforms.extra``. With the batched augmentation the items keep their context box
    (C, *context_shape), which the extra transforms see and must not resize; the batch is
    augmented and cropped after transfer, as on the bank path.
    """
    transforms: list[Any] = []
    context = False
    if augment and dm.augment_cfg.enabled:
        context = True
        if dm.augment_mode == "monai":
            transforms += monai_augmentation(dm.augment_cfg, dm.spec)
    if augment:
        transforms += list(dm.extra_transforms)
    return MonaiRoiDataset(
        dm.bank, dm.split_indices[split], dm.spec, context=context, transform=transforms, seed=dm.seed
    )


def monai_augmentation(cfg: AugmentConfig, spec: RoiSpec) -> list[Any]:
    """MONAI's per-item transforms standing in for :class:`~spinelesion.data.augment.BatchAugment`
    (same probabilities and ranges where MONAI has the operation), ending with the centre crop
    to the network input. Used by ``data.transforms.augment: monai`` and by the benchmark.

    Not covered: sequence dropout (MONAI has no transform that edits the availability flags).
    """
    from monai.transforms import (
        CenterSpatialCropd,
        RandAdjustContrastd,
        RandAffined,
        RandBiasFieldd,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSimulateLowResolutiond,
    )

    k = "image"
    return [
        RandAffined(
            k,
            prob=cfg.affine_prob,
            rotate_range=[float(np.deg2rad(a)) for a in cfg.rotate_deg],
            scale_range=[cfg.scale] * 3,
            translate_range=[t / s for t, s in zip(cfg.translate_mm, spec.spacing, strict=True)],
            padding_mode="zeros",
        ),
        RandFlipd(k, prob=cfg.flip_lr_prob, spatial_axis=0),  # left-right only: see data/augment.py
        RandBiasFieldd(k, prob=cfg.bias_prob, coeff_range=(0.0, cfg.bias_coeff)),
        RandAdjustContrastd(k, prob=cfg.gamma_prob, gamma=cfg.gamma),
        RandScaleIntensityd(k, factors=cfg.scale_intensity, prob=cfg.scale_intensity_prob),
        RandShiftIntensityd(k, offsets=cfg.shift_intensity, prob=cfg.shift_intensity_prob),
        RandGaussianNoised(k, prob=cfg.noise_prob, std=cfg.noise_std),
        RandGaussianSmoothd(
            k,
            prob=cfg.smooth_prob,
            sigma_x=cfg.smooth_sigma,
            sigma_y=cfg.smooth_sigma,
            sigma_z=cfg.smooth_sigma,
        ),
        RandSimulateLowResolutiond(k, prob=cfg.lowres_prob, zoom_range=cfg.lowres_zoom),
        CenterSpatialCropd(k, roi_size=spec.shape),
    ]
