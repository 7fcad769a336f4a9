"""Scan mode's window lattice: MONAI's placement and blend, without MONAI's cost; coarse to fine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinelesion.inference.windows import (
    blend,
    classify_lattice,
    coarse_indices,
    interpolation_matrix,
    lattice,
    touching,
)


def _monai_starts(grid: tuple[int, ...], roi: tuple[int, ...], overlap: list[float]) -> list[list[int]]:
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    padded = tuple(max(g, r) for g, r in zip(grid, roi, strict=True))
    interval = _get_scan_interval(padded, roi, 3, overlap)
    slices = dense_patch_slices(padded, roi, interval, return_slice=False)
    return [sorted({int(s[a][0]) for s in slices}) for a in range(3)]


@pytest.mark.parametrize(
    ("grid", "roi", "overlap"),
    [
        ((51, 254, 254), (40, 60, 60), [0.8625, 0.9083, 0.9083]),  # a 1 mm lumbar study at 1.5 mm
        ((30, 61, 17), (8, 12, 10), [0.5, 0.75, 0.6]),
        ((8, 9, 40), (8, 12, 10), [0.5, 0.5, 0.5]),  # one axis exactly a window, one shorter (padded)
    ],
)
def test_lattice_places_windows_as_monai_does(grid, roi, overlap):
    lat = lattice(grid, roi, overlap)
    assert [s.tolist() for s in lat.starts] == _monai_starts(grid, roi, overlap)
    assert lat.padded_shape == tuple(max(g, r) for g, r in zip(grid, roi, strict=True))
    assert all(s[-1] + r == p for s, r, p in zip(lat.starts, roi, lat.padded_shape, strict=True))


def _monai_blend(grid, roi, overlap, answers_of, sigma_scale):
    """MONAI's sliding window over a volume whose channels hold each voxel's index + 1, so that
    the predictor can tell which window it is given (its largest index along each axis)."""
    from monai.inferers import sliding_window_inference

    index = np.stack(np.meshgrid(*[np.arange(n) + 1.0 for n in grid], indexing="ij"))
    volume = torch.as_tensor(index[None], dtype=torch.float32)

    def predictor(patches: torch.Tensor) -> torch.Tensor:
        out = []
        for p in patches:
            top = p.flatten(1).amax(1).long() - 1  # the window's last voxel (or the grid's, if padded)
            start = [max(int(t) - r + 1, 0) if g >= r else 0 for t, r, g in zip(top, roi, grid, strict=True)]
            out.append(answers_of(tuple(start)))
        v = torch.as_tensor(np.array(out), dtype=torch.float32)
        return v[:, :, None, None, None].expand(-1, -1, *patches.shape[2:]).contiguous()

    return sliding_window_inference(
        volume, roi, 4, predictor, overlap=overlap, mode="gaussian", sigma_scale=sigma_scale
    )[0].numpy()


@pytest.mark.parametrize(
    ("grid", "roi", "overlap", "sigma_scale"),
    [
        ((30, 41, 37), (8, 12, 10), [0.5, 0.75, 0.6], 0.05),
        ((20, 9, 33), (10, 12, 8), [0.7, 0.5, 0.75], 0.125),  # padded along the second axis
    ],
)
def test_blend_gives_monais_maps(grid, roi, overlap, sigma_scale):
    lat = lattice(grid, roi, overlap)
    rng = np.random.default_rng(3)
    answers = rng.random((3, *lat.shape))
    position = {tuple(int(lat.starts[a][i[a]]) for a in range(3)): i for i in np.ndindex(*lat.shape)}

    def answers_of(start: tuple[int, ...]) -> np.ndarray:
        # a padded axis holds one window starting at 0; the others are not padded
        return answers[(slice(None), *position[start])]

    assert all(p == 0 for p, g, r in zip(lat.pad_before, grid, roi, strict=True) if g >= r)
    reference = _monai_blend(grid, roi, overlap, answers_of, sigma_scale)
    ours = blend(lat, answers, sigma_scale)
    assert ours.shape == reference.shape == (3, *grid)
    np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_touching_is_every_window_whose_box_holds_a_mask_voxel():
    grid, roi = (20, 33, 29), (6, 8, 7)
    lat = lattice(grid, roi, [0.5, 0.6, 0.4])
    rng = np.random.default_rng(0)
    mask = rng.random(grid) > 0.999
    brute = np.zeros(lat.shape, bool)
    for i, j, k in np.ndindex(*lat.shape):
        sx, sy, sz = (int(lat.starts[a][v]) for a, v in enumerate((i, j, k)))
        brute[i, j, k] = mask[sx : sx + roi[0], sy : sy + roi[1], sz : sz + roi[2]].any()
    assert mask.any() and brute.any() and not brute.all()
    assert np.array_equal(touching(lat, mask), brute)


def test_coarse_indices_take_every_step_and_the_last_but_no_near_duplicate():
    assert coarse_indices(np.arange(0, 50, 5), 2).tolist() == [0, 2, 4, 6, 8, 9]
    # MONAI pushes the last window back flush with the end: 10 and 11 are near duplicates
    assert coarse_indices(np.array([0, 5, 10, 11]), 2).tolist() == [0, 3]
    assert coarse_indices(np.array([0, 5, 10, 14]), 2).tolist() == [0, 3]  # 4 < half a coarse step
    assert coarse_indices(np.array([0, 5, 10, 16]), 2).tolist() == [0, 2, 3]
    assert coarse_indices(np.array([0]), 2).tolist() == [0]
    assert coarse_indices(np.array([0, 4]), 3).tolist() == [0, 1]


def test_interpolation_matrix_is_linear_between_knots_and_exact_on_them():
    w = interpolation_matrix(7, np.array([0, 3, 6]))
    assert np.allclose(w.sum(1), 1.0)
    assert np.allclose(w @ np.array([0.0, 3.0, 6.0]), np.arange(7))  # linear reproduced
    assert np.allclose(w[[0, 3, 6]], np.eye(3))


def _bump_classifier(shape, centre, width):
    """Answers per lattice index: p(lesion) a Gaussian bump in window units around ``centre``."""
    calls: list[np.ndarray] = []

    def classify(index: np.ndarray) -> np.ndarray:
        calls.append(index)
        d2 = (((index - np.asarray(centre)) / width) ** 2).sum(1)
        p = np.exp(-d2 / 2)
        return np.stack([1 - p, p], 1)

    return classify, calls


def _score(a: np.ndarray) -> np.ndarray:
    return 1 - a[:, 0]


def test_threshold_zero_classifies_every_relevant_window_and_only_those():
    lat = lattice((40, 60, 50), (8, 10, 10), [0.5, 0.5, 0.5])
    relevant = np.zeros(lat.shape, bool)
    relevant[1:-1, 2:-2, :] = True
    classify, calls = _bump_classifier(lat.shape, (3.5, 5.0, 4.0), 1.5)
    got = classify_lattice(classify, lat, relevant, _score, np.array([1.0, 0.0]), 0.0, 2)
    assert got.classified[relevant].all()
    index = np.concatenate(calls)
    assert len(index) == len({tuple(i) for i in index})  # no window classified twice
    exact = classify(np.argwhere(np.ones(lat.shape, bool)))
    truth = exact.T.reshape(2, *lat.shape)
    assert np.allclose(got.answers[:, relevant], truth[:, relevant])


def test_refinement_classifies_around_a_lesion_and_interpolates_the_quiet_rest():
    """A bump between coarse windows: the windows on it are classified (its peak exactly), windows
    far from it are not, and their interpolated answers are the quiet "none" of their neighbours."""
    lat = lattice((60, 120, 120), (8, 10, 10), [0.5, 0.5, 0.5])
    relevant = np.ones(lat.shape, bool)
    peak = (7, 11, 13)  # odd indices: no coarse window on it
    classify, calls = _bump_classifier(lat.shape, peak, 1.2)
    progress: list[tuple[int, int]] = []
    got = classify_lattice(
        classify, lat, relevant, _score, np.array([1.0, 0.0]), 0.05, 2, lambda d, t: progress.append((d, t))
    )
    n = int(np.prod(lat.shape))
    assert got.classified[peak] and got.classified.sum() < n / 3
    assert np.isclose(got.answers[1][peak], 1.0)  # the peak's own answer, not an interpolation
    truth = classify(np.argwhere(np.ones(lat.shape, bool))).T.reshape(2, *lat.shape)
    hot = truth[1] >= 0.5
    assert got.classified[hot].all()
    assert np.abs(got.answers - truth).max() < 0.05  # elsewhere the quiet neighbours' "none"
    assert progress and progress[-1][0] == progress[-1][1] == got.classified.sum()
    assert all(b[0] >= a[0] for a, b in zip(progress, progress[1:], strict=False))


def test_windows_out_of_reach_take_the_default_answer():
    lat = lattice((40, 40, 40), (8, 8, 8), [0.5, 0.5, 0.5])
    classify, calls = _bump_classifier(lat.shape, (0, 0, 0), 1.0)
    nothing = classify_lattice(
        classify, lat, np.zeros(lat.shape, bool), _score, np.array([1.0, 0.0]), 0.05, 2
    )
    assert not calls and not nothing.classified.any()
    assert np.allclose(nothing.answers[0], 1.0)  # "none" everywhere


@pytest.mark.slow  # every window of a small study twice: ~15 s on the 2-core CPU
def test_scan_with_every_window_gives_the_monai_maps_where_candidates_may_lie():
    """The lattice scan with refine_threshold=0 against the scan it replaced (MONAI's inferer over
    every window: benchmark/scan_reference.py), with a real network of random weights: the same maps
    wherever a candidate may lie, and the same candidates."""
    from spinelesion.benchmark.scan_reference import monai_scan_maps
    from spinelesion.data.roi import RoiSpec
    from spinelesion.inference.scan import ScanConfig, field_of_view_margin, scan_grid, scan_study
    from spinelesion.models.networks import MultiTaskNet

    torch.manual_seed(0)
    net = MultiTaskNet(widths=(4, 8, 8, 8), hidden=8).eval()
    spec = RoiSpec((16, 16, 16), (2.0, 2.0, 2.0), 1.25)
    rng = np.random.default_rng(1)
    array = np.zeros((4, 70, 60, 50), np.float32)
    array[1] = 100 + 50 * rng.random((70, 60, 50), dtype=np.float32)
    array[1, 30:40, 25:35, 20:30] += 400  # something for the random net to answer
    affine = np.diag([1.2, 1.0, 1.5, 1.0])
    available = np.array([False, True, False, False])
    cfg = ScanConfig(refine_threshold=0.0, min_depth_mm=0.0, threshold=0.0, max_rois=4, min_distance_mm=10.0)
    device = torch.device("cpu")
    ours = scan_study(net, array, affine, available, spec, cfg, device)
    reference = monai_scan_maps(net, array, affine, available, spec, cfg, device)
    grid_affine, grid_shape = scan_grid(array.shape[1:], affine, spec.spacing, cfg.max_extent_mm)
    inside = field_of_view_margin(array.shape[1:], affine, grid_affine, grid_shape, spec, cfg)
    assert inside.any() and not inside.all()
    for task, maps in reference.items():
        np.testing.assert_allclose(ours.probabilities[task][:, inside], maps[:, inside], atol=1e-4)
    score = np.where(inside, np.maximum(1 - reference["compartment"][0], 1 - reference["fracture"][0]), 0.0)
    assert ours.candidates
    assert abs(ours.candidates[0][1] - score.max()) < 1e-4  # the best peak is the reference's best
    for centre, value in ours.candidates:  # each candidate's score is the reference map's there
        index = np.round(np.linalg.solve(grid_affine, np.r_[centre, 1.0])[:3]).astype(int)
        assert abs(value - score[tuple(index)]) < 1e-4
    assert ours.windows["classified"] >= ours.windows["relevant"]


def test_the_window_bar_follows_a_growing_plan():
    """predict's second bar: opened on the first report, its total grows as refinement plans more."""
    from spinelesion.tasks.predict import WindowBar

    bar = WindowBar()
    assert bar.bar is None  # a study with given ROIs never reports: no bar
    bar(32, 100)
    assert (bar.bar.n, bar.bar.total) == (32, 100)
    bar(100, 100)
    bar(140, 180)  # refinement planned 80 more windows
    assert (bar.bar.n, bar.bar.total) == (140, 180)
    bar.close()
    assert bar.bar is None


def test_the_benchmarks_frozen_normalisation_gives_todays_values():
    """The scan reference times the normalisation of 2711a30; its values must be today's."""
    from spinelesion.benchmark.scan_reference import _unit_range_2711a30
    from spinelesion.data.normalize import robust_unit_range

    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, 4, 12, 14, 10, generator=g) * 300
    x[:, :, :3] = 0
    x[1, 2] = 0
    x[3, :, :11] = 0  # mostly outside the volume: below min_fraction
    flags = torch.tensor([[1.0, 1.0, 0.0, 1.0]] * 5)
    assert torch.equal(_unit_range_2711a30(x, flags), robust_unit_range(x, flags))
