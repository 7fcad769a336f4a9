"""Hard-negative mining: scan candidates on untouched train/val studies become normal ROIs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from test_predict import PROBE_META, SAG, CentreProbeNet, blob_volume

from spinelesion.data.manifest import read_manifest, write_manifest
from spinelesion.inference.predictor import Predictor, PredictorConfig
from spinelesion.io.nifti import write_nifti
from spinelesion.tasks.hard_negatives import hard_negative_records, untouched_studies


def _manifest(tmp_path: Path, blob: np.ndarray) -> Path:
    """An insertion-style manifest: one untouched train study, one untouched test study, one inserted."""
    root = tmp_path / "insert"
    rows = []
    for subject, split, finding in (
        ("s1", "train", "normal"),
        ("s2", "test", "normal"),
        ("s3", "train", "meningioma"),
    ):
        write_nifti(blob_volume(SAG, (1.0, 1.0, 3.0), 0.0, blob), tmp_path / subject / "t2.nii.gz")
        labels = ("none", "none") if finding == "normal" else ("intradural_extramedullary", "none")
        rows.append(
            dict(
                case_id=f"{subject}_r0",
                study_id=subject,
                patient_id=subject,
                split=split,
                t2=f"../{subject}/t2.nii.gz",
                x_mm=3.0,
                y_mm=-5.0,
                z_mm=8.0,
                compartment=labels[0],
                fracture=labels[1],
                level="L3",
                finding=finding,
            )
        )
    return write_manifest(root / "manifest.csv", rows)


def test_mining_turns_the_scans_false_calls_into_normal_rois_of_train_studies_only(tmp_path: Path):
    blob = np.array([6.0, -2.0, 12.0])  # a bright normal structure the probe calls a lesion
    studies = untouched_studies(_manifest(tmp_path, blob))
    assert [s.study_id for s in studies] == ["s1"]  # held-out (test) and inserted studies are never mined
    assert studies[0].sequences["t2"] == (tmp_path / "s1" / "t2.nii.gz").resolve()

    predictor = Predictor(
        CentreProbeNet(), PROBE_META, PredictorConfig(device="cpu", saliency_method="none", png=False)
    )
    out = tmp_path / "hardneg"
    records, summary = hard_negative_records(
        studies,
        predictor,
        out,
        {"threshold": 0.5, "max_rois": 3, "copies": 2, "jitter_mm": 2.0},
        progress=False,
    )
    assert summary["studies"] == 1 and summary["candidates"] >= 1
    assert summary["per_study"]["s1"]["candidates"] == summary["candidates"]
    assert len(records) == 3 * summary["candidates"]  # each candidate and its two jittered copies
    centres = np.array([[r["x_mm"], r["y_mm"], r["z_mm"]] for r in records])
    for k in range(summary["candidates"]):  # a candidate, then its copies within the jitter
        assert np.all(np.abs(centres[3 * k + 1 : 3 * k + 3] - centres[3 * k]) <= 2.0 + 0.01)
    assert len({tuple(c) for c in centres[::3]}) == summary["candidates"]  # distinct candidates
    assert all(
        r["compartment"] == "none" and r["fracture"] == "none" and r["split"] == "train" for r in records
    )

    path = write_manifest(out / "manifest.csv", records)
    manifest = read_manifest(path)  # a valid contract manifest whose relative paths resolve to the study
    assert {r.study_id for r in manifest.rows} == {"s1"}
    with open(path, newline="") as fh:
        assert next(csv.DictReader(fh))["t2"] == "../s1/t2.nii.gz"


def test_studies_with_lesions_are_mined_away_from_their_lesions(tmp_path: Path):
    """Phantom studies all carry lesions: with ``with_lesions`` they are mined too, and a candidate
    near a labelled lesion is a detection, not a hard negative."""
    blob = np.array([6.0, -2.0, 12.0])  # the probe calls it a lesion
    manifest = _manifest(tmp_path, blob)
    studies = untouched_studies(manifest, with_lesions=True)
    assert [s.study_id for s in studies] == ["s1", "s3"]  # the test split stays held out
    s3 = next(s for s in studies if s.study_id == "s3")
    assert s3.lesions == ((3.0, -5.0, 8.0),) and studies[0].lesions == ()

    predictor = Predictor(
        CentreProbeNet(), PROBE_META, PredictorConfig(device="cpu", saliency_method="none", png=False)
    )
    settings = {"threshold": 0.5, "max_rois": 3, "copies": 0}
    far, summary_far = hard_negative_records(
        [s3], predictor, tmp_path / "a", {**settings, "exclude_mm": 2.0}, False
    )
    near, summary_near = hard_negative_records(
        [s3], predictor, tmp_path / "b", {**settings, "exclude_mm": 40.0}, False
    )
    lesion = np.array(s3.lesions[0])

    def distances(records: list[dict]) -> np.ndarray:
        return np.array([np.linalg.norm([r["x_mm"], r["y_mm"], r["z_mm"]] - lesion) for r in records])

    assert len(far) == summary_far["candidates"] and distances(far).min() < 15  # the blob, mined
    assert len(near) == len(far) - 1 and distances(near).min() > 40  # the blob is a detection now


def test_studies_with_far_reaching_findings_are_not_mined(tmp_path: Path):
    manifest = _manifest(tmp_path, np.array([6.0, -2.0, 12.0]))
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if r["finding"] == "meningioma":
            r["finding"], r["compartment"] = "intramedullary_metastasis", "intramedullary"
    path = write_manifest(tmp_path / "long" / "manifest.csv", rows)
    assert [s.study_id for s in untouched_studies(path, with_lesions=True)] == ["s1"]
