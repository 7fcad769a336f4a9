"""DICOM results: a TID 1500 SR and saliency SEGs that read back with the predictions and reference the source."""

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


def test_saliency_segmentations_match_the_nifti_maps_and_reference_the_source_slices(dicom_run: dict):
    import nibabel as nib
    import pydicom

    sources = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in dicom_run["files"]}
    for task in ("compartment", "fracture"):
        seg = hd.seg.segread(dicom_run["folder"] / "dicom" / f"saliency_{task}.dcm")
        assert seg.SegmentationType == "FRACTIONAL"
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == dicom_run["series_uid"]
        assert {
            i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        } <= sources
        assert seg.number_of_segments == len(POINTS)
        nifti_maps = np.asarray(nib.load(dicom_run["folder"] / "saliency" / f"{task}.nii.gz").dataobj)
        pixels = (
            seg.get_volume(combine_segments=False, rescale_fractional=True)
            if hasattr(seg, "get_volume")
            else None
        )
        assert pixels is not None
        arr = np.asarray(pixels.array, dtype=np.float32)  # (slices, rows, columns, segments) in frame order
        assert arr.shape[-1] == len(POINTS)
        assert arr.max() > 0.5 and arr.min() >= 0.0 and arr.max() <= 1.0
        # the same maps as the NIfTI, whatever the slice order the volume was rebuilt in
        assert np.sort(arr.ravel())[-50:] == pytest.approx(
            np.sort(nifti_maps.ravel())[-50:], abs=1 / 255 + 1e-6
        )


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_dicom_outputs_pass_dciodvfy_without_errors(dicom_run: dict):
    for name in ("sr.dcm", "saliency_compartment.dcm", "saliency_fracture.dcm"):
        proc = subprocess.run(
            ["dciodvfy", str(dicom_run["folder"] / "dicom" / name)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
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
