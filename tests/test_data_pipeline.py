"""From a generated manifest to batches: shapes, flags, cache, determinism, splits, bad studies."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import NoReturn

import numpy as np
import pydicom
import pytest
import torch
from helpers_data import assert_bank_is_the_primitives

from spinelesion.data.datamodule import SpineDataModule
from spinelesion.data.dataset import BadStudiesError
from spinelesion.data.manifest import read_manifest
from spinelesion.data.monai_pipeline import build_roi_bank
from spinelesion.data.roi import RoiSpec
from spinelesion.labels import SEQUENCES

# Every test reads the session's tiny_dataset (24 generated studies, minutes on the 2-core CPU).
pytestmark = pytest.mark.slow


def dm_for(manifest: Path, cache: Path | None, **kw: object) -> SpineDataModule:
    args = {"batch_size": 4, "num_workers": 0, "progress": False, "seed": 3}
    args.update(kw)
    return SpineDataModule(manifest, cache_dir=cache, **args)  # type: ignore[arg-type]  # test options of mixed types


@pytest.fixture()
def dicom_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every pixel-reading pydicom.dcmread call (header-only reads for validation are not counted)."""
    calls: list[str] = []
    real = pydicom.dcmread

    def counting(fp, *a, **k):  # noqa: ANN001
        if not k.get("stop_before_pixels"):
            calls.append(str(fp))
        return real(fp, *a, **k)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    return calls


def test_batches_have_the_contract_shape_and_missing_sequences_are_flagged(
    tiny_dataset: Path, tmp_path: Path
):
    dm = dm_for(tiny_dataset, tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    # training items carry their context box; the batch is augmented and cropped on its device
    assert tuple(batch["image"].shape) == (4, 4, *RoiSpec().context_shape)
    aug = dm.augmenter()
    image, available = aug(batch["image"], batch["available"], aug.generator(batch["image"].device, 0, 0, 0))
    assert tuple(image.shape) == (4, 4, *RoiSpec().shape)
    assert image.dtype == torch.float32 and torch.isfinite(image).all()
    assert bool((available <= batch["available"]).all())  # dropout only removes sequences
    val = next(iter(dm.val_dataloader()))
    assert tuple(val["image"].shape[1:]) == (4, *RoiSpec().shape)
    # every bank entry's flags match the manifest's sequence columns, and missing ones are zero
    manifest = read_manifest(tiny_dataset)
    by_case = {r.case_id: r for r in manifest.rows}
    saw_missing = False
    for i, row in enumerate(dm.bank.rows):
        expected = [s in by_case[row.case_id].sequences for s in SEQUENCES]
        assert dm.bank.available[i].bool().tolist() == expected
        for c, present in enumerate(expected):
            if not present:
                saw_missing = True
                assert float(dm.bank.images[i, c].abs().max()) == 0.0
    assert saw_missing, "the generated set should include a study with a missing sequence"


def test_second_epoch_and_second_run_read_no_dicom_and_a_changed_file_is_reread(
    tiny_dataset: Path, tmp_path: Path, dicom_reads: list[str]
):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset.parent, data)
    manifest = data / "manifest.csv"
    dm = dm_for(manifest, tmp_path / "cache")
    dm.setup("fit")
    first = len(dicom_reads)
    assert first > 0
    loader = dm.train_dataloader()
    for _epoch in range(2):
        for _ in loader:
            pass
    assert len(dicom_reads) == first  # epochs read from memory
    before = len(dicom_reads)
    studies = len({r.study_id for r in dm.bank.rows})
    entries = sorted((tmp_path / "cache" / "monai").glob("*.pt"))
    assert len(entries) == studies  # one PersistentDataset entry per study
    dm2 = dm_for(manifest, tmp_path / "cache")
    dm2.setup("fit")
    assert len(dicom_reads) == before  # a second run decodes nothing: the disk cache serves it
    assert torch.equal(dm2.bank.images.dense(), dm.bank.images.dense())
    # change one slice of one study: that study, and only it, is read again
    with open(manifest) as fh:
        row = next(csv.DictReader(fh))
    series = data / row["t2"] if row["t2"] else data / row["t1"]
    first_file = sorted(series.iterdir())[0]
    ds = pydicom.dcmread(first_file)
    ds.SeriesDescription = ds.SeriesDescription + " edited"
    ds.save_as(first_file)
    mark = len(dicom_reads)
    dm3 = dm_for(manifest, tmp_path / "cache")
    dm3.setup("fit")
    assert len(set((tmp_path / "cache" / "monai").glob("*.pt")) - set(entries)) == 1  # its new key
    reread = {Path(p).parent.parent.parent.name for p in dicom_reads[mark:] if "studies" in p}
    assert reread == {row["study_id"]}


def test_same_seed_same_batches(tiny_dataset: Path, tmp_path: Path):
    def first_batches(seed: int) -> list[torch.Tensor]:
        dm = dm_for(tiny_dataset, tmp_path / "cache", seed=seed)
        dm.setup("fit")
        out = []
        for i, b in enumerate(dm.train_dataloader()):
            out.append(b["image"])
            if i == 1:
                break
        return out

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    assert not torch.allclose(a[0], c[0])


@pytest.mark.parametrize("balanced", [True, False])
def test_samples_per_epoch_fixes_the_training_epoch_whatever_the_mix(
    tiny_dataset: Path, tmp_path: Path, balanced: bool
):
    dm = dm_for(tiny_dataset, tmp_path / "cache", samples_per_epoch=10, balanced_sampling=balanced)
    dm.setup("fit")
    n_train = len(dm.split_indices["train"])
    assert n_train > 10  # the fixed epoch is smaller than one pass over the split here
    loader = dm.train_dataloader()
    assert len(loader) == 3 and sum(b["image"].shape[0] for b in loader) == 10
    epochs = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        epochs.append([int(i) for i in loader.sampler])
    assert epochs[0] != epochs[1] and all(i in set(dm.split_indices["train"]) for i in epochs[0] + epochs[1])
    # evaluation still reads every ROI of its split once
    val = dm.val_dataloader()
    assert sum(b["image"].shape[0] for b in val) == len(dm.split_indices["val"])
    with pytest.raises(ValueError, match="samples_per_epoch"):
        dm_for(tiny_dataset, None, samples_per_epoch=0)


def test_same_batches_with_worker_processes(tiny_dataset: Path, tmp_path: Path):
    dm0 = dm_for(tiny_dataset, tmp_path / "cache", num_workers=0)
    dm2 = dm_for(tiny_dataset, tmp_path / "cache", num_workers=2)
    dm0.setup("fit")
    dm2.setup("fit")
    b0 = next(iter(dm0.train_dataloader()))
    b2 = next(iter(dm2.train_dataloader()))
    torch.testing.assert_close(b0["image"], b2["image"])


def _manifest_with_splits(tiny_dataset: Path, path: Path, split_of_row: dict[int, str]) -> Path:
    """A copy of the tiny manifest (absolute file paths) with the ``split`` of some rows set."""
    with open(tiny_dataset, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, r in enumerate(rows):
        for k in SEQUENCES:
            if r.get(k):
                r[k] = str(tiny_dataset.parent / r[k])
        r["split"] = split_of_row.get(i, "")
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) + ([] if "split" in rows[0] else ["split"]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_given_splits_are_kept_by_patient_and_a_patient_in_two_splits_is_refused(
    tiny_dataset: Path, tmp_path: Path
):
    """The manifest may fix a patient's split; the data module keeps it for every row of that
    patient, splits the others, and refuses a manifest that puts one patient in two splits."""
    rows = read_manifest(tiny_dataset).rows
    by_patient: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_patient.setdefault(r.patient_id, []).append(i)
    patient, idx = next((p, ix) for p, ix in sorted(by_patient.items()) if len(ix) >= 2)
    given = _manifest_with_splits(tiny_dataset, tmp_path / "given.csv", {idx[0]: "test"})
    dm = dm_for(given, None, check_geometry=False)
    loaded = dm.load_manifest().rows
    assert {r.split for r in loaded if r.patient_id == patient} == {"test"}  # the unlabelled rows follow
    assert {r.split for r in loaded} == {"train", "val", "test"}
    clash = _manifest_with_splits(tiny_dataset, tmp_path / "clash.csv", {idx[0]: "test", idx[1]: "train"})
    with pytest.raises(
        Exception, match=rf"patient '{patient}' is in split 'test' in row .* and 'train' here"
    ):
        dm_for(clash, None, check_geometry=False).load_manifest()


def test_nifti_and_dicom_manifests_give_the_same_rois(tiny_dataset: Path):
    spec = RoiSpec()
    a = build_roi_bank(read_manifest(tiny_dataset).rows[:4], spec, progress=False)
    b = build_roi_bank(
        read_manifest(tiny_dataset.parent / "manifest_nifti.csv").rows[:4], spec, progress=False
    )
    x, y = a.images.dense().float(), b.images.dense().float()
    # A voxel in the half-voxel ramp at a series' edge is knife-edge between "outside" (exactly
    # 0, left out of the normalisation) and "inside": the DICOM geometry, stored as decimal
    # text, may put it on the other side. Phantom v2 series hug their ROIs, so ROI contexts
    # reach such edges. Everywhere both call inside, the ROIs agree; the edge cases are rare.
    both = (x != 0) & (y != 0)
    torch.testing.assert_close(x[both], y[both], atol=2e-3, rtol=0)
    assert ((x != 0) != (y != 0)).float().mean() < 1e-5


def _break_one_study(tmp_path: Path, tiny_dataset: Path) -> tuple[Path, str]:
    data = tmp_path / "broken"
    shutil.copytree(tiny_dataset.parent, data, ignore=shutil.ignore_patterns("*.nii.gz"))
    with open(data / "manifest.csv") as fh:
        row = next(csv.DictReader(fh))
    series = data / (row["t2"] or row["t1"])
    files = sorted(series.iterdir())
    files[len(files) // 2].unlink()  # a missing slice
    return data / "manifest.csv", row["study_id"]


def test_bad_study_fails_training_fast_with_its_rows(tiny_dataset: Path, tmp_path: Path):
    manifest, study = _break_one_study(tmp_path, tiny_dataset)
    dm = dm_for(manifest, None)
    with pytest.raises(BadStudiesError) as err:
        dm.setup("fit")
    text = str(err.value)
    assert study in text and "missing slice" in text and "manifest rows" in text


def test_same_rois_as_their_primitives_on_a_fixed_set_and_bad_studies_skipped(
    tiny_dataset: Path, tmp_path: Path
):
    """Issue 35: one study-preparation path, the same ROIs as the retired npz path computed.

    Five phantom studies (one with a missing slice, one lacking a sequence) and a ROI far outside
    its study, as evaluate builds them (skip, refuse what cannot be answered), from the studies
    and again from the filled cache: rows, crops, flags and failures are prepare_study -> to_half
    -> roi_problems -> crop_study_rois bit for bit, word for word."""
    import dataclasses

    manifest, broken = _break_one_study(tmp_path, tiny_dataset)
    rows = read_manifest(manifest).rows
    order = list(dict.fromkeys(r.study_id for r in rows))
    lacking = next(
        s for s in order if any(len(r.sequences) < len(SEQUENCES) for r in rows if r.study_id == s)
    )
    chosen = set(order[:5]) if lacking in order[:4] else {*order[:4], lacking}
    assert broken in chosen and lacking in chosen and len(chosen) == 5
    fixed = [r for r in rows if r.study_id in chosen]
    far = fixed[-1]
    fixed.append(
        dataclasses.replace(
            far, case_id="far", row_number=len(rows) + 1, center_lps=far.center_lps + [0.0, 0.0, 900.0]
        )
    )
    spec = RoiSpec()
    for _ in range(2):  # the second from the PersistentDataset
        bank = build_roi_bank(
            fixed, spec, tmp_path / "cache", on_error="skip", progress=False, refuse_unanswerable=True
        )
        assert_bank_is_the_primitives(bank, fixed, spec, refuse_unanswerable=True)
    assert [f.study_id for f in bank.failures] == [broken, far.study_id]
    assert "missing slice" in bank.failures[0].reason and "outside the study" in bank.failures[1].reason
    assert bank.failures[1].rows == [len(rows) + 1]
    assert [r.case_id for r in bank.rows] == [r.case_id for r in fixed if r.study_id != broken][:-1]
    assert not bank.available.bool().all()  # the study lacking a sequence is in the set


def test_a_bank_that_cannot_fit_in_memory_is_refused_before_anything_is_read(
    tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
):
    """Refused with the numbers, instead of the kernel killing the run half-way."""
    from spinelesion.data import dataset
    from spinelesion.io.limits import ResourceLimitError

    rows = read_manifest(tiny_dataset).rows
    per_roi = len(SEQUENCES) * int(np.prod(RoiSpec().context_shape)) * 2
    monkeypatch.setattr(dataset, "available_memory", lambda: per_roi * len(rows) // 2)

    from spinelesion.data.monai_transforms import LoadStudyd

    reads: list[object] = []

    def no_reads(self: object, data: object) -> NoReturn:
        reads.append(data)
        raise AssertionError("read a study before checking memory")

    with monkeypatch.context() as m:
        m.setattr(LoadStudyd, "__call__", no_reads)
        with pytest.raises(ResourceLimitError, match=rf"{len(rows)} ROIs need about .* available"):
            build_roi_bank(rows, RoiSpec(), progress=False)
    assert not reads
    monkeypatch.setattr(dataset, "available_memory", lambda: None)  # unknown (not Linux): no check
    one = [r for r in rows if r.study_id == rows[0].study_id]
    assert len(build_roi_bank(one, RoiSpec(), progress=False)) == len(one)


def test_meminfo_fields_read_in_bytes():
    from spinelesion.io.limits import meminfo_bytes

    if not Path("/proc/meminfo").is_file():
        pytest.skip("no /proc/meminfo (not Linux)")
    total, free = meminfo_bytes("MemTotal"), meminfo_bytes("MemAvailable")
    assert total is not None and free is not None and 0 < free <= total
    assert total > 1 << 28  # bytes, not kB
    assert meminfo_bytes("NoSuchField") is None


def test_the_datamodule_and_its_yaml_give_the_same_defaults() -> None:
    """One source per setting (issue 35): code that builds a SpineDataModule (or an AugmentConfig)
    without Hydra gets what configs/data/default.yaml says; the two disagreed on balanced sampling
    and the evaluation batch."""
    import dataclasses
    import inspect

    import yaml

    from spinelesion.config_path import CONFIG_DIR
    from spinelesion.data.augment import AugmentConfig

    cfg = yaml.safe_load((Path(CONFIG_DIR) / "data" / "default.yaml").read_text())
    defaults = {
        k: p.default
        for k, p in inspect.signature(SpineDataModule.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    # set per run by Hydra (a path or an interpolation), or a mapping whose defaults live in code
    per_run = {"manifest", "cache_dir", "seed", "roi", "splits", "augment", "transforms", "source_weights"}
    compared = sorted(set(cfg) & set(defaults) - per_run)
    assert {"balanced_sampling", "eval_batch_size", "batch_size", "place_balance"} <= set(compared)
    assert {k: cfg[k] for k in compared} == {k: defaults[k] for k in compared}
    fields = {f.name: f.default for f in dataclasses.fields(AugmentConfig)}
    assert cfg["augment"] and {
        k: tuple(v) if isinstance(v, list) else v for k, v in cfg["augment"].items()
    } == {k: fields[k] for k in cfg["augment"]}


def test_the_bank_stores_only_the_sequences_each_roi_has():
    """Real exams are one sequence of four: the bank keeps each ROI's own channels and reads the
    others as zeros, exactly the dense tensor it replaces, in a fraction of the memory."""
    import pytest

    from spinelesion.data.dataset import BankBuffer
    from spinelesion.data.roi import RoiSpec

    spec = RoiSpec()
    g = torch.Generator().manual_seed(0)
    flags = torch.tensor(
        [[0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float
    )
    crops = torch.randn((5, 4, *spec.context_shape), generator=g) * flags[:, :, None, None, None]
    buffer = BankBuffer(5, spec, channels=[1, 1, 4, 2, 1])
    buffer.add(crops[:3], flags[:3])  # study by study
    buffer.add(crops[3:], flags[3:])
    packed, available = buffer.tensors()
    dense = crops.half()
    assert torch.equal(packed.dense(), dense) and torch.equal(available, flags)
    assert torch.equal(packed[2], dense[2]) and torch.equal(packed[3, 2], dense[3, 2])
    assert torch.equal(packed[[4, 0]], dense[[4, 0]]) and torch.equal(packed[1:3], dense[1:3])
    assert packed.shape == dense.shape and packed.dtype == torch.float16
    assert packed.nbytes == 9 / 20 * dense.numel() * 2  # 9 channels stored of 20
    too_many = BankBuffer(1, spec, channels=[1])
    with pytest.raises(RuntimeError, match="more sequence channels than the manifest rows promised"):
        too_many.add(crops[2:3], flags[2:3])
