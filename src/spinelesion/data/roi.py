"""Regions of interest: a fixed-size grid at fixed physical spacing around an LPS centre.

The ROI grid is axis-aligned in the patient frame (i->Left, j->Posterior, k->Superior)
whatever the orientation of the source series, so the network always sees the anatomy the
same way round: a sagittal, axial or oblique study gives the same ROI for the same patient.
Sampling goes through each grid's affine (``torch.nn.functional.grid_sample``, trilinear),
never through array indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spinelesion.io.volume import grid_affine


@dataclass(frozen=True)
class RoiSpec:
    """ROI size in voxels and spacing in mm, both in (L-R, A-P, S-I) order.

    ``margin`` > 1 crops a larger context box first (for augmentation by rotation and
    scaling, and for normalisation statistics); the network input is the central ``shape``.
    """

    shape: tuple[int, int, int] = (32, 48, 48)
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    margin: float = 1.25

    @property
    def context_shape(self) -> tuple[int, int, int]:
        return tuple(int(round(s * self.margin / 2.0)) * 2 for s in self.shape)  # type: ignore[return-value]

    @property
    def extent_mm(self) -> np.ndarray:
        return np.asarray(self.shape) * np.asarray(self.spacing)

    def affine(self, center_lps: np.ndarray, context: bool = False) -> np.ndarray:
        shape = self.context_shape if context else self.shape
        return grid_affine(center_lps, shape, self.spacing)


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


def crop_rois(
    array: torch.Tensor | np.ndarray,
    affine: np.ndarray,
    centers_lps: Sequence[np.ndarray],
    spec: RoiSpec,
    context: bool = True,
) -> torch.Tensor:
    """Crop ROIs (with context margin by default) around LPS centres: (R, C, *shape)."""
    affines = np.stack([spec.affine(np.asarray(c, dtype=np.float64), context=context) for c in centers_lps])
    return sample_grid(array, affine, affines, spec.context_shape if context else spec.shape)


def center_crop(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Central ``shape`` of a (..., X, Y, Z) tensor (the network input from a context crop)."""
    slices = []
    for have, want in zip(image.shape[-3:], shape, strict=True):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return image[(..., *slices)]
