"""MONAI bundle export: MONAI's schema fields, TorchScript parity, and the same probabilities as predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_io import AXIAL, SAGITTAL, blob, make_volume

from spinelesion.export.bundle import export_bundle
from spinelesion.inference.predictor import Predictor, PredictorConfig, RoiRequest, StudyInput
from spinelesion.io.nifti import write_nifti
from spinelesion.io.study import load_nifti_folder
from spinelesion.labels import SEQUENCES, TASKS
from spinelesion.models.folder import load_model_folder, save_model_folder
from spinelesion.models.networks import build_network

ROI = {"shape": [16, 24, 24], "spacing": [2.0, 2.0, 2.0], "margin": 1.25}
NET = {"backbone": "spinecnn", "widths": [4, 8, 8, 8], "blocks": [1, 1, 1, 1], "hidden": 16, "dropout": 0.0}
CENTERS = [[0.0, 0.0, 0.0], [6.0, -9.0, 14.0], [-4.0, 3.0, -20.0]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    net = build_network(NET)
    net.temperature.copy_(torch.tensor([0.8, 1.3]))  # the bundle must apply the stored temperatures
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode numbers are not all alike
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        for head in net.heads:  # confident heads: ROI-to-ROI differences far above the 1e-4 tolerance
            head[-1].weight.mul_(40.0)
    folder = tmp_path_factory.mktemp("model")
    save_model_folder(
        net,
        folder,
        {
            "name": "tiny",
            "version": "0.0.1",
            "network": NET,
            "roi": ROI,
            "reference": "auto",
            "intended_use": "tests",
            "tta": ["lr"],  # the bundle must mirror as the predictor does
        },
    )
    return folder


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """t2 sagittal and t1 oblique axial on different grids: the bundle must resample like predict."""
    folder = tmp_path_factory.mktemp("study") / "s01"
    folder.mkdir()
    t2 = make_volume(shape=(48, 64, 14), spacing=(1.0, 1.0, 3.0), axes=SAGITTAL, centre=(0, 0, 0), seed=1)
    t1 = make_volume(
        shape=(40, 40, 24), spacing=(1.1, 1.1, 2.5), axes=AXIAL, centre=(2, 1, -3), seed=2, oblique_deg=8.0
    )
    for vol, point in ((t2, CENTERS[1]), (t1, CENTERS[2])):  # a bright lesion-like blob: ROIs that differ
        noise = vol.array.copy()
        blob(vol, np.asarray(point), sigma_mm=4.0)
        vol.array[:] = 0.3 * noise + 3.0 * vol.array
    write_nifti(t2, folder / "t2.nii.gz")
    write_nifti(t1, folder / "t1.nii.gz")
    return folder


def _predict(model_dir: Path, study: Path, tta: bool | str = "auto") -> dict[str, np.ndarray]:
    net, meta = load_model_folder(model_dir)
    pred = Predictor(net, meta, PredictorConfig(device="cpu", saliency_method="none", png=False, tta=tta))
    item = StudyInput(
        "s01",
        str(study),
        lambda: load_nifti_folder(study, "s01"),
        [RoiRequest(f"roi{i + 1:02d}", np.asarray(c)) for i, c in enumerate(CENTERS)],
    )
    res = pred.predict_study(item, study.parent / "predict_out")
    return {t: np.array([[r[t]["probabilities"][c] for c in TASKS[t]] for r in res.rois]) for t in TASKS}


def _bundle_probs(path: Path) -> dict[str, np.ndarray]:
    rois = json.loads(path.read_text())["rois"]
    return {t: np.array([[r[t]["probabilities"][c] for c in TASKS[t]] for r in rois]) for t in TASKS}


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_bundle_files_and_metadata_schema(model_dir: Path, tmp_path: Path):
    result = export_bundle(model_dir, tmp_path / "bundle")
    for rel in (
        "configs/metadata.json",
        "configs/inference.json",
        "models/model.pt",
        "models/model.ts",
        "docs/README.md",
    ):
        assert (tmp_path / "bundle" / rel).is_file(), rel
    meta = json.loads((tmp_path / "bundle/configs/metadata.json").read_text())
    for key in (
        "version",
        "changelog",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "optional_packages_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    ):
        assert meta[key], key
    inputs = meta["network_data_format"]["inputs"]
    assert inputs["image"]["spatial_shape"] == ROI["shape"] and inputs["image"]["num_channels"] == len(
        SEQUENCES
    )
    assert set(meta["network_data_format"]["outputs"]) == set(TASKS)
    assert any("NOT a clinical tool" in r for r in meta["references"])
    assert "spinelesion" in meta["required_packages_version"]
    assert "install the `spinelesion` package" in (tmp_path / "bundle/docs/README.md").read_text()
    # model.pt: a plain state dict; model.ts: traced, same logits, metadata embedded as MONAI does
    net, _ = load_model_folder(model_dir)
    state = torch.load(tmp_path / "bundle/models/model.pt", weights_only=True)
    assert set(state) == set(net.state_dict())
    torch.testing.assert_close(state["temperature"], torch.tensor([0.8, 1.3]))
    assert result.torchscript_max_abs_diff is not None and result.torchscript_max_abs_diff < 1e-5
    from monai.data import load_net_with_metadata

    _, ts_meta, extra = load_net_with_metadata(
        str(tmp_path / "bundle/models/model.ts"), more_extra_files=["inference.json"]
    )
    assert ts_meta["network_data_format"] == meta["network_data_format"] and "inference.json" in extra


def test_bundle_workflow_matches_predictor(model_dir: Path, study: Path, tmp_path: Path):
    from monai.bundle import ConfigWorkflow

    export_bundle(model_dir, tmp_path / "bundle", torchscript=False)
    wf = ConfigWorkflow(
        config_file=str(tmp_path / "bundle/configs/inference.json"),
        workflow_type=None,
        logging_file=False,
        bundle_root=str(tmp_path / "bundle"),
        study_id="s01",
        t2=str(study / "t2.nii.gz"),
        t1=str(study / "t1.nii.gz"),
        rois=CENTERS,
        output_dir=str(tmp_path / "out"),
    )
    wf.initialize()
    wf.run()
    got = _bundle_probs(tmp_path / "out/s01/predictions.json")
    want = _predict(model_dir, study)
    for task in TASKS:
        np.testing.assert_allclose(got[task], want[task], atol=1e-4)
    # ... mirrored as the model says: without the mirror the numbers differ by more than the
    # parity tolerance (2.8e-4 with these seeds), so parity means both mirrored
    assert wf.parser.get_parsed_content("inferer").tta == ("lr",)
    unmirrored = _predict(model_dir, study, tta=False)
    assert max(np.abs(unmirrored[t] - want[t]).max() for t in TASKS) > 2e-4
    # The network inputs themselves: the bundle's MONAI transforms against the predictor's crops.
    item = wf.parser.get_parsed_content("preprocessing")(wf.parser.get_parsed_content("input"))
    net, meta = load_model_folder(model_dir)
    pred = Predictor(net, meta, PredictorConfig(device="cpu"))
    array, affine, available, _ = pred.prepare(load_nifti_folder(study, "s01"))
    images, flags = pred.crops(array, affine, available, [np.asarray(c) for c in CENTERS])
    torch.testing.assert_close(item["image"], images, atol=1e-6, rtol=0)
    torch.testing.assert_close(item["available"], flags)
    assert images.abs().amax() > 0.5 and flags[:, :2].all() and not flags[:, 2:].any()
    written = json.loads((tmp_path / "out/s01/predictions.json").read_text())
    assert written["inputs"]["t2"].endswith("t2.nii.gz") and written["reference"] == "t2"


@pytest.mark.slow
def test_cli_export_then_monai_bundle_run_equals_spinelesion_predict(
    model_dir: Path, study: Path, tmp_path: Path
):
    """The commands a user types: spinelesion-export-bundle, python -m monai.bundle run, spinelesion-predict;
    on the released model when the checkout has it (a trained network tells the ROIs apart)."""
    released = Path(__file__).resolve().parents[1] / "models" / "spinelesion-demo"
    model_dir = released if (released / "metadata.json").is_file() else model_dir
    bundle = tmp_path / "bundle"
    subprocess.run(
        [sys.executable, "-m", "spinelesion.export_bundle", f"model_dir={model_dir}", f"output_dir={bundle}"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/inference.json",
            "--t2",
            str(study / "t2.nii.gz"),
            "--t1",
            str(study / "t1.nii.gz"),
            "--rois",
            json.dumps(CENTERS),
            "--study_id",
            "s01",
            "--output_dir",
            str(tmp_path / "b_out"),
        ],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    pred = subprocess.run(
        [
            sys.executable,
            "-m",
            "spinelesion.predict",
            f"input={study}",
            f"model_dir={model_dir}",
            f"output_dir={tmp_path / 'p_out'}",
            f"rois={json.dumps(CENTERS)}",
            "saliency.method=none",
            "device=cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pred.returncode == 0, pred.stderr[-3000:]
    got = _bundle_probs(tmp_path / "b_out/s01/predictions.json")
    want = _bundle_probs(tmp_path / "p_out/s01/predictions.json")
    for task in TASKS:
        np.testing.assert_allclose(got[task], want[task], atol=1e-4)
    if model_dir == released:
        assert (
            max(np.ptp(want[t], axis=0).max() for t in TASKS) > 1e-2
        )  # ROIs differ: not a comparison of constants
