"""Resampling by geometry, checked against an independent computation (scipy through the affines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_io import AXIAL, CORONAL, SAGITTAL, blob, centroid_lps, make_volume, write_series
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from spinelesion.io.nifti import write_nifti
from spinelesion.io.resample import resample_to, sample_grid, sample_plane, to_reference
from spinelesion.io.study import Study, load_study_from_paths
from spinelesion.io.volume import Volume, grid_affine


def _scipy_reference(
    src: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, shape, order=1
) -> np.ndarray:
    """What sample_grid must give: each destination voxel centre mapped into source indices."""
    mesh = np.indices(shape).reshape(3, -1).astype(np.float64)
    m = np.linalg.inv(src_affine) @ dst_affine
    ijk = m[:3, :3] @ mesh + m[:3, 3:4]
    return map_coordinates(src, ijk, order=order, mode="grid-constant", cval=0.0).reshape(shape)


@pytest.mark.parametrize("seed", range(4))
def test_sample_grid_matches_scipy_on_oblique_and_flipped_grids(seed: int):
    rng = np.random.default_rng(seed)
    src_shape, dst_shape = tuple(rng.integers(6, 18, 3)), tuple(rng.integers(5, 14, 3))
    src = rng.random(src_shape).astype(np.float32)
    flip = np.diag(rng.choice([-1.0, 1.0], 3))
    a = grid_affine(
        rng.normal(0, 2, 3),
        src_shape,
        rng.uniform(0.6, 2.0, 3),
        Rotation.random(random_state=seed).as_matrix() @ flip,
    )
    b = grid_affine(
        rng.normal(0, 2, 3),
        dst_shape,
        rng.uniform(0.6, 2.0, 3),
        Rotation.random(random_state=99 - seed).as_matrix(),
    )
    got = sample_grid(src[None], a, b, dst_shape)[0, 0].numpy()
    ref = _scipy_reference(src, a, b, dst_shape)
    assert 0.1 < (ref > 0).mean()  # the grids overlap but not entirely: both inside and outside are tested
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_sample_grid_batches_destinations_and_channels():
    rng = np.random.default_rng(5)
    src = rng.random((2, 9, 10, 11)).astype(np.float32)
    a = grid_affine(np.zeros(3), (9, 10, 11), (1.0, 1.1, 1.2), Rotation.random(random_state=1).as_matrix())
    dsts = np.stack([grid_affine(rng.normal(0, 1, 3), (4, 5, 6), (0.9, 0.9, 0.9)) for _ in range(3)])
    got = sample_grid(src, a, dsts, (4, 5, 6)).numpy()
    assert got.shape == (3, 2, 4, 5, 6)
    for r in range(3):
        for c in range(2):
            np.testing.assert_allclose(got[r, c], _scipy_reference(src[c], a, dsts[r], (4, 5, 6)), atol=2e-5)


def test_singleton_axes_on_either_side():
    rng = np.random.default_rng(2)
    plane = rng.random((12, 10, 1)).astype(np.float32)  # a one-slice source: covers +-half a voxel
    a = grid_affine(np.zeros(3), (12, 10, 1), (1.0, 1.0, 4.0))
    near = grid_affine(np.array([0.0, 0.0, 1.5]), (12, 10, 1), (1.0, 1.0, 1.0))  # inside the slab
    far = grid_affine(np.array([0.0, 0.0, 6.5]), (12, 10, 1), (1.0, 1.0, 1.0))  # a voxel beyond it
    np.testing.assert_allclose(sample_grid(plane[None], a, near, (12, 10, 1))[0, 0].numpy(), plane, atol=1e-5)
    assert float(sample_grid(plane[None], a, far, (12, 10, 1)).abs().max()) == 0.0
    vol = rng.random((8, 9, 10)).astype(np.float32)  # a one-slice destination (preview planes)
    va = grid_affine(np.zeros(3), (8, 9, 10), (1.0, 1.0, 1.0))
    dst = grid_affine(np.array([0.3, -0.2, 0.7]), (1, 9, 10), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(
        sample_grid(vol[None], va, dst, (1, 9, 10))[0, 0].numpy(),
        _scipy_reference(vol, va, dst, (1, 9, 10)),
        atol=2e-5,
    )


@pytest.mark.parametrize("order", [0, 1, 3])
def test_resample_to_orders(order: int):
    rng = np.random.default_rng(order)
    vol = Volume(
        rng.random((10, 11, 12)).astype(np.float32),
        grid_affine(np.zeros(3), (10, 11, 12), (1.0, 1.0, 1.5), Rotation.random(random_state=3).as_matrix()),
    )
    target = grid_affine(np.array([0.5, 0.2, -0.3]), (8, 9, 7), (1.1, 1.2, 1.3))
    out = resample_to(vol, (8, 9, 7), target, order=order)
    assert out.shape == (8, 9, 7) and out.array.dtype == np.float32
    np.testing.assert_array_equal(out.affine, target)
    inside = _scipy_reference(np.ones(vol.shape, np.float32), vol.affine, target, (8, 9, 7), order=0) > 0
    if order == 0:  # nearest: every value inside is one of the source values
        assert np.isin(out.array[inside], vol.array).all()
    else:
        np.testing.assert_allclose(
            out.array, _scipy_reference(vol.array, vol.affine, target, (8, 9, 7), order=order), atol=1e-4
        )


def test_study_on_different_grids_lands_on_the_reference_grid_by_geometry(tmp_path: Path):
    """A marker at one LPS point in each source (each on its own grid, read from disk) lands at
    one place on the reference grid."""
    t2 = make_volume(shape=(40, 44, 12), spacing=(0.9, 0.9, 3.5), axes=SAGITTAL, centre=(0, -4, 8))
    voxel = np.array([20, 22, 6])
    target = t2.voxel_to_world(voxel)  # an LPS point at a reference voxel centre
    t1 = make_volume(
        shape=(36, 40, 30), spacing=(1.2, 1.2, 1.5), axes=AXIAL, centre=(2, -8, 12), oblique_deg=8
    )
    stir = make_volume(
        shape=(30, 14, 34), spacing=(1.4, 4.0, 1.3), axes=CORONAL, centre=(5, -6, 6), oblique_deg=-5
    )
    for v in (t1, t2, stir):
        blob(v, target)
    write_series(t2, tmp_path / "t2", desc="T2 SAG")
    write_nifti(t1, tmp_path / "t1.nii.gz")
    write_series(stir, tmp_path / "stir", desc="STIR COR")
    study = load_study_from_paths(
        "S", {"t1": tmp_path / "t1.nii.gz", "t2": tmp_path / "t2", "stir": tmp_path / "stir"}
    )
    array, affine, available, ref = to_reference(study)
    assert ref == "t2" and available.tolist() == [True, True, True, False]
    np.testing.assert_allclose(affine, study.volumes["t2"].affine)
    assert array.shape == (4, 40, 44, 12) and float(np.abs(array[3]).max()) == 0.0
    for c in range(3):
        centre = centroid_lps(array[c], affine)
        np.testing.assert_allclose(centre, target, atol=0.25)  # mm, from grids of 0.9 to 4 mm voxels
        index = np.linalg.inv(affine)[:3] @ np.append(centre, 1.0)
        assert np.round(index).astype(int).tolist() == voxel.tolist()  # the same reference voxel
    # the sources really were on different grids
    assert len({v.shape for v in study.volumes.values()}) == 3


def test_to_reference_named_reference_and_errors():
    t2, t1 = make_volume(seed=1), make_volume(seed=2, axes=AXIAL)
    array, affine, available, ref = to_reference(Study("s", {"t1": t1, "t2": t2}), reference="t1")
    assert ref == "t1" and array.shape[1:] == t1.shape
    np.testing.assert_array_equal(array[0], t1.array)
    with pytest.raises(ValueError, match="reference sequence 'stir' is not in this study"):
        to_reference(Study("s", {"t1": t1}), reference="stir")


def test_sample_plane_puts_anterior_left_and_superior_up_for_ras_and_oblique_storage() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # an oblique rotation
    for rotation in (np.diag([-1.0, -1.0, 1.0]), q):  # RAS-stored, then oblique
        affine = np.eye(4)
        affine[:3, :3] = rotation  # 1 mm voxels
        affine[:3, 3] = -rotation @ np.full(3, 20.0)  # voxel (20, 20, 20) at the LPS origin
        index = np.indices((41, 41, 41)).reshape(3, -1).T.astype(float)
        world = index @ rotation.T + affine[:3, 3]
        # the image is the LPS y (posterior) coordinate plus 10 x the z (superior) one: linear,
        # so trilinear sampling gives it exactly inside the volume
        array = (world[:, 1] + 10.0 * world[:, 2]).reshape(41, 41, 41)
        sag = sample_plane(array, affine, np.zeros(3), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0), 5.0)
        assert sag.shape == (11, 11)
        offsets = np.arange(-5.0, 6.0)
        expected = offsets[None, :] - 10.0 * offsets[:, None]  # columns posterior, rows inferior
        np.testing.assert_allclose(sag, expected, atol=1e-3)
        fine = sample_plane(array, affine, np.zeros(3), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0), 5.0, step_mm=0.5)
        assert fine.shape == (21, 21)
        np.testing.assert_allclose(fine[::2, ::2], sag, atol=1e-3)  # the same plane, twice as fine
        assert abs(fine[10, 11] - 0.5) < 1e-3  # half a millimetre posterior of the centre
