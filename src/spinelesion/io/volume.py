"""A 3D image and its geometry, kept together from reading to writing.

Convention used everywhere in the project:

* ``array[i, j, k]``: ``i`` runs along a DICOM row (increasing column index), ``j`` down the
  columns (increasing row index), ``k`` across slices. This is the ITK / NIfTI order, i.e. a
  DICOM ``pixel_array`` (rows, cols) transposed.
* ``affine`` maps a voxel index ``(i, j, k, 1)`` to **patient LPS millimetres** (the DICOM
  frame: +x Left, +y Posterior, +z Superior). NIfTI affines are RAS and are converted on
  read and write (negate x and y).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Both LPS->RAS and RAS->LPS (the matrix is its own inverse)."""


@dataclass
class Volume:
    """A 3D scalar image with its voxel-to-LPS affine and free-form metadata."""

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3D array, got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume needs a 4x4 affine, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return cast("tuple[int, int, int]", tuple(int(s) for s in self.array.shape))  # 3D by construction

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in mm."""
        return spacing_of(self.affine)

    def world_to_voxel(self, points_lps: np.ndarray) -> np.ndarray:
        """Continuous voxel indices of LPS points, shape (..., 3)."""
        return apply_affine(np.linalg.inv(self.affine), points_lps)

    def voxel_to_world(self, index: np.ndarray) -> np.ndarray:
        """LPS millimetres of (continuous) voxel indices, shape (..., 3)."""
        return apply_affine(self.affine, index)

    def contains(self, point_lps: np.ndarray, margin_voxels: float = 0.5) -> bool:
        """Whether an LPS point lies inside the voxel grid (voxel centres +- ``margin_voxels``)."""
        ijk = self.world_to_voxel(np.asarray(point_lps, dtype=np.float64))
        upper = np.asarray(self.shape) - 1 + margin_voxels
        return bool(np.all(ijk >= -margin_voxels) and np.all(ijk <= upper))


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to points of shape (..., 3)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ affine[:3, :3].T + affine[:3, 3]


def voxel_centres(affine: np.ndarray, box: Sequence[slice]) -> np.ndarray:
    """World (LPS mm) of every voxel centre of a box of a grid, (X, Y, Z, 3): the affine's columns
    broadcast over each axis's indices (the same values as :func:`apply_affine` on an index grid,
    without building that grid)."""
    a = np.asarray(affine, dtype=np.float64)
    i, j, k = (np.arange(s.start or 0, s.stop, dtype=np.float64) for s in box)
    return (
        i[:, None, None, None] * a[:3, 0]
        + j[None, :, None, None] * a[:3, 1]
        + k[None, None, :, None] * a[:3, 2]
        + a[:3, 3]
    )


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Column norms of the 3x3 part: voxel size along each array axis in mm."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def dominant_axes(affine: np.ndarray) -> np.ndarray:
    """(3,) index of the LPS axis each array axis runs most nearly along."""
    return np.abs(np.asarray(affine)[:3, :3]).argmax(0)


def axis_codes(affine: np.ndarray, frame: str = "LPS") -> str:
    """Dominant patient direction of each array axis, e.g. ``'PIL'`` for a typical sagittal series.

    Letters name the direction an index *increases* towards, in the LPS frame by default.
    """
    positive, negative = ("LPS", "RAI")
    codes = []
    for col, axis in zip(np.asarray(affine)[:3, :3].T, dominant_axes(affine), strict=True):
        codes.append(positive[axis] if col[axis] > 0 else negative[axis])
    out = "".join(codes)
    if frame == "RAS":
        out = out.translate(str.maketrans("LRPA", "RLAP"))
    return out


def affine_from_dicom(
    position: np.ndarray, orientation: np.ndarray, pixel_spacing: np.ndarray, slice_step: np.ndarray
) -> np.ndarray:
    """Voxel-to-LPS affine of a DICOM series.

    Args:
        position: ImagePositionPatient of the first slice (LPS mm).
        orientation: ImageOrientationPatient, 6 values (row direction, column direction).
        pixel_spacing: PixelSpacing as stored: (spacing between rows, spacing between columns).
        slice_step: vector from the first slice's position to the second's (LPS mm); for a
            single slice, the normal times the slice thickness.
    """
    orientation = np.asarray(orientation, dtype=np.float64)
    row_dir, col_dir = orientation[:3], orientation[3:]
    affine = np.eye(4)
    affine[:3, 0] = row_dir * float(pixel_spacing[1])  # i: along a row = between columns
    affine[:3, 1] = col_dir * float(pixel_spacing[0])  # j: down a column = between rows
    affine[:3, 2] = np.asarray(slice_step, dtype=np.float64)
    affine[:3, 3] = np.asarray(position, dtype=np.float64)
    return affine


def grid_affine(
    center_lps: np.ndarray,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    rotation: np.ndarray | None = None,
) -> np.ndarray:
    """Affine of a grid of ``shape`` voxels at ``spacing`` centred on an LPS point.

    Without ``rotation`` the grid axes are the LPS axes (i->L, j->P, k->S); with it, the
    columns of ``rotation`` give the axis directions.
    """
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(spacing, dtype=np.float64)[None, :]
    half = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = np.asarray(center_lps, dtype=np.float64) - affine[:3, :3] @ half
    return affine
