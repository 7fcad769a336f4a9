"""The object grid the phantom is painted on, and soft (partial-volume) shape masks.

Anatomy is defined in continuous patient coordinates (LPS mm). It is painted onto a fine
LPS-aligned "object" grid (about 1 mm), one structure at a time, each only inside its own
bounding box: ``img = img * (1 - m) + value * m`` with ``m`` a soft mask made from a signed
distance, so edges carry partial volume before any acquisition blur. All four sequences
are painted at once (channel axis first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

N_SEQ = 4  # t1, t2, stir, t1c


def soft(distance: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Soft inside-mask from a signed distance (negative inside), ~``width`` mm of ramp."""
    return np.clip(0.5 - distance / width, 0.0, 1.0).astype(np.float32)


def superellipse_distance(
    a: np.ndarray | float, b: np.ndarray | float, p: np.ndarray, q: np.ndarray, n: float = 2.0
) -> np.ndarray:
    """Approximate signed distance (mm) to the superellipse |p/a|^n + |q/b|^n = 1."""
    a = np.maximum(a, 1e-3)
    b = np.maximum(b, 1e-3)
    r = (np.abs(p / a) ** n + np.abs(q / b) ** n) ** (1.0 / n)
    return (r - 1.0) * np.minimum(a, b)


def ellipsoid_distance(
    p: np.ndarray, q: np.ndarray, s: np.ndarray, radii: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipsoid centred at the origin."""
    ra, rb, rc = (max(float(r), 1e-3) for r in radii)
    r = np.sqrt((p / ra) ** 2 + (q / rb) ** 2 + (s / rc) ** 2)
    return (r - 1.0) * min(ra, rb, rc)


def box_distance(
    p: np.ndarray, q: np.ndarray, s: np.ndarray, half: Sequence[float], rounding: float = 1.0
) -> np.ndarray:
    """Signed distance to a rounded box centred at the origin."""
    dp = np.abs(p) - (half[0] - rounding)
    dq = np.abs(q) - (half[1] - rounding)
    ds = np.abs(s) - (half[2] - rounding)
    outside = np.sqrt(np.maximum(dp, 0) ** 2 + np.maximum(dq, 0) ** 2 + np.maximum(ds, 0) ** 2)
    inside = np.minimum(np.maximum(np.maximum(dp, dq), ds), 0)
    return outside + inside - rounding


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], scale_vox: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with correlation length ~``scale_vox`` voxels.

    Drawn on a coarse grid and interpolated up, so it costs little whatever the shape.
    """
    shape = tuple(int(s) for s in shape)
    coarse = [max(int(np.ceil(s / scale_vox)) + 3, 4) for s in shape]
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 0.8)
    out = upsample_linear(field, shape)
    out = out - out.mean()
    return (out / max(float(out.std()), 1e-6)).astype(np.float32)


def upsample_linear(field: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear resize of ``field`` to ``shape``, corner voxels aligned, one axis at a time.

    The mapping of ``scipy.ndimage.zoom(order=1)`` (output i reads input i (n - 1) / (N - 1)),
    faster, and without zoom's rounding at the far edge, where its last voxels
    fall just outside the input and read zero. NumPy only: the generator runs in forked workers,
    where a threaded library initialised by the parent can hang.
    """
    out = np.asarray(field, dtype=np.float32)
    # The last axis first: the final, full-size pass then gathers whole contiguous slabs.
    for axis in reversed(range(out.ndim)):
        size = int(shape[axis])
        n = out.shape[axis]
        pos = np.arange(size, dtype=np.float64) * ((n - 1) / max(size - 1, 1))
        i0 = np.minimum(np.floor(pos).astype(np.intp), n - 1)
        i1 = np.minimum(i0 + 1, n - 1)
        w = (pos - i0).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        lo = np.take(out, i0, axis=axis)
        step = np.take(out, i1, axis=axis)
        step -= lo  # in place: the last pass is the whole canvas
        step *= w
        step += lo
        out = step
    return out


@dataclass
class Canvas:
    """Four-channel intensity image on an LPS-aligned grid: ``origin`` is voxel (0, 0, 0)."""

    img: np.ndarray  # (4, X, Y, Z) float32
    origin: np.ndarray  # LPS mm of voxel 0
    spacing: float  # mm, isotropic

    @classmethod
    def empty(cls, lo: np.ndarray, hi: np.ndarray, spacing: float) -> Canvas:
        shape = np.ceil((np.asarray(hi) - np.asarray(lo)) / spacing).astype(int) + 1
        return cls(np.zeros((N_SEQ, *shape), dtype=np.float32), np.asarray(lo, dtype=np.float64), spacing)

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = (int(n) for n in self.img.shape[1:])
        return x, y, z

    @property
    def affine(self) -> np.ndarray:
        a = np.eye(4)
        a[:3, :3] *= self.spacing
        a[:3, 3] = self.origin
        return a

    def box(
        self, lo: Sequence[float] | np.ndarray, hi: Sequence[float] | np.ndarray
    ) -> tuple[slice, slice, slice] | None:
        """Voxel slices covering the LPS box [lo, hi] (clipped); None when outside the grid."""
        i0 = np.floor((np.asarray(lo) - self.origin) / self.spacing).astype(int)
        i1 = np.ceil((np.asarray(hi) - self.origin) / self.spacing).astype(int) + 1
        i0 = np.maximum(i0, 0)
        i1 = np.minimum(i1, self.shape)
        if np.any(i1 <= i0):
            return None
        sx, sy, sz = (slice(int(a), int(b)) for a, b in zip(i0, i1, strict=True))
        return sx, sy, sz

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable LPS coordinates (x[:, None, None], y[None, :, None], z[None, None, :])."""
        x = self.origin[0] + self.spacing * np.arange(box[0].start, box[0].stop, dtype=np.float32)
        y = self.origin[1] + self.spacing * np.arange(box[1].start, box[1].stop, dtype=np.float32)
        z = self.origin[2] + self.spacing * np.arange(box[2].start, box[2].stop, dtype=np.float32)
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def paint(
        self,
        box: tuple[slice, slice, slice],
        mask: np.ndarray,
        values: np.ndarray | Sequence[float],
        channels: Sequence[int] | None = None,
    ) -> None:
        """Blend ``values`` ((4,) or (4, *box shape)) into the box where ``mask`` (0..1) says.

        ``channels`` limits the paint to some sequences (e.g. enhancement seen on T1c only).
        """
        region = self.img[(slice(None), *box)]
        mask = np.broadcast_to(mask, region.shape[1:])
        vals = np.asarray(values, dtype=np.float32)
        if vals.ndim == 1:
            vals = vals.reshape(N_SEQ, 1, 1, 1)
        vals = np.broadcast_to(vals, region.shape) if vals.shape[0] == N_SEQ else vals
        for c in range(N_SEQ) if channels is None else channels:
            region[c] += (vals[c] - region[c]) * mask

    def sample(self, points_lps: np.ndarray, channel: int) -> np.ndarray:
        """Trilinear values of one channel at LPS points (N, 3) (tests and previews)."""
        idx = (np.asarray(points_lps) - self.origin) / self.spacing
        return ndimage.map_coordinates(self.img[channel], idx.T, order=1, mode="nearest")
