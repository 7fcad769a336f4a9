"""The air around the body, and scan mode's depth limit under the skin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spinelesion.data.roi import RoiSpec
from spinelesion.inference.scan import ScanConfig, scan_study
from spinelesion.io.body_outline import air_mask, depth_under_skin_mm
from spinelesion.labels import TASKS

SHAPE = (40, 120, 100)  # a sagittal slab: x (left-right) is the thin axis; 1 mm voxels
BODY = (slice(None), slice(20, 100), slice(None))  # tissue between y = 20 and 100; air in front and behind


def _slab(seed: int = 0, body: tuple[slice, ...] = BODY) -> np.ndarray:
    """(1, X, Y, Z): tissue at 100-140 inside ``body``, the noise floor (0-6) outside."""
    rng = np.random.default_rng(seed)
    image = rng.rayleigh(2.0, SHAPE).astype(np.float32)
    image[body] = 100 + 40 * rng.random(image[body].shape, dtype=np.float32)
    return image[None]


def test_air_is_outside_the_body_and_depth_is_the_distance_to_it():
    image = _slab()
    air = air_mask(image, (1.0, 1.0, 1.0))
    assert air[:, :15].all() and air[:, 105:].all()  # in front of and behind the body
    assert not air[:, 22:98].any()
    depth = depth_under_skin_mm(image, (1.0, 1.0, 1.0))
    assert depth[20, 60, 50] == pytest.approx(40, abs=3)  # mid-body: 40 mm to the skin (blurred by ~1 mm)
    assert depth[20, 23, 50] < 7 and depth[20, 96, 50] < 7  # 3 mm under the skin


def test_spacing_scales_depth():
    image = _slab()
    fine = depth_under_skin_mm(image, (1.0, 1.0, 1.0))[20, 60, 50]
    coarse = depth_under_skin_mm(image, (1.0, 2.0, 1.0))[20, 60, 50]
    assert coarse == pytest.approx(2 * fine, rel=0.05)


def test_a_crop_without_air_is_not_limited():
    """A tight crop of the spine (no noise floor in view) has no skin to measure from, even with
    dark structures touching its edges."""
    image = _slab(body=(slice(None), slice(None), slice(None)))
    image[0, :, 40:50, :] = 5.0  # a dark band (CSF on T1, a flow void) across the whole crop
    assert not air_mask(image, (1.0, 1.0, 1.0)).any()
    assert np.isinf(depth_under_skin_mm(image, (1.0, 1.0, 1.0))).all()


def test_dark_tissue_inside_the_body_is_not_air():
    image = _slab()
    image[0, :, 55:65, 40:60] = 1.0  # dark viscera at the noise floor, through every slice of the thin axis
    image[0, 10:30, 30:32, :] = 1.0  # a thin dark line (cortex) reaching the in-plane edges
    air = air_mask(image, (1.0, 1.0, 1.0))
    assert not air[:, 55:65, 40:60].any()  # enclosed in-plane: its touching the slab's faces does not count
    assert not air[10:30, 30:32, 5:95].any()  # thinner than the opening: tissue
    assert depth_under_skin_mm(image, (1.0, 1.0, 1.0))[20, 60, 50] > 30


def test_air_needs_every_present_sequence_dark_and_ignores_missing_ones():
    t2 = _slab()[0]
    stir = _slab(seed=1)[0]
    stir[:, 100:, :] = 120  # STIR has signal behind the body (say, a coil's flare): not air there
    missing = np.zeros(SHAPE, np.float32)
    air = air_mask(np.stack([missing, t2, stir, missing]), (1.0, 1.0, 1.0))
    assert air[:, :15].all() and not air[:, 105:].any()


class CentreBrighterProbe(nn.Module):
    """Answers "lesion" when the ROI's centre is much brighter than the ROI's median, wherever
    the ROI lies (with or without air in it)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("temperature", torch.ones(len(TASKS)))

    def forward(self, image: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = [n // 2 for n in image.shape[2:]]
        core = image[:, 1:2, c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 2 : c[2] + 2].mean((1, 2, 3, 4))
        median = image[:, 1].flatten(1).median(1).values
        s = ((core - median - 0.5) * 8)[:, None]
        low = torch.full_like(s, -20.0)
        return torch.cat([-s, s, low, low], 1), torch.cat([-s, low, s], 1)


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_scan_proposes_nothing_just_under_the_skin():
    # windows are centred at least half a context (45 mm in y) inside the field of view: air
    # 60 mm deep in front of the body, so that one can centre just under the skin
    shape = (60, 200, 120)
    rng = np.random.default_rng(0)
    t2 = rng.rayleigh(2.0, shape).astype(np.float32)
    t2[:, 60:160] = 100 + 40 * rng.random((60, 100, 120), dtype=np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    # 50 mm and 4 mm under the skin
    deep, shallow = np.array([30.0, 110.0, 60.0]), np.array([30.0, 64.0, 60.0])
    for blob, sigma in ((deep, 3.0), (shallow, 2.0)):  # the shallow one's tail must not reach the air
        t2 += 900 * np.exp(-((grid - blob) ** 2).sum(-1) / (2 * sigma**2))
    array = np.zeros((4, *shape), np.float32)
    array[1] = t2
    available = np.array([False, True, False, False])
    spec = RoiSpec((32, 48, 48), (1.5, 1.5, 1.5), 1.25)
    found = {}
    for depth in (0.0, 10.0):
        cfg = ScanConfig(threshold=0.5, max_rois=4, min_depth_mm=depth)
        res = scan_study(CentreBrighterProbe(), array, np.eye(4), available, spec, cfg, torch.device("cpu"))
        found[depth] = [c for c, _ in res.candidates]

    def near(points: list[np.ndarray], blob: np.ndarray) -> bool:
        return any(np.linalg.norm(p - blob) <= 8 for p in points)

    assert near(found[0.0], deep) and near(found[0.0], shallow), found
    assert near(found[10.0], deep) and not near(found[10.0], shallow), found
