"""What a study's masks lack, derived with tested rules, and the study's own tissue signal.

Each vertebral body gets a local frame from its neighbours' centroids: ``t`` along the
spine (superior), ``p`` posterior within the sagittal plane, ``l`` to the patient's left.
In that frame the mask gives endplates, anterior and posterior walls; disc spaces lie
between consecutive bodies; the canal is the T2-bright run (CSF) behind the posterior
wall; the cord, where the study has one, is the darker core of that run. Tissue references
(marrow, disc, CSF, cord, muscle) are medians over these regions, per sequence, so every
inserted signal is set relative to this study's own contrast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from spinelesion.insert.background import Background
from spinelesion.io.volume import apply_affine, voxel_centres

FLUID_BRIGHT = ("t2", "stir")  # sequences on which CSF is brighter than marrow
P_AXIS = np.array([0.0, 1.0, 0.0])  # LPS posterior
L_AXIS = np.array([1.0, 0.0, 0.0])  # LPS left


@dataclass
class BodyFrame:
    """A vertebral body in its local frame (mm)."""

    label: int
    level: str
    centre: np.ndarray  # LPS mm (mask centroid)
    axes: np.ndarray  # rows: l, p, t unit vectors in LPS
    half_width: float  # along l
    anterior: float  # p of the anterior wall (negative)
    posterior: float  # p of the posterior wall (positive)
    inferior: float  # t of the inferior endplate (negative)
    superior: float  # t of the superior endplate (positive)
    canal: tuple[float, float] = (0.0, 0.0)  # p range of the CSF behind the body
    has_cord: bool = False

    @property
    def half_height(self) -> float:
        return 0.5 * (self.superior - self.inferior)

    @property
    def depth(self) -> float:
        return self.posterior - self.anterior

    def to_world(self, local: np.ndarray) -> np.ndarray:
        return self.centre + np.asarray(local) @ self.axes

    def to_local(self, world: np.ndarray) -> np.ndarray:
        return (np.asarray(world) - self.centre) @ self.axes.T


def cord_p(frame: BodyFrame) -> float:
    """p of the cord's axis behind a body: the middle of the canal's front 14 mm (a T2-bright
    run behind the wall can take in the posterior epidural fat, which would put it too far back)."""
    c0, c1 = frame.canal
    return c0 + 0.5 * min(c1 - c0, 14.0) - 0.5


def cord_course(
    bodies: list[BodyFrame], frame: BodyFrame, here: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """The cord's axis in ``frame``'s local mm: (t, l, p) at each body with a cord, sorted along
    t, and the t range the cord runs (a half-height beyond the end bodies; the conus ends it).
    A long cord finding follows the curve of the real spine, not one body's straight axis.
    ``here``: this body's (l, p) where a cord mask knows better than the canal."""
    here = np.array([0.0, cord_p(frame)]) if here is None else here
    points = [(0.0, float(here[0]), float(here[1]))]
    for b in bodies:
        if b.label == frame.label or not b.has_cord:
            continue
        lt = frame.to_local(b.to_world(np.array([0.0, cord_p(b), 0.0])))
        points.append((float(lt[2]), float(lt[0]), float(lt[1])))
    t, lat, p = (np.array(v) for v in zip(*sorted(points), strict=True))
    return t, lat, p, (float(t.min()) - frame.half_height, float(t.max()) + frame.half_height)


@dataclass
class SpineAnatomy:
    bodies: list[BodyFrame]
    tissues: dict[str, dict[str, float]]  # sequence -> tissue -> signal
    noise: dict[str, float] = field(default_factory=dict)  # sequence -> noise sd (same units)

    def body(self, label: int) -> BodyFrame:
        return next(b for b in self.bodies if b.label == label)

    def neighbours(self, frame: BodyFrame) -> tuple[BodyFrame | None, BodyFrame | None]:
        """(superior, inferior) neighbour of a body, by position along the spine."""
        i = self.bodies.index(frame)
        return (
            self.bodies[i - 1] if i > 0 else None,
            self.bodies[i + 1] if i + 1 < len(self.bodies) else None,
        )


def voxel_world(bg: Background, box: tuple[slice, slice, slice]) -> np.ndarray:
    """LPS mm of every voxel in a box: (X, Y, Z, 3)."""
    return voxel_centres(bg.affine, box)


def box_around(
    bg: Background, centre_lps: np.ndarray, half_mm: float | np.ndarray
) -> tuple[slice, slice, slice]:
    """Voxel box covering a cube of +-``half_mm`` around an LPS point, clipped to the grid."""
    half = np.broadcast_to(np.asarray(half_mm, dtype=float), (3,))
    corners = (
        np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half + centre_lps
    )
    ijk = apply_affine(np.linalg.inv(bg.affine), corners)
    lo = np.clip(np.floor(ijk.min(0)).astype(int), 0, None)
    hi = np.minimum(np.ceil(ijk.max(0)).astype(int) + 1, np.asarray(bg.shape))
    return (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))


def _frames(bg: Background) -> list[BodyFrame]:
    labels = [int(k) for k in np.unique(bg.bodies) if k > 0]
    objects = ndimage.find_objects(bg.bodies)
    centres, points = {}, {}
    for k in labels:
        box = objects[k - 1]
        sub = np.argwhere(bg.bodies[box] == k) + [s.start for s in box]
        points[k] = apply_affine(bg.affine, sub.astype(float))
        centres[k] = points[k].mean(0)
    # Superior first: the spine axis is read from neighbours in this order.
    order = sorted(labels, key=lambda k: -centres[k][2])
    frames = []
    for i, k in enumerate(order):
        up = centres[order[i - 1]] if i > 0 else centres[k]
        down = centres[order[i + 1]] if i + 1 < len(order) else centres[k]
        t = up - down
        t = t / np.linalg.norm(t) if np.linalg.norm(t) > 1e-6 else np.array([0.0, 0.0, 1.0])
        p = P_AXIS - (P_AXIS @ t) * t
        p /= np.linalg.norm(p)
        left = np.cross(p, t)
        if left @ L_AXIS < 0:
            left = -left
        axes = np.stack([left, p, t])
        loc = (points[k] - centres[k]) @ axes.T
        lo, hi = np.percentile(loc, 2, axis=0), np.percentile(loc, 98, axis=0)
        frames.append(
            BodyFrame(
                k,
                bg.levels[k],
                centres[k],
                axes,
                float(max(-lo[0], hi[0])),
                float(lo[1]),
                float(hi[1]),
                float(lo[2]),
                float(hi[2]),
            )
        )
    return frames


def _profile(image: np.ndarray, bg: Background, frame: BodyFrame, p_values: np.ndarray) -> np.ndarray:
    """Mean image signal along p behind the body centre (|l| <= 2 mm, |t| <= h/3)."""
    ls = np.linspace(-2, 2, 3)
    ts = np.linspace(-frame.half_height / 3, frame.half_height / 3, 5)
    grid = np.stack(np.meshgrid(ls, p_values, ts, indexing="ij"), -1).reshape(-1, 3)
    ijk = apply_affine(np.linalg.inv(bg.affine), frame.to_world(grid))
    vals = ndimage.map_coordinates(image, ijk.T, order=1, mode="nearest")
    return vals.reshape(len(ls), len(p_values), len(ts)).mean((0, 2))


def _canal(bg: Background, frame: BodyFrame, fluid: np.ndarray, marrow: float) -> tuple[float, float]:
    """p range of the CSF run behind the posterior wall (T2-bright), with a fallback."""
    p_values = frame.posterior + np.arange(0.0, 30.0, 0.5)
    prof = _profile(fluid, bg, frame, p_values)
    top = float(np.percentile(prof, 95))
    thr = marrow + 0.5 * (top - marrow)
    bright = np.flatnonzero(prof > thr)
    if top <= marrow * 1.15 or bright.size == 0:
        return frame.posterior + 2.0, frame.posterior + 16.0
    start = bright[0]
    end = start
    while end + 1 < len(prof) and prof[end + 1] > thr * 0.8:
        end += 1
    lo, hi = float(p_values[start]) - 0.5, float(p_values[end]) + 0.5
    if hi - lo < 6.0:  # a thin bright line is not a canal: keep a plausible depth
        hi = lo + 12.0
    return lo, min(hi, lo + 24.0)


def derive_anatomy(
    bg: Background, cord_levels: set[str] | None = None, canal_from: SpineAnatomy | None = None
) -> SpineAnatomy:
    """Frames, canal and tissue references of a background.

    Args:
        cord_levels: levels where a spinal cord runs in the canal when the study has no
            cord mask (the conus ends near L1; below it only cauda equina roots).
        canal_from: the anatomy of the same study and masks under another sequence, whose
            canal is taken as it is (a T1 made from a T2 has no bright CSF to find it by).
    """
    frames = _frames(bg)
    fluid_seq = next((s for s in FLUID_BRIGHT if s in bg.images), None)
    body_core = ndimage.binary_erosion(bg.bodies > 0, iterations=2)
    tissues: dict[str, dict[str, float]] = {s: {} for s in bg.images}
    for s, img in bg.images.items():
        tissues[s]["marrow"] = float(np.median(img[body_core])) if body_core.any() else float(np.median(img))
    known = {f.label: f.canal for f in canal_from.bodies} if canal_from is not None else {}
    for f in frames:
        if f.label in known:
            f.canal = known[f.label]
        elif fluid_seq is not None:
            f.canal = _canal(bg, f, bg.images[fluid_seq], tissues[fluid_seq]["marrow"])
        else:
            f.canal = (f.posterior + 2.0, f.posterior + 16.0)
        if bg.cord is not None:
            ijk = apply_affine(
                np.linalg.inv(bg.affine), f.to_world(np.array([0.0, float(np.mean(f.canal)), 0.0]))
            )
            near = box_around(bg, f.to_world(np.array([0.0, float(np.mean(f.canal)), 0.0])), 6.0)
            f.has_cord = bool(bg.cord[near].any()) and bool(np.all(ijk >= 0))
        else:
            f.has_cord = f.level in (cord_levels or set())
    for s, img in bg.images.items():
        samples: dict[str, list[np.ndarray]] = {"disc": [], "csf": [], "muscle": [], "cord": []}
        for i, f in enumerate(frames):
            below = frames[i + 1] if i + 1 < len(frames) else None
            if below is not None:
                mid = 0.5 * (
                    f.to_world(np.array([0, 0.5 * (f.anterior + f.posterior), f.inferior]))
                    + below.to_world(np.array([0, 0.5 * (below.anterior + below.posterior), below.superior]))
                )
                samples["disc"].append(_sample_box(img, bg, mid, f.axes, (6.0, 6.0, 1.0)))
            c0, c1 = f.canal
            samples["csf"].append(
                _sample_box(
                    img,
                    bg,
                    f.to_world(np.array([0, 0.5 * (c0 + c1), 0])),
                    f.axes,
                    (3.0, 0.35 * (c1 - c0), 0.4 * f.half_height),
                )
            )
            samples["muscle"].append(
                _sample_box(
                    img,
                    bg,
                    f.to_world(np.array([20.0, c1 + 20.0, 0])),
                    f.axes,
                    (5.0, 6.0, 0.5 * f.half_height),
                )
            )
        for name, chunks in samples.items():
            vals = np.concatenate(chunks) if chunks else np.array([])
            if name == "csf" and vals.size:
                # The canal box also holds roots, fat and ligament: CSF is its bright end where
                # fluid is bright (T2, STIR) and its dark end on T1.
                tissues[s][name] = float(np.percentile(vals, 80 if s in FLUID_BRIGHT else 20))
            elif vals.size:
                tissues[s][name] = float(np.median(vals))
        if bg.cord is not None and bg.cord.any():
            tissues[s]["cord"] = float(
                np.median(img[ndimage.binary_erosion(bg.cord) if bg.cord.sum() > 50 else bg.cord])
            )
        else:  # cord and roots: intermediate, between marrow-like soft tissue and CSF on T2
            tissues[s]["cord"] = 0.5 * (tissues[s]["marrow"] + tissues[s].get("disc", tissues[s]["marrow"]))
        for name in ("disc", "csf", "muscle"):
            tissues[s].setdefault(name, tissues[s]["marrow"])
        # A small field of view may put the muscle sample in air or fat: keep it plausible.
        m = tissues[s]["marrow"]
        tissues[s]["muscle"] = float(np.clip(tissues[s]["muscle"], 0.5 * m, 1.3 * m))
    noise = {s: _noise_sd(img, body_core) for s, img in bg.images.items()}
    return SpineAnatomy(frames, tissues, noise)


def _sample_box(
    img: np.ndarray, bg: Background, centre: np.ndarray, axes: np.ndarray, half: tuple[float, float, float]
) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.linspace(-h, h, 5) for h in half], indexing="ij"), -1).reshape(-1, 3)
    ijk = apply_affine(np.linalg.inv(bg.affine), centre + grid @ axes)
    inside = np.all((ijk >= 0) & (ijk <= np.asarray(img.shape) - 1), axis=1)
    return ndimage.map_coordinates(img, ijk[inside].T, order=1) if inside.any() else np.array([])


def _noise_sd(img: np.ndarray, region: np.ndarray) -> float:
    """Robust noise estimate: MAD of the high-pass residual inside a homogeneous region."""
    resid = img - ndimage.gaussian_filter(img, 1.5)
    vals = resid[region] if region.any() else resid.ravel()
    return float(1.4826 * np.median(np.abs(vals - np.median(vals))))


COLUMNS = {"anterior": 0.1, "middle": 0.5, "posterior": 0.9}
"""Where a body's heights are read: fractions of its depth from the anterior wall."""


def column_heights(loc: np.ndarray, inside: np.ndarray, frame: BodyFrame) -> dict[str, float]:
    """A body's anterior, middle and posterior height (mm), the three Genant's grading compares:
    the extent along t of its voxels at each of :data:`COLUMNS`, near the mid-sagittal plane
    (NaN where too few voxels lie there). ``loc``: local coordinates of a box, ``inside``: the
    body in that box."""
    lat, p, t = loc[..., 0], loc[..., 1], loc[..., 2]
    band = max(0.05 * frame.depth, 1.0)
    heights = {}
    for name, frac in COLUMNS.items():
        at = frame.anterior + frac * frame.depth
        column = t[inside & (np.abs(p - at) < band) & (np.abs(lat) < max(0.3 * frame.half_width, 2.0))]
        heights[name] = (
            float(np.percentile(column, 99) - np.percentile(column, 1)) if column.size >= 10 else float("nan")
        )
    return heights


def local_coords(bg: Background, box: tuple[slice, slice, slice], frame: BodyFrame) -> np.ndarray:
    """Every voxel of a box in a body's local (l, p, t) frame: (X, Y, Z, 3)."""
    return frame.to_local(voxel_world(bg, box))
