"""Resampling by geometry: any grid onto any other grid through their voxel-to-LPS affines.

One function, :func:`sample_grid`, does every resampling in the project (sequences onto a
study's reference grid, ROI crops, saliency back onto the study, scan maps), so there is
one place where the index conventions can go wrong, and it is tested against scipy.

Voxel (i, j, k) of a destination grid sits at LPS point ``dst_affine @ (i, j, k, 1)``,
which is voxel ``inv(src_affine) @ that`` of the source: the composition is one affine
map, so ``torch.nn.functional.affine_grid`` builds the sampling grid directly from it
(float32, no per-voxel float64 mesh) and ``grid_sample`` interpolates, on whatever device
the array is on. Outside the source the image is 0 (zero padding: trilinear values fall
to 0 within one voxel beyond the outermost voxel centres, as scipy's ``grid-constant``).
Orders above 1 (cubic...) go through ``scipy.ndimage.map_coordinates``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spinelesion.io.volume import Volume, apply_affine, spacing_of
from spinelesion.labels import SEQUENCES

REFERENCE_ORDER: tuple[str, ...] = ("t2", "t1", "stir", "t1c")
"""``reference='auto'``: the first available of these is the grid every sequence is put on
(a sagittal T2 is in nearly every spine protocol and shows the whole anatomy)."""

_MODES = {0: "nearest", 1: "bilinear"}


def _index_to_normalised(size: Sequence[int]) -> np.ndarray:
    """4x4 map from voxel index (i, j, k) to grid_sample coordinates (x, y, z) = (k, j, i)
    scaled to [-1, 1] between the first and last voxel centres (``align_corners=True``).

    A singleton axis is sampled from a copy of itself doubled (see :func:`sample_grid`), so
    index -0.5..+0.5 maps to -1..+1: the slice is constant over its own thickness (instead
    of being smeared over all space, which is what ``align_corners=True`` does to a size-1
    axis), then falls to 0 within one more voxel.
    """
    m = np.zeros((4, 4))
    for axis, n in enumerate(size):
        row = 2 - axis  # x is the last array axis
        if n > 1:
            m[row, axis], m[row, 3] = 2.0 / (n - 1), -1.0
        else:
            m[row, axis], m[row, 3] = 2.0, 0.0
    m[3, 3] = 1.0
    return m


def _normalised_to_index(size: Sequence[int]) -> np.ndarray:
    """4x4 map from ``affine_grid`` output coordinates to destination voxel indices
    (``affine_grid`` puts a singleton axis at 0)."""
    m = np.zeros((4, 4))
    for axis, n in enumerate(size):
        half = (n - 1) / 2.0
        m[axis, 2 - axis], m[axis, 3] = half, half
    m[3, 3] = 1.0
    return m


def sample_grid(
    array: torch.Tensor | np.ndarray,
    src_affine: np.ndarray,
    dst_affines: np.ndarray | Sequence[np.ndarray],
    dst_shape: Sequence[int],
    mode: str = "bilinear",
) -> torch.Tensor:
    """Sample a (C, I, J, K) array on one or several destination grids, by geometry.

    Args:
        array: source image, channels first, spatial axes in affine order.
        src_affine: voxel-to-LPS affine of ``array``.
        dst_affines: one 4x4 affine or a stack (R, 4, 4) of destination grids.
        dst_shape: spatial shape of each destination grid.
        mode: ``"bilinear"`` (trilinear in 3D) or ``"nearest"``.

    Returns:
        (R, C, *dst_shape) float32; points outside the source are 0.
    """
    src = torch.as_tensor(array)
    if src.ndim != 4:
        raise ValueError(f"expected a (C, I, J, K) array, got shape {tuple(src.shape)}")
    src = src.float()
    size = tuple(int(s) for s in src.shape[1:])
    for axis, n in enumerate(size):
        if n == 1:  # two copies at -0.5 and +0.5: constant inside the voxel's extent, 0 beyond
            src = src.repeat_interleave(2, dim=axis + 1)
    dst = np.asarray(dst_affines, dtype=np.float64)
    dst = dst[None] if dst.ndim == 2 else dst
    shape = tuple(int(s) for s in dst_shape)
    n_dst = dst.shape[0]
    theta = (
        _index_to_normalised(size)
        @ np.linalg.inv(np.asarray(src_affine, dtype=np.float64))[None]
        @ dst
        @ _normalised_to_index(shape)
    )
    with warnings.catch_warnings():
        # A unit-size destination axis draws a warning about how affine_grid places it;
        # _normalised_to_index sends that axis to index 0 whatever the placement.
        warnings.filterwarnings("ignore", message=".*affine_grid behavior has changed for unit-size grids.*")
        grid = F.affine_grid(
            torch.from_numpy(theta[:, :3].astype(np.float32)).to(src.device),
            [n_dst, 1, *shape],
            align_corners=True,
        )  # (R, I, J, K, 3)
    # All destination grids in one call: stack them along the first spatial axis.
    grid = grid.reshape(1, n_dst * shape[0], shape[1], shape[2], 3)
    out = F.grid_sample(src[None], grid, mode=mode, padding_mode="zeros", align_corners=True)
    out = out.reshape(src.shape[0], n_dst, *shape).transpose(0, 1)
    return out.contiguous()


def sample_plane(
    array: np.ndarray,
    affine: np.ndarray,
    centre: np.ndarray | Sequence[float],
    u: np.ndarray | Sequence[float],
    v: np.ndarray | Sequence[float],
    half_mm: float,
    step_mm: float = 1.0,
) -> np.ndarray:
    """The (n, n) image of a 3D ``array`` on the plane through ``centre`` (LPS mm) spanned by the
    LPS unit vectors ``u`` (along a row, left to right) and ``v`` (down a column, top to bottom),
    ``half_mm`` either side of the centre, one pixel every ``step_mm``; the centre is pixel
    (n // 2, n // 2). Linear; outside the array reads 0. A one-voxel-thick grid through
    :func:`sample_grid`, for pictures (e.g. u = posterior, v = inferior: a sagittal plane,
    anterior left and superior up)."""
    n = int(round(2.0 * half_mm / step_mm)) + 1
    u_, v_ = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    grid = np.eye(4)
    grid[:3, :3] = np.stack([v_, u_, np.cross(v_, u_)], axis=1) * step_mm  # grid axes: rows, columns, normal
    grid[:3, 3] = np.asarray(centre, dtype=np.float64) - half_mm * (u_ + v_)
    source = np.asarray(array, dtype=np.float32)[None]
    return sample_grid(source, affine, grid, (n, n, 1))[0, 0, :, :, 0].numpy()


def _map_coordinates(volume: Volume, shape: Sequence[int], affine: np.ndarray, order: int) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    mesh = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    to_src = np.linalg.inv(volume.affine) @ np.asarray(affine, dtype=np.float64)
    ijk = to_src[:3, :3] @ mesh + to_src[:3, 3:4]
    out = map_coordinates(
        np.asarray(volume.array, dtype=np.float32), ijk, order=order, mode="grid-constant", cval=0.0
    )
    return out.reshape(tuple(shape)).astype(np.float32)


def resample_to(
    volume: Volume, target_shape: Sequence[int], target_affine: np.ndarray, order: int = 1, **legacy: Any
) -> Volume:
    """``volume`` resampled onto the grid (target_shape, target_affine); 0 outside the source.

    Args:
        order: 0 nearest, 1 (tri)linear, 2-5 spline (through scipy; slower).
    """
    if "mode" in legacy:  # the former keyword: "nearest" / "bilinear"
        order = 0 if legacy.pop("mode") == "nearest" else 1
    if legacy:
        raise TypeError(f"unexpected keyword(s): {', '.join(legacy)}")
    if order in _MODES:
        out = sample_grid(volume.array[None], volume.affine, target_affine, target_shape, mode=_MODES[order])[
            0, 0
        ]
        array = out.numpy()
    elif 2 <= order <= 5:
        array = _map_coordinates(volume, target_shape, target_affine, order)
    else:
        raise ValueError(f"order must be 0..5, got {order}")
    return Volume(array, np.asarray(target_affine, dtype=np.float64), dict(volume.meta))


def choose_reference(available: Sequence[str], reference: str = "auto") -> str:
    """The sequence whose grid the study is put on: the one named, or the first of
    :data:`REFERENCE_ORDER` that is available."""
    if reference != "auto":
        if reference not in available:
            raise ValueError(
                f"reference sequence '{reference}' is not in this study (has {', '.join(available)})"
            )
        return reference
    for name in REFERENCE_ORDER:
        if name in available:
            return name
    raise ValueError("study has no sequence")


def to_reference(study: object, reference: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """All sequences of ``study`` on the reference sequence's own grid, by geometry.

    Returns ``(array (C, I, J, K) float32 in SEQUENCES order, affine, available (C,) bool,
    reference name)``. Missing sequences are zero channels. The reference grid is the
    reference volume's grid exactly as read from disk (so outputs overlay on it).
    """
    volumes: dict[str, Volume] = study.volumes  # type: ignore[attr-defined]  # a Study, or any object with .volumes
    ref_name = choose_reference(list(volumes), reference)
    ref = volumes[ref_name]
    out = np.zeros((len(SEQUENCES), *ref.shape), dtype=np.float32)
    available = np.zeros(len(SEQUENCES), dtype=bool)
    for c, name in enumerate(SEQUENCES):
        vol = volumes.get(name)
        if vol is None:
            continue
        available[c] = True
        if vol is ref:
            out[c] = vol.array
        else:
            out[c] = sample_grid(vol.array[None], vol.affine, ref.affine, ref.shape)[0, 0].numpy()
    return out, ref.affine.copy(), available, ref_name


def block_mean(array: np.ndarray, affine: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Average (C, I, J, K) voxels in blocks of whole voxels, about ``spacing_mm`` per axis (the
    nearest whole number of voxels); the block grid's affine keeps the geometry (a block's centre
    is its voxels' mean). A remainder shorter than a block at an axis's far end is dropped."""
    factors = [max(int(round(spacing_mm / s)), 1) for s in spacing_of(affine)]
    if factors == [1, 1, 1]:
        return np.asarray(array), np.asarray(affine, float)
    c = array.shape[0]
    n = [size // f for size, f in zip(array.shape[1:], factors, strict=True)]
    cropped = np.asarray(array)[:, : n[0] * factors[0], : n[1] * factors[1], : n[2] * factors[2]]
    blocks = cropped.reshape(c, n[0], factors[0], n[1], factors[1], n[2], factors[2])
    out = blocks.mean(axis=(2, 4, 6), dtype=np.float32)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factors)
    scale[:3, 3] = (np.asarray(factors) - 1) / 2.0
    return out, np.asarray(affine, float) @ scale


def lps_grid(
    shape: tuple[int, ...], affine: np.ndarray, spacing: tuple[float, float, float], max_extent_mm: float
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An LPS-aligned grid at ``spacing`` covering the bounding box of a volume (at most
    ``max_extent_mm`` per axis, about its centre): scan mode's and the spine locator's."""
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in shape], indexing="ij")).reshape(3, -1).T
    world = apply_affine(affine, corners)
    lo, hi = world.min(0), world.max(0)
    extent = np.minimum(hi - lo, max_extent_mm)
    centre = (lo + hi) / 2
    size = np.maximum(np.ceil(extent / np.asarray(spacing)).astype(int), 1)
    out = np.eye(4)
    out[:3, :3] = np.diag(spacing)
    out[:3, 3] = centre - np.asarray(spacing) * (size - 1) / 2
    return out, (int(size[0]), int(size[1]), int(size[2]))
