"""The data path: ROIs through MONAI transforms, PersistentDataset and DataLoader."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import torch
from helpers_data import assert_bank_is_the_primitives
from helpers_io import AXIAL, SAGITTAL, make_volume, write_series
from omegaconf import OmegaConf

from spinelesion.config_path import CONFIG_DIR
from spinelesion.data.datamodule import SpineDataModule
from spinelesion.data.roi import RoiSpec
from spinelesion.io.nifti import write_nifti

SPEC = {"shape": [16, 20, 20], "spacing": [2.0, 2.0, 2.0], "margin": 1.25}
LABELS = [
    ("none", "none"),
    ("extradural", "benign"),
    ("intramedullary", "pathologic"),
    ("intradural_extramedullary", "none"),
    ("none", "benign"),
    ("extradural", ""),
]


def _manifest(root: Path, studies: int = 3) -> Path:
    """Studies on different grids: t2 sagittal NIfTI, t1 oblique axial DICOM, two ROIs each."""
    rows = []
    for s in range(studies):
        folder = root / f"S{s}"
        folder.mkdir(parents=True)
        write_nifti(
            make_volume(shape=(40, 48, 12), spacing=(1.0, 1.0, 3.0), axes=SAGITTAL, centre=(0, 0, 0), seed=s),
            folder / "t2.nii.gz",
        )
        write_series(
            make_volume(
                shape=(32, 32, 16),
                spacing=(1.2, 1.2, 2.5),
                axes=AXIAL,
                centre=(1, 0, -2),
                seed=10 + s,
                oblique_deg=6.0 * s,
            ),
            folder / "t1",
        )
        for r, center in enumerate([(0.0, 2.0, -4.0), (3.0, -5.0, 8.0)]):
            comp, frac = LABELS[(2 * s + r) % len(LABELS)]
            rows.append(
                {
                    "case_id": f"S{s}_r{r}",
                    "study_id": f"S{s}",
                    "patient_id": f"P{s}",
                    "split": ["train", "train", "val"][s],
                    "t1": f"S{s}/t1",
                    "t2": f"S{s}/t2.nii.gz",
                    "x_mm": center[0],
                    "y_mm": center[1],
                    "z_mm": center[2],
                    "compartment": comp,
                    "fracture": frac,
                }
            )
    path = root / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _manifest(tmp_path_factory.mktemp("data"))


def _dm(manifest: Path, cache: Path | None, **kw: object) -> SpineDataModule:
    args: dict = {"batch_size": 2, "progress": False, "seed": 3, "roi": SPEC, "check_geometry": False}
    args.update(kw)
    return SpineDataModule(manifest, cache_dir=cache, **args)


def test_the_datamodules_rois_are_the_primitives_bit_for_bit(manifest: Path, tmp_path: Path):
    """NIfTI and oblique DICOM on other grids, two sequences of four: the datamodule's bank (through
    the filled cache) is prepare_study -> to_half -> crop_study_rois, the retired npz path's sum."""
    from spinelesion.data.manifest import read_manifest

    dm = _dm(manifest, tmp_path / "b")
    dm.prepare_data()
    dm.setup("fit")
    bank = dm.bank
    assert len(bank) == 6 and bank.available[:, :2].all() and not bank.available[:, 2:].any()
    assert bank.images.dense().float().abs().amax() > 0.5
    assert_bank_is_the_primitives(bank, read_manifest(manifest).rows, dm.spec)
    assert len(list((tmp_path / "b" / "monai").glob("*.pt"))) == 3  # one PersistentDataset entry per study


def test_prepare_data_fills_the_cache_without_a_bank_and_not_again_after_setup(
    manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Building a bank to warm the cache held every crop in memory, and Lightning's second
    prepare_data inside fit asked for a second bank beside the datamodule's (a 15 GiB mix refused)."""
    from spinelesion.data import monai_pipeline

    dm = _dm(manifest, tmp_path / "c")

    def no_bank(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("prepare_data allocated a bank")

    monkeypatch.setattr(monai_pipeline, "BankBuffer", no_bank)
    dm.prepare_data()
    assert list((tmp_path / "c" / "monai").glob("*.pt"))  # the cache is filled
    monkeypatch.undo()
    dm.setup("fit")

    def no_reads(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("prepare_data read the studies again after setup")

    monkeypatch.setattr(monai_pipeline, "study_dataset", no_reads)
    dm.prepare_data()  # as Lightning does inside fit: nothing to do
    monkeypatch.undo()
    # a new run on the filled cache: prepare_data finds every study there without loading one
    # (it loaded each, and setup loaded each again)
    import torch

    loads: list[object] = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    _dm(manifest, tmp_path / "c").prepare_data()
    assert loads == []


def test_persistent_cache_is_read_back_and_a_changed_file_is_reread(
    manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first = _dm(manifest, tmp_path / "c")
    first.setup("fit")

    def no_read(*_a: object, **_k: object) -> None:
        raise AssertionError("a study was read again although it is cached")

    import spinelesion.io.monai_reader as monai_reader

    real = monai_reader.read_volume
    monkeypatch.setattr(monai_reader, "read_volume", no_read)
    second = _dm(manifest, tmp_path / "c")
    second.setup("fit")
    assert torch.equal(first.bank.images.dense(), second.bank.images.dense())
    kept = [torch.load(f, weights_only=False) for f in (tmp_path / "c" / "monai").glob("*.pt")]
    # the crops are kept as the bank holds them (float16: half the disk), one per ROI of the study
    assert kept and all(
        k["image"].dtype == torch.float16 and k["image"].shape[0] == len(k["rois"]) for k in kept
    )
    reads: list[str] = []
    monkeypatch.setattr(monai_reader, "read_volume", lambda p, **k: reads.append(str(p)) or real(p, **k))
    t2 = manifest.parent / "S1" / "t2.nii.gz"
    st = t2.stat()
    os.utime(t2, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, newer file: a new cache key
    third = _dm(manifest, tmp_path / "c")
    third.setup("fit")
    assert sorted({Path(p).parent.name for p in reads}) == ["S1"]


def test_loaders_batches_and_user_transforms(manifest: Path, tmp_path: Path):
    from monai.data import DataLoader as MonaiDataLoader
    from monai.transforms import RandGaussianNoised

    spec = RoiSpec(tuple(SPEC["shape"]), tuple(SPEC["spacing"]), SPEC["margin"])
    plain = _dm(manifest, tmp_path / "d")
    plain.setup("fit")
    loader = plain.train_dataloader()
    assert isinstance(loader, MonaiDataLoader)
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (
        2,
        4,
        *spec.context_shape,
    )  # batched augmentation crops after transfer
    assert type(batch["image"]) is torch.Tensor and batch["image"].dtype == torch.float32
    assert tuple(next(iter(plain.val_dataloader()))["image"].shape) == (2, 4, *spec.shape)

    noisy = _dm(
        manifest,
        tmp_path / "d",
        transforms={"extra": [RandGaussianNoised(keys="image", prob=1.0, std=0.5)]},
    )
    noisy.setup("fit")
    n_item, p_item = noisy.dataset("train")[0], plain.dataset("train")[0]
    assert n_item["index"] == p_item["index"]
    assert (n_item["image"] - p_item["image"]).std() > 0.05  # the user's transform ran on the training item
    assert type(n_item["image"]) is torch.Tensor
    assert torch.equal(
        noisy.dataset("val")[0]["image"], plain.dataset("val")[0]["image"]
    )  # not on validation

    per_item = _dm(manifest, tmp_path / "d", transforms={"augment": "monai"})
    per_item.setup("fit")
    assert per_item.augmenter() is None
    b = next(iter(per_item.train_dataloader()))
    assert tuple(b["image"].shape) == (2, 4, *spec.shape) and torch.isfinite(b["image"]).all()


def test_hydra_config_and_bad_transform_options(manifest: Path, tmp_path: Path):
    import hydra

    cfg = OmegaConf.load(Path(CONFIG_DIR) / "data" / "default.yaml")
    assert "pipeline" not in cfg and cfg.transforms.augment == "batched" and list(cfg.transforms.extra) == []
    cfg.manifest, cfg.cache_dir, cfg.seed, cfg.roi = str(manifest), str(tmp_path / "e"), 1, SPEC
    cfg.transforms.extra = [{"_target_": "monai.transforms.RandGaussianNoised", "keys": "image", "prob": 0.5}]
    dm = hydra.utils.instantiate(cfg)
    assert type(dm.extra_transforms[0]).__name__ == "RandGaussianNoised" and dm.augment_mode == "batched"
    with pytest.raises(ValueError, match="data.transforms.augment='kornia': expected one of batched, monai"):
        _dm(manifest, None, transforms={"augment": "kornia"})
    with pytest.raises(ValueError, match=r"data.transforms: unknown key\(s\) extras"):
        _dm(manifest, None, transforms={"extras": []})
    with pytest.raises(TypeError, match="data.transforms.extra: 3 is not a transform"):
        _dm(manifest, None, transforms={"extra": [3]})


def test_a_broken_study_names_its_rows(manifest: Path, tmp_path: Path):
    from spinelesion.data.dataset import BadStudiesError
    from spinelesion.data.manifest import read_manifest
    from spinelesion.data.monai_pipeline import build_roi_bank

    rows = read_manifest(manifest).rows
    broken = tmp_path / "t2.nii.gz"
    broken.write_bytes(b"not a nifti")
    rows[0].sequences["t2"] = broken
    rows[1].sequences["t2"] = broken
    spec = RoiSpec(tuple(SPEC["shape"]), tuple(SPEC["spacing"]), SPEC["margin"])
    with pytest.raises(
        BadStudiesError, match=r"study 'S0' \(manifest rows 1, 2\): StudyError: study 'S0': t2: .*NIfTI"
    ):
        build_roi_bank(rows, spec, None, progress=False)
    bank = build_roi_bank(rows, spec, None, on_error="skip", progress=False)
    assert len(bank) == 4 and np.all([r.study_id != "S0" for r in bank.rows])
    assert_bank_is_the_primitives(bank, rows, spec)  # the failure in the reader's own words


@pytest.mark.slow
def test_bench_times_the_data_path_and_both_augmentations(manifest: Path):
    from spinelesion.benchmark.monai_path import data_path
    from spinelesion.benchmark.report import _monai_path_rows

    spec = RoiSpec(tuple(SPEC["shape"]), tuple(SPEC["spacing"]), SPEC["margin"])
    out = data_path(manifest, studies=3, batch_size=2, min_rois=8, train_rois=4, spec=spec)
    assert (
        out["rois"] == 6 and out["first_setup_s"] > 0 and out["cached_setup_s"] > 0 and out["cache_mib"] > 0
    )
    assert out["first_over_cached_setup"] > 0 and out["peak_rss_mib"] > 0
    assert out["loader_rois_per_s"] > 0 and out["train_rois_per_s"] > 0
    aug = out["augmentation"]
    assert aug["batched_rois_per_s"] > 0 and aug["monai_per_item_rois_per_s"] > 0
    rows = _monai_path_rows(out)
    assert len(rows) == 4 and "(3 studies, 6 ROIs)" in rows[0] and "bank" not in "".join(rows)


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_two_training_steps_through_lightning_with_a_user_transform(manifest: Path, tmp_path: Path):
    """spinelesion-train with a user transform: the MONAI loader feeds the Lightning loop and the
    batched augmentation hook (two steps only)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from spinelesion.train import train

    out = tmp_path / "run"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            [
                f"data.manifest={manifest}",
                f"data.cache_dir={tmp_path / 'cache'}",
                "data.progress=false",
                "data.batch_size=2",
                "data.check_geometry=false",
                f"data.roi.shape={SPEC['shape']}",
                f"data.roi.spacing={SPEC['spacing']}",
                "+data.transforms.extra=[{_target_: monai.transforms.RandGaussianNoised, keys: image, "
                "prob: 0.5, std: 0.05}]",
                "logger=csv",
                "+trainer.max_steps=2",
                "trainer.max_epochs=1",
                "evaluate_splits=[]",
                "calibrate=false",
                "decision_rule=false",
                "callbacks.progress_bar=null",
                "model.net.widths=[4,8,8,8]",
                "model.net.hidden=8",
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    summary = train(cfg)
    assert summary["epochs"] == 1 and (out / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "cache" / "monai").glob("*.pt"))  # filled by prepare_data, read by setup


def test_cache_workers_fill_the_same_cache_as_one_process(manifest: Path, tmp_path: Path):
    """warm_cache over two worker processes writes the files one process writes, with the same
    tensors (the cache's name is the item's hash: a worker's entry is read as any other)."""
    import torch

    from spinelesion.data.datamodule import roi_spec_from
    from spinelesion.data.manifest import read_manifest
    from spinelesion.data.monai_pipeline import warm_cache

    rows, spec = read_manifest(manifest).rows, roi_spec_from(SPEC)
    warm_cache(rows, spec, tmp_path / "one", progress=False, workers=1)
    warm_cache(rows, spec, tmp_path / "two", progress=False, workers=2)
    one = {p.name: p for p in (tmp_path / "one" / "monai").glob("*.pt")}
    two = {p.name: p for p in (tmp_path / "two" / "monai").glob("*.pt")}
    assert len(one) == 3 and one.keys() == two.keys()
    for name, path in one.items():
        a, b = torch.load(path, weights_only=False), torch.load(two[name], weights_only=False)
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b[key]), (name, key)
            else:
                assert value == b[key] or key == "image_meta_dict", (name, key)


def test_a_cached_study_a_run_reads_is_marked_used_and_the_least_recent_are_pruned_first(
    manifest: Path, tmp_path: Path
):
    """The release's shared cache is cut to a size before each stage, least recently used first:
    warm_cache (a training's first look) and the bank's read mark each cached study used, so the
    studies a run still reads outlive the ones no run asked for since."""
    import os

    from spinelesion.data.cache import prune_cache
    from spinelesion.data.datamodule import roi_spec_from
    from spinelesion.data.manifest import read_manifest
    from spinelesion.data.monai_pipeline import build_roi_bank, warm_cache

    rows, spec = read_manifest(manifest).rows, roi_spec_from(SPEC)
    warm_cache(rows, spec, tmp_path, progress=False)
    files = sorted((tmp_path / "monai").glob("*.pt"))
    assert len(files) == 3
    stale = tmp_path / "monai" / "other_run.pt"
    stale.write_bytes(b"x" * 1000)
    for k, f in enumerate([*files, stale]):
        os.utime(f, (1_000_000 + k, 1_000_000 + k))  # an old day; the stale file the newest of them
    first = [r for r in rows if r.study_id == rows[0].study_id]  # a study's item holds all its ROIs
    warm_cache(first, spec, tmp_path, progress=False)  # cached: not read again, marked used
    used = [f for f in files if f.stat().st_mtime > 2_000_000]
    assert len(used) == 1
    sizes = {f: f.stat().st_size for f in [*files, stale]}
    keep_bytes = sizes[used[0]] + sizes[stale]
    deleted, freed = prune_cache(tmp_path / "monai", keep_bytes)
    assert (deleted, freed) == (2, sum(sizes.values()) - keep_bytes)
    assert sorted(tmp_path.joinpath("monai").iterdir()) == sorted([used[0], stale])
    assert prune_cache(tmp_path / "monai", keep_bytes) == (0, 0) and prune_cache(tmp_path / "none", 0) == (
        0,
        0,
    )
    # a pruned study is prepared again on the next read, and the read marks it used
    bank = build_roi_bank(rows, spec, tmp_path, progress=False)
    assert len(bank.rows) == len(rows) and len(list((tmp_path / "monai").glob("*.pt"))) == 4
    assert all(f.stat().st_mtime > 2_000_000 for f in (tmp_path / "monai").glob("*.pt") if f != stale)
