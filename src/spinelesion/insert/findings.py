"""Every finding of ``docs/radiology.md``, inserted into a real study through its masks.

A finding is a function of an :class:`Insert` context (the study, its derived anatomy, the
target body, a random generator and the sign rates) that changes shapes
(:mod:`.deform`), paints signal (:mod:`.paint`) and returns the ROI(s) it makes. Signs
are drawn one by one at their rates (``rates``, from ``configs/insert.yaml``), so that hard
cases exist: a benign fracture with a convex wall, a pathologic one without whole-body
replacement. Only the sequences the study has are rendered.

ROI conventions follow the phantom: bone findings are centred on the body's centre (the
body is the structure the label describes), canal findings on the lesion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from spinelesion.insert import deform
from spinelesion.insert.anatomy import (
    COLUMNS,
    BodyFrame,
    SpineAnatomy,
    box_around,
    column_heights,
    cord_course,
    cord_p,
    local_coords,
)
from spinelesion.insert.background import Background
from spinelesion.insert.paint import paint, signal, soft_mask, texture
from spinelesion.labels import finding_labels

# Heterogeneity (sd of a smooth multiplicative texture) of every textured painted region, drawn
# per region from one range whatever the finding: texture is not a sign radiology.md names.
HETEROGENEITY = (0.02, 0.2)

EXTENTS: dict[str, tuple[float, float]] = {
    "discitis_oedema_mm": (6.0, 14.0),  # marrow oedema from each endplate into its body
    "discitis_erosion_mm": (1.0, 4.0),  # the disc grown into both bodies (irregular endplate erosion)
}
"""Ranges (mm) some signs' extents are drawn from, per finding; ``configs/insert.yaml`` ``extents``
widens them for a set (the sign is the disc crossed, not how far the oedema reaches)."""


@dataclass
class Roi:
    centre: np.ndarray  # LPS mm
    compartment: str
    fracture: str
    finding: str
    level: str


@dataclass
class Insert:
    """One insertion in progress: working copies of the images and the body's box."""

    bg: Background
    an: SpineAnatomy
    frame: BodyFrame
    rng: np.random.Generator
    rates: Mapping[str, float]
    extents: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(EXTENTS))
    images: dict[str, np.ndarray] = field(init=False)
    bodies: np.ndarray = field(init=False)
    lesion: np.ndarray = field(init=False)  # bool, full grid: every voxel the finding painted
    box: tuple[slice, slice, slice] = field(init=False)
    loc: np.ndarray = field(init=False)  # (X, Y, Z, 3) local coordinates of the box voxels
    rois: list[Roi] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = {s: a.astype(np.float32, copy=True) for s, a in self.bg.images.items()}
        self.bodies = self.bg.bodies.copy()
        self.lesion = np.zeros(self.bg.shape, dtype=bool)
        self.focus(self.frame)

    def focus(self, frame: BodyFrame, half_mm: float = 75.0) -> None:
        """Work around another body (a second level of the same study)."""
        self.frame = frame
        self.box = box_around(self.bg, frame.centre, half_mm)
        self.loc = local_coords(self.bg, self.box, frame)

    def chance(self, name: str) -> bool:
        return bool(self.rng.random() < float(self.rates[name]))

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def extent(self, name: str) -> float:
        """A sign's extent (mm), drawn from its range in :data:`EXTENTS` (or the set's own)."""
        lo, hi = self.extents[name]
        return self.u(float(lo), float(hi))

    # -- shapes ------------------------------------------------------------------------------
    def warp(self, *maps: deform.Map) -> None:
        if not maps:
            return
        deform.warp_box(
            self.bg, self.box, self.frame, deform.compose(maps), self.images, {"bodies": self.bodies}
        )

    def body_mask(self, label: int | None = None) -> np.ndarray:
        """The (possibly deformed) body in the box, as a float mask."""
        return (self.bodies[self.box] == (label or self.frame.label)).astype(np.float32)

    def ellipsoid(
        self, centre: np.ndarray, radii: np.ndarray | tuple[float, float, float], edge: float = 1.0
    ) -> np.ndarray:
        """Soft ellipsoid in the local frame (1 inside, 0 outside, ``edge`` mm ramp)."""
        d = np.sqrt((((self.loc - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1))
        return np.clip((1.0 - d) * float(np.min(radii)) / edge + 0.5, 0.0, 1.0).astype(np.float32)

    def band(self, t_from: float, t_to: float, edge: float = 1.0) -> np.ndarray:
        """Slab between two t values (local mm) with soft edges."""
        lo, hi = min(t_from, t_to), max(t_from, t_to)
        t = self.loc[..., 2]
        return np.clip(np.minimum(t - lo, hi - t) / edge + 0.5, 0.0, 1.0).astype(np.float32)

    # -- signal ------------------------------------------------------------------------------
    def paint(
        self,
        kind: str,
        weight: np.ndarray,
        textured: bool = True,
        value_scale: np.ndarray | float = 1.0,
    ) -> None:
        """Paint ``kind`` under ``weight`` (box-shaped) on every sequence of the study.

        A textured region's heterogeneity is drawn from :data:`HETEROGENEITY`, the same range for
        every kind: texture is no sign in docs/radiology.md, and a per-kind amount teaches a model to
        tell benign from pathologic fractures by texture (``spinelesion.insert.plain``'s check:
        docs/results.md)."""
        if not np.any(weight > 0.05):
            return
        w = soft_mask(weight, self.bg.native_sigma_vox())
        self.lesion[self.box] |= weight > 0.5
        heterogeneity = float(self.rng.uniform(*HETEROGENEITY)) if textured else 0.0
        for seq, img in self.images.items():
            value = signal(kind, seq, self.an.tissues[seq], self.rng)
            het = texture(self.rng, w.shape, 2.0, heterogeneity) if heterogeneity > 0 else None
            paint(img, self.box, w, value * np.asarray(value_scale, dtype=np.float32), het)

    def scale(self, kind: str, tissue: str, weight: np.ndarray) -> None:
        """Change a tissue's signal by the ratio ``kind``/``tissue`` under ``weight``, keeping
        its own shape and texture (a degenerated disc stays the same disc, darker)."""
        w = soft_mask(weight, self.bg.native_sigma_vox())
        self.lesion[self.box] |= weight > 0.5
        for seq, img in self.images.items():
            t = self.an.tissues[seq]
            ratio = signal(kind, seq, t, self.rng) / max(t[tissue], 1e-6)
            img[self.box] *= 1.0 + w * (ratio - 1.0)

    def roi(self, centre_local: np.ndarray | None, finding: str, frame: BodyFrame | None = None) -> None:
        """The finding's ROI (at the body's centre when ``centre_local`` is None), labelled from
        the registry (:data:`spinelesion.labels.FINDINGS`)."""
        frame = frame or self.frame
        centre = (
            frame.centre if centre_local is None else frame.to_world(np.asarray(centre_local, dtype=float))
        )
        labels = finding_labels(finding)
        self.rois.append(
            Roi(np.asarray(centre, dtype=float), labels.compartment, labels.fracture, finding, frame.level)
        )


# -- bone --------------------------------------------------------------------------------------
def _deposit_centre(ctx: Insert) -> np.ndarray:
    f = ctx.frame
    p = (
        ctx.u(0.15, 0.45) * f.posterior
        if ctx.chance("metastasis_posterior")
        else ctx.u(0.1, 0.5) * f.anterior
    )
    return np.array([ctx.u(-0.4, 0.4) * f.half_width, p, ctx.u(-0.35, 0.35) * f.half_height])


def _pedicle_weight(ctx: Insert, side: float, scale: float = 1.0) -> np.ndarray:
    """The pedicle behind the body, lateral to the canal, on one side."""
    f = ctx.frame
    centre = np.array([side * 0.55 * f.half_width, f.posterior + 5.0, 0.1 * f.half_height])
    return ctx.ellipsoid(centre, np.array([4.5, 7.0, 6.0]) * scale)


def _deposit(ctx: Insert, kind: str, radius: tuple[float, float] = (5.0, 12.0)) -> None:
    f = ctx.frame
    centre = _deposit_centre(ctx)
    r = ctx.u(*radius)
    radii = np.array([r * ctx.u(0.8, 1.2), r * ctx.u(0.7, 1.1), r * ctx.u(0.6, 1.0)])
    body = ctx.body_mask()
    weight = ctx.ellipsoid(centre, radii) * body  # does not cross the disc
    if kind == "lytic" and ctx.chance("halo"):
        ctx.paint(
            "fluid", np.clip(ctx.ellipsoid(centre, radii + 1.5) - weight, 0, 1) * body * 0.6, textured=False
        )
    ctx.paint(kind, weight)
    if ctx.chance("metastasis_pedicle"):
        ctx.paint(kind, _pedicle_weight(ctx, float(np.sign(centre[0]) or 1.0)))
    if ctx.chance("second_deposit"):
        c2 = np.array(
            [ctx.u(-0.5, 0.5) * f.half_width, ctx.u(-0.5, 0.5) * f.depth, ctx.u(-0.5, 0.5) * f.half_height]
        )
        ctx.paint(kind, ctx.ellipsoid(c2, radii * 0.6) * body)


def lytic_metastasis(ctx: Insert) -> None:
    _deposit(ctx, "lytic")
    ctx.roi(None, "lytic_metastasis")


def blastic_metastasis(ctx: Insert) -> None:
    _deposit(ctx, "blastic")
    ctx.roi(None, "blastic_metastasis")


def _epidural_mass(ctx: Insert) -> np.ndarray:
    """Anterior epidural soft tissue behind the body, pushing the sac back; its centre (local)."""
    f = ctx.frame
    c0, _ = f.canal
    length = ctx.u(0.6, 1.3) * f.half_height
    thick = ctx.u(2.5, 5.0)
    centre = np.array([ctx.u(-3.0, 3.0), c0 + 0.6 * thick, ctx.u(-0.3, 0.3) * f.half_height])
    ctx.warp(deform.push(centre, np.array([0.0, 1.0, 0.0]), thick * ctx.u(0.8, 1.2), max(thick * 1.6, 5.0)))
    weight = ctx.ellipsoid(centre, np.array([ctx.u(6.0, 10.0), thick, length]))
    if ctx.chance("curtain"):  # midline septum spared: two lobes ("draped curtain")
        weight *= np.clip(np.abs(ctx.loc[..., 0] - centre[0]) / 1.5, 0.3, 1.0)
    ctx.paint("soft_tissue", weight)
    return centre


def epidural_extension(ctx: Insert) -> None:
    if ctx.chance("epidural_with_body_metastasis"):
        _deposit(ctx, "lytic", (4.0, 9.0))
    centre = _epidural_mass(ctx)
    ctx.roi(centre, "epidural_extension")


def paraspinal_mass(ctx: Insert) -> None:
    f = ctx.frame
    side = 1.0 if ctx.rng.random() < 0.5 else -1.0
    r = ctx.u(8.0, 16.0)
    centre = np.array(
        [side * (f.half_width + 0.6 * r), ctx.u(-0.3, 0.3) * f.depth, ctx.u(-0.3, 0.3) * f.half_height]
    )
    ctx.paint("soft_tissue", ctx.ellipsoid(centre, np.array([r, r * ctx.u(0.7, 1.0), r * ctx.u(1.0, 1.6)])))
    if ctx.chance("paraspinal_with_body_metastasis"):
        _deposit(ctx, "lytic", (4.0, 9.0))
    ctx.roi(centre, "paraspinal_mass")


# A vertebral fracture is called from its shape as Genant grades it: at least a fifth of the body's
# height gone (grade 1: 20-25 %) against its expected height. Both references are drawn to: the
# body's own height as it was (a lordotic L5 is taller in front by nature, and a fifth of that is a
# fracture, OWN_KEPT) and a ratio below every normal body's, whatever its level (GENANT_RATIO: the
# compressed height over the posterior wall for a wedge and a biconcave body, over the neighbours'
# height for a crush). The final shape is the more compressed of the two, measured on the body as it
# is before. Until 2026-12-07 a loss of 20-50 % was applied to whatever shape the body had: a fifth
# off a lordotic L5 left it as wedged as a normal T11 (real normals 0.79 and up), and a model trained
# on healed fractures (the shape alone) called 13 normal bodies benign, 8 of them T11-T12 (docs/results.md).
GENANT_RATIO = 0.75  # the mildest drawn: grade 1, below every real normal body (0.79 the least, vb2 and
# VB1) by more than the grid adds when a real mask is warped (measured up to +0.05)
OSTEOPOROTIC_RATIO = (0.5, GENANT_RATIO)
PATHOLOGIC_RATIO = (0.45, GENANT_RATIO)
OWN_KEPT = (0.5, 0.8)  # the fraction of the body's own compressed height (ratio) that is left
LOSS_LIMITS = (0.05, 0.65)  # the loss at the most compressed column, whatever the body measured
SHAPES: dict[str, tuple[str, str | None]] = {
    "wedge": ("anterior", "posterior"),  # the measured height and its reference (None: neighbours)
    "biconcave": ("middle", "posterior"),
    "crush": ("posterior", None),
}


def _neighbour_ratio(ctx: Insert) -> float:
    """The body's height over its neighbours' mean (a crush's reference), 1 at an end of the spine."""
    others = [b for b in ctx.an.neighbours(ctx.frame) if b is not None]
    own = ctx.frame.superior - ctx.frame.inferior
    return float(own / np.mean([b.superior - b.inferior for b in others])) if others else 1.0


def _collapse(ctx: Insert, ratio_range: tuple[float, float], shapes: Mapping[str, float]) -> str:
    """Collapse the body in one of ``shapes`` so that its compressed height ends at a ratio in
    ``ratio_range`` of its reference (:data:`SHAPES`) and at most :data:`OWN_KEPT` of its own.

    The losses are solved from the heights measured before (``deform.collapse_loss`` at each
    column), then corrected on a trial warp of the body's mask: a real body is not a box, and the
    frame's axis (from the neighbours' centres) runs oblique to a lordotic L5's endplates, so the
    same loss takes off less than it would from a box. A body whose ratio reads implausibly for an
    unbroken one (an end body the spine's curve tilts: VB1's L5 reads 0.44) takes the ratio as a
    loss instead."""
    names, probs = list(shapes), np.asarray(list(shapes.values()), dtype=float)
    shape = str(ctx.rng.choice(names, p=probs / probs.sum()))
    f = ctx.frame
    measured, reference = SHAPES[shape]
    # the direction of the loss (anterior, posterior, central), scaled below to reach the ratio
    direction = {
        "wedge": (1.0, ctx.u(0.0, 0.2), 0.0),
        "biconcave": (0.3, 0.3, 0.7),
        "crush": (1.0, 1.0, 0.0),
    }[shape]
    inside = ctx.body_mask() > 0.5
    before = column_heights(ctx.loc, inside, f)
    # every column loses its fraction: the collapse spans the body's farthest voxel, not the frame's
    # 2-98 % height (a lordotic L5's front column reaches past it and would barely shrink)
    reach_t = float(np.abs(ctx.loc[..., 2][inside]).max()) + 0.5 if inside.any() else f.half_height
    half_height = max(f.half_height, reach_t)

    def collapse(scale: float) -> deform.Map:
        front, back, centre = (scale * d for d in direction)
        return deform.collapse(f, front, back, centre, half_height=half_height)

    def ratio(heights: Mapping[str, float]) -> float:
        if reference is None:
            return heights[measured] / before[measured] * _neighbour_ratio(ctx)
        return heights[measured] / heights[reference]

    def loss_at(column: str | None) -> float:
        if column is None:
            return 0.0
        return float(deform.collapse_loss(f, 0.0, f.anterior + COLUMNS[column] * f.depth, *direction))

    def bounded(scale: float) -> float:
        deepest = max(loss_at(c) for c in COLUMNS)
        return float(np.clip(scale * deepest, *LOSS_LIMITS)) / deepest

    start = ratio(before)
    plausible = bool(np.isfinite(start) and 0.7 <= start <= 1.5)
    target = ctx.u(*ratio_range)
    if plausible:  # and at least a fifth of the body's own height gone (OWN_KEPT)
        target = min(target, start * ctx.u(*OWN_KEPT))
    k = target / start if plausible else target
    # (1 - s * loss_m) * h_m = k * (1 - s * loss_r) * h_r, solved for the scale s
    scale = bounded((1.0 - k) / max(loss_at(measured) - k * loss_at(reference), 1e-3))
    # within a voxel's step of the ratio (1 mm of 25 is 0.04 a side), a correction would chase the grid
    tolerance = max(0.02, 1.2 * float(min(ctx.bg.spacing)) / before[reference or measured])
    for _ in range(2 if plausible else 0):
        trial = ctx.bodies.copy()
        deform.warp_box(ctx.bg, ctx.box, f, collapse(scale), {}, {"b": trial})
        reached = ratio(column_heights(ctx.loc, trial[ctx.box] == f.label, f))
        if not np.isfinite(reached) or abs(reached - target) < tolerance or start - reached < 1e-3:
            break
        scale = bounded(scale * (start - target) / (start - reached))  # secant through (0, start)
    ctx.warp(collapse(scale))
    return shape


def _endplate_t(ctx: Insert, superior: bool) -> float:
    """t of an endplate of the (deformed) body, read from the mask at the body's axis."""
    body = ctx.body_mask() > 0.5
    near_axis = (
        body
        & (np.abs(ctx.loc[..., 0]) < 6)
        & (np.abs(ctx.loc[..., 1] - 0.5 * (ctx.frame.anterior + ctx.frame.posterior)) < 6)
    )
    t = ctx.loc[..., 2][near_axis]
    if t.size == 0:
        return ctx.frame.superior if superior else ctx.frame.inferior
    return float(np.percentile(t, 98 if superior else 2))


def osteoporotic_fracture(ctx: Insert, roi: bool = True) -> None:
    f = ctx.frame
    ctx.warp(
        *(
            [
                deform.push(
                    np.array([0.0, f.posterior, 0.7 * f.superior]),
                    np.array([0.0, 1.0, 0.0]),
                    ctx.u(1.5, 3.5),
                    4.0,
                )
            ]
            if ctx.chance("retropulsion")
            else []
        )
    )
    _collapse(ctx, OSTEOPOROTIC_RATIO, {"wedge": 0.55, "biconcave": 0.3, "crush": 0.15})
    if ctx.chance("convex_wall_benign"):  # a hard case: benign with a bulging wall
        ctx.warp(deform.bulge_posterior(ctx.frame, ctx.u(1.0, 2.5)))
    superior = ctx.rng.random() < 0.7
    plate = _endplate_t(ctx, superior)
    inward = -1.0 if superior else 1.0
    body = ctx.body_mask()
    # Chronic (healed): the shape alone, no signal change at all; reported apart as
    # osteoporotic_fracture_chronic, since a model must call it a fracture from its shape.
    chronic = ctx.chance("chronic")
    if not chronic:
        if ctx.chance("benign_diffuse_oedema"):
            depth = ctx.u(0.6, 0.9) * 2 * f.half_height
        else:
            depth = ctx.u(4.0, 10.0)
        ctx.paint("oedema", ctx.band(plate, plate + inward * depth, 2.0) * body)
        if ctx.chance("fracture_line"):
            at = plate + inward * ctx.u(1.5, 0.6 * depth)
            ctx.paint("band", ctx.band(at - 0.8, at + 0.8, 0.7) * body)
    if not chronic and ctx.chance("fluid_sign"):
        span = ctx.u(0.4, 0.8)
        cleft = ctx.band(plate + inward * 1.0, plate + inward * ctx.u(2.0, 3.5), 0.6) * body
        cleft *= np.abs(ctx.loc[..., 1] - 0.5 * (f.anterior + f.posterior)) < span * 0.5 * f.depth
        ctx.paint("fluid", cleft.astype(np.float32))
    if roi:
        ctx.roi(None, "osteoporotic_fracture_chronic" if chronic else "osteoporotic_fracture")


def pathologic_fracture(ctx: Insert) -> None:
    f = ctx.frame
    _collapse(ctx, PATHOLOGIC_RATIO, {"wedge": 0.35, "biconcave": 0.15, "crush": 0.5})
    if ctx.chance("convex_border"):
        ctx.warp(deform.bulge_posterior(ctx.frame, ctx.u(2.0, 5.0)))
    body = ctx.body_mask()
    kind = "blastic" if ctx.chance("pathologic_blastic") else "replacement"
    if ctx.chance("whole_body_signal"):
        weight = body
    else:  # partial replacement: a large deposit, normal marrow elsewhere
        c = np.array(
            [ctx.u(-0.3, 0.3) * f.half_width, ctx.u(0.0, 0.4) * f.posterior, ctx.u(-0.3, 0.3) * f.half_height]
        )
        weight = ctx.ellipsoid(c, np.array([0.7 * f.half_width, 0.45 * f.depth, 0.8 * f.half_height])) * body
    ctx.paint(kind, weight)
    if ctx.chance("pathologic_pedicle"):
        side = 1.0 if ctx.rng.random() < 0.5 else -1.0
        ctx.paint(kind, _pedicle_weight(ctx, side))
        if ctx.rng.random() < 0.5:
            ctx.paint(kind, _pedicle_weight(ctx, -side))
    if ctx.chance("pathologic_fluid_sign"):
        plate = _endplate_t(ctx, True)
        ctx.paint("fluid", ctx.band(plate - 1.0, plate - 2.5, 0.6) * body * 0.8)
    if ctx.chance("pathologic_epidural"):
        _epidural_mass(ctx)
    if ctx.chance("pathologic_paraspinal"):
        side = 1.0 if ctx.rng.random() < 0.5 else -1.0
        r = ctx.u(6.0, 12.0)
        ctx.paint(
            "soft_tissue",
            ctx.ellipsoid(np.array([side * (f.half_width + 0.5 * r), 0.0, 0.0]), np.array([r, r, r * 1.3])),
        )
    ctx.roi(None, "pathologic_fracture")


# -- mimics ------------------------------------------------------------------------------------
def haemangioma(ctx: Insert) -> None:
    f = ctx.frame
    r = ctx.u(4.0, 11.0)
    c = np.array(
        [ctx.u(-0.4, 0.4) * f.half_width, ctx.u(-0.4, 0.4) * f.depth, ctx.u(-0.4, 0.4) * f.half_height]
    )
    weight = ctx.ellipsoid(c, np.array([r, r, r * ctx.u(0.9, 1.3)])) * ctx.body_mask()
    # Coarse vertical trabeculae ("corduroy"): dark stripes running along t.
    period = ctx.u(2.5, 4.0)
    stripes = 1.0 - 0.35 * (np.cos(2 * np.pi * ctx.loc[..., 0] / period) > 0.6)
    ctx.paint("haemangioma", weight, value_scale=stripes)
    ctx.roi(None, "haemangioma")


def focal_fat(ctx: Insert) -> None:
    """Focal fatty marrow: one to three ill-defined fat islands anywhere in the body, often
    around the basivertebral vein (posterior centre). Normal: labelled none/none."""
    f = ctx.frame
    body = ctx.body_mask()
    weight = np.zeros_like(body)
    for k in range(int(ctx.rng.integers(1, 4))):
        if k == 0 and ctx.rng.random() < 0.5:  # around the basivertebral vein
            c = np.array(
                [
                    ctx.u(-0.2, 0.2) * f.half_width,
                    ctx.u(0.3, 0.7) * f.posterior,
                    ctx.u(-0.2, 0.2) * f.half_height,
                ]
            )
        else:
            c = np.array(
                [
                    ctx.u(-0.5, 0.5) * f.half_width,
                    ctx.u(-0.5, 0.5) * f.depth,
                    ctx.u(-0.5, 0.5) * f.half_height,
                ]
            )
        r = ctx.u(3.0, 9.0)
        radii = np.array([r * ctx.u(0.7, 1.3), r * ctx.u(0.7, 1.3), r * ctx.u(0.6, 1.2)])
        weight = np.maximum(weight, ctx.ellipsoid(c, radii, edge=ctx.u(1.5, 3.5)))
    ctx.paint("focal_fat", weight * body)
    ctx.roi(None, "focal_fat")


def _disc_weight(ctx: Insert, upper: BodyFrame, lower: BodyFrame) -> tuple[np.ndarray, float, float]:
    """The disc space between two bodies, in the upper body's frame: voxels between the two
    body masks (so it follows the real endplates) within the bodies' footprint.
    Returns (weight, t of the upper body's inferior endplate, t of the lower one's superior)."""
    top = upper.inferior
    bottom = float(upper.to_local(lower.to_world(np.array([0.0, 0.0, lower.superior])))[2])
    mid_p = 0.5 * (upper.anterior + upper.posterior)
    loc = ctx.loc
    inside = (
        (loc[..., 0] / (0.85 * upper.half_width)) ** 2 + ((loc[..., 1] - mid_p) / (0.47 * upper.depth)) ** 2
    ) < 1
    between = (loc[..., 2] > bottom - 3.0) & (loc[..., 2] < top + 3.0) & (ctx.bodies[ctx.box] == 0)
    return (inside & between).astype(np.float32), top, bottom


def _disc_next_to(ctx: Insert, name: str) -> tuple[BodyFrame, BodyFrame, np.ndarray, float, float]:
    """A disc next to the target body, chosen at random, with the context focused on the body
    above it: (upper body, lower body, disc weight, t of its top, t of its bottom)."""
    up, down = ctx.an.neighbours(ctx.frame)
    options = ([(ctx.frame, down)] if down is not None else []) + (
        [(up, ctx.frame)] if up is not None else []
    )
    if not options:
        raise ValueError(f"{name} needs a neighbouring body")
    upper, lower = options[int(ctx.rng.integers(len(options)))]
    ctx.focus(upper)
    disc, top, bottom = _disc_weight(ctx, upper, lower)
    return upper, lower, disc, top, bottom


def modic1(ctx: Insert) -> None:
    upper, lower, disc, top, bottom = _disc_next_to(ctx, "modic1")
    ctx.scale("degenerated_disc", "disc", disc)
    depth_up, depth_down = ctx.u(3.0, 8.0), ctx.u(3.0, 8.0)
    ctx.paint("oedema", ctx.band(top, top + depth_up, 1.5) * ctx.body_mask(upper.label))
    ctx.paint("oedema", ctx.band(bottom, bottom - depth_down, 1.5) * ctx.body_mask(lower.label))
    target = upper if ctx.rng.random() < 0.5 else lower
    ctx.roi(None, "modic1", frame=target)


def schmorl_node(ctx: Insert) -> None:
    f = ctx.frame
    superior = ctx.rng.random() < 0.5
    plate = _endplate_t(ctx, superior)
    inward = -1.0 if superior else 1.0
    r = ctx.u(2.5, 5.5)
    c = np.array([ctx.u(-0.3, 0.3) * f.half_width, ctx.u(-0.25, 0.25) * f.depth, plate])
    body = ctx.body_mask()
    if ctx.chance("schmorl_oedema"):
        ctx.paint("oedema", ctx.ellipsoid(c + [0, 0, inward * r * 0.5], np.array([2.2, 2.2, 2.0]) * r) * body)
    ctx.paint("disc", ctx.ellipsoid(c, np.array([r, r, r * 1.2])) * body)
    ctx.roi(None, "schmorl_node")


def discitis(ctx: Insert) -> None:
    """Crosses the disc: fluid in the disc, eroded endplates, oedema on both sides."""
    upper, lower, disc, top, bottom = _disc_next_to(ctx, "discitis")
    ctx.paint(
        "oedema", ctx.band(top, top + ctx.extent("discitis_oedema_mm"), 2.0) * ctx.body_mask(upper.label)
    )
    ctx.paint(
        "oedema",
        ctx.band(bottom, bottom - ctx.extent("discitis_oedema_mm"), 2.0) * ctx.body_mask(lower.label),
    )
    # Endplate erosion: the disc grown 1-4 mm (its range) into both bodies. What the sign does not
    # depend on varies (issue 34): the erosion is uneven or straight, the fluid fills from half the
    # disc's width to all of it. The plain renderer draws a full-width straight slab, and a model
    # that had seen only this module's even ellipse called every one of them none (2026-12-07).
    lo, hi = ctx.extents["discitis_erosion_mm"]
    if ctx.rng.random() < 0.35:
        depth = np.full(disc.shape, ctx.u(lo, hi), dtype=np.float32)
    else:
        depth = lo + (hi - lo) * np.clip(texture(ctx.rng, disc.shape, 3.0, 1.0), 0.0, 1.0)
    grown = ndimage.distance_transform_edt(disc < 0.5, sampling=ctx.bg.spacing) <= depth
    mid_p = 0.5 * (upper.anterior + upper.posterior)
    inside = (
        (ctx.loc[..., 0] / (ctx.u(0.5, 1.05) * upper.half_width)) ** 2
        + ((ctx.loc[..., 1] - mid_p) / (ctx.u(0.3, 0.55) * upper.depth)) ** 2
    ) < 1
    ctx.paint("disc_fluid", (grown & inside).astype(np.float32))
    mid_t = 0.5 * (top + bottom)
    if ctx.chance("discitis_phlegmon"):  # inflamed soft tissue in front of the disc or in the epidural space
        if ctx.rng.random() < 0.6:
            c = np.array([ctx.u(-0.3, 0.3) * upper.half_width, upper.anterior - ctx.u(2.0, 5.0), mid_t])
            radii = np.array([ctx.u(0.6, 1.0) * upper.half_width, ctx.u(3.0, 6.0), ctx.u(8.0, 16.0)])
        else:
            c = np.array([0.0, upper.posterior + ctx.u(1.5, 3.0), mid_t])
            radii = np.array([ctx.u(4.0, 8.0), ctx.u(1.5, 3.0), ctx.u(6.0, 14.0)])
        ctx.paint("soft_tissue", ctx.ellipsoid(c, radii) * (ctx.bodies[ctx.box] == 0))
    ctx.roi(np.array([0.0, mid_p, mid_t]), "discitis")


def degenerative_stenosis(ctx: Insert) -> None:
    """A normal variant of the ageing spine, not a lesion: at a disc, the disc's back bulges into the
    canal (2.5-8 mm across most of its width) and the ligamenta flava thicken from behind on both
    sides (1.5-5 mm), pinching the dural sac to an hourglass with the study's own tissues moved in: disc and
    ligament texture where CSF was, CSF wider above and below by comparison. VB1's older patients have
    it at most lumbar discs and a model that saw only capacious sacs called their canal a lesion; the
    phantom's drawn narrowing did not carry to them (docs/results.md, 2026-12-07). ROIs (none/none)
    on the narrowing and on the canal behind the bodies above and below it."""
    upper, lower, _disc, top, bottom = _disc_next_to(ctx, "degenerative_stenosis")
    c0, c1 = upper.canal
    depth = max(c1 - c0, 4.0)
    mid_t = 0.5 * (top + bottom)
    half_t = max(0.5 * (top - bottom), 2.0)
    front = min(ctx.u(2.5, 8.0), 0.5 * depth)
    back = min(ctx.u(1.5, 5.0), 0.35 * depth)
    maps = [  # the annulus across the canal's width, reaching past the disc's height a little
        deform.push(
            np.array([ctx.u(-2.0, 2.0), c0 - 1.0, mid_t]),
            np.array([0.0, 1.0, 0.0]),
            front,
            (ctx.u(6.0, 10.0), max(front / 0.8, 3.0), half_t + ctx.u(1.0, 4.0)),
        )
    ]
    for side in (-1.0, 1.0):  # each ligamentum flavum, behind and beside the sac
        maps.append(
            deform.push(
                np.array([side * ctx.u(1.5, 5.0), c1 + 1.0, mid_t + ctx.u(-2.0, 2.0)]),
                np.array([0.0, -1.0, 0.0]),
                back * ctx.u(0.6, 1.0),
                (ctx.u(3.0, 5.0), max(back / 0.8, 2.5), half_t + ctx.u(2.0, 5.0)),
            )
        )
    ctx.warp(*maps)
    ctx.roi(np.array([0.0, 0.5 * (c0 + front + c1 - back), mid_t]), "degenerative_stenosis")
    for frame in (upper, lower):
        l0, l1 = frame.canal
        ctx.roi(
            np.array([0.0, 0.5 * (l0 + l1), ctx.u(-0.3, 0.3) * frame.half_height]),
            "degenerative_stenosis",
            frame,
        )


# -- inside the dural sac -----------------------------------------------------------------------
def _cord_axis(ctx: Insert) -> np.ndarray:
    """(l, p) of the cord (or the middle of the sac where no cord is known) at this level."""
    f = ctx.frame
    if ctx.bg.cord is not None:
        cord = ctx.bg.cord[ctx.box] & (np.abs(ctx.loc[..., 2]) < f.half_height)
        if cord.any():
            return ctx.loc[cord][:, :2].mean(0)
    return np.array([0.0, cord_p(f)])


def intradural_mass(ctx: Insert, kind: str) -> None:
    """Meningioma or schwannoma: a mass in the CSF, cord/roots pushed away, CSF caps."""
    f = ctx.frame
    c0, c1 = f.canal
    depth = c1 - c0
    r = min(ctx.u(3.0, 7.0), 0.42 * depth + 1.0)
    side = 1.0 if ctx.rng.random() < 0.5 else -1.0
    if kind == "meningioma":  # broad dural base, often dorsal or lateral
        p = c1 - r * ctx.u(0.7, 1.0) if ctx.rng.random() < 0.6 else 0.5 * (c0 + c1)
        lat = side * ctx.u(0.0, 4.0)
    else:  # off a nerve root: lateral, anterior half of the sac
        p = c0 + r * ctx.u(0.8, 1.2)
        lat = side * ctx.u(2.0, 6.0)
    centre = np.array([lat, p, ctx.u(-0.6, 0.6) * f.half_height])
    axis = _cord_axis(ctx)
    away = np.array([axis[0] - centre[0], axis[1] - centre[1], 0.0])
    if np.linalg.norm(away) < 1e-3:
        away = np.array([-side, 0.0, 0.0])
    if ctx.chance("cord_displacement"):
        ctx.warp(deform.push(centre, away, ctx.u(1.5, 3.5), r * 1.8))
    radii = np.array([r * ctx.u(0.8, 1.1), r * ctx.u(0.7, 1.0), r * ctx.u(1.1, 1.8)])
    if ctx.chance("csf_cap"):  # widened CSF with a sharp bright cap above and below
        for sign in (-1.0, 1.0):
            cap = centre + np.array([0.0, 0.0, sign * (radii[2] + 1.2)])
            ctx.paint(
                "fluid", ctx.ellipsoid(cap, np.array([radii[0] * 0.9, radii[1] * 0.8, 1.8])), textured=False
            )
    mass = ctx.ellipsoid(centre, radii)
    recipe = "meningioma" if kind == "meningioma" else "schwannoma"
    ctx.paint(recipe, mass)
    if kind == "meningioma" and ctx.chance("dural_tail"):
        tail = centre + np.array([0.0, 0.3 * r, radii[2] + 3.0])
        ctx.paint(recipe, ctx.ellipsoid(tail, np.array([1.2, 1.0, 4.0])), textured=False)
    if kind == "schwannoma":
        if ctx.chance("cystic"):
            ctx.paint("fluid", ctx.ellipsoid(centre, radii * 0.5))
        elif ctx.chance("target_sign"):  # bright rim, darker centre
            ctx.paint("meningioma", ctx.ellipsoid(centre, radii * 0.5))
    ctx.roi(centre, kind)


def meningioma(ctx: Insert) -> None:
    intradural_mass(ctx, "meningioma")


def schwannoma(ctx: Insert) -> None:
    intradural_mass(ctx, "schwannoma")


def drop_metastases(ctx: Insert) -> None:
    """Nodules on the cauda equina roots / cord surface, visible on T2 as intermediate foci
    in bright CSF (only visible deposits are inserted: no contrast is rendered)."""
    f = ctx.frame
    c0, c1 = f.canal
    n = int(ctx.rng.integers(2, 6))
    centres = []
    for i in range(n):
        c = np.array([ctx.u(-4.0, 4.0), ctx.u(c0 + 2.0, c1 - 2.0), ctx.u(-1.2, 1.2) * f.half_height])
        r = ctx.u(1.8, 3.5) if i else ctx.u(2.8, 4.5)
        ctx.paint("drop", ctx.ellipsoid(c, np.array([r, r, r * ctx.u(1.0, 1.6)]), 0.6))
        centres.append(c)
    if ctx.chance("sugar_coating"):  # smooth coating of the conus / roots
        axis = _cord_axis(ctx)
        shell = ctx.ellipsoid(np.array([axis[0], axis[1], 0.0]), np.array([3.5, 3.0, f.half_height * 1.5]))
        core = ctx.ellipsoid(np.array([axis[0], axis[1], 0.0]), np.array([2.2, 1.8, f.half_height * 1.5]))
        ctx.paint("drop", np.clip(shell - core, 0, 1))
    ctx.roi(centres[0], "drop_metastases")


IM_OEDEMA_SEGMENTS = (1.0, 6.0)  # cord oedema length in segments (issue 34: 1-6)


def intramedullary_metastasis(ctx: Insert) -> None:
    """A small nodule (< 1.5 cm) central or eccentric in the cord, cord oedema over 1-6
    segments along the cord's own course, cord expansion of 0-50 % around the nodule, and a
    haemorrhagic nodule or a small cyst at their rates (radiology.md; issue 34)."""
    f = ctx.frame
    if not f.has_cord:
        raise ValueError(f"no spinal cord at {f.level}")
    ts, ls, ps, (t_lo, t_hi) = cord_course(ctx.an.bodies, f, _cord_axis(ctx))
    t0 = ctx.u(-0.5, 0.5) * f.half_height
    axis = np.array([np.interp(t0, ts, ls), np.interp(t0, ts, ps)])
    c_depth = f.canal[1] - f.canal[0]
    cord_r = float(np.clip(0.3 * c_depth, 3.0, 5.0))
    # a segment: one body and its disc (the disc ~ a quarter of the body's height)
    segments = ctx.u(*IM_OEDEMA_SEGMENTS)
    half_length = 0.5 * segments * 2.5 * f.half_height
    factor = ctx.u(1.15, 1.5) if ctx.chance("cord_expansion") else ctx.u(1.0, 1.1)
    r = min(ctx.u(2.0, 7.0), 0.9 * cord_r * factor)
    if factor > 1.01:
        ctx.warp(deform.expand(np.array([axis[0], axis[1], 0.0]), factor, cord_r, t0, r + ctx.u(4.0, 15.0)))
    t = ctx.loc[..., 2]
    lc, pc = np.interp(t, ts, ls), np.interp(t, ts, ps)
    swell = 1.0 + (factor - 1.0) * np.exp(-(((t - t0) / (r + 8.0)) ** 2))
    radial = np.sqrt(((ctx.loc[..., 0] - lc) / cord_r) ** 2 + ((ctx.loc[..., 1] - pc) / (0.9 * cord_r)) ** 2)
    tube = np.clip((swell - radial) * cord_r + 0.5, 0.0, 1.0)
    along = np.clip((half_length - np.abs(t - t0)) / 3.0 + 0.5, 0.0, 1.0)
    on_cord = np.clip(np.minimum(t - t_lo, t_hi - t) / 3.0 + 0.5, 0.0, 1.0)
    ctx.paint("cord_oedema", (tube * along * on_cord).astype(np.float32))
    centre = np.array([axis[0], axis[1], t0])
    if ctx.chance("im_eccentric"):
        angle = ctx.u(0.0, 2.0 * np.pi)
        reach = max(cord_r * factor - r, 0.0) * ctx.u(0.5, 1.0)
        centre[:2] += reach * np.array([np.cos(angle), 0.9 * np.sin(angle)])
    kind = "haemorrhage" if ctx.chance("im_haemorrhage") else "im_nodule"
    ctx.paint(kind, ctx.ellipsoid(centre, np.array([r, r * 0.9, r * 1.3])))
    if ctx.chance("im_cyst"):  # a small syrinx-like cyst above or below the nodule
        length = ctx.u(3.0, 8.0)
        side = 1.0 if ctx.rng.random() < 0.5 else -1.0
        cyst = np.array([axis[0], axis[1], t0 + side * (1.3 * r + length)])
        ctx.paint(
            "fluid", ctx.ellipsoid(cyst, np.array([0.5 * cord_r, 0.45 * cord_r, length])), textured=False
        )
    ctx.roi(centre, "intramedullary_metastasis")


FINDINGS: dict[str, Callable[[Insert], None]] = {
    "lytic_metastasis": lytic_metastasis,
    "blastic_metastasis": blastic_metastasis,
    "epidural_extension": epidural_extension,
    "paraspinal_mass": paraspinal_mass,
    "osteoporotic_fracture": osteoporotic_fracture,
    "pathologic_fracture": pathologic_fracture,
    "meningioma": meningioma,
    "schwannoma": schwannoma,
    "drop_metastases": drop_metastases,
    "intramedullary_metastasis": intramedullary_metastasis,
    "haemangioma": haemangioma,
    "focal_fat": focal_fat,
    "modic1": modic1,
    "schmorl_node": schmorl_node,
    "discitis": discitis,
    "degenerative_stenosis": degenerative_stenosis,
}
"""Finding name (the manifest's ``finding``) -> renderer."""

NEEDS_CORD = {"intramedullary_metastasis"}
NEEDS_NEIGHBOUR = {"modic1", "discitis", "degenerative_stenosis"}


def eligible(name: str, an: SpineAnatomy, frame: BodyFrame) -> bool:
    """Whether ``name`` can be inserted at this body of this study."""
    if name in NEEDS_CORD and not frame.has_cord:
        return False
    if name in NEEDS_NEIGHBOUR and an.neighbours(frame) == (None, None):
        return False
    return True


def insert_finding(
    bg: Background,
    an: SpineAnatomy,
    name: str,
    label: int,
    rng: np.random.Generator,
    rates: Mapping[str, float],
    extents: Mapping[str, Sequence[float]] | None = None,
) -> Insert:
    """Render ``name`` at body ``label``; the result holds the new images, lesion mask and ROIs.
    ``extents``: ranges that replace those of :data:`EXTENTS` (a name it lacks is an error)."""
    unknown = sorted(set(extents or {}) - set(EXTENTS))
    if unknown:
        raise ValueError(f"unknown extents {', '.join(unknown)}; known: {', '.join(EXTENTS)}")
    ranges = {**EXTENTS, **{k: (float(v[0]), float(v[1])) for k, v in (extents or {}).items()}}
    ctx = Insert(bg, an, an.body(label), rng, rates, ranges)
    FINDINGS[name](ctx)
    if name == "osteoporotic_fracture" and ctx.chance("benign_multiple"):
        # Several osteoporotic levels: a second, milder fracture at another body.
        others = [b for b in an.bodies if abs(an.bodies.index(b) - an.bodies.index(an.body(label))) >= 2]
        if others:
            second = others[int(rng.integers(len(others)))]
            ctx.focus(second)
            osteoporotic_fracture(ctx)
    if name == "pathologic_fracture" and ctx.chance("pathologic_other_metastases"):
        others = [b for b in an.bodies if abs(an.bodies.index(b) - an.bodies.index(an.body(label))) >= 2]
        if others:
            ctx.focus(others[int(rng.integers(len(others)))])
            lytic_metastasis(ctx)
    return ctx
