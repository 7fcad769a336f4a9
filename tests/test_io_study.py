"""Sequence recognition, choosing one series per sequence, and loading studies every way the contract allows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_io import AXIAL, SAGITTAL, make_volume, pydicom_file, write_series

from spinelesion.io.dicom.write import make_uid
from spinelesion.io.nifti import write_nifti
from spinelesion.io.sequences import apply_override, guess_sequence
from spinelesion.io.study import (
    StudyError,
    assign_series,
    group_dicom_studies,
    load_study_folder,
    load_study_from_paths,
    nifti_sequence_name,
)


@pytest.mark.parametrize(
    "meta, expected",
    [
        ({"SeriesDescription": "Sag T2 FRFSE"}, "t2"),
        ({"SeriesDescription": "T2_TSE_SAG_384"}, "t2"),
        ({"SeriesDescription": "SAG T2 T10-L1"}, "t2"),  # a level name is not T1
        ({"SeriesDescription": "T2 TIRM SAG"}, "stir"),
        ({"SeriesDescription": "STIR SAG"}, "stir"),
        (
            {
                "SeriesDescription": "sag",
                "ScanningSequence": ["SE", "IR"],
                "InversionTime": 160,
                "RepetitionTime": 4000,
                "EchoTime": 40,
            },
            "stir",
        ),  # 1.5 T fat-nulling TI
        (
            {
                "SeriesDescription": "sag IR",
                "ScanningSequence": "IR",
                "InversionTime": 220,
                "MagneticFieldStrength": 3,
            },
            "stir",
        ),  # 3 T
        ({"SeriesDescription": "T2 FS SAG"}, "stir"),  # fat-suppressed T2 stands in for STIR
        ({"SeriesDescription": "t2_tse_dixon_sag_W"}, "stir"),
        ({"SeriesDescription": "t2_tse_dixon_sag_F"}, None),  # Dixon fat image
        ({"SeriesDescription": "T1 TSE SAG FS +C"}, "t1c"),
        ({"SeriesDescription": "SAG T1 C+"}, "t1c"),
        ({"SeriesDescription": "T1W_TSE_SAG_FS_GD"}, "t1c"),  # underscores separate words
        ({"SeriesDescription": "t1_tse_fs_sag_post"}, "t1c"),
        ({"SeriesDescription": "t2_tirm_sag"}, "stir"),
        ({"SeriesDescription": "POST GAD SAG", "EchoTime": 10, "RepetitionTime": 500}, "t1c"),
        ({"SeriesDescription": "SAG T1", "ContrastBolusAgent": "Gadobutrol"}, "t1c"),
        ({"SeriesDescription": "SAG T1", "ContrastBolusAgent": "NONE"}, "t1"),
        ({"SeriesDescription": "T1 SAG PRE GAD"}, "t1"),
        ({"SeriesDescription": "Sag T1 FSE"}, "t1"),
        ({"SeriesDescription": "MPRAGE sag KM"}, "t1c"),
        ({"SeriesDescription": "SE sag", "RepetitionTime": 550, "EchoTime": 12}, "t1"),
        ({"SeriesDescription": "", "ProtocolName": "T2 SAG", "RepetitionTime": 3000, "EchoTime": 100}, "t2"),
        ({"SeriesDescription": "FSE sag", "RepetitionTime": 3500, "EchoTime": 110}, "t2"),
        ({"SeriesDescription": "FSE sag", "RepetitionTime": 3000, "EchoTime": 20}, None),  # proton density
        (
            {"SeriesDescription": "IR sag", "ScanningSequence": "IR", "InversionTime": 2500},
            None,
        ),  # FLAIR-like
        ({"SeriesDescription": "3-plane localizer"}, None),
        ({"SeriesDescription": "DWI b800"}, None),
        ({"SeriesDescription": "T2 SAG", "ImageType": ["DERIVED", "SECONDARY", "MPR"]}, None),
        ({"SeriesDescription": "T2*"}, None),
        ({"SeriesDescription": "whatever"}, None),
    ],
)
def test_sequence_recognition(meta, expected):
    guess = guess_sequence(meta)
    assert guess.sequence == expected, guess.reason
    assert guess.reason


def test_recognition_confidence_ranks_description_over_timing():
    by_name = guess_sequence({"SeriesDescription": "T2 SAG"})
    by_timing = guess_sequence({"SeriesDescription": "sag", "RepetitionTime": 3000, "EchoTime": 100})
    assert by_name.sequence == by_timing.sequence == "t2"
    assert by_name.confidence > by_timing.confidence
    assert "TE" in by_timing.reason or "TR" in by_timing.reason


def test_sequence_override():
    assert apply_override({"7": "t1c"}, "1.2.3", 7, "weird name") == "t1c"
    assert apply_override({7: "t1c"}, "1.2.3", 7, "weird name") == "t1c"
    assert apply_override({"^ax": "t2"}, "1.2.3", 1, "AX something") == "t2"
    assert apply_override({"1.2.3": "stir"}, "1.2.3", None, "") == "stir"
    assert apply_override({"x": "t1"}, "1.2.3", 1, "T2") is None


def _export(root: Path) -> str:
    """A DICOM study folder: sagittal and axial T2, sagittal T1, STIR, a localiser, a report, a text file."""
    uid = make_uid("study", root.name)
    write_series(make_volume(seed=1), root / "s1", desc="T2 TSE SAG", study_uid=uid, number=3)
    write_series(
        make_volume(axes=AXIAL, seed=2, shape=(24, 24, 20)),
        root / "s2",
        desc="T2 TSE AX",
        study_uid=uid,
        number=4,
    )
    write_series(make_volume(seed=3), root / "s3", desc="T1 TSE SAG", study_uid=uid, number=5)
    write_series(
        make_volume(seed=4),
        root / "s4",
        desc="sag",
        study_uid=uid,
        number=6,
        ScanningSequence="IR",
        InversionTime=150,
        RepetitionTime=4000,
        EchoTime=40,
    )
    write_series(
        make_volume(seed=5, shape=(8, 8, 3)), root / "s5", desc="3-plane localizer", study_uid=uid, number=1
    )
    shutil.copy(pydicom_file("reportsi.dcm"), root / "report")
    (root / "notes.txt").write_text("hello")
    return uid


def test_study_folder_picks_one_series_per_sequence_and_says_why(tmp_path: Path):
    uid = _export(tmp_path / "exp")
    study = load_study_folder(tmp_path / "exp")
    assert study.study_id == uid
    assert study.sequences == ["t1", "t2", "stir"]
    assert study.volumes["t2"].meta["SeriesDescription"] == "T2 TSE SAG"  # sagittal preferred over axial
    assert study.volumes["stir"].meta["SeriesNumber"] == 6
    text = "\n".join(study.warnings)
    assert "series 4 'T2 TSE AX' (20 files) also looks like t2" in text and "then sagittal" in text
    assert "series 1 '3-plane localizer' (3 files): skipped" in text
    assert "not an image (Basic Text SR" in text
    # arrays keep their own grids
    assert study.volumes["t2"].shape == (24, 28, 8)


def test_study_folder_overrides(tmp_path: Path):
    _export(tmp_path / "exp")
    study = load_study_folder(tmp_path / "exp", overrides={"4": "t2", "T1 TSE": "t1c", "^sag$": "ignore"})
    assert study.sequences == ["t2", "t1c"]
    assert study.volumes["t2"].meta["SeriesDescription"] == "T2 TSE AX"  # the override beats sagittal
    assert any("'sag'" in w and "skipped by the user" in w for w in study.warnings)
    with pytest.raises(ValueError, match="unknown sequence 'flair'"):
        load_study_folder(tmp_path / "exp", overrides={"5": "flair"})


def test_unrecognised_series_are_named_in_the_error(tmp_path: Path):
    write_series(make_volume(), tmp_path / "a", desc="mystery")
    with pytest.raises(StudyError, match="no series recognised.*'mystery'.*cannot tell"):
        load_study_folder(tmp_path)
    assert load_study_folder(tmp_path, overrides={"mystery": "t2"}).sequences == ["t2"]


def test_broken_series_becomes_a_warning_not_a_lost_study(tmp_path: Path):
    uid = make_uid("s")
    write_series(make_volume(seed=1), tmp_path / "t2", desc="T2 SAG", study_uid=uid)
    paths = write_series(make_volume(seed=2), tmp_path / "t1", desc="T1 SAG", study_uid=uid)
    paths[3].unlink()
    study = load_study_folder(tmp_path)
    assert study.sequences == ["t2"]
    assert any(w.startswith("t1: ") and "missing slice" in w for w in study.warnings)


def test_a_slice_that_cannot_be_read_is_named_beside_the_gap_it_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Issue 37: a slice the process may not read was reported as a missing slice only."""
    import spinelesion.io.dicom.discover as discover

    uid = make_uid("s")
    write_series(make_volume(seed=1), tmp_path / "t2", desc="T2 SAG", study_uid=uid)
    paths = write_series(make_volume(seed=2), tmp_path / "t1", desc="T1 SAG", study_uid=uid)
    real = discover._safe_prefix

    def denied(path: Path):  # as root here, chmod cannot deny a read: the error is simulated
        return PermissionError(13, "Permission denied") if path == paths[3] else real(path)

    monkeypatch.setattr(discover, "_safe_prefix", denied)
    study = load_study_folder(tmp_path)
    assert study.sequences == ["t2"]
    warning = next(w for w in study.warnings if w.startswith("t1: "))
    assert "missing slice" in warning
    assert f"1 file(s) beside it could not be read, e.g. {paths[3].name}: cannot read the file" in warning
    assert "Permission denied" in warning


def test_two_studies_in_one_folder_are_refused_but_grouped(tmp_path: Path):
    write_series(make_volume(), tmp_path / "a", desc="T2 SAG", study_uid=make_uid("A"))
    write_series(make_volume(), tmp_path / "b", desc="T2 SAG", study_uid=make_uid("B"))
    with pytest.raises(StudyError, match="holds 2 studies"):
        load_study_folder(tmp_path)
    studies, _ = group_dicom_studies(tmp_path)
    assert sorted(studies) == sorted([make_uid("A"), make_uid("B")])


def test_assign_series_documents_the_tie_break(tmp_path: Path):
    uid = make_uid("tie")
    write_series(make_volume(shape=(16, 16, 10)), tmp_path / "a", desc="T2 SAG", study_uid=uid, number=2)
    write_series(make_volume(shape=(16, 16, 12)), tmp_path / "b", desc="T2 SAG", study_uid=uid, number=3)
    from spinelesion.io.dicom.discover import discover_series

    chosen, warnings = assign_series(discover_series(tmp_path)[0])
    assert chosen["t2"].number == 3  # same plane and confidence: more slices wins
    assert any("series 2 'T2 SAG'" in w and "most slices" in w for w in warnings)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("t2.nii.gz", "t2"),
        ("sub-01_T2w.nii.gz", "t2"),
        ("T1c.nii", "t1c"),
        ("case_stir.nii.gz", "stir"),
        ("t1_post.nii.gz", "t1c"),
        ("sub-01_ce-gadolinium_T1w.nii.gz", "t1c"),
        ("T1.nii.gz", "t1"),
        ("flair.nii.gz", None),
        ("t2_seg-manual.nii.gz", None),
        ("T2_mask.nii.gz", None),
    ],
)
def test_nifti_names_map_to_sequences(name, expected):
    assert nifti_sequence_name(Path(name)) == expected


def test_nifti_study_folder(tmp_path: Path):
    write_nifti(make_volume(seed=1), tmp_path / "T2_mask.nii.gz")  # sorts first: must not become the t2
    write_nifti(make_volume(seed=2), tmp_path / "t2.nii.gz")
    write_nifti(make_volume(seed=3, axes=AXIAL), tmp_path / "T1c.nii")
    study = load_study_folder(tmp_path, study_id="S1")
    assert study.study_id == "S1" and study.sequences == ["t2", "t1c"]
    assert study.volumes["t2"].meta["source"].endswith("t2.nii.gz")
    assert any("T2_mask.nii.gz" in w for w in study.warnings)


def test_study_from_manifest_paths_mixes_dicom_and_nifti(tmp_path: Path):
    t2 = make_volume(seed=1)
    write_series(t2, tmp_path / "t2_dicom", desc="T2 SAG")
    write_nifti(make_volume(seed=2, axes=SAGITTAL, spacing=(0.8, 0.8, 4.0)), tmp_path / "stir.nii.gz")
    study = load_study_from_paths(
        "S9", {"t2": tmp_path / "t2_dicom", "stir": tmp_path / "stir.nii.gz", "t1": ""}
    )
    assert study.sequences == ["t2", "stir"]
    np.testing.assert_array_equal(study.volumes["t2"].array, t2.array)
    with pytest.raises(StudyError, match=r"study 'S9': t1c: .*missing.nii.gz: file not found"):
        load_study_from_paths("S9", {"t1c": tmp_path / "missing.nii.gz"})
    with pytest.raises(StudyError, match="unknown sequence name 'dwi'"):
        load_study_from_paths("S9", {"dwi": tmp_path / "stir.nii.gz"})
