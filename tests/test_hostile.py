"""Hostile input: never a hang, never an answer from garbage, never an unverified model.

Every case is built on the fly in tmp_path (small files; the 2 GB DICOM files are sparse)
and runs under a time bound. Each line of a case table says what goes in and what must
come out; in the run-level cases a good study sits beside the bad one and must still be
predicted.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers_io import AXIAL, make_volume, write_series

from spinelesion.io.nifti import write_nifti
from spinelesion.io.volume import LPS_TO_RAS, Volume, grid_affine
from spinelesion.models.folder import ModelLoadError, load_model_folder, save_model_folder
from spinelesion.models.networks import build_network

ROI = {"shape": [32, 48, 48], "spacing": [1.5, 1.5, 1.5], "margin": 1.25}
NET = {"backbone": "spinecnn", "widths": [8, 16, 16, 16], "hidden": 16}
SHAPE = (40, 40, 12)
CENTRE = np.array([2.0, -3.0, 5.0])
TWO_GB = 2 * 1024**3
CASE_SECONDS = 60  # generous for a shared 2-core machine; a hang is minutes or forever


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def bounded(seconds: int = CASE_SECONDS) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts even a blocking open() of a named pipe."""

    def on_alarm(signum: int, frame: object) -> None:
        raise CaseTimeout(f"case did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- builders ---------------------------------------------------------------------------------
def volume(
    fill: Callable[[np.ndarray], None] | None = None,
    shape: tuple[int, int, int] = SHAPE,
    spacing: tuple[float, float, float] = (1.5, 1.5, 3.0),
) -> Volume:
    arr = np.random.default_rng(0).uniform(50, 500, size=shape).astype(np.float32)
    if fill is not None:
        fill(arr)
    return Volume(arr, grid_affine(CENTRE, shape, spacing, AXIAL))


def nifti_study(folder: Path, vol: Volume | None = None, name: str = "t2.nii.gz") -> Path:
    write_nifti(vol if vol is not None else volume(), folder / name)
    return folder


def set_all(value: float) -> Callable[[np.ndarray], None]:
    def fill(a: np.ndarray) -> None:
        a[:] = value

    return fill


def some_nan(a: np.ndarray) -> None:
    a[:3, :3, :2] = np.nan


def disagreeing_forms(folder: Path) -> None:
    nifti_study(folder)
    img = nib.load(folder / "t2.nii.gz")
    q = img.affine.copy()
    s = q.copy()
    s[:3, 3] += [0.0, 20.0, 0.0]  # sform 20 mm away from the qform
    img = nib.Nifti1Image(np.asarray(img.dataobj), s)
    img.set_qform(q, code=1)
    img.set_sform(s, code=1)
    nib.save(img, folder / "t2.nii.gz")


def huge_nifti(folder: Path, gz: bool = True) -> None:
    """A NIfTI header declaring 4000^3 int16 voxels, followed by a few bytes only."""
    folder.mkdir(parents=True, exist_ok=True)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4000, 4000, 4000))
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    hdr["vox_offset"] = 352
    data = hdr.binaryblock + b"\0" * 4 + b"\0" * 1024
    if gz:
        (folder / "t2.nii.gz").write_bytes(gzip.compress(data))
    else:
        (folder / "t2.nii").write_bytes(data)


def cut_short(folder: Path, keep: int | None = None) -> None:
    """A NIfTI.gz study whose file ends after ``keep`` bytes (half by default): a copy cut off."""
    nifti_study(folder)
    data = (folder / "t2.nii.gz").read_bytes()
    (folder / "t2.nii.gz").write_bytes(data[: len(data) // 2 if keep is None else keep])


def flipped_byte(folder: Path) -> None:
    """A .nii.gz with one byte of its CRC trailer flipped: the voxels decompress, the check fails."""
    path = nifti_study(folder) / "t2.nii.gz"
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF
    path.write_bytes(bytes(data))


def zero_pixdim(folder: Path) -> None:
    """A NIfTI.gz placed by its qform alone whose pixdim says 0 mm (nibabel reads it as 1 mm)."""
    import gzip
    import struct

    import nibabel as nib

    img = nib.Nifti1Image(
        np.random.default_rng(0).random(SHAPE).astype(np.float32), np.diag([1.5, 1.5, 3.0, 1])
    )
    img.set_sform(None, code=0)
    img.set_qform(np.diag([1.5, 1.5, 3.0, 1]), code=1)
    raw = bytearray(img.to_bytes())
    raw[76 + 4 : 76 + 16] = struct.pack("<3f", 0.0, 0.0, 0.0)  # pixdim[1:4]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t2.nii.gz").write_bytes(gzip.compress(bytes(raw)))


def singular_affine(folder: Path) -> None:
    aff = grid_affine(CENTRE, SHAPE, (1.5, 1.5, 3.0), AXIAL)
    aff[:3, 2] = aff[:3, 0]  # third axis parallel to the first
    img = nib.Nifti1Image(volume().array, LPS_TO_RAS @ aff)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(img, folder / "t2.nii.gz")


def dicom_series(folder: Path, seed: int = 0, desc: str = "T2 TSE SAG") -> list[Path]:
    vol = make_volume(shape=(24, 28, 8), spacing=(1.5, 1.5, 3.0), axes=AXIAL, centre=tuple(CENTRE), seed=seed)
    return write_series(
        vol, folder, desc=desc, study_uid=f"1.2.826.0.1.3680043.8.498.{abs(hash(folder)) % 10**8}"
    )


def zeros_after_header(folder: Path) -> None:
    """A valid DICOM header without pixel data, followed by ~2 GB of zeros (sparse)."""
    import pydicom

    f = dicom_series(folder)[0]
    for other in folder.iterdir():
        if other != f:
            other.unlink()
    ds = pydicom.dcmread(f)
    del ds.PixelData
    ds.save_as(f)
    os.truncate(f, TWO_GB)


def zeros_after_pixels(folder: Path) -> None:
    """A complete one-file DICOM followed by ~2 GB of zeros (sparse)."""
    f = dicom_series(folder)[0]
    for other in folder.iterdir():
        if other != f:
            other.unlink()
    os.truncate(f, TWO_GB)


def j2k_cut_short(folder: Path) -> None:
    """A JPEG 2000 series whose codestreams end half-way (an interrupted PACS transfer)."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_fragments
    from pydicom.uid import JPEG2000Lossless

    # 32 pixels a side at least: openjpeg's default six resolution levels need them
    vol = make_volume(shape=(32, 32, 6), spacing=(1.5, 1.5, 3.0), axes=AXIAL, centre=tuple(CENTRE), seed=0)
    for f in write_series(vol, folder, study_uid="1.2.826.0.1.3680043.8.498.77"):
        ds = pydicom.dcmread(f)
        ds.BitsStored, ds.HighBit = 12, 11  # values < 1000
        try:
            ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        except (RuntimeError, ValueError, ImportError) as exc:  # no encoder here: nothing to test
            pytest.skip(f"no JPEG 2000 encoder: {exc}")
        frame = next(generate_fragments(ds.PixelData))
        ds.PixelData = encapsulate([frame[: len(frame) // 2]])
        ds.save_as(f)


def fifo_beside_good(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "IM9999")


def socket_beside_good(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX)
    path = folder / "s.sock"
    if len(str(path)) > 100:  # AF_UNIX path limit
        pytest.skip("tmp path too long for a Unix socket")
    sock.bind(str(path))
    sock.close()


# -- running predict in-process ----------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model_folder(
        build_network(NET),
        folder,
        {"name": "tiny", "version": "test", "network": NET, "roi": ROI, "reference": "auto"},
    )
    return folder


def compose(name: str, overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from spinelesion.config_path import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(name, overrides)


FAST = ["saliency.method=none", "saliency.png=false", "scan.write_maps=false", "device=cpu", "batch_size=4"]
GIVEN_ROI = f"rois=[[{CENTRE[0]},{CENTRE[1]},{CENTRE[2]}]]"


def run_predict(inp: Path, out: Path, model: Path, *extra: str) -> dict[str, Any]:
    from spinelesion.predict import predict

    cfg = compose(
        "predict", [f"input={inp}", f"output_dir={out}", f"model_dir={model}", GIVEN_ROI, *FAST, *extra]
    )
    with bounded():
        return predict(cfg)


def strict_json(path: Path) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{path}: non-standard JSON constant {name}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- one bad study beside a good one: what goes in -> what must come out ------------------------
# (builder of the bad study folder, outcome, pattern the reason / warning must match)
STUDY_CASES: dict[str, tuple[Callable[[Path], Any], str, str]] = {
    "all-NaN volume -> refused": (
        lambda d: nifti_study(d, volume(set_all(np.nan))),
        "failed",
        "every voxel is NaN",
    ),
    "all-zero volume -> refused": (lambda d: nifti_study(d, volume(set_all(0.0))), "failed", "same value"),
    "1x1x1 volume -> refused": (
        lambda d: nifti_study(d, volume(shape=(1, 1, 1))),
        "failed",
        "at least 2 voxels",
    ),
    "absurd voxel size -> refused": (
        lambda d: nifti_study(d, volume(spacing=(1e4, 1.5, 3.0))),
        "failed",
        "degenerate affine",
    ),
    "singular affine -> refused": (singular_affine, "failed", "singular"),
    "pixdim 0 without sform -> refused, not read as 1 mm": (
        zero_pixdim,
        "failed",
        r"t2\.nii\.gz: voxel size \(pixdim\)",
    ),
    "NIfTI.gz declaring 4000^3 voxels -> refused by the memory cap": (
        huge_nifti,
        "failed",
        r"t2\.nii\.gz: declares 4000x4000x4000.*limit",
    ),
    "NIfTI declaring 4000^3 voxels in 1 kB -> truncated": (
        lambda d: huge_nifti(d, gz=False),
        "failed",
        r"t2\.nii: truncated",
    ),
    "NIfTI.gz cut short -> truncated, named": (
        cut_short,
        "failed",
        r"t2\.nii\.gz: truncated: the compressed file ends before",
    ),
    "NIfTI.gz whose CRC fails -> refused as damaged, named": (
        flipped_byte,
        "failed",
        r"t2\.nii\.gz: voxel data cannot be read, the file is damaged \(CRC check failed",
    ),
    "a few NaN voxels -> predicted, warned": (
        lambda d: nifti_study(d, volume(some_nan)),
        "warned",
        "non-finite voxel",
    ),
    "qform and sform disagree -> predicted, rule stated": (
        disagreeing_forms,
        "warned",
        "qform and sform disagree.*rule",
    ),
    "NaN T1 beside a good T2 -> T1 left out, warned": (
        lambda d: (nifti_study(d), nifti_study(d, volume(set_all(np.nan)), "t1.nii.gz")),
        "warned",
        "t1: every voxel is NaN.*left out",
    ),
    "named pipe among the files -> skipped unopened": (fifo_beside_good, "skipped", "named pipe"),
    "socket among the files -> skipped unopened": (socket_beside_good, "skipped", "socket"),
    "JPEG 2000 codestream cut short -> refused, the file named": (
        j2k_cut_short,
        "failed",
        r"\.dcm: cannot read pixel data \(the JPEG 2000 codestream",
    ),
    "DICOM header then 2 GB of zeros -> no hang": (zeros_after_header, "ignored", ""),
    "DICOM file then 2 GB of zeros -> no hang": (zeros_after_pixels, "ignored", ""),
}


@pytest.mark.parametrize("case", list(STUDY_CASES))
def test_a_bad_study_never_stops_the_good_one(
    case: str,
    tmp_path: Path,
    model_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
):
    build, outcome, pattern = STUDY_CASES[case]
    root = tmp_path / "in"
    nifti_study(root / "good")
    build(root / "bad")
    out = tmp_path / "out"
    summary = run_predict(root, out, model_dir)

    # a decoder's or library's traceback never reaches the console, whatever the study held
    assert "Traceback" not in capfd.readouterr().err
    predicted = {s["study_id"]: s for s in summary["studies"]}
    assert "good" in predicted, summary["failed"]
    run = strict_json(out / "run.json")
    assert run["counts"]["predicted"] == len(summary["studies"])
    rows = csv_rows(out / "predictions.csv")
    assert {r["study_id"] for r in rows} >= {"good"}
    for r in rows:  # probabilities finite and summing to one, whatever came in
        total = sum(float(v) for k, v in r.items() if k.startswith("compartment_p_"))
        assert total == pytest.approx(1.0, abs=1e-4)
    if outcome == "failed":
        # a NIfTI study is named by its folder, a DICOM one by its date and UID: find it by its source
        failed = {Path(f["source"]).parts[0]: f["reason"] for f in summary["failed"]}
        assert "bad" not in predicted and "bad" in failed
        assert pytest.approx(0) != len(failed["bad"])
        import re

        assert re.search(pattern, failed["bad"]), failed["bad"]
        assert any(Path(f["source"]).parts[0] == "bad" for f in csv_rows(out / "failed_studies.csv"))
    elif outcome == "warned":
        import re

        warnings = predicted["bad"]["warnings"]
        assert any(re.search(pattern, w) for w in warnings), warnings
        bad_rows = [r for r in rows if r["study_id"] == "bad"]
        assert bad_rows and all(re.search(pattern, r["warnings"]) for r in bad_rows)
        assert run["counts"]["with_warnings"] >= 1
        assert any(re.search(pattern, rec.getMessage()) for rec in caplog.records)  # on the console too
        data = strict_json(out / "bad" / "predictions.json")
        assert any(re.search(pattern, w) for w in data["warnings"])
    elif outcome == "skipped":
        assert any(pattern in s["reason"] for s in run["skipped_files"]), run["skipped_files"]
        assert not summary["failed"]
    else:  # ignored: the damaged file is not read as a study, and reading it cost little
        assert "bad" not in predicted
        assert any("bad" in rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING")


def test_each_good_study_has_no_warnings(tmp_path: Path, model_dir: Path):
    """The baseline the cases above compare against: a clean study is predicted without warnings."""
    summary = run_predict(nifti_study(tmp_path / "in" / "good").parent, tmp_path / "out", model_dir)
    counts = {"predicted": 1, "with_warnings": 0, "with_notes": 1, "failed": 0, "skipped_files": 0}
    assert summary["counts"] == counts  # notes (missing sequences, the reference grid) are no warning
    assert csv_rows(tmp_path / "out" / "predictions.csv")[0]["warnings"] == ""


# -- reading limits, one by one ---------------------------------------------------------------
def test_discovery_never_opens_a_named_pipe(tmp_path: Path):
    from spinelesion.io.dicom.discover import discover_series

    dicom_series(tmp_path / "s")
    os.mkfifo(tmp_path / "s" / "pipe")
    with bounded(20):
        series, skipped = discover_series(tmp_path / "s")
    assert [len(s.files) for s in series] == [8]
    assert [(p.name, "named pipe" in why) for p, why in skipped] == [("pipe", True)]


def test_a_pipe_given_as_a_sequence_path_fails_its_study_without_blocking(tmp_path: Path):
    from spinelesion.io.study import StudyError, load_study_from_paths

    os.mkfifo(tmp_path / "t2.nii.gz")
    with bounded(20), pytest.raises(StudyError, match="named pipe"):
        load_study_from_paths("s", {"t2": tmp_path / "t2.nii.gz"})


def test_dicom_header_followed_by_2gb_of_zeros_is_refused_within_the_read_budget(tmp_path: Path):
    from spinelesion.io.dicom import DicomError, read_dataset
    from spinelesion.io.dicom.discover import read_header

    zeros_after_header(tmp_path / "a")
    zeros_after_pixels(tmp_path / "b")
    f_a, f_b = next((tmp_path / "a").iterdir()), next((tmp_path / "b").iterdir())
    assert f_a.stat().st_size == TWO_GB and f_a.stat().st_blocks * 512 < 10 * 1024**2  # sparse
    with bounded(30):
        with pytest.raises(DicomError, match="only zero bytes where the header should continue"):
            read_header(f_a)
        with pytest.raises(DicomError, match=r"holds 2\.0 GiB but its header declares"):
            read_header(f_b)
        with pytest.raises(DicomError, match=r"holds 2\.0 GiB"):
            read_dataset(f_b)  # never read whole


def test_a_header_running_into_garbage_is_parsed_within_the_budget_only(tmp_path: Path):
    import pydicom

    from spinelesion.io import limits
    from spinelesion.io.dicom import DicomError
    from spinelesion.io.dicom.discover import read_header

    f = dicom_series(tmp_path / "s")[0]
    ds = pydicom.dcmread(f)
    del ds.PixelData
    ds.save_as(f)
    # A private OB element announcing more bytes than the budget, then filler: parsing never ends in budget.
    element = b"\x09\x00\x10\x10OB\x00\x00" + (64 << 20).to_bytes(4, "little")
    with open(f, "ab") as fh:
        fh.write(element + b"\x01" * (3 << 20))
    try:
        limits.configure(header_mb=1)
        with (
            bounded(20),
            pytest.raises(DicomError, match="no pixel data within the first 1.0 MiB of a 3.0 MiB file"),
        ):
            read_header(f)
    finally:
        limits.configure()


def test_a_nifti_gz_whose_stream_runs_on_past_its_voxels_is_read_as_declared(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Checking gzip's CRC means reading to the stream's end, but never past a bounded tail: 8 MiB
    of zeros after the declared voxels are not inflated into memory; the voxels read as declared."""
    import gzip

    from spinelesion.io.nifti import GZ_TAIL_BYTES, read_nifti

    good = nifti_study(tmp_path / "s") / "t2.nii.gz"
    expected = read_nifti(good).array
    raw = gzip.decompress(good.read_bytes())
    bomb = tmp_path / "bomb.nii.gz"
    with gzip.open(bomb, "wb") as fh:
        fh.write(raw)
        fh.write(bytes(8 * GZ_TAIL_BYTES))
    with caplog.at_level("WARNING"):
        vol = read_nifti(bomb)
    np.testing.assert_array_equal(vol.array, expected)
    assert any("gzip's CRC was not checked" in r.getMessage() for r in caplog.records)


def test_study_memory_is_capped_before_reading(tmp_path: Path):
    from spinelesion.io import limits
    from spinelesion.io.study import StudyError, load_nifti_folder

    nifti_study(tmp_path / "s")  # 40x40x12 float32 = 75 kB each
    nifti_study(tmp_path / "s", name="t1.nii.gz")
    try:
        limits.configure(max_study_gb=100e3 / limits.GIB)  # each volume fits, the two together do not
        with pytest.raises(
            StudyError, match=r"study 's' would need about 150\.0 KiB.*over the limit .*max_study_gb"
        ):
            load_nifti_folder(tmp_path / "s")
    finally:
        limits.configure()
    assert load_nifti_folder(tmp_path / "s").volumes["t2"].shape == SHAPE


def test_crops_are_built_in_bounded_batches_whatever_the_number_of_rois(tmp_path: Path):
    """A manifest may give one study any number of rows: crops never exist all at once."""
    from spinelesion.inference.predictor import Predictor, PredictorConfig, RoiRequest, StudyInput
    from spinelesion.io.study import Study

    torch.manual_seed(0)
    meta = {"name": "t", "version": "0", "weights_sha256": "-", "roi": ROI, "network": NET}
    predictor = Predictor(
        build_network(NET),
        meta,
        PredictorConfig(device="cpu", batch_size=4, png=False, saliency_method="none"),
    )
    seen: list[int] = []
    crops = predictor.crops

    def spy(array: Any, affine: Any, available: Any, centers: Any) -> Any:
        seen.append(len(centers))
        return crops(array, affine, available, centers)

    predictor.crops = spy  # type: ignore[method-assign]  # a spy in its place
    rois = [RoiRequest(f"r{i:03d}", CENTRE + [i % 5, 0, 0]) for i in range(22)]
    vol = volume()
    res = predictor.predict_study(StudyInput("s", "mem", lambda: Study("s", {"t2": vol}), rois), tmp_path)
    assert len(res.rois) == 22 and sum(seen) == 22 and max(seen) <= 4


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_a_100k_row_manifest_is_listed_without_building_crops(tmp_path: Path):
    from spinelesion.inference.inputs import discover_inputs

    nifti_study(tmp_path / "s")
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "study_id", "patient_id", "t2", "x_mm", "y_mm", "z_mm"])
        w.writerows([f"c{i}", "s", "p", "s/t2.nii.gz", 2.0, -3.0, 5.0] for i in range(100_000))
    with bounded(60):
        items, failures = discover_inputs(manifest)
    assert not failures and len(items) == 1 and len(items[0].rois) == 100_000


# -- values and JSON --------------------------------------------------------------------------
def test_json_is_written_strictly(tmp_path: Path):
    from spinelesion.atomic import write_json

    write_json(tmp_path / "a.json", {"p": float("nan"), "q": [np.float32(np.inf), 1.5], "r": np.float64(2.0)})
    assert strict_json(tmp_path / "a.json") == {"p": None, "q": [None, 1.5], "r": 2.0}


def test_a_network_answering_nan_fails_its_study(tmp_path: Path):
    from spinelesion.inference.predictor import Predictor, PredictorConfig, RoiRequest, StudyInput
    from spinelesion.io.study import Study

    class NanNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("temperature", torch.ones(2))

        def forward(self, image: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, ...]:
            nan = image.sum((1, 2, 3, 4))[:, None] * float("nan")
            return nan.expand(-1, 4), nan.expand(-1, 3)

    meta = {"name": "t", "version": "0", "weights_sha256": "-", "roi": ROI, "network": {"backbone": "nan"}}
    predictor = Predictor(NanNet(), meta, PredictorConfig(device="cpu", png=False, saliency_method="none"))
    vol = volume()
    item = StudyInput("s", "mem", lambda: Study("s", {"t2": vol}), [RoiRequest("r1", CENTRE)])
    with pytest.raises(ValueError, match="non-finite"):
        predictor.predict_study(item, tmp_path)
    assert not (tmp_path / "s" / "predictions.json").exists()


# -- verified models --------------------------------------------------------------------------
def copy_model(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_tampered_weights_never_load_silently(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    from safetensors.torch import load_file, save_file

    from spinelesion.models.folder import sha256_of

    m = copy_model(model_dir, tmp_path / "m")
    recorded = json.loads((m / "metadata.json").read_text())["weights_sha256"]
    state = {
        k: torch.randn_like(v.float()).to(v.dtype)
        for k, v in load_file(str(m / "weights.safetensors")).items()
    }
    save_file(state, str(m / "weights.safetensors"))  # same shapes, other values
    actual = sha256_of(m / "weights.safetensors")
    with pytest.raises(ModelLoadError, match=f"sha256 {actual} does not match weights_sha256 {recorded}"):
        load_model_folder(m)
    monkeypatch.setenv("SPINELESION_VERIFY_WEIGHTS", "0")  # the development override
    _, meta = load_model_folder(m)
    assert meta["weights_sha256"] == actual and meta["weights_verified"] is False


@pytest.mark.parametrize(
    "edit",
    [
        {"decision": {"compartment": {"offsets": [-9.0, 0.0, 0.0, 9.0]}}},  # forces intramedullary
        {"temperature": {"compartment": 0.01, "fracture": 1.0}},
        {"scan": {"call_threshold": 0.0}},
    ],
)
def test_edited_inference_settings_are_caught_like_edited_weights(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, edit: dict
):
    """Issue 37: metadata.json's decision offsets, temperatures and call threshold decide labels;
    they are sealed with the weights' hash (inference_sha256), so an edit is refused by name."""
    m = copy_model(model_dir, tmp_path / "m")
    meta = json.loads((m / "metadata.json").read_text())
    meta.update(edit)
    (m / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="inference settings .* were edited since the model was written"):
        load_model_folder(m)
    del meta["inference_sha256"]  # removing the seal is no way round it
    (m / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="are not sealed"):
        load_model_folder(m)
    monkeypatch.setenv("SPINELESION_VERIFY_WEIGHTS", "0")
    _, loaded = load_model_folder(m)
    assert loaded["weights_verified"] is False
    # a note beside the settings (e.g. a recorded check) is no inference setting: still verified
    m2 = copy_model(model_dir, tmp_path / "m2")
    meta2 = json.loads((m2 / "metadata.json").read_text())
    meta2["notes"] = "checked on site B"
    (m2 / "metadata.json").write_text(json.dumps(meta2))
    monkeypatch.delenv("SPINELESION_VERIFY_WEIGHTS")
    assert load_model_folder(m2)[1]["weights_verified"] is True


def test_predict_refuses_tampered_weights_unless_told(tmp_path: Path, model_dir: Path):
    m = copy_model(model_dir, tmp_path / "m")
    meta = json.loads((m / "metadata.json").read_text())
    meta["weights_sha256"] = "0" * 64
    (m / "metadata.json").write_text(json.dumps(meta))
    inp = nifti_study(tmp_path / "in" / "good").parent
    with pytest.raises(ModelLoadError, match="0{64}"):
        run_predict(inp, tmp_path / "o1", m)
    summary = run_predict(inp, tmp_path / "o2", m, "verify_weights=false")
    assert summary["weights_verified"] is False and summary["model"]["weights_sha256"] != "0" * 64
    assert strict_json(tmp_path / "o2" / "good" / "predictions.json")["model"]["weights_sha256"] != "0" * 64


@pytest.mark.parametrize(
    "key,value",
    [("weights", "../outside.safetensors"), ("weights", "/etc/passwd"), ("card_path", "../../README.md")],
)
def test_metadata_paths_stay_inside_the_model_folder(tmp_path: Path, model_dir: Path, key: str, value: str):
    m = copy_model(model_dir, tmp_path / "m")
    (tmp_path / "outside.safetensors").write_bytes((m / "weights.safetensors").read_bytes())
    meta = json.loads((m / "metadata.json").read_text())
    meta[key] = value
    (m / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="outside the model folder"):
        load_model_folder(m)


# -- one run, one folder ----------------------------------------------------------------------
def test_an_output_folder_inside_the_input_is_never_read_as_input(tmp_path: Path, model_dir: Path):
    root = tmp_path / "in"
    nifti_study(root / "good")
    first = run_predict(root, root / "out", model_dir)
    second = run_predict(root, root / "out", model_dir)  # its own earlier outputs are there now
    other = run_predict(root, root / "out2", model_dir)  # and another run's outputs
    for summary in (first, second, other):
        assert [s["study_id"] for s in summary["studies"]] == ["good"] and not summary["failed"]


def test_an_older_output_folder_without_marker_is_not_read_and_the_input_itself_is_refused_as_output(
    tmp_path: Path, model_dir: Path
):
    from spinelesion.tasks.arguments import ArgumentError

    root = tmp_path / "in"
    nifti_study(root / "good")
    old = root / "old_run"
    for name in ("run.json", "predictions.csv", "failed_studies.csv"):
        (old / name).parent.mkdir(parents=True, exist_ok=True)
        (old / name).write_text("{}" if name.endswith("json") else "study_id\n")
    nifti_study(old / "good" / "saliency", volume(), "roi01_compartment.nii.gz")
    summary = run_predict(root, tmp_path / "out", model_dir)
    assert [s["study_id"] for s in summary["studies"]] == ["good"] and not summary["failed"]
    with pytest.raises(ArgumentError, match="argument output_dir=.*other than the input folder"):
        run_predict(root, root, model_dir)


def test_a_second_run_into_a_busy_folder_is_refused_and_a_stale_lock_is_taken_over(
    tmp_path: Path, model_dir: Path
):
    from spinelesion.inference.run_lock import LOCK_NAME, RunLockError, acquire, release

    inp = nifti_study(tmp_path / "in" / "good").parent
    out = tmp_path / "out"
    held = acquire(out, "other run")  # the kernel's lock, as a live run holds it
    with pytest.raises(RunLockError, match=f"in use by another run \\(other run, pid {os.getpid()}"):
        run_predict(inp, out, model_dir)
    assert not (out / "run.json").exists()
    release(held)
    # a holder killed with -9 leaves its lock file behind; the kernel has dropped its lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from spinelesion.inference.run_lock import acquire; "
            f"acquire({str(out)!r}, 'killed run'); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLockError, match="killed run"):
        run_predict(inp, out, model_dir)
    holder.kill()
    holder.wait()
    lock = out / LOCK_NAME
    assert lock.exists() and json.loads(lock.read_text())["command"] == "killed run"
    summary = run_predict(inp, out, model_dir)
    assert summary["studies"] and not lock.exists()


def test_temporaries_left_by_a_killed_run_are_cleaned_on_start(tmp_path: Path, model_dir: Path):
    inp = nifti_study(tmp_path / "in" / "good").parent
    out = tmp_path / "out"
    leftover = out / "good" / "png" / ".roi01.png.k3j_x9a1.tmp.png"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a png")
    keep = out / "good" / "notes.txt"
    keep.write_text("mine")
    run_predict(inp, out, model_dir)
    assert not leftover.exists() and keep.read_text() == "mine"


def test_hydra_logs_and_caches_stay_in_the_output_folder(tmp_path: Path):
    cfg = compose("eval", ["data.manifest=m.csv", f"output_dir={tmp_path / 'o'}"])
    assert str(cfg.data.cache_dir).startswith(str(tmp_path / "o"))
    for name in ("predict", "eval"):
        from hydra import compose as hydra_compose
        from hydra import initialize_config_dir

        from spinelesion.config_path import CONFIG_DIR

        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            full = hydra_compose(
                name,
                ["data.manifest=m.csv" if name == "eval" else "input=x", f"output_dir={tmp_path / 'o'}"],
                return_hydra_config=True,
            )
        assert full.hydra.run.dir == str(tmp_path / "o"), name


# -- a dropped reference series ---------------------------------------------------------------
def test_a_reference_series_dropped_for_a_bad_slice_is_a_visible_warning(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
):
    import pydicom

    study = tmp_path / "in" / "study"
    t2 = dicom_series(study / "t2", seed=1, desc="T2 TSE SAG")
    uid = str(pydicom.dcmread(t2[0]).StudyInstanceUID)
    vol = make_volume(shape=(24, 28, 8), spacing=(1.5, 1.5, 3.0), axes=AXIAL, centre=tuple(CENTRE), seed=2)
    write_series(vol, study / "t1", desc="T1 TSE SAG", study_uid=uid, number=2)
    t2[3].write_bytes(t2[3].read_bytes()[:1500])  # one truncated slice: the T2 series cannot be read
    out = tmp_path / "out"
    summary = run_predict(tmp_path / "in", out, model_dir)
    assert len(summary["studies"]) == 1 and not summary["failed"]
    warnings = summary["studies"][0]["warnings"]
    assert any(w.startswith("t2:") and "left out" in w for w in warnings), warnings
    assert any("reference grid changed" in w for w in warnings), warnings
    run = strict_json(out / "run.json")
    assert run["counts"]["with_warnings"] == 1
    assert all("reference grid changed" in r["warnings"] for r in csv_rows(out / "predictions.csv"))
    assert any("reference grid changed" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


# -- errors for people ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value,expected",
    [
        ("abc", "rois='abc'"),
        ("5", "rois=5"),
        ("[[a,b,c]]", "is not numeric"),
        ("'[[a,b,c]]'", "is not numeric"),
        ("[[1,2]]", "needs 3 finite numbers"),
    ],
)
def test_rois_argument_errors_name_the_argument_the_value_and_what_is_expected(value: str, expected: str):
    from spinelesion.tasks.arguments import ArgumentError, check_predict_args

    cfg = compose("predict", ["input=x", "output_dir=o", f"rois={value}"])
    with pytest.raises(ArgumentError, match="argument rois=") as info:
        check_predict_args(cfg)
    assert expected in str(info.value) and "[x, y, z] points in LPS mm" in str(info.value)


@pytest.mark.parametrize(
    "override,name",
    [
        ("batch_size=abc", "batch_size"),
        ("batch_size=0", "batch_size"),
        ("device=gpu", "device"),
        ("saliency.method=magic", "saliency.method"),
        ("scan.threshold=2", "scan.threshold"),
        ("scan.overlap=0.99", "scan.overlap"),  # ranges are ScanConfig's, said once (issue 35)
        ("scan.stride_mm=0.5", "scan.stride_mm"),
        ("scan.write_maps=maybe", "scan.write_maps"),
        ("nifti_sequence=flair", "nifti_sequence"),
        ("tta=sometimes", "tta"),
        ("limits.max_study_gb=-1", "limits.max_study_gb"),
    ],
)
def test_other_argument_errors_name_the_argument(override: str, name: str):
    from spinelesion.tasks.arguments import ArgumentError, check_predict_args

    cfg = compose("predict", ["input=x", "output_dir=o", override])
    with pytest.raises(ArgumentError, match=f"argument {name}=.*: expected "):
        check_predict_args(cfg)


def test_a_latin1_manifest_error_names_the_file_and_line(tmp_path: Path):
    from spinelesion.data.manifest import ManifestError, read_manifest

    path = tmp_path / "m.csv"
    path.write_bytes(
        "case_id,study_id,patient_id,t2,x,y,z\nc1,s,p,a.nii,0,0,0\nc2,s,Ren\u00e9,a.nii,0,0,0\n".encode(
            "latin-1"
        )
    )
    with pytest.raises(ManifestError, match=rf"{path.name}: line 3: byte 0xe9 is not UTF-8"):
        read_manifest(path)


def test_a_semicolon_separated_manifest_is_one_error_saying_so(tmp_path: Path):
    """Issue 37: a manifest saved by a spreadsheet in a decimal-comma locale gave seven
    'required column is missing' lines and no hint."""
    from spinelesion.data.manifest import ManifestError, read_manifest

    path = tmp_path / "m.csv"
    path.write_text("case_id;study_id;patient_id;t2;x_mm;y_mm;z_mm\nc1;s;p;a.nii;0,5;-3;5\n")
    with pytest.raises(ManifestError, match=rf"{path.name}: .*semicolon-separated.*comma-separated") as err:
        read_manifest(path)
    assert len(err.value.problems) == 1, str(err.value)


def test_a_manifest_of_many_bad_rows_lists_the_first_problems_and_counts_the_rest(tmp_path: Path):
    """Issue 37: 10^6 bad rows became 10^6 error lines (199 MB) on the console and in the log."""
    from spinelesion.data.manifest import SHOWN_PROBLEMS, ManifestError, read_manifest

    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "study_id", "patient_id", "t2", "x_mm", "y_mm", "z_mm", "split"])
        w.writerows([f"c{i}", "s", "p", "a.nii", "abc", 0, 0, "later"] for i in range(3000))
    with pytest.raises(ManifestError) as err:
        read_manifest(path, check_files=False)
    text = str(err.value)
    assert len(err.value.problems) == 6000  # every problem is still there for code to read
    assert text.startswith("6000 problem(s) in the manifest:")
    assert len(text.splitlines()) == 1 + SHOWN_PROBLEMS + 1 and len(text) < 5000, text
    assert "row 1, column 'x_mm': 'abc' is not a finite number" in text
    assert text.endswith("... and 5980 more not shown (by column: x_mm 2990, split 2990)"), text[-300:]


def cli(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    with bounded(120):
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=110,
        )


@pytest.mark.slow  # > 3 s on the 2-core CPU
@pytest.mark.parametrize("module", ["spinelesion.evaluate", "spinelesion.train"])
def test_every_command_exits_2_with_a_message_not_a_traceback_on_a_bad_manifest(
    module: str, tmp_path: Path, model_dir: Path
):
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,study_id\nc1,s\n")
    out = tmp_path / "out"
    args = {
        "spinelesion.evaluate": [f"data.manifest={bad}", f"model_dir={model_dir}", f"output_dir={out}"],
        "spinelesion.train": [
            f"data.manifest={bad}",
            f"hydra.run.dir={out}",
            f"data.cache_dir={out}/cache",
            "logger=csv",
        ],
    }[module]
    proc = cli(module, args, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-2000:]
    assert "Traceback" not in output and "Error executing job" not in output, output[-2000:]
    assert "required column is missing" in output and str(bad) in output
    if module != "spinelesion.train":  # Hydra's log and every cache under output_dir, none in the cwd
        assert not (tmp_path / "outputs").exists() and not (tmp_path / ".cache").exists()
        assert (out / f"{module.split('.')[1]}.log").is_file()


def test_predict_exits_2_naming_a_bad_argument_and_writes_nothing_in_the_cwd(tmp_path: Path, model_dir: Path):
    out = tmp_path / "o"
    proc = cli(
        "spinelesion.predict",
        [f"input={tmp_path}", f"model_dir={model_dir}", f"output_dir={out}", "rois=abc"],
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "argument rois='abc': expected a list of [x, y, z] points" in output, (
        output
    )
    assert "Traceback" not in output
    assert (out / "predict.log").is_file() and not (tmp_path / "outputs").exists()


def test_run_main_turns_any_error_into_exit_2_and_one_line_unless_full_errors_are_asked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    import logging

    from spinelesion.tasks.arguments import run_main

    def no_study(cfg: Any) -> None:
        raise RuntimeError("no study of m.csv could be read: [...]")

    log = logging.getLogger("spinelesion.test")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info:
        run_main(no_study, None, log)  # type: ignore[arg-type]  # the failing task ignores its config
    assert info.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["no study of m.csv could be read: [...]"]
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(RuntimeError, match="no study"):
        run_main(no_study, None, log)  # type: ignore[arg-type]  # as above


def test_evaluation_refuses_a_manifest_whose_crops_would_not_fit_in_memory(tmp_path: Path):
    from types import SimpleNamespace

    from spinelesion.data.roi import RoiSpec
    from spinelesion.io.limits import ResourceLimitError
    from spinelesion.tasks.evaluate import _check_bank_memory

    spec = RoiSpec(shape=(32, 48, 48), spacing=(1.5, 1.5, 1.5), margin=1.25)
    rows = [SimpleNamespace(study_id="one") for _ in range(100_000)]
    with pytest.raises(
        ResourceLimitError, match=r"100000 ROI\(s\) \(up to 100000 in one study\).*GiB.*max_study_gb"
    ):
        _check_bank_memory(tmp_path / "m.csv", rows, spec)
    _check_bank_memory(tmp_path / "m.csv", rows[:100], spec)  # a normal manifest passes


def test_evaluation_leaves_out_rois_with_non_finite_probabilities():
    from types import SimpleNamespace

    from spinelesion.evaluation.bank import _finite_only

    bank = SimpleNamespace(rows=[SimpleNamespace(case_id=f"c{i}") for i in range(4)])
    probs = {
        "compartment": np.array([[0.5, 0.5], [np.nan, 0.5], [0.2, 0.8], [0.1, 0.9]]),
        "fracture": np.array([[1.0, 0.0], [0.5, 0.5], [np.inf, 0.0], [0.3, 0.7]]),
    }
    kept, finite, dropped = _finite_only([0, 1, 2, 3], probs, bank)
    assert kept == [0, 3] and dropped == ["c1", "c2"]
    assert all(np.isfinite(p).all() and p.shape == (2, 2) for p in finite.values())
    with pytest.raises(ValueError, match="nothing to score"):
        _finite_only([1], {t: p[1:2] for t, p in probs.items()}, bank)


class _Payload:
    """Stands for pickled code: unpickling it would call os.system."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_training_never_resumes_from_a_url_or_a_pickled_payload(tmp_path: Path):
    """Issue 37: ``ckpt_path=http://...`` made Lightning download and unpickle a file; a URL is
    refused before anything is fetched, and a local file must load as plain data."""
    from spinelesion.models.folder import check_resume_checkpoint

    with pytest.raises(ModelLoadError, match=r"ckpt_path=http://127\.0\.0\.1:9/evil\.ckpt: a URL"):
        check_resume_checkpoint("http://127.0.0.1:9/evil.ckpt")
    with pytest.raises(ModelLoadError, match="no such checkpoint file"):
        check_resume_checkpoint(tmp_path / "missing.ckpt")
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload()}, evil)
    with pytest.raises(ModelLoadError, match="refused to resume"):
        check_resume_checkpoint(evil)
    plain = tmp_path / "last.ckpt"  # what Lightning writes: tensors, numbers, plain containers
    torch.save(
        {
            "epoch": 3,
            "state_dict": {"net.w": torch.zeros(2)},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.001}]}],
            "hyper_parameters": {"net": {"backbone": "x"}},
            "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        },
        plain,
    )
    assert check_resume_checkpoint(plain) == plain


def test_the_train_command_refuses_a_checkpoint_url_in_one_line(tmp_path: Path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "spinelesion.train",
            "ckpt_path=http://127.0.0.1:9/evil.ckpt",
            f"paths.output_dir={tmp_path / 'out'}",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "a URL; only a local checkpoint file is resumed from" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("centre", "fill", "why"),
    [
        (CENTRE + [800.0, 0, 0], None, "centre lies outside the study"),
        (np.array([1e300, 0.0, 0.0]), None, "centre lies outside the study"),
        (CENTRE, lambda a: (a.fill(7.0), a.__setitem__((3, 3, 3), 900.0)), "blank inside its box"),
    ],
)
def test_a_roi_of_padding_or_a_blank_crop_is_not_answered(tmp_path: Path, centre, fill, why):
    """Issue 37: ROIs far outside the volume, or an image constant but for one voxel, were
    answered with the model's blank-input answer (none 0.99). Now refused by name; the other
    ROIs of the study are answered."""
    from spinelesion.inference.predictor import Predictor, PredictorConfig, RoiRequest, StudyInput
    from spinelesion.io.study import Study

    meta = {"name": "t", "version": "0", "weights_sha256": "-", "roi": ROI, "network": NET}
    predictor = Predictor(
        build_network(NET), meta, PredictorConfig(device="cpu", png=False, saliency_method="none")
    )
    good = volume()
    vol = volume(fill) if fill is not None else good
    rois = [RoiRequest("bad", centre)] + ([RoiRequest("good", CENTRE)] if fill is None else [])
    res = predictor.predict_study(StudyInput("s", "mem", lambda: Study("s", {"t2": vol}), rois), tmp_path)
    assert [r["roi_id"] for r in res.rois] == (["good"] if fill is None else [])
    assert any(w.startswith("ROI bad at") and "not answered" in w and why in w for w in res.warnings), (
        res.warnings
    )


def test_evaluate_refuses_the_rois_predict_refuses(tmp_path: Path):
    from spinelesion.data.dataset import roi_problems
    from spinelesion.data.roi import RoiSpec

    vol = volume()
    spec = RoiSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in ROI.items()})
    array = vol.array[None].astype(np.float32)
    flat = np.full_like(array, 5.0)
    centres = [CENTRE, CENTRE + [0, 0, 900.0]]
    assert roi_problems(array, vol.affine, np.array([True]), centres, spec)[0] is None
    assert "outside the study" in roi_problems(array, vol.affine, np.array([True]), centres, spec)[1]
    assert "blank" in roi_problems(flat, vol.affine, np.array([True]), centres[:1], spec)[0]
    # build_roi_bank as evaluate calls it: the far row is a failure naming it, the other is scored;
    # the reasons are kept with the cached crops (the second read, from the cache, gives them again)
    from types import SimpleNamespace

    from helpers_data import assert_bank_is_the_primitives

    from spinelesion.data.monai_pipeline import build_roi_bank

    nifti_study(tmp_path / "s", vol)
    rows = [
        SimpleNamespace(
            study_id="s", case_id=f"c{i}", row_number=i + 1, center_lps=c,
            sequences={"t2": tmp_path / "s" / "t2.nii.gz"}, labels={"compartment": "none", "fracture": "none"},
        )
        for i, c in enumerate(centres)
    ]  # fmt: skip
    for _ in range(2):
        bank = build_roi_bank(
            rows, spec, tmp_path / "cache", on_error="skip", progress=False, refuse_unanswerable=True
        )
        assert [r.case_id for r in bank.rows] == ["c0"]
        assert [(f.rows, f.reason.split(":")[0]) for f in bank.failures] == [([2], "ROI c1")]
        assert_bank_is_the_primitives(bank, rows, spec, refuse_unanswerable=True)


def test_evaluate_scores_through_the_one_data_path_and_refuses_data_pipeline(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """evaluate refuses the far ROI by name, scores the others, and reads its crops back from the
    cache on a second run; the retired ``data.pipeline`` setting is refused by name (issue 35)."""
    from hydra.errors import ConfigCompositionException

    import spinelesion.io.monai_reader as monai_reader
    from spinelesion.data.manifest import write_manifest
    from spinelesion.tasks.arguments import check_evaluate_args
    from spinelesion.tasks.evaluate import _evaluate

    def no_read(*_a: object, **_k: object) -> None:
        raise AssertionError("a study was read again although its crops are cached")

    nifti_study(tmp_path / "s", volume())
    base = {"study_id": "s", "patient_id": "p", "split": "test", "t1": "", "stir": "", "t1c": ""}
    labels = [("none", "none"), ("extradural", "pathologic"), ("none", "benign")]
    recs = [
        dict(base, case_id=f"c{i}", t2="s/t2.nii.gz", x_mm=c[0], y_mm=c[1], z_mm=c[2], compartment=lab[0],
             fracture=lab[1], level="L1", finding="normal")
        for i, (c, lab) in enumerate(zip([CENTRE, CENTRE + [0, 0, 900.0], CENTRE + [2.0, 1.0, 0]], labels, strict=True))
    ]  # fmt: skip
    manifest = write_manifest(tmp_path / "manifest.csv", recs)
    common = [f"model_dir={model_dir}", f"data.manifest={manifest}", f"data.cache_dir={tmp_path / 'cache'}"]
    common += ["device=cpu", "batch_size=4", "bootstrap.n=10", "plots=false"]
    got = []
    for run in ("first", "cached"):
        out = tmp_path / run
        if run == "cached":  # the crops come back from the cache: no study is read
            monkeypatch.setattr(monai_reader, "read_volume", no_read)
        metrics = _evaluate(compose("eval", [*common, f"output_dir={out}"]))
        assert [f["rows"] for f in metrics["failed_studies"]] == [[2]]  # the far ROI, refused by name
        got.append((out / "predictions.csv").read_text())
    assert got[0] == got[1] and got[0].count("\n") == 3  # header and two scored rows
    assert [f.suffix for f in (tmp_path / "cache").rglob("*") if f.is_file()] == [
        ".pt"
    ]  # one study, one entry
    with pytest.raises(ConfigCompositionException, match="data.pipeline"):
        compose("eval", [*common, "data.pipeline=bank"])
    with pytest.raises(
        ValueError,
        match=r"data: unknown setting\(s\) pipeline; allowed: manifest, split, cache_dir, cache_workers",
    ):
        check_evaluate_args(compose("eval", [*common, "+data.pipeline=bank"]))  # not ignored without a word


# -- outputs: no write through a symbolic link, no overwritten bundle, no input path ------------
def test_writes_in_a_guarded_output_folder_never_follow_a_symbolic_link(tmp_path: Path):
    """Issue 37: a link planted inside output_dir had writes land outside it; output_dir itself may be a link."""
    from spinelesion.atomic import SymlinkRefusedError, guarded_folder, write_json

    outside, real = tmp_path / "outside", tmp_path / "real_out"
    outside.mkdir()
    real.mkdir()
    out = tmp_path / "out"
    out.symlink_to(real)  # output_dir given as a link: allowed
    (real / "study").symlink_to(outside)
    with guarded_folder(out):
        write_json(out / "run.json", {"ok": 1})
        with pytest.raises(
            SymlinkRefusedError, match=f"symbolic link {out / 'study'} .*inside the output folder"
        ):
            write_json(out / "study" / "sub" / "predictions.json", {})
        with pytest.raises(SymlinkRefusedError, match="symbolic link"):  # a resolved path too
            write_json(out.resolve() / "study" / "predictions.json", {})
    assert (real / "run.json").is_file() and not any(outside.iterdir())
    write_json(out / "study" / "x.json", {})  # outside a run's folder: not this guard's business
    assert (outside / "x.json").is_file()


@pytest.mark.parametrize("planted", ["study folder", "file in the study folder"])
def test_a_symbolic_link_where_a_study_goes_fails_that_study_only(
    tmp_path: Path, model_dir: Path, planted: str
):
    root = tmp_path / "in"
    nifti_study(root / "good")
    nifti_study(root / "victim")
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (outside / "predictions.json").write_text("theirs")
    out.mkdir()
    if planted == "study folder":
        link = out / "victim"
        link.symlink_to(outside)
    else:
        (out / "victim").mkdir()
        link = out / "victim" / "predictions.json"
        link.symlink_to(outside / "predictions.json")
    summary = run_predict(root, out, model_dir)
    assert [s["study_id"] for s in summary["studies"]] == ["good"]
    reasons = {f["study_id"]: f["source"] + " " + f["reason"] for f in csv_rows(out / "failed_studies.csv")}
    assert "symbolic link" in reasons["victim"] and "victim" in reasons["victim"], reasons
    assert link.is_symlink() and sorted(p.name for p in outside.iterdir()) == ["predictions.json"]
    assert (outside / "predictions.json").read_text() == "theirs"
    assert {r["study_id"] for r in csv_rows(out / "predictions.csv")} == {"good"}


@pytest.mark.parametrize("name", ["run.json", "predictions.csv", ".partial"])
def test_a_symbolic_link_in_place_of_a_run_file_stops_the_run_before_it_writes(
    tmp_path: Path, model_dir: Path, name: str
):
    from spinelesion.atomic import SymlinkRefusedError

    inp = nifti_study(tmp_path / "in" / "good").parent
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / name).symlink_to(outside / name)
    with pytest.raises(SymlinkRefusedError, match=f"symbolic link {out / name} "):
        run_predict(inp, out, model_dir)
    assert not any(outside.iterdir()) and not (out / "good").exists()


def test_hydra_never_writes_its_log_through_a_symbolic_link(tmp_path: Path, model_dir: Path):
    """predict.log and .hydra/ are Hydra's, written before the task starts: refused before that, exit 2."""
    out, outside = tmp_path / "o", tmp_path / "outside.log"
    out.mkdir()
    outside.write_text("theirs\n")
    (out / "predict.log").symlink_to(outside)
    proc = cli(
        "spinelesion.predict",
        [f"input={tmp_path}", f"model_dir={model_dir}", f"output_dir={out}"],
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert f"symbolic link {out / 'predict.log'} " in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert outside.read_text() == "theirs\n" and sorted(p.name for p in out.iterdir()) == ["predict.log"]


def test_the_hydra_guard_refuses_a_linked_hydra_folder_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from spinelesion.config_path import CONFIG_DIR
    from spinelesion.tasks.hydra_guard import RefuseSymlinks, hydra_writes

    out, outside = tmp_path / "o", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        full = hydra_compose("eval", ["data.manifest=m.csv", f"output_dir={out}"], return_hydra_config=True)
    run_dir, paths = hydra_writes(full)
    assert run_dir == out and out / ".hydra" / "config.yaml" in paths
    assert any(p.parent == out and p.suffix == ".log" for p in paths)
    RefuseSymlinks().on_run_start(full)  # nothing linked: goes on
    (out / ".hydra").symlink_to(outside)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info:
        RefuseSymlinks().on_run_start(full)
    assert info.value.code == 2 and not any(outside.iterdir())


def test_bundle_export_refuses_a_non_empty_folder_unless_overwrite(tmp_path: Path, model_dir: Path):
    from spinelesion.export.bundle import BundleDestinationError
    from spinelesion.export_bundle import export

    dest = tmp_path / "bundle"
    (dest / "configs").mkdir(parents=True)
    (dest / "configs" / "metadata.json").write_text("mine")
    (dest / "notes.txt").write_text("mine")
    args = [f"model_dir={model_dir}", f"output_dir={dest}", "torchscript=false"]
    with pytest.raises(BundleDestinationError, match=f"output_dir {dest} is not empty.*overwrite=true"):
        export(compose("export_bundle", args))
    assert (dest / "configs" / "metadata.json").read_text() == "mine" and not (dest / "models").exists()
    export(compose("export_bundle", [*args, "overwrite=true"]))
    assert (dest / "notes.txt").read_text() == "mine" and (dest / "models" / "model.pt").is_file()
    assert json.loads((dest / "configs" / "metadata.json").read_text())["name"]
    export(
        compose(
            "export_bundle", [f"model_dir={model_dir}", f"output_dir={tmp_path / 'new'}", "torchscript=false"]
        )
    )


def test_outputs_never_show_the_input_path_unless_source_paths(tmp_path: Path, model_dir: Path):
    """Issue 37: failure reasons, warnings and skipped files quoted the full input path (patient names)."""
    root = tmp_path / "DOE_JANE_1970" / "export"
    nifti_study(root / "good")
    huge_nifti(root / "sub" / "bad", gz=False)  # fails: "<full path>/t2.nii: truncated ..."
    nifti_study(root / "warned")
    nifti_study(root / "warned", name="t2.nii")  # warns: "a second t2 file; kept <full path>"
    fifo_beside_good(root / "piped")  # a skipped file
    out = tmp_path / "out"
    run_predict(root, out, model_dir)
    texts = {name: (out / name).read_text() for name in ("failed_studies.csv", "run.json", "predictions.csv")}
    texts["predictions.json"] = (out / "warned" / "predictions.json").read_text()
    for name, text in texts.items():
        assert "DOE_JANE" not in text and str(tmp_path) not in text, (name, text)
    run = strict_json(out / "run.json")
    assert run["failed"][0]["source"] == "sub/bad", run["failed"]
    assert run["failed"][0]["reason"].startswith("NiftiError: sub/bad/t2.nii: truncated"), run["failed"]
    assert run["skipped_files"][0]["path"] == "piped/IM9999"
    assert any("kept warned/t2.nii" in w for w in run["studies"][-1]["warnings"]), run["studies"]
    full = run_predict(root, tmp_path / "out2", model_dir, "output.source_paths=true")
    assert str(root / "sub" / "bad" / "t2.nii") in full["failed"][0]["reason"]


def test_a_model_is_found_by_name_from_any_folder_and_a_miss_lists_what_there_is(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """Issue 36: models by name (model_dir=spinelesion-demo) from any working directory, through
    $SPINELESION_MODELS or the project's models/; a path still works; a miss says where it looked."""
    import shutil

    from spinelesion.models.folder import load_model_folder, resolve_model

    store = tmp_path / "store"
    shutil.copytree(model_dir, store / "tiny-model")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SPINELESION_MODELS", str(store))
    assert resolve_model("tiny-model") == store / "tiny-model"
    assert resolve_model("models/tiny-model") == store / "tiny-model"  # the repo-relative spelling, elsewhere
    assert resolve_model(model_dir) == model_dir  # a path as given
    _, meta = load_model_folder("tiny-model")
    assert meta["weights_verified"]
    with pytest.raises(ModelLoadError, match=r"model 'nope': not a model folder .*available: .*tiny-model"):
        resolve_model("nope")
    project = Path(__file__).resolve().parents[1] / "models" / "spinelesion-demo"
    if (project / "metadata.json").is_file():  # the released model by name, from another folder
        assert resolve_model("spinelesion-demo").resolve() == project.resolve()


@pytest.mark.slow  # draws one phantom study (~5 s)
def test_make_data_writes_nothing_outside_its_output_folder(tmp_path: Path):
    """Issue 36: make-data wrote its Hydra log under ./outputs/ of the working directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spinelesion.make_data",
            f"output_dir={tmp_path / 'd'}",
            "studies=1",
            "workers=1",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "d" / "manifest.csv").is_file() and (tmp_path / "d" / "logs" / ".hydra").is_dir()


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ("a_file", "is a file, not a folder"),
        ("a_file/sub", "is a file, so no folder can be made under it"),
        ("/proc/spinelesion-out", "lies under a kernel interface"),
    ],
)
def test_an_unusable_output_folder_is_one_line_and_exit_2(tmp_path: Path, where: str, why: str):
    """Issue 37: an output_dir that is a file, under a file or under /proc gave Hydra's traceback."""
    (tmp_path / "a_file").write_text("not a folder")
    out = where if where.startswith("/") else str(tmp_path / where)
    proc = subprocess.run(
        [sys.executable, "-m", "spinelesion.predict", f"input={tmp_path}", f"output_dir={out}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and why in output and "Traceback" not in output, output[-2000:]


def test_a_study_folder_named_in_bytes_that_are_not_utf8_is_predicted_with_the_others(
    tmp_path: Path, model_dir: Path
):
    """Issue 37: a study folder with a non-UTF-8 name aborted the whole run ('utf-8' codec can't
    encode). Its id is shown with \\x escapes; it and the study beside it are both predicted."""
    root = tmp_path / "in"
    nifti_study(root / "good")
    bad = os.path.join(os.fsencode(root), b"bad\xffname")
    os.makedirs(bad)
    nifti_study(Path(os.fsdecode(bad)))
    summary = run_predict(root, tmp_path / "out", model_dir, GIVEN_ROI)
    assert sorted(s["study_id"] for s in summary["studies"]) == ["bad\\xffname", "good"]
    assert summary["failed"] == []
    strict_json(tmp_path / "out" / "run.json")  # readable back, as UTF-8
    rows = (tmp_path / "out" / "predictions.csv").read_text(encoding="utf-8")
    assert "bad\\xffname" in rows


def remove_tree_without_recursion(top: Path) -> None:
    from spinelesion.io.dicom.discover import walk

    folders = []
    for root, _dirs, files in walk(top):
        for name in files:
            os.unlink(os.path.join(root, name))
        folders.append(root)
    for folder in reversed(folders):  # deepest first
        os.rmdir(folder)


@pytest.mark.slow  # ~20 s here: 1,100 folders made and removed
def test_a_series_1100_folders_deep_is_found_without_recursion(tmp_path: Path):
    """Issue 37: os.walk recursed once per level (RecursionError at ~1,000 levels, aborting the
    run); the walk is iterative, and on an ordinary tree it lists what os.walk lists."""
    from spinelesion.io.dicom.discover import iter_files, walk

    deep = tmp_path / "deep"
    deep.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(deep)
        for _ in range(1100):
            os.mkdir("d")
            os.chdir("d")
        Path("t2.nii.gz").write_bytes(b"x")
    finally:
        os.chdir(cwd)
    try:
        assert [p.name for p in iter_files(deep)] == ["t2.nii.gz"]
    finally:  # shutil.rmtree recurses per level too (pytest's cleanup would hit RecursionError)
        remove_tree_without_recursion(deep)
    tree = tmp_path / "tree"
    for rel in ("a/x.dcm", "a/b/y.dcm", "c/z.dcm", "top.dcm"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(b"x")
    (tree / "link").symlink_to(tree / "a")  # listed, not entered (as os.walk does)
    ours = [(r, sorted(d), sorted(f)) for r, d, f in walk(tree)]
    theirs = [(r, sorted(d), sorted(f)) for r, d, f in os.walk(tree)]
    assert sorted(ours) == sorted(theirs)


def test_a_complex_valued_nifti_is_refused_by_name(tmp_path: Path):
    """Issue 37: complex voxels were cast to their real part silently."""
    from spinelesion.io.nifti import NiftiError, read_nifti

    arr = (np.ones((8, 8, 4)) * (3 + 4j)).astype(np.complex64)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "t2.nii.gz"))
    with pytest.raises(NiftiError, match=r"t2\.nii\.gz: complex64 voxels .*pass the magnitude image"):
        read_nifti(tmp_path / "t2.nii.gz")


def point_list(path: Path, kind: str | None) -> Path:
    """A one-node Slicer markups file of the given type (None: no type, as hand-written)."""
    node: dict[str, Any] = {
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "controlPoints": [
            {"id": "1", "label": "a", "position": [1.0, 2.0, 3.0], "positionStatus": "defined"}
        ],
    }
    if kind is not None:
        node["type"] = kind
    path.write_text(json.dumps({"markups": [node]}))
    return path


@pytest.mark.parametrize("kind", ["ROI", "Plane", "SomethingNew"])
def test_markups_other_than_a_point_list_are_refused_by_type(tmp_path: Path, kind: str):
    """Issue 37: an ROI box, a plane or an unknown markup type was read as a point list."""
    from spinelesion.inference.markups import MarkupsError, read_markups
    from spinelesion.tasks.arguments import ArgumentError, parse_rois

    path = point_list(tmp_path / "x.mrk.json", kind)
    why = rf"x\.mrk\.json: markups 1: markup type '{kind}'; only point lists \(Fiducial\) give ROI centres"
    with pytest.raises(MarkupsError, match=why):
        read_markups(path)
    with pytest.raises(ArgumentError, match=why):  # as predict's rois= argument
        parse_rois(str(path))
    for ok in ("Fiducial", "PointList", None):
        assert read_markups(point_list(tmp_path / "ok.mrk.json", ok))[0] == [[1.0, 2.0, 3.0]]


@pytest.mark.parametrize(
    ("keep", "where"),
    [(None, "before the 40x40x12 float32 voxels"), (60, "within the NIfTI header")],  # 60 B: < 348 unpacked
)
def test_a_nifti_gz_cut_short_is_named_truncated(tmp_path: Path, keep: int | None, where: str):
    """Issue 37: 'EOFError: Compressed file ended before the end-of-stream marker was reached'
    named no file; a header cut short was 'Cannot work out file type'."""
    from spinelesion.io.nifti import NiftiError, read_nifti

    cut_short(tmp_path, keep)
    with pytest.raises(
        NiftiError, match=rf"{tmp_path / 't2.nii.gz'}: truncated: the compressed file ends {where}"
    ):
        read_nifti(tmp_path / "t2.nii.gz")


def test_an_older_model_folder_is_sealed_only_when_its_weights_match(tmp_path: Path, model_dir: Path):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "seal_model.py"
    spec = importlib.util.spec_from_file_location("seal_model", script)
    assert spec is not None and spec.loader is not None
    seal_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seal_model)
    m = copy_model(model_dir, tmp_path / "m")
    meta = json.loads((m / "metadata.json").read_text())
    del meta["inference_sha256"]  # as written before 2026-12-06
    (m / "metadata.json").write_text(json.dumps(meta))
    assert seal_model.seal_folder(m) and load_model_folder(m)[1]["weights_verified"]
    bad = copy_model(model_dir, tmp_path / "bad")
    meta["weights_sha256"] = "0" * 64
    (bad / "metadata.json").write_text(json.dumps(meta))
    assert not seal_model.seal_folder(bad)
    assert "inference_sha256" not in json.loads((bad / "metadata.json").read_text())


def test_a_study_folder_holding_an_output_marker_is_named_not_lost(tmp_path: Path):
    """Issue 37: a study folder with a stray .spinelesion-output marker was neither predicted nor
    listed anywhere; it is now a skipped folder with its reason (an earlier run's outputs are too)."""
    from spinelesion.inference.inputs import discover_inputs
    from spinelesion.io.dicom.discover import OUTPUT_FOLDER_REASON
    from spinelesion.io.limits import OUTPUT_MARKER

    root = tmp_path / "in"
    nifti_study(root / "good")
    nifti_study(root / "marked")
    (root / "marked" / OUTPUT_MARKER).write_text("")
    skipped: list[tuple[Path, str]] = []
    items, failures = discover_inputs(root, skipped=skipped)
    assert [it.study_id for it in items] == ["good"] and not failures
    assert skipped == [(root / "marked", OUTPUT_FOLDER_REASON)]


def test_a_refused_second_run_leaves_the_first_runs_hydra_files_alone(tmp_path: Path, model_dir: Path):
    """Issue 37: Hydra wrote the second run's .hydra/ and log over the first's before the lock said no."""
    from spinelesion.inference.run_lock import acquire, release

    inp = nifti_study(tmp_path / "in" / "good").parent
    out = tmp_path / "out"
    held = acquire(out, "first run")
    (out / ".hydra").mkdir()
    (out / ".hydra" / "config.yaml").write_text("first")
    exe = Path(sys.executable).parent / "spinelesion-predict"
    try:
        got = subprocess.run(
            [str(exe), f"input={inp}", f"output_dir={out}", f"model_dir={model_dir}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        release(held)
    assert got.returncode == 2 and "in use by another run (first run" in got.stderr + got.stdout
    assert (out / ".hydra" / "config.yaml").read_text() == "first"
    assert not (out / "predict.log").exists()


def test_the_log_hides_input_paths_like_every_other_output(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
):
    """Issue 37: with output.source_paths=false predict.log and the console quoted the full
    input path (PACS exports name folders after patients)."""
    root = tmp_path / "Doe_John" / "export"
    nifti_study(root / "good")
    (root / "good" / "readme.txt").write_text("not an image")  # logged: a file that was ignored
    with caplog.at_level("INFO"):
        run_predict(root, tmp_path / "out", model_dir)
    assert "neither DICOM nor" in caplog.text and "export" in caplog.text
    assert "Doe_John" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        run_predict(root, tmp_path / "out2", model_dir, "output.source_paths=true")
    assert "Doe_John" in caplog.text  # asked for in full


def test_progress_false_shows_no_bar(tmp_path: Path, model_dir: Path, capfd: pytest.CaptureFixture[str]):
    """Issue 37: ``progress=false`` still showed a bar; with it on, the bar is there."""
    nifti_study(tmp_path / "in" / "a")
    run_predict(tmp_path / "in", tmp_path / "on", model_dir, "progress=true")
    assert "%|" in capfd.readouterr().err
    run_predict(tmp_path / "in", tmp_path / "off", model_dir, "progress=false")
    assert "%|" not in capfd.readouterr().err
