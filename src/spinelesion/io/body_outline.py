"""Where the body ends: the air around it, and how deep under the skin each voxel lies.

Every compartment the model answers for lies in a vertebra, the canal or right beside them, and
the shallowest of those structures, a spinous process's tip, lies well over a centimetre under
the skin of an adult. A scan candidate a few millimetres from the air around the body is skin,
subcutaneous fat or an edge artefact, whatever the classifier answers there: on the held-out real
lumbar studies two of the four false calls of the 2026-12-01 candidate sat on the anterior
abdominal wall, 4-5 mm from the air (docs/outputs.md). Scan mode therefore proposes nothing
shallower than ``scan.min_depth_mm``.

Air is found without a model, by what a magnitude MR image does outside the body: it sits at the
noise floor on every sequence. A study has air only when a tenth of its voxels lie in the lowest
5 % of its range (a tight crop of the spine has none, and is left alone); air is then the
smoothed voxels near that floor, opened to drop thin dark tissue (cortex, ligaments, flow voids),
and reached from the in-plane edges of the field of view slice by slice: the faces of the slab's
thin axis cut through the body, and in 3D dark viscera would connect to them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from spinelesion.io.resample import block_mean
from spinelesion.io.volume import spacing_of

FLOOR_BAND = (
    0.05  # a study has air when a tenth of its voxels lie this close above its floor (fraction of range)
)
AIR_FRACTION = 0.05  # air: smoothed signal at most this far above the floor (fraction of the range)
SMOOTH_MM = 1.0  # the noise floor's speckle averaged out before thresholding
OPEN_MM = 3.0  # dark structures thinner than this are tissue (cortex, ligaments, flow voids), not air


def _ball(radius: Sequence[int]) -> np.ndarray:
    grid = np.indices([2 * r + 1 for r in radius]).astype(float)
    return sum(((g - r) / max(r, 1)) ** 2 for g, r in zip(grid, radius, strict=True)) <= 1.0


def air_mask(array: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """(X, Y, Z) bool: the air around the body in a (C, X, Y, Z) study (all False without air).

    Channels that are all zero (a missing sequence) are ignored; a voxel is air only where every
    present sequence is at its noise floor.
    """
    step = np.asarray(spacing, dtype=float)
    dark: np.ndarray | None = None
    for channel in np.asarray(array):
        if not np.any(channel):
            continue
        lo, tenth, hi = np.percentile(channel, [0.5, 10, 99])
        if hi <= lo or tenth > lo + FLOOR_BAND * (hi - lo):
            return np.zeros(channel.shape, bool)  # no noise floor: no air in this field of view
        smooth = ndimage.gaussian_filter(channel.astype(np.float32), SMOOTH_MM / step)
        near_floor = smooth <= lo + AIR_FRACTION * (hi - lo)
        dark = near_floor if dark is None else dark & near_floor
    if dark is None:
        return np.zeros(np.asarray(array).shape[1:], bool)
    radius = [max(int(round(OPEN_MM / s)), 1) for s in step]
    # an opening whose erosion lets the air run on past the field of view's edge (with
    # binary_opening's border of 0 it eats the air along the edges, with 1 its dilation adds tissue)
    ball = _ball(radius)
    dark = ndimage.binary_dilation(
        ndimage.binary_erosion(dark, structure=ball, border_value=1), structure=ball
    )
    thin = int(np.argmin(np.asarray(dark.shape) * step))  # the slab's slice axis
    # 2D components: no connection between slices of the thin axis
    structure = np.zeros((3, 3, 3), bool)
    in_plane: list[slice | int] = [slice(None)] * 3
    in_plane[thin] = 1
    structure[tuple(in_plane)] = ndimage.generate_binary_structure(2, 1)
    labels, _ = ndimage.label(dark, structure=structure)
    edges = [
        np.take(labels, index, axis=axis).ravel() for axis in range(3) if axis != thin for index in (0, -1)
    ]
    reached = np.unique(np.concatenate(edges))
    return np.isin(labels, reached[reached > 0])


def depth_under_skin_mm(array: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """(X, Y, Z) distance in mm from the air around the body; +inf everywhere without air."""
    air = air_mask(array, spacing)
    if not air.any():
        return np.full(air.shape, np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(~air, sampling=np.asarray(spacing, float)).astype(np.float32)


SUBCUTANEOUS_MM = (3.0, 12.0)  # the fat under the skin, clear of the skin's partial volume with air
BLOCK_MM = 1.5  # the depth map on ~1.5 mm blocks (as in scan mode): 0.5 s instead of 5-8 s on 1 mm


def under_skin_layers(
    image: np.ndarray, affine: np.ndarray, deep_mm: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """(the subcutaneous layer, ``SUBCUTANEOUS_MM`` under the skin; the tissue deeper than
    ``deep_mm``) of a 3D image averaged on ``BLOCK_MM`` blocks, or None without air around the body."""
    small, small_affine = block_mean(np.asarray(image, np.float32)[None], affine, BLOCK_MM)
    depth = depth_under_skin_mm(small, [float(v) for v in spacing_of(small_affine)])
    if not np.isfinite(depth).any():
        return None
    layer = small[0]
    ring = layer[(depth > SUBCUTANEOUS_MM[0]) & (depth < SUBCUTANEOUS_MM[1])]
    return ring, layer[np.isfinite(depth) & (depth > deep_mm)]
