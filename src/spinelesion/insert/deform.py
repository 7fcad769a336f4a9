"""Smooth shape changes as backward maps: each output voxel reads the image at a source point.

All maps work in a body's local frame (``l``, ``p``, ``t`` in mm, see :mod:`.anatomy`) and
are continuous and monotone, so the result stays a plausible image on the same grid: a
collapsed body, a bulging posterior wall, a sac pushed aside, an expanded cord. They
compose (:func:`compose`) and are applied once per box (:func:`warp_box`), images with
linear and masks with nearest-neighbour interpolation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from spinelesion.insert.anatomy import BodyFrame, local_coords
from spinelesion.insert.background import Background
from spinelesion.io.volume import apply_affine

Map = Callable[[np.ndarray], np.ndarray]
"""Local output coordinates (..., 3) -> local source coordinates (..., 3)."""


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def footprint(loc: np.ndarray, frame: BodyFrame, margin: float = 4.0) -> np.ndarray:
    """1 inside the body's (l, p) footprint, falling to 0 over ``margin`` mm outside."""
    lat, p = loc[..., 0], loc[..., 1]
    dl = np.abs(lat) - frame.half_width
    dp = np.maximum(frame.anterior - p, p - frame.posterior)
    return 1.0 - smoothstep(np.maximum(dl, dp) / margin)


def collapse_loss(
    frame: BodyFrame,
    lat: np.ndarray | float,
    p: np.ndarray | float,
    anterior_loss: float,
    posterior_loss: float,
    central_loss: float = 0.0,
) -> np.ndarray:
    """The fraction of its height :func:`collapse` takes from the body's column at (``lat``, ``p``):
    linear from the anterior to the posterior wall, plus a dome in the middle (biconcave)."""
    frac = np.clip((np.asarray(p) - frame.anterior) / max(frame.depth, 1.0), 0.0, 1.0)
    radial = np.clip(
        (np.asarray(lat) / max(frame.half_width, 1.0)) ** 2
        + ((np.asarray(p) - 0.5 * (frame.anterior + frame.posterior)) / max(0.5 * frame.depth, 1.0)) ** 2,
        0,
        1,
    )
    return anterior_loss + (posterior_loss - anterior_loss) * frac + central_loss * (1.0 - radial)


def collapse(
    frame: BodyFrame,
    anterior_loss: float,
    posterior_loss: float,
    central_loss: float = 0.0,
    reach: float | None = None,
    half_height: float | None = None,
) -> Map:
    """Height loss of a body: wedge (anterior > posterior), biconcave (central) or crush.

    Inside the footprint, |t| <= H*c maps to |t|/c (c = 1 - :func:`collapse_loss`, varying over
    the column); the discs and neighbours up to ``reach`` mm stretch to close the gap, so the map
    stays continuous and the rest of the study is untouched. ``half_height`` (H, default the
    frame's) should reach the body's farthest voxel: a column taller than 2 H (a lordotic L5's
    front) would otherwise be stretched with the disc beyond H instead of losing its fraction.
    """
    h = float(half_height if half_height is not None else frame.half_height)
    reach = float(reach if reach is not None else max(2.2 * frame.half_height, h + 0.8 * frame.half_height))

    def fn(loc: np.ndarray) -> np.ndarray:
        t = loc[..., 2]
        loss = collapse_loss(frame, loc[..., 0], loc[..., 1], anterior_loss, posterior_loss, central_loss)
        c = np.clip(1.0 - loss, 0.2, 1.0)
        inner = h * c
        a = np.abs(t)
        src = np.where(a <= inner, a / c, h + (a - inner) * (reach - h) / np.maximum(reach - inner, 1e-3))
        src = np.where(a >= reach, a, src)
        w = footprint(loc, frame)
        out = loc.copy()
        out[..., 2] = t + w * (np.sign(t) * src - t)
        return out

    return fn


def bulge_posterior(frame: BodyFrame, amount: float, height_scale: float = 1.0) -> Map:
    """Convex posterior wall: the wall and the canal in front of it pushed back by ``amount`` mm
    at mid-height, less towards the endplates; the sac behind is compressed, not moved."""
    h = frame.half_height * height_scale
    c0, c1 = frame.canal

    def fn(loc: np.ndarray) -> np.ndarray:
        lat, p, t = loc[..., 0], loc[..., 1], loc[..., 2]
        along = np.cos(np.clip(t / max(h, 1.0), -1, 1) * np.pi / 2) ** 2
        across = 1.0 - smoothstep((np.abs(lat) - 0.7 * frame.half_width) / 6.0)
        # Full shift from the body's mid-depth to the wall, fading to zero at the back of the sac.
        mid = 0.5 * (frame.anterior + frame.posterior)
        ramp_in = smoothstep((p - mid) / max(frame.posterior - mid, 1.0))
        ramp_out = 1.0 - smoothstep((p - frame.posterior) / max(c1 + 2.0 - frame.posterior, 1.0))
        shift = amount * along * across * ramp_in * ramp_out
        out = loc.copy()
        out[..., 1] = p - shift
        return out

    return fn


def push(centre: np.ndarray, direction: np.ndarray, amount: float, radius: float | Sequence[float]) -> Map:
    """Mass effect: content near ``centre`` (local mm) shifted by ``amount`` mm along
    ``direction``, with a Gaussian fall-off of ``radius`` mm, or of radii along l, p, t (a disc
    bulges across the canal's width, not as a ball); kept monotone: the amount is at most 0.9 of
    the fall-off along the direction."""
    d = np.asarray(direction, dtype=float)
    d = d / np.linalg.norm(d)
    if np.ndim(radius) == 0:  # a ball (the arithmetic every earlier set was drawn with)
        r = float(radius)  # type: ignore[arg-type]
        amount = min(float(amount), 0.9 * r)

        def ball(loc: np.ndarray) -> np.ndarray:
            g = np.exp(-((loc - centre) ** 2).sum(-1) / (2 * r**2))
            return loc - amount * g[..., None] * d

        return ball
    radii = np.asarray(radius, dtype=float).reshape(3)
    along = 1.0 / float(np.sqrt(((d / radii) ** 2).sum()))  # the fall-off's radius along d
    amount = min(float(amount), 0.9 * along)

    def fn(loc: np.ndarray) -> np.ndarray:
        g = np.exp(-((((loc - centre) / radii) ** 2).sum(-1)) / 2)
        return loc - amount * g[..., None] * d

    return fn


def expand(axis_point: np.ndarray, factor: float, radius: float, t_centre: float, t_half: float) -> Map:
    """Radial swelling about a line along ``t`` (the cord): cross-section scaled up to
    ``factor`` near the axis over |t - t_centre| <= t_half, fading with distance ``radius``."""

    def fn(loc: np.ndarray) -> np.ndarray:
        rel = loc[..., :2] - axis_point[:2]
        r = np.sqrt((rel**2).sum(-1))
        along = 1.0 - smoothstep((np.abs(loc[..., 2] - t_centre) - t_half) / max(t_half, 1.0))
        g = along * np.exp(-(r**2) / (2 * radius**2))
        scale = 1.0 / (1.0 + (factor - 1.0) * g)
        out = loc.copy()
        out[..., :2] = axis_point[:2] + rel * scale[..., None]
        return out

    return fn


def compose(maps: Sequence[Map]) -> Map:
    """The map that applies ``maps[0]`` to the output coordinates first, then the next."""

    def fn(loc: np.ndarray) -> np.ndarray:
        for m in maps:
            loc = m(loc)
        return loc

    return fn


def warp_box(
    bg: Background,
    box: tuple[slice, slice, slice],
    frame: BodyFrame,
    fn: Map,
    images: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
) -> None:
    """Resample ``images`` and ``masks`` (full-grid arrays, changed in place) inside ``box``."""
    loc = local_coords(bg, box, frame)
    src_world = frame.to_world(fn(loc))
    ijk = apply_affine(np.linalg.inv(bg.affine), src_world)
    coords = np.moveaxis(ijk, -1, 0)
    for arr in images.values():
        arr[box] = ndimage.map_coordinates(arr, coords, order=1, mode="nearest")
    for arr in masks.values():
        arr[box] = ndimage.map_coordinates(arr, coords, order=0, mode="nearest")
