"""The data path (:mod:`spinelesion.data.monai_pipeline`) on the first few studies of a manifest
(the CPU is shared: keep it short), and MONAI's per-item augmentation against the batched one.

The first setup (read, resample, crop, normalise, fill the PersistentDataset) against a setup
from the filled cache (what a second training on the same studies pays), the training
loader's ROIs/s (index and collate), end-to-end training ROIs/s (the same plus the batched
augmentation on the CPU and the forward, backward and optimiser step of the default network),
peak resident memory and the cache's size on disk.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from spinelesion.benchmark.timing import measure, peak_memory
from spinelesion.data.roi import RoiSpec
from spinelesion.labels import TASKS

log = logging.getLogger(__name__)


def _dir_mib(path: Path) -> float:
    return (
        round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 2)
        if path.exists()
        else 0.0
    )


def _datamodule(manifest: Path, cache: Path, batch_size: int, spec: RoiSpec) -> Any:
    from spinelesion.data.datamodule import SpineDataModule

    return SpineDataModule(
        manifest,
        cache_dir=cache,
        batch_size=batch_size,
        progress=False,
        splits={"train": 1.0},
        check_geometry=False,
        roi=spec,
        balanced_sampling=False,
    )


def _setup(dm: Any) -> None:
    dm.prepare_data()
    dm.setup("fit")


def _epochs(dm: Any, min_rois: int, step: Any | None = None, augment: bool = True) -> tuple[int, float]:
    """(ROIs, seconds) over whole training epochs until at least ``min_rois`` went through:
    the loader, then (``augment``) the batched augmentation the training step adds on the CPU,
    then ``step``."""
    aug = dm.augmenter() if augment else None
    loader = dm.train_dataloader()
    n, k = 0, 0
    t0 = time.perf_counter()
    while n < min_rois:
        loader.sampler.set_epoch(k)
        for i, batch in enumerate(loader):
            image, flags = batch["image"], batch["available"]
            if aug is not None:
                image, flags = aug(image, flags, aug.generator(image.device, 0, k * 1000 + i, 0))
            if step is not None:
                step(image, flags, batch)
            n += image.shape[0]
        k += 1
    return n, time.perf_counter() - t0


def _train_step(spec: RoiSpec) -> Any:
    from spinelesion.models.networks import build_network

    net = build_network({}).train()  # the default backbone
    opt = torch.optim.AdamW(net.parameters(), 1e-3)

    def step(image: torch.Tensor, flags: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        out = net(image, flags)
        loss = torch.stack(
            [
                torch.nn.functional.cross_entropy(o, batch[t], ignore_index=-100)
                for o, t in zip(out, TASKS, strict=True)
            ]
        ).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure_data_path(
    manifest: Path, cache: Path, batch_size: int, min_rois: int, train_rois: int, spec: RoiSpec
) -> dict[str, Any]:
    """The figures of one cache folder (run in a fresh process, so its peak memory is its own)."""
    first: dict[str, Any] = {}

    def build() -> None:
        t0 = time.perf_counter()
        first["dm"] = _datamodule(manifest, cache, batch_size, spec)
        _setup(first["dm"])
        first["s"] = time.perf_counter() - t0

    mem = peak_memory(build)
    dm = first["dm"]
    cached = measure(lambda: _setup(_datamodule(manifest, cache, batch_size, spec)), repeats=2, warmup=0)
    n, secs = _epochs(dm, min_rois, augment=False)
    n_train, secs_train = _epochs(dm, train_rois, _train_step(spec))
    return {
        "rois": len(dm.bank),
        "first_setup_s": round(first["s"], 2),
        "cached_setup_s": round(cached["median_s"], 3),
        "cached_setup": cached,
        "first_over_cached_setup": round(first["s"] / max(cached["median_s"], 1e-9), 1),
        "loader_rois_per_s": round(n / secs, 1),
        "train_rois_per_s": round(n_train / secs_train, 1),
        "peak_rss_mib": mem["peak_rss_mib"],
        "cache_mib": _dir_mib(cache),
    }


def data_path(
    manifest: Path,
    studies: int = 6,
    batch_size: int = 16,
    min_rois: int = 128,
    train_rois: int = 32,
    spec: RoiSpec | None = None,
) -> dict[str, Any]:
    """The data path and both augmentations on the first ``studies`` studies of ``manifest``;
    see the module docstring."""
    import multiprocessing as mp

    from spinelesion.data.manifest import subset_manifest

    spec = spec or RoiSpec()
    tmp = Path(tempfile.mkdtemp(prefix="bench-monai-"))
    out: dict[str, Any] = {"studies": studies, "batch_size": batch_size}
    try:
        sub = subset_manifest(manifest, tmp / "manifest.csv", studies)
        args = (sub, tmp / "cache", batch_size, min_rois, train_rois, spec)
        with mp.get_context("spawn").Pool(1) as pool:  # a fresh process: its peak memory is the path's own
            out.update(pool.apply(measure_data_path, args))
        log.info("data path: %s", {k: v for k, v in out.items() if k != "cached_setup"})
        dm = _datamodule(sub, tmp / "cache", batch_size, spec)
        _setup(dm)
        out["augmentation"] = compare_augmentation(dm, batch_size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def compare_augmentation(dm: Any, batch_size: int = 16, batches: int = 4, repeats: int = 3) -> dict[str, Any]:
    """ROIs/s of the batched augmentation against MONAI's per-item transforms (same ranges,
    see :func:`~spinelesion.data.monai_pipeline.monai_augmentation`) on the same context crops."""
    from monai.transforms import Compose
    from torch.utils.data import default_collate

    from spinelesion.data.augment import BatchAugment
    from spinelesion.data.monai_pipeline import monai_augmentation

    ds = dm.dataset("train", augment=True)  # context boxes, no per-item transform
    items = [ds[i % len(ds)] for i in range(batch_size * batches)]
    loaded = [default_collate(items[b * batch_size : (b + 1) * batch_size]) for b in range(batches)]
    batched = BatchAugment(dm.augment_cfg, dm.spec)
    per_item = Compose(monai_augmentation(dm.augment_cfg, dm.spec))
    per_item.set_random_state(seed=0)

    def run_batched() -> None:
        for step, batch in enumerate(loaded):
            batched(batch["image"], batch["available"], batched.generator(batch["image"].device, 0, step, 0))

    def run_monai() -> None:
        for b in range(batches):
            default_collate(
                [
                    {"image": torch.as_tensor(per_item({"image": it["image"]})["image"]).float()}
                    for it in items[b * batch_size : (b + 1) * batch_size]
                ]
            )

    tb, tm = measure(run_batched, repeats=repeats), measure(run_monai, repeats=repeats)
    n = batch_size * batches
    return {
        "rois_timed": n,
        "batched_rois_per_s": round(n / tb["median_s"], 1),
        "monai_per_item_rois_per_s": round(n / tm["median_s"], 1),
        "monai_ms_per_roi": round(1000 * tm["median_s"] / n, 2),
        "batched_over_monai": round(tm["median_s"] / tb["median_s"], 2),
        "batched": tb,
        "monai": tm,
    }
