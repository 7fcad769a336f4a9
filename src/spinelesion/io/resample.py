"""Resampling by geometry: any grid onto any other grid through their voxel-to-LPS affines.

One function, :func:`sample_grid`, does every resampling in the project (sequences onto a
study's reference grid, ROI crops, saliency back onto the study, scan maps), so there is
one place where the index conventions can go wrong, and it is tested against scipy.
It is ``torch.nn.functional.grid_sample`` (trilinear) with the affine algebra around it,
batched over destination grids, and it runs on whatever device the array is on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from spinelesion.io.volume import Volume
from spinelesion.labels import SEQUENCES

REFERENCE_ORDER: tuple[str, ...] = ("t2", "t1", "stir", "t1c")
"""``reference='auto'``: the first available of these is the grid every sequence is put on
(a sagittal T2 is in nearly every spine protocol and shows the whole anatomy)."""


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
    dst = np.asarray(dst_affines, dtype=np.float64)
    single = dst.ndim == 2
    dst = dst[None] if single else dst
    shape = tuple(int(s) for s in dst_shape)
    # Voxel indices of every destination voxel, in source index space.
    mesh = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), -1)
    homog = np.concatenate([mesh, np.ones((*shape, 1))], -1).reshape(-1, 4)
    to_src = np.linalg.inv(src_affine)[None] @ dst  # (R, 4, 4)
    ijk = np.einsum("rab,nb->rna", to_src[:, :3], homog)  # (R, N, 3)
    size = np.asarray(src.shape[1:], dtype=np.float64)
    # grid_sample(align_corners=True): -1 and +1 are the centres of the first and last voxels.
    # A singleton axis has no extent: put every sample on it when within half a voxel.
    denom = np.where(size > 1, size - 1, 1.0)
    norm = np.where(size > 1, 2.0 * ijk / denom - 1.0, np.where(np.abs(ijk) <= 0.5, 0.0, 2.0))
    grid = torch.from_numpy(norm[..., ::-1].astype(np.float32).copy())  # (x, y, z) = (K, J, I)
    grid = grid.reshape(1, dst.shape[0] * shape[0], shape[1], shape[2], 3)
    out = F.grid_sample(src[None], grid, mode=mode, padding_mode="zeros", align_corners=True)
    out = out.reshape(src.shape[0], dst.shape[0], *shape).transpose(0, 1)
    return out.contiguous()


def resample_to(volume: Volume, shape: Sequence[int], affine: np.ndarray, mode: str = "bilinear") -> Volume:
    """``volume`` resampled onto the grid (shape, affine); 0 outside the source."""
    out = sample_grid(volume.array[None], volume.affine, affine, shape, mode=mode)[0, 0].numpy()
    return Volume(out, np.asarray(affine, dtype=np.float64), dict(volume.meta))


def choose_reference(available: Sequence[str], reference: str = "auto") -> str:
    if reference != "auto":
        if reference not in available:
            raise ValueError(f"reference sequence '{reference}' is not in this study (has {', '.join(available)})")
        return reference
    for name in REFERENCE_ORDER:
        if name in available:
            return name
    raise ValueError("study has no sequence")


def to_reference(study: object, reference: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """All sequences of ``study`` on the reference sequence's own grid, by geometry.

    Returns ``(array (C, I, J, K) float32 in SEQUENCES order, affine, available (C,) bool,
    reference name)``. Missing sequences are zero channels.
    """
    volumes: dict[str, Volume] = study.volumes  # type: ignore[attr-defined]
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
