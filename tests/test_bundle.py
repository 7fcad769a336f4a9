"""MONAI bundle export: MONAI's schema and bundle checks, TorchScript parity, and the same probabilities
as predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_io import AXIAL, SAGITTAL, blob, make_volume

from spinelesion.export.bundle import SCHEMA_FILE, export_bundle
from spinelesion.export.bundle_runtime import TASK_SIZES, BundleNet
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
        "configs/logging.conf",
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
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    ):
        assert meta[key], key
    # MONAI renames this deprecated key to required_packages_version on loading, replacing the requirements
    assert "optional_packages_version" not in meta
    fmt = meta["network_data_format"]
    assert set(fmt["inputs"]) == {"image"} and fmt["inputs"]["image"]["spatial_shape"] == ROI["shape"]
    assert fmt["inputs"]["image"]["num_channels"] == len(SEQUENCES)
    assert set(fmt["outputs"]) == {"pred"} and fmt["outputs"]["pred"]["num_channels"] == sum(TASK_SIZES) == 7
    assert set(fmt["post_processed_outputs"]) == set(TASKS)
    for text in (meta["description"], meta["intended_use"], *meta["references"][:1]):
        assert "tests" in text and "NOT a clinical tool" in text  # the model's intended use, and the caveat
    assert json.loads((tmp_path / "bundle/configs/inference.json").read_text())["device"] == (
        "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')"
    )
    assert "spinelesion" in meta["required_packages_version"]
    assert "install the `spinelesion` package" in (tmp_path / "bundle/docs/README.md").read_text()
    # model.pt: a plain state dict; model.ts: scripted BundleNet, same logits, metadata embedded as MONAI does
    net, _ = load_model_folder(model_dir)
    state = torch.load(tmp_path / "bundle/models/model.pt", weights_only=True)
    assert set(state) == set(net.state_dict())
    torch.testing.assert_close(state["temperature"], torch.tensor([0.8, 1.3]))
    assert result.torchscript.startswith("TorchScript, scripted")
    assert result.torchscript_max_abs_diff is not None and result.torchscript_max_abs_diff < 1e-5
    from monai.data import load_net_with_metadata

    _, ts_meta, extra = load_net_with_metadata(
        str(tmp_path / "bundle/models/model.ts"), more_extra_files=["inference.json"]
    )
    assert ts_meta["network_data_format"] == meta["network_data_format"] and "inference.json" in extra


def test_bundle_net_is_the_network_as_one_tensor_and_scripts(model_dir: Path):
    """BundleNet: MultiTaskNet's weights and logits (side by side), flags derived from zero channels
    when not given, and torch.jit.script compiles it (MONAI's ckpt_export scripts network_def)."""
    net, meta = load_model_folder(model_dir)
    bundle_net = BundleNet(**meta["network"])
    bundle_net.load_state_dict(net.state_dict())  # strict: the same parameter and buffer names
    bundle_net.eval()
    image = torch.rand(3, len(SEQUENCES), *ROI["shape"], generator=torch.Generator().manual_seed(2))
    image[1, 3] = 0.0
    image[2, 2:] = 0.0
    flags = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    scripted = torch.jit.script(bundle_net)
    with torch.no_grad():
        want = torch.cat(net(image, flags), dim=1)
        for got in (bundle_net(image, flags), bundle_net(image)):  # the same operations: bit-identical
            assert got.shape == (3, sum(TASK_SIZES))
            torch.testing.assert_close(got, want, atol=0, rtol=0)
        for got in (scripted(image), scripted(image, flags)):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        # given flags win over the image: an available sequence whose crop is all zero stays flagged
        torch.testing.assert_close(
            bundle_net(image, torch.ones(3, 4)), torch.cat(net(image, torch.ones(3, 4)), 1)
        )
        assert not torch.equal(bundle_net(image, torch.ones(3, 4)), want)


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


def _monai_bundle(args: list[str], cwd: Path) -> str:
    """``python -m monai.bundle <args>`` in the bundle folder, with no route to the network: a check
    that tried to download anything would fail rather than pass on a connected machine."""
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    env |= {"http_proxy": env["HTTP_PROXY"], "https_proxy": env["HTTPS_PROXY"], "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run.stdout + run.stderr


@pytest.mark.slow  # three MONAI processes, ~15 s on the 2-core CPU
def test_bundle_passes_monai_checks_offline(model_dir: Path, tmp_path: Path):
    """The commands of docs/monai.md: verify_net_in_out, ckpt_export and verify_metadata against the
    shipped schema (``monai.bundle run`` is test_cli_export_then_monai_bundle_run_equals_spinelesion_predict)."""
    bundle = tmp_path / "bundle"
    export_bundle(model_dir, bundle)
    meta, config = ["--meta_file", "configs/metadata.json"], ["--config_file", "configs/inference.json"]
    out = _monai_bundle(["verify_net_in_out", "network_def", *meta, *config], bundle)
    assert "data shape of network is verified with no error" in out
    # ckpt_export scripts network_def with model.pt's weights; MONAI skips names that do not match
    # without failing, so the rewritten model.ts must give the model's own logits
    (bundle / "models/model.ts").unlink()
    out = _monai_bundle(
        [
            "ckpt_export",
            "network_def",
            "--filepath",
            "models/model.ts",
            "--ckpt_file",
            "models/model.pt",
            *meta,
            *config,
        ],
        bundle,
    )
    assert "exported to file" in out
    net, _ = load_model_folder(model_dir)
    image = torch.rand(2, len(SEQUENCES), *ROI["shape"], generator=torch.Generator().manual_seed(3))
    image[1, 2:] = 0.0
    flags = (image.flatten(2).amax(2) > 0).float()
    with torch.no_grad():
        got = torch.jit.load(str(bundle / "models/model.ts"))(image)
        torch.testing.assert_close(got, torch.cat(net(image, flags), 1), atol=1e-6, rtol=0)
    pytest.importorskip("jsonschema", reason="verify_metadata needs jsonschema")
    assert SCHEMA_FILE.is_file()
    out = _monai_bundle(["verify_metadata", *meta, "--filepath", str(SCHEMA_FILE)], bundle)
    assert "skipped downloading" in out and "metadata is verified with no error" in out
