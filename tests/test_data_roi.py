"""ROI sampling by geometry, normalisation, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from spinelesion.data.augment import AugmentConfig, BatchAugment, augmentation_from_dict
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


@pytest.mark.parametrize(
    "rotation", [None, Rotation.from_euler("zyx", [90, 7, -4], degrees=True).as_matrix()]
)
def test_roi_is_centred_on_an_lps_point_whatever_the_source_orientation(rotation):
    """A bright point at an LPS position ends up at the ROI centre, for axial-like and oblique sources."""
    shape, spacing = (60, 70, 24), (1.0, 1.0, 3.0)
    src = grid_affine([0.0, 0.0, 0.0], shape, spacing, rotation)
    target = np.array([7.0, -12.0, 9.0])
    ijk = np.linalg.solve(src[:3, :3], target - src[:3, 3])
    arr = np.zeros((1, *shape), np.float32)
    idx = np.round(ijk).astype(int)
    arr[0, idx[0] - 1 : idx[0] + 2, idx[1] - 1 : idx[1] + 2, idx[2]] = 100.0
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


def _batch(spec: RoiSpec, b: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 4, *spec.context_shape, generator=g)
    avail = torch.ones(b, 4)
    avail[:, 2] = 0.0
    image[:, 2] = 0.0
    return image, avail


def test_augmentation_output_shape_flags_and_determinism():
    spec = RoiSpec(shape=(16, 24, 24), spacing=(1.5, 1.5, 1.5), margin=1.25)
    aug = BatchAugment(AugmentConfig(dropout_prob=0.5), spec)
    image, avail = _batch(spec)
    a = aug(image, avail, aug.generator(image.device, 1, 2, 0))
    b = aug(image, avail, aug.generator(image.device, 1, 2, 0))
    c = aug(image, avail, aug.generator(image.device, 1, 3, 0))
    assert tuple(a[0].shape) == (6, 4, *spec.shape)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    assert not torch.allclose(a[0], c[0])
    for img, flags in (a, c):
        assert (flags[:, 2] == 0).all() and (flags.sum(1) >= 1).all()
        for i in range(img.shape[0]):
            for ch in range(4):
                if flags[i, ch] == 0:
                    assert float(img[i, ch].abs().max()) == 0.0


def test_identity_augmentation_is_the_centre_crop():
    spec = RoiSpec(shape=(8, 12, 12), spacing=(1.5, 1.5, 1.5), margin=1.5)
    off = AugmentConfig(**{**{k: 0.0 for k in AugmentConfig.__dataclass_fields__ if k.endswith("_prob")}})
    aug = BatchAugment(off, spec)
    image, avail = _batch(spec, b=2)
    out, flags = aug(image, avail, aug.generator(image.device, 0))
    torch.testing.assert_close(out, center_crop(image, spec.shape), atol=1e-5, rtol=0)
    torch.testing.assert_close(flags, avail)


def test_affine_rotates_about_the_roi_centre_in_patient_axes():
    """A 90-degree turn about the L-R axis maps the A-P axis onto S-I: a bar along A-P becomes a bar along S-I."""
    spec = RoiSpec(shape=(9, 9, 9), spacing=(1.0, 1.0, 1.0), margin=1.0)
    cfg = AugmentConfig(
        **{
            **{k: 0.0 for k in AugmentConfig.__dataclass_fields__ if k.endswith("_prob")},
            "affine_prob": 1.0,
            "rotate_deg": (90.0, 0.0, 0.0),
            "scale": 0.0,
            "translate_mm": (0, 0, 0),
        }
    )
    aug = BatchAugment(cfg, spec)
    img = torch.zeros(1, 1, 9, 9, 9)
    img[0, 0, 4, :, 4] = 1.0  # bar along A-P (axis 1) through the centre
    found = False
    for seed in range(40):  # the angle is drawn in [-90, 90]: find a draw near +-90 degrees
        out, _ = aug(img, torch.ones(1, 1), aug.generator(img.device, seed))
        along_si = float(out[0, 0, 4, 4, :].sum())
        along_ap = float(out[0, 0, 4, :, 4].sum())
        if along_si > 7.0:
            assert along_ap < 2.0
            assert float(out[0, 0, 4, 4, 4]) > 0.9  # the centre stays put
            found = True
            break
    assert found


def test_sequence_dropout_never_drops_everything():
    spec = RoiSpec(shape=(4, 4, 4), spacing=(1, 1, 1), margin=1.0)
    aug = BatchAugment(AugmentConfig(dropout_prob=1.0), spec)
    flags = torch.tensor([[1.0, 0.0, 1.0, 1.0]] * 20)
    out = aug._dropout(flags, aug.generator(flags.device, 5))
    assert (out.sum(1) == 1).all() and (out[:, 1] == 0).all()


def test_augmentation_flips_only_left_right():
    """A-P and S-I flips would invent anatomy; the pipeline must only mirror L-R (axis 0)."""
    spec = RoiSpec(shape=(8, 8, 8), spacing=(1.5, 1.5, 1.5), margin=1.0)
    cfg = AugmentConfig(
        **{**{k: 0.0 for k in AugmentConfig.__dataclass_fields__ if k.endswith("_prob")}, "flip_lr_prob": 1.0}
    )
    aug = BatchAugment(cfg, spec)
    image = torch.arange(8 * 8 * 8, dtype=torch.float32).reshape(1, 1, 8, 8, 8)
    out, _ = aug(image, torch.ones(1, 1), aug.generator(image.device, 0))
    torch.testing.assert_close(out, image.flip(2))


def test_augmentation_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="rotate_dgr"):
        augmentation_from_dict({"rotate_dgr": [1, 2, 3]})
    assert augmentation_from_dict({"rotate_deg": [1, 2, 3]}).rotate_deg == (1, 2, 3)
