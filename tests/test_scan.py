"""Scan mode walks the volume finely enough to centre a window on a lesion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spinelesion.data.roi import RoiSpec
from spinelesion.inference.scan import ScanConfig, neighbour_offsets, scan_study, window_overlap
from spinelesion.labels import TASKS

SPEC = RoiSpec((32, 48, 48), (1.5, 1.5, 1.5), 1.25)
PROBE_META = {
    "name": "probe",
    "roi": {"shape": list(SPEC.shape), "spacing": list(SPEC.spacing), "margin": 1.25},
}


class OnCentreProbe(nn.Module):
    """Answers "lesion" only when a bright blob lies within ~4 mm of the ROI's centre, as the
    trained classifier does (its answer fades 5-8 mm off a lesion's centre, measured)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("temperature", torch.ones(len(TASKS)))

    def forward(self, image: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, ...]:
        centre = [n // 2 for n in image.shape[2:]]
        core = image[
            :, :, centre[0] - 2 : centre[0] + 2, centre[1] - 2 : centre[1] + 2, centre[2] - 2 : centre[2] + 2
        ]
        s = (core.mean((1, 2, 3, 4)) - 1.0)[:, None] * 8  # the blob ~2-3 after normalisation, background ~0.5
        return torch.cat([-s, s, -s, -s], 1), torch.cat([-s, -s, s], 1)


def _volume(blob: np.ndarray, sigma_mm: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (80, 130, 130)  # 1 mm voxels, identity affine: voxel index == LPS mm
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    d2 = ((grid - blob) ** 2).sum(-1)
    one = 100 + 10 * rng.random(shape, dtype=np.float32) + 900 * np.exp(-d2 / (2 * sigma_mm**2))
    return np.repeat(one[None], 4, 0).astype(np.float32)


def test_window_overlap_reaches_the_stride_on_every_axis():
    for stride in (4.0, 8.0, 12.0):
        overlap = window_overlap(SPEC, ScanConfig(stride_mm=stride))
        steps = [
            int(n * (1 - o)) for n, o in zip(SPEC.context_shape, overlap, strict=True)
        ]  # MONAI's interval
        assert all(1 <= s * sp <= stride for s, sp in zip(steps, SPEC.spacing, strict=True)), (stride, steps)
    coarse = window_overlap(SPEC, ScanConfig(stride_mm=None, overlap=0.75))
    assert coarse == [0.75, 0.75, 0.75]


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_fine_stride_centres_a_window_on_a_lesion_the_coarse_one_walks_past():
    blob = np.array([41.0, 57.0, 76.0])  # off the coarse windows' centres
    array = _volume(blob)
    found = {}
    for name, cfg in {
        "fine": ScanConfig(threshold=0.5, max_rois=3),
        "coarse": ScanConfig(threshold=0.5, max_rois=3, stride_mm=None, sigma_scale=0.125),
    }.items():
        res = scan_study(OnCentreProbe(), array, np.eye(4), np.ones(4, bool), SPEC, cfg, torch.device("cpu"))
        found[name] = [(float(np.linalg.norm(c - blob)), s) for c, s in res.candidates]
    assert found["fine"], found
    distance, score = found["fine"][0]
    assert distance <= 8.0 and score > 0.9, found["fine"]  # the best candidate sits on the lesion
    best_coarse = max((s for d, s in found["coarse"] if d <= 8.0), default=0.0)
    assert best_coarse < score, found  # the coarse walk never centres a window as close


def test_neighbour_offsets_are_six_points_at_the_shift_along_each_axis():
    off = neighbour_offsets(4.0)
    assert off.shape == (6, 3)
    assert np.allclose(np.linalg.norm(off, axis=1), 4.0) and np.allclose(off.sum(0), 0.0)
    assert np.allclose(np.abs(off).sum(0), 8.0)  # two per axis, opposite
    assert neighbour_offsets(0.0).shape == (0, 3)


@pytest.mark.parametrize(("sigma_mm", "called"), [(0.8, False), (5.0, True)])
def test_a_candidate_is_called_only_when_its_neighbours_agree(sigma_mm: float, called: bool):
    """The mean answer over a candidate and its six neighbours 4 mm away: a speck that only the
    window centred exactly on it answers (a noisy map's peak) is not called; a lesion with extent,
    which every nearby window answers, is, as at its centre alone."""
    from spinelesion.inference.predictor import Predictor, PredictorConfig

    meta = PROBE_META
    predictor = Predictor(OnCentreProbe(), meta, PredictorConfig(device="cpu", saliency_method="none"))
    blob = np.array([40.0, 65.0, 65.0])
    array, available = _volume(blob, sigma_mm), np.ones(4, bool)
    images, flags = predictor.crops(array, np.eye(4), available, [blob])
    at_centre = predictor.classify(images, flags)
    assert at_centre["compartment"][0, 1] > 0.9  # the window on the centre answers "lesion" either way
    same = predictor.mean_over_neighbours(at_centre, array, np.eye(4), available, [blob], 0.0)
    assert np.allclose(same["compartment"], at_centre["compartment"])  # no shift: the centre's answer
    mean = predictor.mean_over_neighbours(at_centre, array, np.eye(4), available, [blob], 4.0)
    for task, p in mean.items():
        assert p.shape == at_centre[task].shape and np.allclose(p.sum(1), 1.0, atol=1e-5)
    assert bool(mean["compartment"][0, 1] > 0.5) is called, mean  # the probe's "lesion" class


def test_a_scan_candidate_is_called_only_when_more_likely_a_lesion_than_not():
    """The decision rule may name a rare class below p 0.5 (right where a user points); a scan
    candidate is called only when some task's 1 - p(none) reaches scan.call_threshold."""
    from spinelesion.inference.predictor import Predictor, PredictorConfig

    meta = {
        **PROBE_META,
        "decision": {
            "kind": "log_offsets",
            "offsets": {"compartment": [0.0, 0.0, 0.0, 2.0], "fracture": [0.0, 0.0, 0.0]},
        },
    }
    predictor = Predictor(OnCentreProbe(), meta, PredictorConfig(device="cpu", saliency_method="none"))
    probs = {
        "compartment": np.array([[0.6, 0.0, 0.0, 0.4], [0.3, 0.0, 0.0, 0.7], [0.9, 0.1, 0.0, 0.0]]),
        "fracture": np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.4, 0.1, 0.5]]),
    }
    rule = predictor.policy.decision.labels("compartment", probs["compartment"])
    assert rule.tolist() == [3, 3, 0]  # the offset names intramedullary at p 0.4
    labels = predictor.policy.scan_labels(probs, 0.5)
    assert labels["compartment"].tolist() == [0, 3, 0] and labels["fracture"].tolist() == [0, 0, 2]
    assert predictor.policy.scan_labels(probs, 0.0)["compartment"].tolist() == [3, 3, 0]  # 0: the rule alone
    # Without a bar of its own, the model's fitted operating point decides; a given one wins.
    fitted = Predictor(
        OnCentreProbe(),
        {**meta, "scan": {"call_threshold": 0.65}},
        PredictorConfig(device="cpu", saliency_method="none"),
    )
    assert predictor.policy.scan_call_threshold() == 0.5  # no fitted point: 0.5
    assert fitted.policy.scan_call_threshold() == 0.65
    assert fitted.policy.scan_labels(probs)["compartment"].tolist() == [0, 3, 0]  # 0.7 reaches 0.65
    assert fitted.policy.scan_call_threshold(ScanConfig(call_threshold=0.75)) == 0.75
    assert fitted.policy.scan_labels(probs, 0.75)["compartment"].tolist() == [0, 0, 0]
    broken = {**meta, "scan": {"call_threshold": "0.7"}}
    with pytest.raises(ValueError, match="scan.call_threshold must be a number"):  # at load, not mid-run
        Predictor(OnCentreProbe(), broken, PredictorConfig(device="cpu", saliency_method="none"))


@pytest.mark.slow  # two scans of a small volume: ~20 s on the 2-core CPU
def test_predict_labels_scan_candidates_with_the_scan_rule(tmp_path):
    """predict_study: a lesion every nearby window answers is found and called; with a bar no
    candidate reaches, the same candidates are reported none/none, probabilities unchanged."""
    from spinelesion.inference.predictor import Predictor, PredictorConfig, StudyInput
    from spinelesion.io.study import Study
    from spinelesion.io.volume import Volume

    meta = PROBE_META
    blob = np.array([40.0, 65.0, 65.0])
    vol = Volume(_volume(blob, 5.0)[0], np.eye(4))
    item = StudyInput("s", "memory", lambda: Study("s", {s: vol for s in ("t1", "t2", "stir", "t1c")}), [])
    results = {}
    for bar in (0.5, 1.0):
        cfg = PredictorConfig(
            device="cpu", saliency_method="none", png=False, dicom=False, scan=ScanConfig(call_threshold=bar)
        )
        results[bar] = Predictor(OnCentreProbe(), meta, cfg).predict_study(item, tmp_path / str(bar)).rois
    first = results[0.5][0]
    assert np.linalg.norm(np.array(first["center_lps_mm"]) - blob) <= 8.0, first
    assert first["compartment"]["label"] == "extradural"  # the probe's "lesion" class
    strict = results[1.0]
    assert [r["center_lps_mm"] for r in strict] == [r["center_lps_mm"] for r in results[0.5]]
    assert all(r[t]["label"] == "none" for r in strict for t in TASKS)
    assert strict[0]["compartment"]["probabilities"] == first["compartment"]["probabilities"]


def _tilted_slab_affine(degrees: float) -> np.ndarray:
    """1 mm voxels of an axial slab (third axis through-plane) tilted about the first axis."""
    t = np.deg2rad(degrees)
    affine = np.eye(4)
    affine[1:3, 1:3] = [[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]
    return affine


def test_field_of_view_margin_is_measured_along_the_study_axes():
    """The margin along the study's own axes: on an axis-aligned study, exactly the scan-grid voxels
    >= edge_margin_mm from every face; on a 16 mm axial slab tilted 10 degrees (whose LPS bounding box
    is 38 mm thick: a margin measured on it left nothing), the slab's in-plane centre, while its thin
    axis keeps its extent."""
    from spinelesion.inference.scan import field_of_view_margin, scan_grid
    from spinelesion.io.volume import apply_affine

    cfg = ScanConfig()
    shape = (60, 90, 75)
    grid_affine, grid_shape = scan_grid(shape, np.eye(4), SPEC.spacing, cfg.max_extent_mm)
    allowed = field_of_view_margin(shape, np.eye(4), grid_affine, grid_shape, SPEC, cfg)
    points = apply_affine(grid_affine, np.argwhere(np.ones(grid_shape, bool)).astype(float))
    # distance (mm) to the nearest face of the field of view, whose faces lie half a voxel out
    to_face = np.minimum(points + 0.5, np.asarray(shape) - 0.5 - points).min(1).reshape(grid_shape)
    assert allowed[to_face > cfg.edge_margin_mm + 1.0].all()
    assert not allowed[to_face < cfg.edge_margin_mm - 1.0].any()

    slab = (130, 130, 16)
    affine = _tilted_slab_affine(10.0)
    grid_affine, grid_shape = scan_grid(slab, affine, SPEC.spacing, cfg.max_extent_mm)
    assert grid_shape[2] * SPEC.spacing[2] > 2 * cfg.edge_margin_mm + 1.5  # the bounding box is not thin
    allowed = field_of_view_margin(slab, affine, grid_affine, grid_shape, SPEC, cfg)
    assert allowed.sum() > 0
    voxels = apply_affine(
        np.linalg.inv(affine), apply_affine(grid_affine, np.argwhere(allowed).astype(float))
    )
    in_plane = np.minimum(voxels[:, :2] + 0.5, np.asarray(slab[:2]) - 0.5 - voxels[:, :2]).min(1)
    assert in_plane.min() >= cfg.edge_margin_mm - 1.0  # in plane: the margin holds
    assert voxels[:, 2].min() < 2.0 and voxels[:, 2].max() > slab[2] - 3.0  # through-plane: all of it


@pytest.mark.slow  # ~5 s on the 2-core CPU
def test_scan_finds_a_lesion_in_a_tilted_thin_axial_slab():
    """Clinical axial stacks are thin and angled along a disc: the lesion at the slab's centre is a
    candidate (before the margin was measured along the study's axes, no voxel could be one)."""
    from spinelesion.io.volume import apply_affine

    rng = np.random.default_rng(0)
    slab, affine = (130, 130, 16), _tilted_slab_affine(10.0)
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in slab], indexing="ij"), -1)
    blob_index = np.array([65.0, 65.0, 7.5])
    d2 = ((index - blob_index) ** 2).sum(-1)
    one = 100 + 10 * rng.random(slab, dtype=np.float32) + 900 * np.exp(-d2 / (2 * 5.0**2))
    array = np.repeat(one[None], 4, 0).astype(np.float32)
    res = scan_study(
        OnCentreProbe(), array, affine, np.ones(4, bool), SPEC, ScanConfig(max_rois=3), torch.device("cpu")
    )
    blob = apply_affine(affine, blob_index)
    assert res.candidates, "no candidate in the slab"
    assert np.linalg.norm(res.candidates[0][0] - blob) <= 8.0, res.candidates


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("stride_mm", -8.0),
        ("stride_mm", 0.01),
        ("overlap", 0.999999),
        ("overlap", -0.1),
        ("call_threshold", 2.0),
        ("threshold", float("nan")),
        ("sw_batch_size", 0),
        ("max_rois", 0),
    ],
)
def test_a_scan_setting_out_of_range_is_one_clear_error(setting: str, value: float) -> None:
    """Issue 37: stride_mm=-8 became a 1-voxel walk (a silent hang); every number is range-checked."""
    from spinelesion.inference.scan import ScanConfig

    with pytest.raises(ValueError, match=rf"scan\.{setting}=.*must lie in \["):
        ScanConfig(**{setting: value})


def test_a_scan_costlier_than_its_bound_fails_by_name_before_classifying() -> None:
    """The cost bound: a study needing more windows than scan.max_windows is refused before any
    window is classified (the network is never called)."""
    from spinelesion.inference.scan import ScanConfig, scan_study

    class Never(OnCentreProbe):
        def forward(self, *args: object) -> tuple[torch.Tensor, ...]:
            raise AssertionError("classified a window")

    array = _volume(np.array([41.0, 57.0, 76.0]))
    cfg = ScanConfig(max_windows=1)
    with pytest.raises(ValueError, match=r"scan would classify up to \d+ windows \(scan\.max_windows=1\)"):
        scan_study(Never(), array, np.eye(4), np.ones(4, bool), SPEC, cfg, torch.device("cpu"))
