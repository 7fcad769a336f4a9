"""The manifest validator: every problem reported at once, each naming file, row and column."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from spinelesion.data.manifest import COLUMNS, ManifestError, read_manifest, write_manifest
from spinelesion.io.nifti import write_nifti
from spinelesion.io.volume import Volume, grid_affine


def _nifti(path: Path, center=(0.0, 0.0, 0.0), shape=(20, 20, 10)) -> Path:
    write_nifti(Volume(np.ones(shape, np.float32), grid_affine(center, shape, (1.0, 1.0, 3.0))), path)
    return path


def _row(**kw: object) -> dict[str, object]:
    base = {
        "case_id": "c1",
        "study_id": "s1",
        "patient_id": "p1",
        "split": "",
        "t1": "",
        "t2": "s1_t2.nii.gz",
        "stir": "",
        "t1c": "",
        "x_mm": 0.0,
        "y_mm": 0.0,
        "z_mm": 0.0,
        "compartment": "none",
        "fracture": "",
        "level": "L1",
        "finding": "normal",
    }
    base.update(kw)
    return base


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    _nifti(tmp_path / "s1_t2.nii.gz")
    _nifti(tmp_path / "s2_t2.nii.gz", center=(0.0, 0.0, 100.0))
    return tmp_path


def test_good_manifest_parses_with_paths_relative_to_its_folder(folder: Path):
    path = write_manifest(
        folder / "manifest.csv",
        [
            _row(),
            _row(
                case_id="c2",
                study_id="s2",
                patient_id="p2",
                t2="s2_t2.nii.gz",
                z_mm=100.0,
                compartment="extradural",
                fracture="pathologic",
            ),
        ],
    )
    m = read_manifest(path, geometry=True)
    assert [r.case_id for r in m.rows] == ["c1", "c2"]
    assert m.rows[0].sequences == {"t2": folder / "s1_t2.nii.gz"}
    assert m.rows[0].labels == {"compartment": "none", "fracture": ""}
    np.testing.assert_allclose(m.rows[1].center_lps, [0, 0, 100])
    assert list(m.studies()) == ["s1", "s2"]


def test_subset_can_keep_only_some_sequences(folder: Path, tmp_path: Path):
    """A renderer probe that learnt from T2 alone is asked about T2 alone: the other sequence
    columns are emptied and a study left with none of the kept ones is dropped."""
    from spinelesion.data.manifest import subset_manifest

    _nifti(folder / "s1_t1.nii.gz")
    _nifti(folder / "s3_t1.nii.gz")
    path = write_manifest(
        folder / "manifest.csv",
        [
            _row(t1="s1_t1.nii.gz"),
            _row(case_id="c3", study_id="s3", patient_id="p3", t1="s3_t1.nii.gz", t2=""),
        ],
    )
    sub = subset_manifest(path, tmp_path / "t2only.csv", studies=None, sequences=["t2"])
    m = read_manifest(sub)
    assert [r.case_id for r in m.rows] == ["c1"]
    assert m.rows[0].sequences == {"t2": folder / "s1_t2.nii.gz"}
    with pytest.raises(ValueError, match="unknown sequence"):
        subset_manifest(path, tmp_path / "bad.csv", studies=None, sequences=["flair"])


def test_every_problem_is_reported_with_file_row_and_column(folder: Path):
    path = write_manifest(
        folder / "manifest.csv",
        [
            _row(compartment="epidural"),  # row 1: unknown label
            _row(case_id="c2", x_mm="abc"),  # row 2: not a number
            _row(case_id="c3", t2="missing.nii.gz"),  # row 3: missing file
            _row(case_id="c3", fracture="maybe"),  # row 4: duplicate id + bad label
            _row(case_id="c5", split="holdout"),  # row 5: bad split
        ],
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    text = str(err.value)
    problems = {(p.row, p.column) for p in err.value.problems}
    assert {
        (1, "compartment"),
        (2, "x_mm"),
        (3, "t2"),
        (4, "case_id"),
        (4, "fracture"),
        (5, "split"),
    } <= problems
    assert all(p.file == str(path.resolve()) for p in err.value.problems)
    assert "row 1, column 'compartment': unknown label 'epidural'" in text
    assert "intradural_extramedullary" in text  # the allowed values are listed
    assert "row 3, column 't2'" in text and "missing.nii.gz" in text


def test_missing_columns_are_named(tmp_path: Path):
    path = tmp_path / "manifest.csv"
    path.write_text("case_id,study_id,x_mm,y_mm\nc1,s1,0,0\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    cols = {p.column for p in err.value.problems}
    assert {"patient_id", "z_mm"} <= cols
    assert "at least one sequence column" in str(err.value)


def test_roi_outside_every_volume_is_rejected(folder: Path):
    path = write_manifest(folder / "manifest.csv", [_row(z_mm=500.0)])
    with pytest.raises(ManifestError, match=r"row 1.*outside every volume"):
        read_manifest(path, geometry=True)
    read_manifest(path, geometry=False)  # the check is opt-in: it opens every study


def test_patient_in_two_splits_and_inconsistent_study_are_rejected(folder: Path):
    path = write_manifest(
        folder / "manifest.csv",
        [
            _row(split="train"),
            _row(case_id="c2", study_id="s2", t2="s2_t2.nii.gz", split="test"),  # same patient p1
            _row(case_id="c3", patient_id="p9"),  # s1 belongs to p1
        ],
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    text = str(err.value)
    assert "row 2, column 'split'" in text and "splits must be by patient" in text
    assert "row 3, column 'patient_id'" in text


def test_written_manifest_has_contract_columns_in_order(folder: Path):
    path = write_manifest(folder / "m.csv", [_row()])
    with open(path) as fh:
        assert next(csv.reader(fh)) == list(COLUMNS)


def test_subset_keeps_whole_studies_and_makes_paths_absolute(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from spinelesion.data.manifest import subset_manifest

    monkeypatch.chdir(folder.parent)  # the source manifest given by a relative path

    path = write_manifest(
        folder / "manifest.csv",
        [
            _row(),
            _row(case_id="c1b", x_mm=2.0),
            _row(case_id="c2", study_id="s2", patient_id="p2", t2="s2_t2.nii.gz", z_mm=100.0),
        ],
    )
    sub = subset_manifest(Path(folder.name) / path.name, tmp_path / "elsewhere" / "sub.csv", studies=1)
    m = read_manifest(sub, geometry=True)
    assert [r.case_id for r in m.rows] == ["c1", "c1b"]  # both ROIs of the first study, none of the second
    assert m.rows[0].sequences == {"t2": folder / "s1_t2.nii.gz"}
