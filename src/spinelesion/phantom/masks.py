"""The phantom's vertebral bodies as a mask on any grid: ground truth for the spine locator.

The bodies are the shapes the renderer paints (:meth:`Vertebra.body_distance`, fractures'
wedges and concavities included), evaluated at the grid's voxel centres, so a mask on a coarse
grid is the body itself, not a resampled painting.
"""

from __future__ import annotations

import numpy as np

from spinelesion.io.volume import apply_affine, voxel_centres
from spinelesion.phantom.anatomy import Anatomy


def body_mask(an: Anatomy, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: voxels of ``(shape, affine)`` whose centre lies inside a vertebral body."""
    out = np.zeros(tuple(int(s) for s in shape), dtype=bool)
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    for v in an.vertebrae:
        reach = 0.6 * max(v.width, v.depth, v.height) + 2.0  # a bound on the body, tilted or not
        corners = np.array(
            [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float
        ) * reach + np.asarray(v.center, dtype=float)
        index = apply_affine(inverse, corners)
        lo = np.clip(np.floor(index.min(0)).astype(int), 0, out.shape)
        hi = np.clip(np.ceil(index.max(0)).astype(int) + 1, 0, out.shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        world = voxel_centres(affine, box)
        u, vv, w = v.local(world[..., 0], world[..., 1], world[..., 2])
        out[box] |= v.body_distance(u, vv, w) <= 0.0
    return out
