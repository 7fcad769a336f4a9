"""The data path: studies -> ROI bank -> training items, built from MONAI data components.

* Each study is a dictionary item (sequence paths, ROI centres, a key that fingerprints the
  files and settings) sent through :func:`~spinelesion.data.monai_transforms.study_transforms`
  (load with :class:`~spinelesion.io.monai_reader.SpineSeriesReader`, reference grid, float16,
  context crops, normalisation, each ROI's reason not to be answered), cached on disk by
  :class:`monai.data.PersistentDataset` under ``cache_dir/monai`` (in memory without a cache
  folder): :func:`study_dataset`, filled by :func:`warm_cache`.
* :func:`build_roi_bank` keeps the crops as a :class:`~spinelesion.data.dataset.RoiBank` (splits,
  sampling, class counts and the batched augmentation work on it), naming the manifest rows of
  every study that failed.
* :func:`roi_dataset` serves ROI items (:class:`~spinelesion.data.dataset.RoiDataset`) and applies
  ``data.transforms`` (checked by :func:`transforms_options`) to training items: MONAI ``_target_``
  entries (``extra``), and :func:`monai_augmentation`, MONAI's per-item counterpart of the batched
  augmentation, when ``augment: monai``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset, PersistentDataset
from monai.transforms import CastToTyped, Compose, Randomizable
from tqdm.auto import tqdm

from spinelesion.atomic import refuse_symlinks
from spinelesion.data.augment import AugmentConfig
from spinelesion.data.cache import mark_used, study_key
from spinelesion.data.dataset import BadStudiesError, BankBuffer, RoiBank, RoiDataset, StudyFailure
from spinelesion.data.manifest import Row
from spinelesion.data.monai_transforms import study_transforms
from spinelesion.data.roi import RoiSpec
from spinelesion.labels import SEQUENCES, TASKS, encode
from spinelesion.parallel import map_jobs

log = logging.getLogger(__name__)

PIPELINE_VERSION = "monai-3"  # 2: crops kept as float16 (as the bank holds them); 3: and each ROI's problems
AUGMENT_MODES = ("batched", "monai")


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
    if not cache_dir:  # None or "": no disk cache
        return Dataset(list(items), transform)
    # a cache inside a run's output folder follows no link out of it
    folder = refuse_symlinks(Path(cache_dir) / "monai")
    return PersistentDataset(list(items), transform, cache_dir=folder)


def warm_cache(
    rows: Sequence[Row],
    spec: RoiSpec,
    cache_dir: str | Path,
    reference: str = "auto",
    progress: bool = True,
    workers: int = 1,
) -> None:
    """Fill the PersistentDataset with every study of ``rows`` without keeping the crops (a study
    that fails is counted in a warning; setup reads it again and raises with its rows). Building
    a bank here held every crop in memory, and Lightning's second ``prepare_data`` inside ``fit``
    asked for a second bank beside the datamodule's: a 14,376-ROI mix (15.4 GiB) was refused on
    a 24 GiB machine (2026-12-06). ``workers`` processes share the studies not yet cached (the
    same files: each study is written whole, under its own name, by one of them); reading and
    resampling was 3.2 of stage1's 15 minutes in one process (2026-12-07)."""
    items, _ = study_items(rows, spec, reference)
    ds = study_dataset(items, spec, reference, cache_dir)
    todo = []
    for item in items:  # loading a cached one would read it twice a fit: it is only marked used
        cached = _cache_file(ds, item)
        if cached is not None and cached.is_file():
            mark_used(cached)
        else:
            todo.append(item)
    workers = max(1, int(workers))
    size = max(1, min(8, len(todo) // (4 * workers)))  # small chunks: the bar moves, the workers stay even
    chunks = [(todo[i : i + size], spec, reference, str(cache_dir)) for i in range(0, len(todo), size)]
    bar = tqdm(total=len(todo), desc="cache", unit="study", disable=not progress or not todo)
    failed = 0
    for done, bad in map_jobs(_cache_items, chunks, workers, initializer=_one_torch_thread):
        failed += bad
        bar.update(done)
    bar.close()
    if failed:
        log.warning("%d study(ies) failed while caching; setup() will list them", failed)


def _cache_items(job: tuple[list[dict[str, Any]], RoiSpec, str, str]) -> tuple[int, int]:
    """Load ``items`` through a PersistentDataset of ``cache_dir`` (a worker of :func:`warm_cache`):
    (studies read, studies that failed)."""
    items, spec, reference, cache_dir = job
    ds = study_dataset(items, spec, reference, cache_dir)
    failed = 0
    for i in range(len(items)):
        try:
            ds[i]
        except Exception:  # noqa: BLE001 - reported with its rows by setup
            failed += 1
    return len(items), failed


def _one_torch_thread() -> None:
    """A cache worker's torch on one thread: the workers share the cores."""
    torch.set_num_threads(1)


def _cache_file(ds: Dataset, item: Mapping[str, Any]) -> Path | None:
    """The file ``ds`` (a PersistentDataset) keeps ``item`` in, by the name it gives it
    (``_cachecheck``: item hash + transform hash); None without a disk cache."""
    if not isinstance(ds, PersistentDataset) or ds.cache_dir is None:
        return None
    name = ds.hash_func(item).decode("utf-8") + ds.transform_hash
    return Path(ds.cache_dir) / f"{name}.pt"


def build_roi_bank(
    rows: Sequence[Row],
    spec: RoiSpec,
    cache_dir: str | Path | None = None,
    reference: str = "auto",
    on_error: str = "raise",
    progress: bool = True,
    refuse_unanswerable: bool = False,
) -> RoiBank:
    """Crop every ROI of ``rows`` through the study dataset (the PersistentDataset under
    ``cache_dir/monai``; in memory when ``cache_dir`` is None).

    Args:
        on_error: ``"raise"``: read every study, then raise :class:`BadStudiesError` listing
            all that failed (training must not start on a partly broken set);
            ``"skip"``: leave them out and list them in ``bank.failures``.
        refuse_unanswerable: leave out (as failures naming the row) ROIs that
            :func:`~spinelesion.data.dataset.roi_problems` refuses, as predict does (evaluate: no
            score from a crop of padding or a blank one).
    """
    items, groups = study_items(rows, spec, reference)
    ds = study_dataset(items, spec, reference, cache_dir)
    kept: list[Row] = []
    buffer = BankBuffer(len(rows), spec, channels=[sum(s in r.sequences for s in SEQUENCES) for r in rows])
    failures: list[StudyFailure] = []
    for i in tqdm(range(len(items)), desc="ROIs", unit="study", disable=not progress):
        try:
            out = ds[i]
            cached = _cache_file(ds, items[i])
            if cached is not None:
                mark_used(cached)
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
    return RoiBank(rows=kept, images=images, available=available, targets=targets, failures=failures)


def transforms_options(transforms: Mapping[str, Any] | None) -> tuple[list[Any], str]:
    """``data.transforms`` -> (extra transforms, augmentation mode), or a ValueError naming the option.

    ``extra``: MONAI dictionary transforms (Hydra ``_target_`` entries) applied to training items;
    ``augment``: ``batched`` (the on-device batch augmentation, :mod:`spinelesion.data.augment`) or
    ``monai`` (MONAI's per-item transforms, :func:`monai_augmentation`).
    """
    values = dict(transforms or {})
    unknown = sorted(set(values) - {"extra", "augment"})
    if unknown:
        raise ValueError(f"data.transforms: unknown key(s) {', '.join(unknown)} (allowed: extra, augment)")
    mode = str(values.get("augment") or "batched")
    if mode not in AUGMENT_MODES:
        raise ValueError(f"data.transforms.augment={mode!r}: expected one of {', '.join(AUGMENT_MODES)}")
    return instantiate_transforms(values.get("extra")), mode


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


def roi_dataset(dm: Any, split: str, augment: bool) -> RoiDataset:
    """The datamodule's dataset for ``split``.

    Training items (``augment``) get, in order: MONAI's per-item augmentation when
    ``data.transforms.augment=monai`` (ending with the centre crop), then
    ``data.transforms.extra``. With the batched augmentation the items keep their context box
    (C, *context_shape), which the extra transforms see and must not resize; the batch is
    augmented and cropped after transfer (``SpineDataModule.on_after_batch_transfer``).

    Random transforms are seeded once from ``dm.seed`` (``set_random_state``); each DataLoader
    worker then follows MONAI's own per-worker seeding.
    """
    transforms: list[Any] = []
    context = False
    if augment and dm.augment_cfg.enabled:
        context = True
        if dm.augment_mode == "monai":
            transforms += monai_augmentation(dm.augment_cfg, dm.spec)
    if augment:
        transforms += list(dm.extra_transforms)
    compose = None
    if transforms:
        compose = Compose(transforms)
        if isinstance(compose, Randomizable):
            compose.set_random_state(seed=int(dm.seed) % (2**32))
    return RoiDataset(dm.bank, dm.split_indices[split], dm.spec, context=context, transform=compose)


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
