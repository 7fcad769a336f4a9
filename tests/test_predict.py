"""Inference: saliency lands where the lesion is, in every orientation; outputs follow the contract."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from spinelesion.inference.export import export_onnx, export_torchscript, parity
from spinelesion.inference.inputs import discover_inputs
from spinelesion.inference.predictor import Predictor, PredictorConfig, RoiRequest, StudyInput
from spinelesion.io.dicom.write import make_uid, write_dicom_series
from spinelesion.io.nifti import write_nifti
from spinelesion.io.reader import read_volume
from spinelesion.io.study import Study
from spinelesion.io.volume import LPS_TO_RAS, Volume, grid_affine
from spinelesion.labels import TASKS
from spinelesion.models.folder import save_model_folder
from spinelesion.models.networks import build_network

ROI = {"shape": [32, 48, 48], "spacing": [1.5, 1.5, 1.5], "margin": 1.25}
PROBE_META = {
    "name": "probe",
    "version": "0",
    "weights_sha256": "-",
    "roi": ROI,
    "network": {"backbone": "probe"},
}


class ProbeNet(nn.Module):
    """A transparent 'model': its evidence is local brightness, so Grad-CAM must peak on the blob."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(4, 2, 5, padding=2, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / (4 * 125))
        self.register_buffer("temperature", torch.ones(len(TASKS)))

    def forward(self, image: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = torch.relu(self.conv(image)).flatten(2).amax(2)  # (B, 2): peak local brightness
        s = a[:, :1] * 10
        return torch.cat([-s, s, -s, -s], 1), torch.cat([-s, -s, s], 1)


def probe_predictor() -> Predictor:
    meta = PROBE_META
    return Predictor(ProbeNet(), meta, PredictorConfig(device="cpu", target_layer="conv", png=False))


SAG = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]]).T
AX = np.eye(3)


def blob_volume(axes: np.ndarray, spacing, oblique: float, point: np.ndarray) -> Volume:
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xyz", [oblique, oblique / 2, -oblique / 3], degrees=True).as_matrix() @ axes
    shape = (90, 90, 40) if spacing[2] < 2 else (110, 110, 22)
    aff = grid_affine(np.array([3.0, -5.0, 8.0]), shape, spacing, rot)
    v = Volume(np.zeros(shape, np.float32), aff)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    world = ijk @ aff[:3, :3].T + aff[:3, 3]
    d2 = ((world - point) ** 2).sum(-1)
    rng = np.random.default_rng(0)
    v.array[:] = 100 + 10 * rng.random(shape) + 900 * np.exp(-d2 / (2 * 3.0**2))
    return v


CASES = {
    "axial_dicom": (AX, (1.2, 1.2, 1.5), 0.0, "dicom"),
    "sagittal_dicom": (SAG, (1.0, 1.0, 3.0), 0.0, "dicom"),
    "oblique_dicom": (SAG, (1.0, 1.0, 3.0), 9.0, "dicom"),
    "nifti_lps": (SAG, (1.0, 1.0, 3.0), 0.0, "nifti"),
    "nifti_ras": (AX, (1.2, 1.2, 1.5), 5.0, "nifti_ras"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_saliency_peak_lands_on_the_lesion_in_the_written_nifti(case: str, tmp_path: Path):
    axes, spacing, oblique, kind = CASES[case]
    lesion = np.array([6.0, -2.0, 12.0])
    vol = blob_volume(axes, spacing, oblique, lesion)
    if kind == "dicom":
        write_dicom_series(
            vol,
            tmp_path / "in",
            study={"StudyInstanceUID": make_uid(case), "PatientID": "X"},
            series={"SeriesInstanceUID": make_uid(case, 1), "SeriesDescription": "T2"},
        )
        src = tmp_path / "in"
    else:
        src = tmp_path / "t2.nii.gz"
        write_nifti(vol, src)
        if kind == "nifti_ras":
            img = nib.as_closest_canonical(nib.load(src))
            nib.save(img, src)
    reference = read_volume(src)
    item = StudyInput(
        case,
        str(src),
        lambda: Study(case, {"t2": read_volume(src)}),
        [RoiRequest("r1", lesion + np.array([9.0, -7.0, 11.0]))],
    )  # ROI centre 16 mm away
    res = probe_predictor().predict_study(item, tmp_path / "out")
    sal_path = res.folder / res.rois[0]["saliency"]["compartment"]
    img = nib.load(sal_path)
    assert img.get_data_dtype() == np.uint8  # stored compactly, scaled back to [0, 1] on reading
    assert img.shape == (*reference.shape, 1)
    data = img.get_fdata()[..., res.rois[0]["saliency_volume"]]
    np.testing.assert_allclose(LPS_TO_RAS @ img.affine, reference.affine, atol=1e-4)
    assert 0.0 <= data.min() and data.max() <= 1.0 and data.max() > 0.5
    peak = np.array(np.unravel_index(np.argmax(data), data.shape), dtype=float)
    peak_lps = (LPS_TO_RAS @ img.affine)[:3, :3] @ peak + (LPS_TO_RAS @ img.affine)[:3, 3]
    assert np.linalg.norm(peak_lps - lesion) < 6.0, f"peak at {peak_lps}, lesion at {lesion}"
    if kind == "dicom":  # the same peak through pydicom's geometry
        dcm = read_volume(src)
        np.testing.assert_allclose(dcm.voxel_to_world(peak), peak_lps, atol=1e-3)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = {"backbone": "spinecnn", "widths": [8, 16, 16, 16], "hidden": 16}
    net = build_network(cfg)
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model_folder(
        net, folder, {"name": "random", "version": "test", "network": cfg, "roi": ROI, "reference": "auto"}
    )
    return folder


def run_predict(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spinelesion.predict", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_predictions_follow_the_contract_schema(tiny_dataset: Path, tmp_path: Path, random_model: Path):
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from spinelesion.config_path import CONFIG_DIR
    from spinelesion.inference.overlay import layout
    from spinelesion.predict import predict

    manifest = tmp_path / "m.csv"
    with open(tiny_dataset) as fh, open(manifest, "w", newline="") as out:
        rows = list(csv.DictReader(fh))
        study = rows[0]["study_id"]
        w = csv.DictWriter(out, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            if r["study_id"] == study:
                r = {
                    k: (str(tiny_dataset.parent / v) if k in ("t1", "t2", "stir", "t1c") and v else v)
                    for k, v in r.items()
                }
                w.writerow(r)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "predict",
            [
                f"input={manifest}",
                f"model_dir={random_model}",
                f"output_dir={tmp_path / 'o'}",
                "paths.output_dir=.",
                "saliency.png=true",
            ],
        )
    summary = predict(cfg)
    assert not summary["failed"]
    data = json.loads((tmp_path / "o" / study / "predictions.json").read_text())
    assert set(data) == {"study_id", "model", "inputs", "rois", "warnings"}
    assert data["study_id"] == study
    assert (
        set(data["model"]) == {"name", "version", "weights_sha256"}
        and len(data["model"]["weights_sha256"]) == 64
    )
    assert set(data["inputs"]) == {"t1", "t2", "stir", "t1c"}
    assert isinstance(data["warnings"], list)
    for roi in data["rois"]:
        assert set(roi) == {
            "roi_id",
            "center_lps_mm",
            "source",
            "compartment",
            "fracture",
            "saliency",
            "saliency_volume",
        }
        assert roi["source"] == "given" and len(roi["center_lps_mm"]) == 3
        for task, classes in TASKS.items():
            probs = roi[task]["probabilities"]
            assert list(probs) == list(classes)
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
            assert roi[task]["label"] == max(probs, key=probs.get)
            sal = nib.load(tmp_path / "o" / study / roi["saliency"][task])
            assert sal.shape[3] == len(data["rois"]) and 0 <= roi["saliency_volume"] < sal.shape[3]
            one = sal.dataobj[..., roi["saliency_volume"]]
            assert 0.0 <= one.min() and one.max() <= 1.0 and one.max() > 0
        png = tmp_path / "o" / study / "png" / f"{roi['roi_id']}.png"
        assert Image.open(png).size == layout().size
    with open(tmp_path / "o" / "predictions.csv") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == len(data["rois"])
    for r in csv_rows:
        total = sum(float(r[f"compartment_p_{c}"]) for c in TASKS["compartment"])
        assert total == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow  # > 20 s on the 2-core CPU
def test_one_corrupt_study_is_reported_and_the_others_finish(
    tiny_dataset: Path, tmp_path: Path, random_model: Path
):
    studies = sorted((tiny_dataset.parent / "studies").iterdir())[:3]
    root = tmp_path / "export"
    for s in studies:
        shutil.copytree(s / "dicom", root / s.name)
    bad = root / studies[1].name
    for f in bad.rglob("*.dcm"):  # truncate every file: headers survive, pixels do not
        f.write_bytes(f.read_bytes()[:2000])
    items, failures = discover_inputs(root)
    proc = run_predict(
        [
            f"input={root}",
            f"model_dir={random_model}",
            f"output_dir={tmp_path / 'o'}",
            f"hydra.run.dir={tmp_path / 'o'}",
            "saliency.png=false",
            "saliency.method=gradcam",  # the maps are not what this test is about: the fast ones
            "scan.max_rois=2",
        ]
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    with open(tmp_path / "o" / "failed_studies.csv") as fh:
        failed = list(csv.DictReader(fh))
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert len(run["studies"]) == 2 and len(failed) == 1
    assert failed[0]["reason"]
    # the decision behind every label: the rule's offsets and the scan's call threshold (a random model: 0.5)
    assert run["decision"]["scan_call_threshold"] == 0.5 and "offsets" in run["decision"]["rule"]
    assert len(items) + len(failures) >= 3


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_a_missing_input_is_an_unusable_argument(tmp_path: Path, random_model: Path):
    """Issue 36: one line naming it, exit 2 as the README promises, no run.json or CSV written."""
    proc = run_predict(
        [
            f"input={tmp_path / 'nope'}",
            f"model_dir={random_model}",
            f"output_dir={tmp_path / 'o'}",
            f"hydra.run.dir={tmp_path / 'o'}",
        ]
    )
    assert proc.returncode == 2
    assert (
        f"argument input='{tmp_path / 'nope'}': expected an existing file or folder"
        in proc.stdout + proc.stderr
    )
    assert not any(
        (tmp_path / "o" / name).exists() for name in ("run.json", "predictions.csv", "failed_studies.csv")
    )


def test_outputs_never_leave_the_output_folder(tmp_path: Path):
    from spinelesion.inference.writers import inside, safe_name

    assert safe_name("../../etc/passwd").startswith("etc_passwd-")
    assert "/" not in safe_name("DOE^JOHN/1") and safe_name("1.2.840.113") == "1.2.840.113"
    with pytest.raises(ValueError, match="outside the output folder"):
        inside(tmp_path, "../escape")


def test_torchscript_and_onnx_exports_match_eager(tmp_path: Path):
    torch.manual_seed(0)
    net = build_network({"backbone": "spinecnn", "widths": [8, 16, 16, 16], "hidden": 16}).eval()
    shape = tuple(ROI["shape"])
    ts = export_torchscript(net, tmp_path / "m.ts", shape)
    ox = export_onnx(net, tmp_path / "m.onnx", shape)
    diffs = parity(net, ts, ox, shape, batch=3)
    assert diffs["torchscript"] < 1e-4 and diffs["onnx"] < 1e-3


@pytest.mark.parametrize(
    "method", ["gradcam", "gradcampp", pytest.param("occlusion", marks=pytest.mark.slow)]
)
def test_every_saliency_method_runs_batched_and_stays_in_unit_range(method: str):
    from spinelesion.inference.saliency import saliency

    torch.manual_seed(0)
    net = build_network({"backbone": "spinecnn", "widths": [8, 16, 16, 16], "hidden": 16}).eval()
    x = torch.rand(3, 4, 32, 48, 48)
    f = torch.ones(3, 4)
    maps = (
        saliency(
            net,
            x,
            f,
            {"compartment": [0, 1, 2], "fracture": [2, 1, 0]},
            method=method,
            target_layer="backbone.layers.2",
            mask_size=(16, 24, 24),
            n_batch=16,
        )
        if method == "occlusion"
        else saliency(
            net,
            x,
            f,
            {"compartment": [0, 1, 2], "fracture": [2, 1, 0]},
            method=method,
            target_layer="backbone.layers.2",
        )
    )
    for task in TASKS:
        m = maps[task]
        assert tuple(m.shape) == (3, 32, 48, 48)
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0


def test_occlusion_of_all_tasks_in_one_pass_equals_a_pass_per_task():
    """One occlusion pass reads every task's class: the same maps as MONAI's occlusion run on
    each task's logits alone (the former implementation), at half the forwards."""
    from monai.visualize import OcclusionSensitivity

    from spinelesion.inference.saliency import TaskLogits, occlusion_maps, unit_max

    torch.manual_seed(0)
    net = build_network({"backbone": "spinecnn", "widths": [8, 8, 8, 8], "hidden": 8}).eval()
    x, f = torch.rand(2, 4, 16, 24, 24), torch.tensor([[1.0, 1, 0, 1], [1, 1, 1, 1]])
    classes = {"compartment": [2, 0], "fracture": [1, 2]}
    maps = occlusion_maps(net, x, f, classes, mask_size=(8, 12, 12), n_batch=8)
    for t, task in enumerate(TASKS):
        ref = []
        for r in range(2):
            wrapper = TaskLogits(net, t, f[r : r + 1].expand(8, -1))
            occ = OcclusionSensitivity(
                wrapper, mask_size=(8, 12, 12), n_batch=8, overlap=0.5, mode="gaussian", activate=False
            )
            with torch.no_grad():
                base = wrapper(x[r : r + 1])[0, classes[task][r]]
                occ_map = occ(x[r : r + 1])[0][0, classes[task][r]]
            ref.append((base - occ_map).clamp(min=0)[None])
        expected = unit_max(torch.cat(ref))
        assert float(expected.max()) > 0  # the occlusion moved the logit: the comparison means something
        torch.testing.assert_close(maps[task], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # > 20 s on the 2-core CPU
def test_saliency_leaves_no_hooks_behind(tmp_path: Path):
    """MONAI's CAMs register hooks on every call; piling them up slows prediction and breaks export."""
    from spinelesion.inference.saliency import saliency

    net = build_network({"backbone": "spinecnn", "widths": [8, 16, 16, 16], "hidden": 16}).eval()
    layer = net.get_submodule("backbone.layers.2")
    x, f = torch.rand(2, 4, 32, 48, 48), torch.ones(2, 4)
    for method in ("gradcam", "gradcampp"):
        for _ in range(3):
            saliency(
                net,
                x,
                f,
                {"compartment": [0, 1], "fracture": [1, 2]},
                method=method,
                target_layer="backbone.layers.2",
            )
    assert not layer._forward_hooks and not layer._backward_hooks
    export_torchscript(net, tmp_path / "hooks-free.ts", tuple(ROI["shape"]))  # tracing refuses hooked modules


class CentreProbeNet(ProbeNet):
    """Evidence is local brightness weighted by closeness to the ROI's centre (normalised
    background ~0.5, the blob up to 2): windows centred near a blob score highest."""

    def forward(self, image: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, ...]:
        conv = torch.relu(self.conv(image))[:, :1]
        axes = [torch.arange(n, dtype=conv.dtype) - (n - 1) / 2 for n in conv.shape[2:]]
        d2 = sum(a**2 for a in torch.meshgrid(*axes, indexing="ij"))
        s = ((conv * torch.exp(-d2 / (2 * 8.0**2))).flatten(1).amax(1, keepdim=True) - 1.0) * 10
        return torch.cat([-s, s, -s, -s], 1), torch.cat([-s, -s, s], 1)


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_scan_proposes_the_planted_lesion_first_and_writes_probability_maps(tmp_path: Path):
    lesion = np.array([6.0, -2.0, 12.0])
    vol = blob_volume(SAG, (1.0, 1.0, 3.0), 4.0, lesion)
    src = tmp_path / "t2.nii.gz"
    write_nifti(vol, src)
    item = StudyInput("scan", str(src), lambda: Study("scan", {"t2": read_volume(src)}), [])
    meta = PROBE_META
    predictor = Predictor(
        CentreProbeNet(),
        meta,
        PredictorConfig(device="cpu", target_layer="conv", png=False, saliency_method="gradcam"),
    )
    res = predictor.predict_study(item, tmp_path / "out")
    assert res.rois and all(r["source"] == "scan" for r in res.rois)
    first = np.array(res.rois[0]["center_lps_mm"])
    assert np.linalg.norm(first - lesion) < 15.0, first  # the scan stride is ~10 mm
    maps = sorted(p.name for p in (res.folder / "probability").iterdir())
    assert len(maps) == 7 and "compartment_extradural.nii.gz" in maps
    img = nib.load(res.folder / "probability" / "compartment_none.nii.gz")
    assert img.shape == read_volume(src).shape
    assert img.get_data_dtype() == np.uint8 and 0.0 <= img.get_fdata().min() and img.get_fdata().max() <= 1.0


@pytest.mark.parametrize("context_inside", [True, False])
def test_scan_candidates_keep_their_context_inside_a_thin_slab(context_inside: bool):
    """Candidates sit where training ROIs were sampled: half a context (at most 40 % of the
    extent) inside the volume along each axis; without the rule only edge_margin_mm applies."""
    import torch

    from spinelesion.data.roi import RoiSpec
    from spinelesion.inference.scan import ScanConfig, scan_study

    shape = (50, 120, 120)  # a 50 mm thin sagittal-like slab along L-R, 1 mm voxels
    array = np.full((4, *shape), 1.0, np.float32)
    array[:, 3:9, 55:65, 55:65] = 5.0  # bright evidence 3-9 mm from the left edge
    affine = np.eye(4)
    spec = RoiSpec(tuple(ROI["shape"]), tuple(ROI["spacing"]), ROI["margin"])
    res = scan_study(
        CentreProbeNet(),
        array,
        affine,
        np.ones(4, bool),
        spec,
        ScanConfig(
            overlap=0.5,
            stride_mm=None,
            sigma_scale=0.125,
            threshold=0.0,
            max_rois=3,
            context_inside=context_inside,
        ),
        torch.device("cpu"),
    )
    xs = np.array([c[0][0] for c in res.candidates])
    assert len(xs)
    if context_inside:
        assert np.all(np.abs(xs - 24.5) <= 0.1 * 50 + 1.5), xs  # 40 % of 50 mm from each edge
    else:
        assert xs.min() < 24.5 - 0.1 * 50 - 1.5, xs  # the edge evidence pulls a candidate outward


def test_png_title_fits_its_line_with_a_long_dicom_uid():
    """A DICOM study UID (up to 64 characters) ran off the PNG's right edge: its middle gives way."""
    from spinelesion.inference.overlay import _font, fit_title

    font, suffix = _font(13), "  [t2 background, saliency overlaid; A left, S up]"
    uid = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678 / scan01"
    width = 2 * 256 - 12  # two panels of a 48-voxel ROI at the PNG's scale
    title = fit_title(uid, suffix, font, width)
    assert font.getlength(title) <= width < font.getlength(uid + suffix)
    assert title.startswith("1.2.826") and title.endswith("scan01" + suffix) and "..." in title
    assert fit_title("study / roi1", suffix, font, width) == "study / roi1" + suffix  # short: untouched


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_png_legend_sits_beside_the_slice_and_states_its_scales(tmp_path: Path):
    """Colour bar, threshold, scale bar, window, explained class, probabilities and orientation
    letters are drawn, and none of them over the anatomy (the probability box once covered it)."""
    from PIL import Image

    from spinelesion.data.roi import RoiSpec
    from spinelesion.inference.overlay import GUTTER, LINE_H, PIXEL_MM, ZOOM, _inferno, layout, write_roi_png

    # anterior half (LPS y < 0) signal 100, posterior 200: black left of the slice, white right
    n, mm = 64, 3.0
    affine = np.diag([mm, mm, mm, 1.0])
    affine[:3, 3] = -mm * (np.array([8, n, n]) - 1) / 2
    y = affine[1, 3] + mm * np.arange(n)
    array = np.broadcast_to(np.where(y < 0, 100.0, 200.0)[None, None, :, None], (4, 8, n, n)).astype(
        np.float32
    )
    spec = RoiSpec(**ROI)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, k) for k in spec.shape], indexing="ij"))
    blob = np.exp(-(g**2).sum(0) / 0.1).astype(np.float32)  # inside the ROI box only
    preds = {
        "compartment": {
            "label": "extradural",
            "probabilities": {
                "none": 0.07,
                "extradural": 0.81,
                "intradural_extramedullary": 0.09,
                "intramedullary": 0.03,
            },
        },
        "fracture": {"label": "benign", "probabilities": {"none": 0.1, "benign": 0.4, "pathologic": 0.5}},
    }  # fracture: the decision rule's class is not the most probable one
    res = write_roi_png(
        tmp_path / "r.png",
        array,
        affine,
        np.ones(4, bool),
        np.zeros(3),
        spec,
        {t: blob for t in TASKS},
        preds,
        "study / r",
        method="occlusion",
    )
    png = np.asarray(Image.open(res.path).convert("RGB")).astype(int)
    lay = res.layout
    assert png.shape[1::-1] == lay.size == layout().size

    def crop(box: tuple[int, int, int, int]) -> np.ndarray:
        return png[box[1] : box[3], box[0] : box[2]]

    others = [lay.title, lay.legend, lay.colorbar]
    for task in TASKS:
        others += [lay.headers[task], lay.scale_bars[task], lay.captions[task], *lay.letters[task].values()]
    for box in [*lay.images.values(), *others]:
        assert 0 <= box[0] < box[2] <= lay.size[0] and 0 <= box[1] < box[3] <= lay.size[1], box
    for task, img_box in lay.images.items():
        assert img_box[2] - img_box[0] == img_box[3] - img_box[1] == 150 / PIXEL_MM * ZOOM
        assert not [b for b in others if _overlaps(img_box, b)]
        # the corners outside the ROI box are untouched anatomy: pure grey, A (black) left, P right
        img = crop(img_box)
        corners = {"AS": img[:70, :70], "AI": img[-70:, :70], "PS": img[:70, -70:], "PI": img[-70:, -70:]}
        for name, c in corners.items():
            assert (c == c[..., :1]).all(), name
            assert (c <= 2).all() if name[0] == "A" else (c >= 253).all(), name
        letters = lay.letters[task]
        assert letters["A"][2] <= img_box[0] and letters["P"][0] >= img_box[2]
        assert letters["S"][3] <= img_box[1] and letters["I"][1] >= img_box[3]
        for box in [*letters.values(), lay.headers[task], lay.captions[task]]:
            assert crop(box).min() < 100, box  # something is drawn there
        # the scale bar: a dark line as long as the stated mm at the slice's scale
        longest = (crop(lay.scale_bars[task]) < 60).all(-1).sum(1).max()
        assert res.scale_bar_px <= longest <= res.scale_bar_px + 1
        assert res.scale_bar_px == round(res.scale_bar_mm * ZOOM / PIXEL_MM) > 0
    # the decision rule's class is marked, not the most probable: fracture "benign" (line 1 of 3)
    cx0, cy0 = lay.captions["fracture"][:2]
    marker = [png[cy0 + LINE_H * i + 8, cx0 + GUTTER + 1].max() < 60 for i in range(3)]
    assert marker == [False, True, False]
    # colour bar: the map's colours, its low end (not drawn) grey
    bar = crop(lay.colorbar)[(lay.colorbar[3] - lay.colorbar[1]) // 2]
    assert np.abs(bar[-1] - _inferno()[-1]).max() <= 3 and (bar[0] == bar[0, 0]).all()
    assert res.threshold == 0.05 and res.window == pytest.approx((100.0, 200.0), abs=0.5)
    text = "\n".join(res.lines)
    for needed in (
        "Overlay: occlusion saliency for each panel's predicted class (0-1, 1 = ROI maximum)",
        "Below 0.05 not drawn",
        "map: occlusion saliency for class extradural",
        "map: occlusion saliency for class benign",
        "Grey window (t2): 100 black to 200 white, percentiles 1 and 99.5",
        "3 x 3 x 3 mm voxels",
        f"{res.scale_bar_mm:g} mm",
        "0.81",
        "intradural_extramedullary",
    ):
        assert needed in text, needed
    assert {"A", "P", "S", "I"} <= set(res.lines)
