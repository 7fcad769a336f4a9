"""Cohort prediction: study ids, joined series, failures named, resume, shards, path privacy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelesion.io.nifti import write_nifti
from spinelesion.io.volume import Volume
from spinelesion.models.folder import save_model_folder
from spinelesion.models.networks import build_network

ROI = {"shape": [16, 24, 24], "spacing": [2.0, 2.0, 2.0], "margin": 1.25}
NET = {"backbone": "spinecnn", "widths": [4, 8, 8, 8], "hidden": 8}
POINT = "[[0,0,0]]"
FAST = [
    "saliency.png=false",
    "saliency.method=gradcam",  # cohort mechanics, not maps: the fast ones
    "scan.write_maps=false",
    "device=cpu",
    "batch_size=4",
    f"rois={POINT}",
]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model_folder(
        build_network(NET),
        folder,
        {"name": "tiny", "version": "t", "network": NET, "roi": ROI, "reference": "auto"},
    )
    return folder


def nifti(path: Path, seed: int = 0, shape: tuple[int, int, int] = (24, 32, 12)) -> Path:
    rng = np.random.default_rng(seed)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = -np.asarray(shape) * np.diag(affine)[:3] / 2
    write_nifti(Volume((rng.random(shape) * 100 + 50).astype(np.float32), affine), path)
    return path


def run(input_path: Path, out: Path, model: Path, *extra: str) -> dict:
    from hydra import compose, initialize_config_dir

    from spinelesion.config_path import CONFIG_DIR
    from spinelesion.predict import predict

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "predict",
            [
                f"input={input_path}",
                f"model_dir={model}",
                f"output_dir={out}",
                "paths.output_dir=.",
                *FAST,
                *extra,
            ],
        )
    return predict(cfg)


def test_outputs_name_inputs_by_file_name_unless_source_paths(tmp_path: Path, model: Path):
    study = tmp_path / "export" / "DOE_JANE_1970"
    nifti(study / "t2.nii.gz")
    summary = run(study, tmp_path / "o", model)
    folder = tmp_path / "o" / summary["studies"][0]["folder"]
    data = json.loads((folder / "predictions.json").read_text())
    assert data["inputs"]["t2"] == "t2.nii.gz"
    text = (folder / "predictions.json").read_text() + (tmp_path / "o" / "run.json").read_text()
    assert str(tmp_path) not in text
    summary = run(study, tmp_path / "o2", model, "output.source_paths=true")
    data = json.loads((tmp_path / "o2" / summary["studies"][0]["folder"] / "predictions.json").read_text())
    assert data["inputs"]["t2"] == str(study / "t2.nii.gz")
    assert json.loads((tmp_path / "o2" / "run.json").read_text())["input"] == str(study)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_bids_studies_get_unique_ids_from_their_relative_paths(tmp_path: Path):
    from spinelesion.inference.inputs import discover_inputs

    for k, sub in enumerate(["sub-01", "sub-02"]):
        nifti(tmp_path / "bids" / sub / "anat" / "t2.nii.gz", seed=k)
    (tmp_path / "bids" / "sub-03" / "anat").mkdir(parents=True)  # nothing readable
    (tmp_path / "bids" / "sub-04").mkdir()
    (tmp_path / "bids" / "sub-04" / "t2.nii.gz").write_bytes(b"")  # a zero-byte file only
    items, failures = discover_inputs(tmp_path / "bids")
    assert sorted(it.study_id for it in items) == ["sub-01/anat", "sub-02/anat"]
    assert sorted(f.study_id for f in failures) == ["sub-03", "sub-04"]
    again, _ = discover_inputs(tmp_path / "bids")
    assert [it.study_id for it in again] == [it.study_id for it in items]  # stable


def test_only_files_nothing_reads_are_reported_as_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A NIfTI study's own files are read, so the log must not call them ignored."""
    from spinelesion.inference.inputs import discover_inputs

    nifti(tmp_path / "study" / "t2.nii.gz", seed=1)
    with caplog.at_level("INFO", logger="spinelesion.inference.inputs"):
        items, _ = discover_inputs(tmp_path / "study")
    assert [it.study_id for it in items] == ["study"]
    assert "ignored" not in caplog.text
    (tmp_path / "study" / "notes.txt").write_text("not an image")
    caplog.clear()
    with caplog.at_level("INFO", logger="spinelesion.inference.inputs"):
        discover_inputs(tmp_path / "study")
    assert "1 file(s) are neither DICOM nor a study's NIfTI and were ignored" in caplog.text


def test_dicom_and_nifti_series_of_one_study_folder_are_joined(tmp_path: Path):
    from spinelesion.inference.inputs import discover_inputs
    from spinelesion.io.dicom.write import make_uid, write_dicom_series
    from spinelesion.io.reader import read_volume

    study = tmp_path / "cohort" / "patient1"
    t1 = read_volume(nifti(tmp_path / "src_t1.nii.gz", seed=3))
    write_dicom_series(
        t1,
        study / "dicom_t1",
        study={"StudyInstanceUID": make_uid("s1"), "PatientID": "X"},
        series={"SeriesInstanceUID": make_uid("s1", 1), "SeriesDescription": "T1 SAG"},
    )
    nifti(study / "t2.nii.gz", seed=4)
    nifti(tmp_path / "cohort" / "patient2" / "t2.nii.gz", seed=5)
    items, failures = discover_inputs(tmp_path / "cohort")
    assert not failures
    assert len(items) == 2
    joined = next(it for it in items if it.study_id.startswith("20260101_"))  # StudyDate_hash
    assert sorted(joined.load().volumes) == ["t1", "t2"]
    assert {it.study_id for it in items} - {joined.study_id} == {"patient2"}


def test_parts_split_a_cohort_deterministically_and_their_union_is_one_run(tmp_path: Path, model: Path):
    for k in range(5):
        nifti(tmp_path / "cohort" / f"p{k}" / "t2.nii.gz", seed=k)
    whole = run(tmp_path / "cohort", tmp_path / "all", model, "saliency.method=none")
    parts = [
        run(
            tmp_path / "cohort",
            tmp_path / f"part{k}",
            model,
            "saliency.method=none",
            "num_parts=2",
            f"part_id={k}",
        )
        for k in range(2)
    ]
    ids = [sorted(s["study_id"] for s in p["studies"]) for p in parts]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == sorted(s["study_id"] for s in whole["studies"])
    rows = read_csv(tmp_path / "part0" / "predictions.csv") + read_csv(tmp_path / "part1" / "predictions.csv")
    assert sorted(r["study_id"] for r in rows) == sorted(
        r["study_id"] for r in read_csv(tmp_path / "all" / "predictions.csv")
    )
    again = run(
        tmp_path / "cohort", tmp_path / "part0b", model, "saliency.method=none", "num_parts=2", "part_id=0"
    )
    assert sorted(s["study_id"] for s in again["studies"]) == ids[0]


def _outputs(folder: Path) -> dict[str, object]:
    """Everything a study run leaves, comparable across runs (maps decoded, no timings)."""
    import nibabel as nib

    out: dict[str, object] = {"csv": read_csv(folder / "predictions.csv")}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if (
            not path.is_file()
            or rel.startswith(".")
            or rel.endswith(".log")
            or rel in ("run.json", "predictions.csv", "failed_studies.csv")
        ):
            continue
        if rel.endswith(".nii.gz"):
            out[rel] = np.asarray(nib.load(path).dataobj).tobytes()
        elif rel.endswith(".json"):
            out[rel] = json.loads(path.read_text())
        else:
            out[rel] = path.read_bytes()
    return out


def predict_command(input_path: Path, out: Path, *overrides: str) -> list[str]:
    """``spinelesion-predict`` as a separate process (so that it can be killed)."""
    import sys

    return [
        sys.executable,
        "-m",
        "spinelesion.predict",
        f"input={input_path}",
        f"output_dir={out}",
        f"hydra.run.dir={out}",
        *overrides,
    ]


@pytest.mark.slow
def test_resume_after_kill_9_equals_an_uninterrupted_run(tmp_path: Path, model: Path):
    import signal
    import subprocess
    import time

    for k in range(6):
        nifti(tmp_path / "cohort" / f"p{k}" / "t2.nii.gz", seed=k, shape=(48, 64, 16))
    args = [f"model_dir={model}", *FAST, "saliency.png=true", "progress=false"]
    whole = tmp_path / "whole"
    subprocess.run(
        predict_command(tmp_path / "cohort", whole, *args),
        check=True,
        capture_output=True,
        timeout=600,
    )
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        predict_command(tmp_path / "cohort", out, *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*/predictions.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(out.glob("*/predictions.json")))
    assert 2 <= done_before < 6, "the run should be killed mid-way"
    proc = subprocess.run(
        predict_command(tmp_path / "cohort", out, *args, "resume=true"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_json = json.loads((out / "run.json").read_text())
    assert len(run_json["resumed"]) >= done_before
    assert not (out / ".partial").exists()
    a, b = _outputs(whole), _outputs(out)
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith(".png"):
            continue  # compared by name: PNG bytes equal only with identical zlib streams
        assert a[key] == b[key], key


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_saliency_leaves_the_network_in_eval_mode(method: str):
    """Grad-CAM once left it training: BatchNorm drifted and a study's answer depended on the ones before."""
    from spinelesion.inference.saliency import saliency

    net = build_network(NET).eval()
    x, f = torch.randn(2, 4, 16, 24, 24), torch.ones(2, 4)
    before = net.probabilities(x, f)["fracture"]
    saliency(
        net,
        x,
        f,
        {"compartment": [0, 1], "fracture": [1, 2]},
        method=method,
        target_layer="backbone.layers.2",
    )
    assert not net.training and not any(m.training for m in net.modules())
    torch.testing.assert_close(net.probabilities(x, f)["fracture"], before)


def test_study_ids_are_readable_and_two_patients_without_a_study_uid_stay_apart(tmp_path: Path):
    """Issue 36: a DICOM study is named StudyDate_<6 hex of its UID>, not its 64-digit UID, and
    never by patient (docs/promises.md); a lone NIfTI named by its sequence takes its folder's
    name. Issue 37: series without a StudyInstanceUID were one study whatever their patient."""
    import hashlib

    import pydicom

    from spinelesion.inference.inputs import discover_inputs
    from spinelesion.io.dicom.write import make_uid, write_dicom_series
    from spinelesion.io.reader import read_volume

    vol = read_volume(nifti(tmp_path / "src.nii.gz", seed=3))
    uid = make_uid("readable")
    for patient, folder in (("Doe^John", "a"), ("Roe^Jane", "b")):
        write_dicom_series(
            vol,
            tmp_path / "in" / folder,
            study={"StudyInstanceUID": uid, "PatientID": patient, "StudyDate": "20240105"},
            series={"SeriesInstanceUID": make_uid(folder), "SeriesDescription": "T2 SAG"},
        )
    items, failures = discover_inputs(tmp_path / "in" / "a")
    assert not failures and [it.study_id for it in items] == [
        f"20240105_{hashlib.sha1(uid.encode()).hexdigest()[:6]}"
    ]
    for path in (tmp_path / "in").rglob("*.dcm"):  # both patients lose their StudyInstanceUID
        ds = pydicom.dcmread(path)
        del ds.StudyInstanceUID
        ds.save_as(path)
    items, failures = discover_inputs(tmp_path / "in")
    ids = [it.study_id for it in items]
    assert not failures and len(set(ids)) == 2  # two studies, one per patient
    assert all(i.startswith("20240105_") and "Doe" not in i and "Roe" not in i for i in ids)
    lone = nifti(tmp_path / "sub-07" / "t2.nii.gz", seed=1)
    assert [it.study_id for it in discover_inputs(lone)[0]] == ["sub-07"]
    stem = nifti(tmp_path / "x" / "case12_T2w.nii.gz", seed=1)
    assert [it.study_id for it in discover_inputs(stem)[0]] == ["case12_T2w"]
