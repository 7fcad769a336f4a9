"""DICOM results: a TID 1500 SR and saliency Parametric Maps that read back with the predictions and reference the source."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_cohort import model, nifti  # noqa: F401 - the tiny model fixture and NIfTI writer are shared

hd = pytest.importorskip("highdicom")

POINTS = [[2.0, -3.0, 1.0], [-4.0, 5.0, -6.0]]


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory: pytest.TempPathFactory, model: Path) -> dict:  # noqa: F811
    from hydra import compose, initialize_config_dir

    from spinelesion.config_path import CONFIG_DIR
    from spinelesion.io.dicom.write import make_uid, write_dicom_series
    from spinelesion.io.reader import read_volume
    from spinelesion.predict import predict

    tmp = tmp_path_factory.mktemp("dicom")
    vol = read_volume(nifti(tmp / "t2.nii.gz", seed=7, shape=(24, 32, 12)))
    files = write_dicom_series(
        vol,
        tmp / "in" / "study",
        study={"StudyInstanceUID": make_uid("dcm-out"), "PatientID": "X"},
        series={"SeriesInstanceUID": make_uid("dcm-out", 1), "SeriesDescription": "T2 SAG"},
    )
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "predict",
            [
                f"input={tmp / 'in'}",
                f"model_dir={model}",
                f"output_dir={tmp / 'o'}",
                "paths.output_dir=.",
                "saliency.png=false",
                "device=cpu",
                f"rois={json.dumps(POINTS)}",
            ],
        )
    summary = predict(cfg)
    assert not summary["failed"], summary["failed"]
    folder = tmp / "o" / summary["studies"][0]["folder"]
    return {
        "folder": folder,
        "files": files,
        "series_uid": make_uid("dcm-out", 1),
        "study_uid": make_uid("dcm-out"),
        "pred": json.loads((folder / "predictions.json").read_text()),
    }


def _content(ds, name: str) -> list:  # noqa: ANN001
    """Every content item below ``ds`` whose concept name's meaning is ``name``."""
    out = []
    for item in getattr(ds, "ContentSequence", []):
        if item.ConceptNameCodeSequence[0].CodeMeaning == name:
            out.append(item)
        out.extend(_content(item, name))
    return out


def test_sr_holds_every_roi_with_labels_probabilities_model_and_source(dicom_run: dict):
    import pydicom

    sr = pydicom.dcmread(dicom_run["folder"] / "dicom" / "sr.dcm")
    assert sr.StudyInstanceUID == dicom_run["study_uid"]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert dicom_run["series_uid"] in {s.SeriesInstanceUID for s in evidence}
    report = hd.sr.srread(dicom_run["folder"] / "dicom" / "sr.dcm").content
    groups = _content(sr, "Measurement Group")
    pred = dicom_run["pred"]
    assert len(groups) == len(pred["rois"]) == len(POINTS)
    for group, roi in zip(groups, pred["rois"], strict=True):
        assert _content(group, "Tracking Identifier")[0].TextValue == roi["roi_id"]
        point = _content(group, "Image Region")[0]
        np.testing.assert_allclose(point.GraphicData, roi["center_lps_mm"], atol=1e-3)
        for task in ("compartment", "fracture"):
            ev = _content(group, f"spine lesion {task}")[0]
            assert ev.ConceptCodeSequence[0].CodeMeaning == roi[task]["label"]
            for cls, p in roi[task]["probabilities"].items():
                m = _content(group, f"probability of {task} {cls}")[0]
                assert float(m.MeasuredValueSequence[0].NumericValue) == pytest.approx(p, abs=1e-6)
        algo = _content(group, "Algorithm Name")
        assert algo and algo[0].TextValue == pred["model"]["name"]
    assert report is not None


PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"


def _nifti_maps(folder: Path, task: str) -> tuple[np.ndarray, np.ndarray]:
    """A task's saliency NIfTI: stored uint8 steps (I, J, K, ROI) and the LPS affine of its grid."""
    import nibabel as nib

    img = nib.load(folder / "saliency" / f"{task}.nii.gz")
    return np.asarray(img.dataobj.get_unscaled()), np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine


def test_saliency_parametric_maps_equal_the_nifti_maps_on_the_source_slices(dicom_run: dict):
    """Each task's Parametric Map: the maximum of its ROIs' NIfTI maps, voxel for voxel (the
    same stored 1/255 steps), on the source series' frames, labelled saliency, not a finding."""
    import pydicom

    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_run["files"]]
    position = {s.SOPInstanceUID: np.asarray(s.ImagePositionPatient, float) for s in sources}
    for task in ("compartment", "fracture"):
        path = dicom_run["folder"] / "dicom" / f"saliency_{task}.dcm"
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == PARAMETRIC_MAP and "SegmentSequence" not in ds
        assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == dicom_run["series_uid"]
        refs = {i.ReferencedSOPInstanceUID for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
        assert refs == set(position)  # every source slice, as the SEG referenced them
        assert int(ds.NumberOfFrames) == len(sources)  # one frame per source slice, at its position
        for frame in ds.PerFrameFunctionalGroupsSequence:
            uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            np.testing.assert_allclose(
                frame.PlanePositionSequence[0].ImagePositionPatient, position[uid], atol=1e-4
            )
        shared = ds.SharedFunctionalGroupsSequence[0]
        (rwvm,) = shared.RealWorldValueMappingSequence
        assert rwvm.LUTLabel == "saliency"
        # predict names its method (occlusion by default) in the label
        assert (
            rwvm.LUTExplanation
            == ds.ContentDescription
            == f"{task} saliency (occlusion), not a finding or probability"
        )
        unit = rwvm.MeasurementUnitsCodeSequence[0]
        assert (unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning) == ("1", "UCUM", "no units")
        assert (rwvm.RealWorldValueFirstValueMapped, rwvm.RealWorldValueLastValueMapped) == (0, 255)
        assert rwvm.RealWorldValueSlope == 1 / 255 and rwvm.RealWorldValueIntercept == 0
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
        assert ds.ContentLabel == "SALIENCY" and shared.FrameAnatomySequence[0].FrameLaterality == "U"

        steps, nifti_lps = _nifti_maps(dicom_run["folder"], task)
        expected = steps.max(axis=3)  # (I, J, K): every ROI's map, the maximum where they overlap
        pm = hd.imread(path)
        stored = pm.get_volume(apply_real_world_transform=False)
        real = pm.get_volume(apply_real_world_transform=True)
        # PM voxel (slice, row, column) -> NIfTI voxel (I, J, K), both through patient space
        to_nifti = np.linalg.inv(nifti_lps) @ stored.affine
        np.testing.assert_allclose(to_nifti, np.rint(to_nifti), atol=1e-4)  # the same grid
        index = np.indices(stored.spatial_shape).reshape(3, -1)
        ijk = np.rint(to_nifti[:3, :3] @ index + to_nifti[:3, 3:]).astype(int)
        assert np.array_equal(np.asarray(stored.array).ravel().astype(int), expected[tuple(ijk)].astype(int))
        assert stored.spatial_shape[0] * stored.spatial_shape[1] * stored.spatial_shape[2] == expected.size
        np.testing.assert_allclose(np.asarray(real.array).ravel(), expected[tuple(ijk)] / 255.0, atol=1e-9)
        assert expected.max() > 127  # a map, not an empty volume


def test_saliency_method_and_roi_box_are_labelled_when_given(dicom_run: dict, tmp_path: Path):
    """``write_study_dicom`` names the saliency method in the maps and the ROI box in the SR's
    algorithm parameters; the files still pass dciodvfy."""
    import pydicom

    from spinelesion.inference import dicom_out

    stacks = {t: _nifti_maps(dicom_run["folder"], t)[0] for t in ("compartment", "fracture")}
    written = dicom_out.write_study_dicom(
        tmp_path,
        dicom_run["pred"]["rois"],
        {"format": "dicom", "files": [str(f) for f in dicom_run["files"]]},
        [],
        stacks,
        {"name": "m", "version": "1"},
        saliency_method="gradcam",
        roi_extent_mm=(24.0, 36.0, 36.0),
    )
    assert written == ["dicom/sr.dcm", "dicom/saliency_compartment.dcm", "dicom/saliency_fracture.dcm"]
    pm = pydicom.dcmread(tmp_path / "dicom" / "saliency_fracture.dcm")
    rwvm = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert rwvm.LUTExplanation == "fracture saliency (Grad-CAM), not a finding or probability"
    sr = pydicom.dcmread(tmp_path / "dicom" / "sr.dcm")
    params = {item.TextValue for item in _content(sr, "Algorithm Parameters")}
    assert params == {"ROI box 24 x 36 x 36 mm (L-R x A-P x S-I, LPS axes) centred on the point"}
    assert len(_content(sr, "Image Region")) == len(POINTS)  # still each ROI's centre
    if shutil.which("dciodvfy"):
        for name in written:
            assert not _dciodvfy_errors(tmp_path / name), name


def _dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_dicom_outputs_pass_dciodvfy_without_errors(dicom_run: dict):
    for name in ("sr.dcm", "saliency_compartment.dcm", "saliency_fracture.dcm"):
        errors = _dciodvfy_errors(dicom_run["folder"] / "dicom" / name)
        assert not errors, f"{name}:\n" + "\n".join(errors)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_the_phantoms_dicom_passes_dciodvfy_without_errors(tmp_path: Path):
    """Issue 36: the phantom's MR images lacked seven Type 2 attributes (now present, empty)."""
    from spinelesion.io.dicom.write import write_dicom_series
    from spinelesion.io.volume import Volume

    vol = Volume(
        np.random.default_rng(0).uniform(0, 500, (20, 24, 3)).astype(np.float32),
        np.diag([1.0, 1.0, 3.0, 1.0]),
    )
    study = {
        "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
        "PatientID": "p",
        "PatientName": "SYNTHETIC^P",
        "BodyPartExamined": "LSPINE",  # not a paired part: no Laterality
    }
    series = {
        "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.2",
        "SeriesNumber": 1,
        "ScanningSequence": "SE",
        "SequenceVariant": "NONE",
        "RepetitionTime": 500.0,
    }
    write_dicom_series(vol, tmp_path / "s", study=study, series=series)
    for path in sorted((tmp_path / "s").glob("*.dcm")):
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}:\n" + "\n".join(errors)


def test_a_saliency_parametric_map_is_never_read_back_as_an_input_image() -> None:
    """Our own maps in an input folder are derived, not acquisitions: discovery skips them by class."""
    from pydicom.dataset import Dataset

    from spinelesion.io.dicom.discover import non_image_reason

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    ds.Rows = ds.Columns = 8
    assert non_image_reason(ds) and "not an image" in non_image_reason(ds)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    assert non_image_reason(ds) is None
