"""The Python API (spinelesion.api): the commands as functions, as TotalSegmentator's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinelesion.io.nifti import write_nifti
from spinelesion.io.volume import Volume
from spinelesion.models.folder import save_model_folder
from spinelesion.models.networks import build_network

NET = {"backbone": "spinecnn", "widths": [8, 16, 16, 16], "hidden": 16}
ROI = {"shape": [32, 48, 48], "spacing": [1.5, 1.5, 1.5], "margin": 1.25}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-model"
    save_model_folder(
        build_network(NET), folder, {"name": "tiny", "version": "t", "network": NET, "roi": ROI}
    )
    return folder


def test_predict_as_a_function_returns_what_it_wrote(tmp_path: Path, tiny_model: Path) -> None:
    from spinelesion.api import predict

    arr = np.random.default_rng(0).uniform(50, 500, (40, 40, 24)).astype(np.float32)
    write_nifti(Volume(arr, np.diag([1.5, 1.5, 2.0, 1.0])), tmp_path / "exam" / "t2.nii.gz")
    run = predict(
        tmp_path / "exam",
        tmp_path / "out",
        model=tiny_model,
        rois=[[30.0, 30.0, 24.0]],
        saliency__method="none",
        saliency__png=False,
        device="cpu",
    )
    assert {k: run["counts"][k] for k in ("predicted", "failed", "skipped_files")} == {
        "predicted": 1,
        "failed": 0,
        "skipped_files": 0,
    }
    (study,) = run["results"].values()
    roi = study["rois"][0]
    assert roi["center_lps_mm"] == [30.0, 30.0, 24.0] and roi["source"] == "given"
    assert sum(roi["compartment"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert (tmp_path / "out" / "run.json").is_file() and (tmp_path / "out" / "predictions.csv").is_file()
    # warnings and notes told apart the same way everywhere: notes marked in predictions.json, counted apart
    notes = run["studies"][0]["notes"]
    assert any(n.startswith("note: missing sequence(s): t1, stir, t1c") for n in notes)
    assert run["counts"]["with_notes"] == 1
    assert [w for w in study["warnings"] if w.startswith("note: ")] == notes
    assert [w for w in study["warnings"] if not w.startswith("note: ")] == run["studies"][0]["warnings"]
    with pytest.raises(ValueError, match="argument input="):  # the command's validation, raised, no exit
        predict(tmp_path / "nope", tmp_path / "out2", model=tiny_model)


def test_a_study_sink_of_your_own_runs_before_predictions_json(tmp_path: Path, tiny_model: Path) -> None:
    """Issue 35: the predictor's writers are sinks in order; predictions.json comes after them all,
    so a study with predictions.json is complete, your sink's output and notes included."""
    import json

    from spinelesion.inference.predictor import Predictor, PredictorConfig, RoiRequest, StudyInput
    from spinelesion.io.study import Study

    vol = Volume(
        np.random.default_rng(1).uniform(50, 500, (40, 40, 24)).astype(np.float32),
        np.diag([1.5, 1.5, 2.0, 1.0]),
    )
    predictor = Predictor.from_model_dir(
        tiny_model, PredictorConfig(device="cpu", saliency_method="none", png=False, dicom=False)
    )
    assert [name for name, _ in predictor.sinks] == ["maps", "markups"]
    seen = []

    def mine(job) -> None:
        seen.append((job.item.study_id, len(job.records), (job.folder / "predictions.json").exists()))
        (job.folder / "mine.txt").write_text("pushed")
        job.notes.append("pushed to the archive")

    predictor.sinks.append(("mine", mine))
    item = StudyInput(
        "s1", "memory", lambda: Study("s1", {"t2": vol}), [RoiRequest("r1", np.array([30.0, 30.0, 24.0]))]
    )
    result = predictor.predict_study(item, tmp_path / "out")
    assert seen == [("s1", 1, False)]  # called with the answers, before predictions.json
    assert (result.folder / "mine.txt").read_text() == "pushed"
    written = json.loads((result.folder / "predictions.json").read_text())
    assert "note: pushed to the archive" in written["warnings"]
