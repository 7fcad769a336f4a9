"""ROI sampling by geometry, normalisation, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from spinelesion.data.augment import (
    AugmentConfig,
    SequenceDropoutd,
    augmentation_from_dict,
    build_augmentation,
)
from spinelesion.data.normalize import robust_unit_range
from spinelesion.data.roi import RoiSpec, center_crop, crop_rois, sample_grid
from spinelesion.io.volume import grid_affine


def test_sample_grid_matches_scipy_through_the_affines():
    rng = np.random.default_rng(0)
    arr = rng.random((2, 30, 40, 12)).astype(np.float32)
    rot = Rotation.from_euler("xyz", [10, -5, 80], degrees=True).as_matrix()
    src = grid_affine([5, -3, 2], (30, 40, 12), (1.1, 0.9, 3.5), rot)
    dst = grid_affine([6, -2, 1], (7, 9, 5), (1.3, 1.7, 2.0))
    out = sample_grid(arr, src, dst, (7, 9, 5))[0].numpy()
    mesh = np.stack(np.meshgrid(*[np.arange(s) for s in (7, 9, 5)], indexing="ij"), -1).reshape(-1, 3)
    world = mesh @ dst[:3, :3].T + dst[:3, 3]
    ijk = (world - src[:3, 3]) @ np.linalg.inv(src[:3, :3]).T
    ref = np.stack([map_coordinates(arr[c], ijk.T, order=1).reshape(7, 9, 5) for c in range(2)])
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("rotation", [None, Rotation.from_euler("zyx", [90, 7, -4], degrees=True).as_matrix()])
def test_roi_is_centred_on_an_lps_point_whatever_the_source_orientation(rotation):
    """A bright point at an LPS position ends up at the ROI centre, for axial-like and oblique sources."""
    shape, spacing = (60, 70, 24), (1.0, 1.0, 3.0)
    src = grid_affine([0.0, 0.0, 0.0], shape, spacing, rotation)
    target = np.array([7.0, -12.0, 9.0])
    ijk = np.linalg.solve(src[:3, :3], target - src[:3, 3])
    arr = np.zeros((1, *shape), np.float32)
    idx = np.round(ijk).astype(int)
    arr[0, idx[0] - 1:idx[0] + 2, idx[1] - 1:idx[1] + 2, idx[2]] = 100.0
    exact = src[:3, :3] @ idx + src[:3, 3]  # the marker's true LPS centre
    spec = RoiSpec(shape=(16, 24, 24), spacing=(1.5, 1.5, 1.5), margin=1.0)
    roi = crop_rois(arr, src, [exact], spec, context=False)[0, 0].numpy()
    peak = np.array(np.unravel_index(np.argmax(roi), roi.shape))
    centre = (np.array(spec.shape) - 1) / 2
    assert np.linalg.norm((peak - centre) * 1.5) <= 2.5  # mm: within about a voxel of the source grid


def test_context_crop_centre_equals_network_crop():
    spec = RoiSpec(shape=(8, 12, 12), spacing=(2.0, 2.0, 2.0), margin=1.5)
    arr = torch.rand(1, 40, 40, 40)
    aff = grid_affine([0, 0, 0], (40, 40, 40), (1, 1, 1))
    center = np.array([1.0, -2.0, 3.0])
    ctx = crop_rois(arr, aff, [center], spec, context=True)[0]
    net_in = crop_rois(arr, aff, [center], spec, context=False)[0]
    torch.testing.assert_close(center_crop(ctx, spec.shape), net_in)


def test_outside_the_volume_is_zero():
    arr = torch.ones(1, 10, 10, 10)
    aff = grid_affine([0, 0, 0], (10, 10, 10), (1, 1, 1))
    spec = RoiSpec(shape=(4, 4, 4), spacing=(1, 1, 1), margin=1.0)
    far = crop_rois(arr, aff, [np.array([100.0, 0, 0])], spec, context=False)
    assert float(far.abs().max()) == 0.0


def test_normalisation_is_scale_free_and_keeps_missing_channels_zero():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.gamma(2.0, 100.0, size=(3, 10, 12, 12)).astype(np.float32))
    a = robust_unit_range(x, torch.tensor([1.0, 1.0, 0.0]))
    b = robust_unit_range(x * 37.0 + 0.0, torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert float(a[2].abs().max()) == 0.0
    # p1 -> 0 and p99 -> 1: about 1 % of voxels on either side of [0, 1]
    assert 0.005 < float((a[0] <= 0).float().mean()) < 0.02
    assert 0.005 < float((a[0] >= 1).float().mean()) < 0.02
    # outside-the-volume zeros stay zero and do not bias the statistics
    y = x.clone()
    y[:, :5] = 0
    c = robust_unit_range(y)
    assert float(c[:, :5].abs().max()) == 0.0
    assert abs(float(c[0, 5:].median()) - float(robust_unit_range(x[:, 5:])[0].median())) < 1e-4


def test_augmentation_output_shape_flags_and_determinism():
    spec = RoiSpec(shape=(16, 24, 24), spacing=(1.5, 1.5, 1.5), margin=1.25)
    tf = build_augmentation(AugmentConfig(dropout_prob=0.5), spec)
    image = torch.rand(4, *spec.context_shape)
    avail = torch.tensor([1.0, 1.0, 0.0, 1.0])
    outs = []
    for _ in range(2):
        tf.set_random_state(seed=123)
        outs.append(tf({"image": image.clone(), "available": avail.clone()}))
    assert tuple(outs[0]["image"].shape) == (4, *spec.shape)
    torch.testing.assert_close(torch.as_tensor(outs[0]["image"]), torch.as_tensor(outs[1]["image"]))
    tf.set_random_state(seed=124)
    other = tf({"image": image.clone(), "available": avail.clone()})
    assert not torch.allclose(torch.as_tensor(other["image"]), torch.as_tensor(outs[0]["image"]))
    for out in (outs[0], other):
        flags = torch.as_tensor(out["available"])
        assert flags[2] == 0 and flags.sum() >= 1
        img = torch.as_tensor(out["image"])
        for c in range(4):
            if flags[c] == 0:
                assert float(img[c].abs().max()) == 0.0


def test_sequence_dropout_never_drops_everything():
    t = SequenceDropoutd(prob=1.0)
    t.set_random_state(seed=0)
    for _ in range(20):
        out = t({"image": torch.ones(4, 2, 2, 2), "available": torch.tensor([1.0, 0.0, 1.0, 1.0])})
        assert out["available"].sum() == 1 and out["available"][1] == 0


def test_augmentation_flips_only_left_right():
    """A-P and S-I flips would invent anatomy; the pipeline must only mirror L-R (axis 0)."""
    spec = RoiSpec(shape=(8, 8, 8), spacing=(1.5, 1.5, 1.5), margin=1.0)
    cfg = AugmentConfig(**{**{k: 0.0 for k in AugmentConfig.__dataclass_fields__ if k.endswith("_prob")},
                           "flip_lr_prob": 1.0})
    tf = build_augmentation(cfg, spec)
    image = torch.arange(8 * 8 * 8, dtype=torch.float32).reshape(1, 8, 8, 8)
    tf.set_random_state(seed=0)
    out = torch.as_tensor(tf({"image": image, "available": torch.ones(1)})["image"])
    torch.testing.assert_close(out, image.flip(1))


def test_augmentation_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="rotate_dgr"):
        augmentation_from_dict({"rotate_dgr": [1, 2, 3]})
    assert augmentation_from_dict({"rotate_deg": [1, 2, 3]}).rotate_deg == (1, 2, 3)
