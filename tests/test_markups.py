"""3D Slicer markups: ROIs read from LPS and RAS point lists, and written per study with their labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cohort import model, nifti  # noqa: F401 - the tiny model fixture and NIfTI writer are shared

from spinelesion.inference.markups import MarkupsError, read_markups, write_markups

POINTS_LPS = [[10.0, -20.0, 30.5], [-4.0, 6.0, -75.0]]


def slicer_file(path: Path, system: str, points: list[list[float]], labels: list[str]) -> Path:
    """A point list as Slicer 5 saves it."""
    cps = [
        {
            "id": str(k + 1),
            "label": lab,
            "description": "",
            "associatedNodeID": "",
            "position": p,
            "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
            "selected": True,
            "locked": False,
            "visibility": True,
            "positionStatus": "defined",
        }
        for k, (p, lab) in enumerate(zip(points, labels, strict=True))
    ]
    doc = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
        "Schema/markups-schema-v1.0.3.json#",
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": system,
                "coordinateUnits": "mm",
                "locked": False,
                "fixedNumberOfControlPoints": False,
                "labelFormat": "%N-%d",
                "lastUsedControlPointNumber": 2,
                "controlPoints": cps,
                "measurements": [],
                "display": {"visibility": True},
            }
        ],
    }
    path.write_text(json.dumps(doc))
    return path


def test_lps_and_ras_point_lists_give_the_same_lps_points(tmp_path: Path):
    ras = [[-x, -y, z] for x, y, z in POINTS_LPS]
    lps_pts, lps_labels = read_markups(slicer_file(tmp_path / "a.mrk.json", "LPS", POINTS_LPS, ["L1", "T12"]))
    ras_pts, _ = read_markups(slicer_file(tmp_path / "b.mrk.json", "RAS", ras, ["L1", "T12"]))
    np.testing.assert_allclose(lps_pts, POINTS_LPS)
    np.testing.assert_allclose(ras_pts, POINTS_LPS)
    assert lps_labels == ["L1", "T12"]


def test_undefined_points_are_left_out_and_bad_files_are_named(tmp_path: Path):
    path = slicer_file(tmp_path / "a.mrk.json", "LPS", POINTS_LPS, ["a", "b"])
    doc = json.loads(path.read_text())
    doc["markups"][0]["controlPoints"][1]["positionStatus"] = "preview"
    path.write_text(json.dumps(doc))
    assert read_markups(path)[1] == ["a"]
    (tmp_path / "bad.mrk.json").write_text('{"markups": []}')
    with pytest.raises(MarkupsError, match="bad.mrk.json"):
        read_markups(tmp_path / "bad.mrk.json")


def test_written_markups_carry_each_roi_with_its_labels(tmp_path: Path):
    rec = {
        "roi_id": "L1",
        "center_lps_mm": POINTS_LPS[0],
        "source": "given",
        "compartment": {"label": "extradural", "probabilities": {"none": 0.1, "extradural": 0.9}},
        "fracture": {"label": "benign", "probabilities": {"none": 0.2, "benign": 0.8}},
    }
    write_markups(tmp_path / "rois.mrk.json", [rec])
    points, labels = read_markups(tmp_path / "rois.mrk.json")
    np.testing.assert_allclose(points, [POINTS_LPS[0]])
    assert labels == ["L1: extradural / benign"]
    doc = json.loads((tmp_path / "rois.mrk.json").read_text())
    assert doc["markups"][0]["coordinateSystem"] == "LPS"
    assert "extradural 0.90" in doc["markups"][0]["controlPoints"][0]["description"]


def test_predict_takes_slicer_rois_and_writes_markups(tmp_path: Path, model: Path):  # noqa: F811
    from hydra import compose, initialize_config_dir

    from spinelesion.config_path import CONFIG_DIR
    from spinelesion.predict import predict

    nifti(tmp_path / "study" / "t2.nii.gz")
    ras = [[-x, -y, z] for x, y, z in [[2.0, -3.0, 1.0], [0.0, 4.0, -2.0]]]
    points = slicer_file(tmp_path / "p.mrk.json", "RAS", ras, ["T12", "L1"])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "predict",
            [
                f"input={tmp_path / 'study'}",
                f"model_dir={model}",
                f"output_dir={tmp_path / 'o'}",
                "paths.output_dir=.",
                "saliency.method=none",
                "saliency.png=false",
                "device=cpu",
                f"rois={points}",
            ],
        )
    summary = predict(cfg)
    folder = tmp_path / "o" / summary["studies"][0]["folder"]
    data = json.loads((folder / "predictions.json").read_text())
    assert [r["roi_id"] for r in data["rois"]] == ["T12", "L1"]
    np.testing.assert_allclose(
        [r["center_lps_mm"] for r in data["rois"]], [[2.0, -3.0, 1.0], [0.0, 4.0, -2.0]]
    )
    back, labels = read_markups(folder / "rois.mrk.json")
    np.testing.assert_allclose(back, [[2.0, -3.0, 1.0], [0.0, 4.0, -2.0]])
    assert [lab.split(":")[0] for lab in labels] == ["T12", "L1"]
    assert all(r["compartment"]["label"] in lab for r, lab in zip(data["rois"], labels, strict=True))
