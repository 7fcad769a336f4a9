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
FAST = ["saliency.png=false", "scan.write_maps=false", "device=cpu", "batch_size=4", f"rois={POINT}"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model_folder(build_network(NET), folder, {"name": "tiny", "version": "t", "network": NET, "roi": ROI,
                                                   "reference": "auto"})
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
        cfg = compose("predict", [f"input={input_path}", f"model_dir={model}", f"output_dir={out}",
                                  "paths.output_dir=.", *FAST, *extra])
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
