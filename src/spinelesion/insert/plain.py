"""A second, plain lesion renderer: does the model read the radiology, or this project's insertion?

The released model is checked from outside on lesions drawn by code written apart from this
project. A model that learnt the habits of :mod:`spinelesion.insert` (its soft edges, its signal
recipes, its deformation fields) could pass its own held-out checks and fail there. This module
renders every class of docs/radiology.md the plainest way and shares no painting or deformation
code with the main insertion (only the body frames and the cord's course derived from the
study's masks), so that it can be held out of training as a renderer of its own (issue 34):

- bone findings: a lytic deposit; an osteoporotic fracture (wedge or concave endplate, an oedema
  band and a low-signal line; or chronic: the shape alone); a pathologic collapse with
  whole-body replacement and a convex posterior wall;
- canal findings: an intradural-extramedullary mass in the CSF; an intramedullary nodule,
  central or eccentric, in an oedematous cord swollen 0-50 % over 1-6 segments, with a small
  cyst at times;
- mimics (none/none): discitis (fluid in the disc, endplates eroded, oedema on both sides, a
  prevertebral phlegmon at times), a Schmorl node (disc material in an endplate, oedema at
  times), Modic 1 (a degenerated disc with oedema along both endplates) and a haemangioma (T1
  and T2 bright, coarse vertical trabeculae).

Signal is a fixed multiple of the study's own references per sequence: the body's median marrow
for bone, the canal's CSF for the canal and disc findings. Shapes are hard-edged, softened by one
voxel's blur, with Gaussian noise of the marrow's fine texture; height loss stretches each column
of the body along the spine axis and the disc above into the gap.

``generate_plain`` writes a contract manifest (crops of the rendered studies plus every body of
the untouched studies, none/none) for training or ``spinelesion-evaluate``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from spinelesion.data.manifest import write_manifest
from spinelesion.insert.anatomy import (
    BodyFrame,
    SpineAnatomy,
    box_around,
    cord_course,
    derive_anatomy,
    voxel_world,
)
from spinelesion.insert.background import Background, discover_backgrounds, load_background
from spinelesion.insert.dataset import write_crop
from spinelesion.io.volume import Volume, apply_affine
from spinelesion.labels import finding_labels

PLAIN_DRAWS = (
    "lytic_metastasis",
    "osteoporotic_fracture",
    "osteoporotic_fracture_chronic",
    "pathologic_fracture",
    "intradural_mass",
    "intramedullary_metastasis",
    "discitis",
    "schmorl_node",
    "modic1",
    "haemangioma",
)
PLAIN_FINDINGS: dict[str, tuple[str, str]] = {
    n: (finding_labels(n).compartment, finding_labels(n).fracture) for n in PLAIN_DRAWS
}
"""What this renderer draws -> (compartment, fracture), from the registry (``spinelesion.labels``)."""
OUTSIDE_CHECK_FINDINGS = ("lytic_metastasis", "osteoporotic_fracture", "pathologic_fracture")
"""The three findings of the outside check this renderer first stood in for."""
NEEDS_CORD = {"intramedullary_metastasis"}
NEEDS_BODY_ABOVE = {"discitis", "modic1"}
COLLAPSES = {"osteoporotic_fracture", "osteoporotic_fracture_chronic", "pathologic_fracture"}
# Signal as a multiple of a reference of the study itself, drawn per study and sequence:
# kind -> (reference, sequence -> range). radiology.md: a lytic deposit and marrow oedema are
# T1 dark and T2 / STIR bright; the band of impacted trabeculae is dark on T1 and T2; whole-body
# replacement is abnormal on every sequence; a cord or intradural mass is darker than CSF on T2
# and brighter on T1, and enhances; cord oedema is T2 bright, short of CSF; an infected disc
# holds fluid; a Schmorl node is disc material.
MULTIPLES: dict[str, tuple[str, dict[str, tuple[float, float]]]] = {
    "lytic": ("marrow", {"t1": (0.45, 0.65), "t2": (1.5, 2.2), "stir": (2.0, 3.0), "t1c": (1.0, 1.4)}),
    "oedema": ("marrow", {"t1": (0.5, 0.7), "t2": (1.4, 1.9), "stir": (1.8, 2.6), "t1c": (0.9, 1.2)}),
    "line": ("marrow", {"t1": (0.35, 0.5), "t2": (0.45, 0.65), "stir": (0.6, 0.8), "t1c": (0.4, 0.6)}),
    "replacement": ("marrow", {"t1": (0.45, 0.65), "t2": (1.3, 1.9), "stir": (1.8, 2.6), "t1c": (1.0, 1.4)}),
    "phlegmon": ("marrow", {"t1": (0.5, 0.7), "t2": (1.3, 1.8), "stir": (1.8, 2.5), "t1c": (1.3, 1.8)}),
    "mass": ("csf", {"t1": (2.0, 3.0), "t2": (0.3, 0.5), "stir": (0.35, 0.55), "t1c": (4.0, 6.0)}),
    "nodule": ("csf", {"t1": (2.0, 3.0), "t2": (0.35, 0.55), "stir": (0.4, 0.6), "t1c": (4.0, 6.0)}),
    "cord_oedema": ("csf", {"t1": (1.6, 2.4), "t2": (0.6, 0.8), "stir": (0.6, 0.8), "t1c": (1.6, 2.4)}),
    "fluid": ("csf", {"t1": (0.9, 1.1), "t2": (0.9, 1.05), "stir": (0.9, 1.05), "t1c": (0.9, 1.1)}),
    "disc_fluid": ("csf", {"t1": (1.2, 1.8), "t2": (0.7, 1.0), "stir": (0.7, 1.0), "t1c": (2.0, 3.0)}),
    "disc": ("disc", {"t1": (0.9, 1.1), "t2": (0.9, 1.1), "stir": (0.9, 1.1), "t1c": (0.9, 1.1)}),
    "degenerated_disc": (
        "disc",
        {"t1": (0.75, 0.9), "t2": (0.6, 0.85), "stir": (0.6, 0.85), "t1c": (0.75, 0.9)},
    ),
    "haemangioma": ("marrow", {"t1": (1.15, 1.4), "t2": (1.3, 1.8), "stir": (1.0, 1.6), "t1c": (1.1, 1.4)}),
}
IM_OEDEMA_SEGMENTS = (1.0, 6.0)  # cord oedema over this many segments (a body and its disc)
DISC_GAP_MM = 8.0  # the disc above a collapsed body is stretched down over this much of itself


@dataclass
class PlainStudy:
    """One body with one plain finding: the study's images on its own grid and the ROI."""

    images: dict[str, np.ndarray]
    lesion: np.ndarray  # bool, where lesion signal was painted
    body: np.ndarray  # bool, the body after any collapse
    centre: np.ndarray  # ROI centre, LPS mm (the body, after any collapse)
    finding: str
    level: str


def _world_to_voxel(bg: Background, world: np.ndarray) -> np.ndarray:
    """(..., 3) LPS mm -> (3, ...) voxel coordinates for ``map_coordinates``."""
    ijk = apply_affine(np.linalg.inv(bg.affine), world.reshape(-1, 3))
    return ijk.T.reshape(3, *world.shape[:-1])


def _marrow_stats(bg: Background, own: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Per sequence, the body's median marrow signal and its fine texture (sd of the image minus
    its 1-voxel blur), both over the body eroded by 2 voxels. Computed on the body's bounding box
    with a margin wider than the blur's reach, so the values equal those of the whole image."""
    voxels = np.argwhere(own)
    lo = np.maximum(voxels.min(0) - 6, 0)
    hi = np.minimum(voxels.max(0) + 7, own.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    core = ndimage.binary_erosion(own[box], iterations=2)
    core = core if core.any() else own[box]
    marrow, sd = {}, {}
    for s, img in bg.images.items():
        crop = img[box].astype(np.float32)
        marrow[s] = float(np.median(crop[core]))
        sd[s] = float(np.std((crop - ndimage.gaussian_filter(crop, 1.0))[core]))
    return marrow, sd


def _csf(images: Mapping[str, np.ndarray], canal: np.ndarray) -> dict[str, float]:
    """Per sequence, the median of the canal's CSF voxels: its brightest quarter on T2 (or STIR);
    on a T1-only study its darkest quarter (CSF is dark on T1). Where the canal was not found,
    the study's 99th percentile (T2) or 5th (T1) stands in."""
    fluid = next((s for s in ("t2", "stir") if s in images), None)
    ref = fluid or next(iter(images))
    values = images[ref][canal]
    if values.size < 8:
        return {s: float(np.percentile(img, 99 if fluid else 5)) for s, img in images.items()}
    cut = np.percentile(values, 75 if fluid else 25)
    pick = values >= cut if fluid else values <= cut
    return {s: float(np.median(img[canal][pick])) for s, img in images.items()}


def _disc_between(
    loc: np.ndarray, f: BodyFrame, above: BodyFrame, footprint: np.ndarray
) -> tuple[np.ndarray, float]:
    """The disc above ``f`` (its footprint between the two endplates) and t of the upper body's
    inferior endplate, in ``f``'s frame."""
    upper_t = float(
        f.to_local(above.to_world(np.array([0.0, 0.5 * (above.anterior + above.posterior), above.inferior])))[
            2
        ]
    )
    t = loc[..., 2]
    return (footprint > 0.5) & (t > f.superior) & (t < upper_t), upper_t


def _collapse_source(
    loc: np.ndarray, f: BodyFrame, loss: np.ndarray, footprint: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where each voxel of a collapsed body reads from (local mm), and the new superior endplate.

    ``loss``: the fraction of the body's height lost per voxel column. Inside the body's
    footprint the column between the inferior endplate and the lowered superior one is
    stretched from the whole body; above it the disc is stretched down into the gap."""
    t = loc[..., 2]
    top = f.inferior + (f.superior - f.inferior) * (1.0 - loss)
    source_t = t.copy()
    body = (t > f.inferior) & (t <= top)
    source_t[body] = f.inferior + (t[body] - f.inferior) / (1.0 - loss[body])
    gap = (t > top) & (t <= f.superior + DISC_GAP_MM)
    span = f.superior + DISC_GAP_MM - top
    source_t[gap] = f.superior + (t[gap] - top[gap]) * DISC_GAP_MM / span[gap]
    source = loc.copy()
    source[..., 2] = t + footprint * (source_t - t)
    return source, top


def _height_loss(finding: str, loc: np.ndarray, f: BodyFrame, rng: np.random.Generator) -> np.ndarray:
    """Per column: a wedge (anterior height lost) or a concave superior endplate for an
    osteoporotic fracture; a collapse of the whole body for a pathologic one."""
    p, lat = loc[..., 1], loc[..., 0]
    frac = np.clip((p - f.anterior) / max(f.depth, 1e-6), 0.0, 1.0)
    if finding == "pathologic_fracture":
        loss_a = float(rng.uniform(0.2, 0.45))
        loss_p = float(np.clip(loss_a + rng.uniform(-0.05, 0.05), 0.15, 0.5))
        return loss_a + (loss_p - loss_a) * frac
    if rng.random() < 0.6:  # wedge
        loss_a, loss_p = float(rng.uniform(0.2, 0.45)), float(rng.uniform(0.0, 0.08))
        return loss_a + (loss_p - loss_a) * frac
    edge, centre = float(rng.uniform(0.0, 0.08)), float(rng.uniform(0.25, 0.45))  # concave endplate
    mid_p = 0.5 * (f.anterior + f.posterior)
    bump = np.clip(
        1.0 - (lat / max(f.half_width, 1e-6)) ** 2 - ((p - mid_p) / max(0.5 * f.depth, 1e-6)) ** 2, 0.0, 1.0
    )
    return edge + (centre - edge) * bump


def _bone_layers(
    finding: str, f: BodyFrame, loc: np.ndarray, body: np.ndarray, top: np.ndarray, rng: np.random.Generator
) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """Layers (kind, mask) of a bone finding and its ROI centre (LPS)."""
    p, t, lat = loc[..., 1], loc[..., 2], loc[..., 0]
    layers: list[tuple[str, np.ndarray]] = []
    if finding == "lytic_metastasis":
        posterior = rng.random() < 0.65  # metastases favour the posterior body (radiology.md)
        c = np.array(
            [
                rng.uniform(-0.4, 0.4) * f.half_width,
                rng.uniform(0.1, 0.45) * f.posterior if posterior else rng.uniform(0.1, 0.5) * f.anterior,
                rng.uniform(-0.3, 0.3) * f.half_height,
            ]
        )
        radius = float(rng.uniform(5.0, 9.0))
        layers.append(("lytic", (np.linalg.norm(loc - c, axis=-1) < radius) & body))
        return layers, f.centre
    if finding == "osteoporotic_fracture":
        depth = float(rng.uniform(4.0, 9.0))
        layers.append(("oedema", body & (t > top - depth) & (t <= top)))  # oedema under the endplate
        at = top - depth * float(rng.uniform(0.3, 0.6))
        layers.append(("line", body & (np.abs(t - at) < 0.8)))  # the low-signal band parallel to it
    elif finding == "pathologic_fracture":
        # convex posterior wall: a parabola of lesion tissue behind the body, deepest at mid-height
        near_wall = np.abs(p - f.posterior) < 1.5
        top_p = float(np.median(top[near_wall])) if near_wall.any() else f.superior
        mid, half_h = 0.5 * (f.inferior + top_p), 0.5 * (top_p - f.inferior)
        bulge = float(rng.uniform(2.0, 4.0)) * np.clip(1.0 - ((t - mid) / max(half_h, 1e-6)) ** 2, 0.0, 1.0)
        wall = (p > f.posterior - 1.0) & (p <= f.posterior + bulge) & (np.abs(lat) <= 0.6 * f.half_width)
        layers.append(("replacement", body | (wall & (bulge > 0.3))))
    return layers, _collapsed_centre(f, top, p)  # a chronic fracture: the shape alone


def _canal_layers(
    finding: str, bg: Background, an: SpineAnatomy, f: BodyFrame, loc: np.ndarray, rng: np.random.Generator
) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """Layers of a finding in the dural sac and its ROI centre (LPS)."""
    lat, p, t = loc[..., 0], loc[..., 1], loc[..., 2]
    c0, c1 = f.canal
    if finding == "intradural_mass":
        r = min(float(rng.uniform(3.0, 7.0)), 0.42 * (c1 - c0) + 1.0)
        dorsal = rng.random() < 0.5
        centre = np.array(
            [
                rng.uniform(-4.0, 4.0),
                c1 - r * rng.uniform(0.7, 1.0) if dorsal else rng.uniform(c0 + r, max(c1 - r, c0 + r)),
                rng.uniform(-0.6, 0.6) * f.half_height,
            ]
        )
        radii = np.array([r, 0.85 * r, r * rng.uniform(1.1, 1.6)])
        mass = (np.linalg.norm((loc - centre) / radii, axis=-1) < 1.0) & (p > c0 - 1.0) & (p < c1 + 1.0)
        return [("mass", mass)], f.to_world(centre)
    # intramedullary: the cord where a mask shows it, else the canal's middle, along its course
    here = None
    if bg.cord is not None:
        near = box_around(bg, f.centre, 8.0)
        cord = bg.cord[near]
        if cord.any():
            here = f.to_local(voxel_world(bg, near)[cord]).mean(0)[:2]
    ts, ls, ps, (t_lo, t_hi) = cord_course(an.bodies, f, here)
    cord_r = float(np.clip(0.3 * min(c1 - c0, 14.0), 3.0, 4.5))  # across; front to back 0.75 of it
    swell = 1.0 + float(rng.uniform(0.0, 0.5))  # cord expansion 0-50 %
    half_length = 0.5 * float(rng.uniform(*IM_OEDEMA_SEGMENTS)) * 2.5 * f.half_height
    t0 = float(rng.uniform(-0.5, 0.5)) * f.half_height
    lc, pc = np.interp(t, ts, ls), np.interp(t, ts, ps)
    radial = np.sqrt(((lat - lc) / cord_r) ** 2 + ((p - pc) / (0.75 * cord_r)) ** 2)
    oedema = (radial < swell) & (np.abs(t - t0) < half_length) & (t > t_lo) & (t < t_hi)
    r = min(float(rng.uniform(2.0, 7.0)), 0.9 * cord_r * swell)
    centre = np.array([np.interp(t0, ts, ls), np.interp(t0, ts, ps), t0])
    axis = centre.copy()
    if rng.random() < 0.5:  # eccentric
        angle = float(rng.uniform(0.0, 2.0 * np.pi))
        centre[:2] += (
            max(cord_r * swell - r, 0.0)
            * float(rng.uniform(0.5, 1.0))
            * np.array([np.cos(angle), 0.9 * np.sin(angle)])
        )
    layers = [
        ("cord_oedema", oedema),
        ("nodule", np.linalg.norm((loc - centre) / [r, 0.9 * r, 1.3 * r], axis=-1) < 1.0),
    ]
    if rng.random() < 0.2:  # a small cyst above or below the nodule
        length = float(rng.uniform(3.0, 8.0))
        cyst = axis + np.array([0.0, 0.0, (1.0 if rng.random() < 0.5 else -1.0) * (1.3 * r + length)])
        layers.append(
            ("fluid", np.linalg.norm((loc - cyst) / [0.5 * cord_r, 0.45 * cord_r, length], axis=-1) < 1.0)
        )
    return layers, f.to_world(centre)


def _mimic_layers(
    finding: str,
    f: BodyFrame,
    loc: np.ndarray,
    body: np.ndarray,
    above_body: np.ndarray,
    footprint: np.ndarray,
    between: tuple[np.ndarray, float] | None,
    rng: np.random.Generator,
) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """Layers of a mimic (discitis or Modic 1 at the disc above ``f``, a Schmorl node, a
    haemangioma) and the ROI centre (LPS); ``between``: the disc above and the upper body's
    inferior endplate (:func:`_disc_between`), None without a body above."""
    t = loc[..., 2]
    mid_p = 0.5 * (f.anterior + f.posterior)
    if finding == "haemangioma":  # T1 and T2 bright, well defined, coarse vertical trabeculae
        r = float(rng.uniform(4.0, 10.0))
        c = np.array(
            [
                rng.uniform(-0.4, 0.4) * f.half_width,
                mid_p + rng.uniform(-0.3, 0.3) * f.depth,
                rng.uniform(-0.4, 0.4) * f.half_height,
            ]
        )
        blob = (np.linalg.norm((loc - c) / [r, r, 1.1 * r], axis=-1) < 1.0) & body
        period = float(rng.uniform(4.0, 6.0))  # trabeculae a few mm apart, each about a voxel thick
        stripes = blob & (np.cos(2.0 * np.pi * loc[..., 0] / period) > 0.85)  # thin: a sixth of it
        return [("haemangioma", blob & ~stripes), ("line", stripes)], f.centre
    if finding == "schmorl_node":
        superior = rng.random() < 0.5
        plate = f.superior if superior else f.inferior
        r = float(rng.uniform(2.5, 5.5))
        c = np.array(
            [rng.uniform(-0.3, 0.3) * f.half_width, mid_p + rng.uniform(-0.25, 0.25) * f.depth, plate]
        )
        node = (np.linalg.norm((loc - c) / [r, r, 1.2 * r], axis=-1) < 1.0) & body
        layers = []
        if rng.random() < 0.6:
            inward = -1.0 if superior else 1.0
            halo = (
                np.linalg.norm(
                    (loc - c - [0.0, 0.0, inward * 0.5 * r]) / [2.2 * r, 2.2 * r, 2.0 * r], axis=-1
                )
                < 1.0
            )
            layers.append(("oedema", halo & body & ~node))
        layers.append(("disc", node))
        return layers, f.centre
    if between is None:
        raise ValueError(f"{finding} at {f.level} needs the body above")
    disc, upper_t = between
    if finding == "modic1":  # a degenerated (darker, thinner-looking) disc, oedema along both endplates
        return [
            ("degenerated_disc", disc),
            ("oedema", body & (t > f.superior - rng.uniform(3.0, 8.0))),
            ("oedema", above_body & (t < upper_t + rng.uniform(3.0, 8.0))),
        ], f.centre
    erosion = float(rng.uniform(1.0, 3.0))
    fluid = (footprint > 0.5) & (t > f.superior - erosion) & (t < upper_t + erosion)
    layers = [
        ("oedema", body & (t > f.superior - rng.uniform(4.0, 10.0)) & ~fluid),
        ("oedema", above_body & (t < upper_t + rng.uniform(4.0, 10.0)) & ~fluid),
        ("disc_fluid", fluid | disc),
    ]
    mid_t = 0.5 * (f.superior + upper_t)
    if rng.random() < 0.4:  # prevertebral phlegmon
        c = np.array([0.0, f.anterior - rng.uniform(2.0, 5.0), mid_t])
        radii = np.array(
            [rng.uniform(0.6, 1.0) * f.half_width, rng.uniform(3.0, 6.0), rng.uniform(8.0, 16.0)]
        )
        layers.append(("phlegmon", (np.linalg.norm((loc - c) / radii, axis=-1) < 1.0) & ~body & ~above_body))
    return layers, f.to_world(np.array([0.0, mid_p, mid_t]))


def eligible_for(finding: str, an: SpineAnatomy, f: BodyFrame) -> bool:
    """Whether ``finding`` can be rendered at body ``f`` (a cord; a body above)."""
    if finding in NEEDS_CORD and not f.has_cord:
        return False
    return not (finding in NEEDS_BODY_ABOVE and an.neighbours(f)[0] is None)


def render_plain(
    bg: Background, frame: BodyFrame, finding: str, rng: np.random.Generator, an: SpineAnatomy | None = None
) -> PlainStudy:
    """One of :data:`PLAIN_FINDINGS` at the body ``frame`` of a real study (``an``: the study's
    anatomy, derived when not given: canal findings and the disc's mimics read it)."""
    if finding not in PLAIN_FINDINGS:
        raise ValueError(f"unknown plain finding '{finding}'; choose from {', '.join(PLAIN_FINDINGS)}")
    an = an if an is not None else derive_anatomy(bg)
    f = frame
    if not eligible_for(finding, an, f):
        raise ValueError(f"{finding} cannot be rendered at {f.level} (no cord or no body above)")
    half = max(f.half_width, f.depth, f.half_height) + DISC_GAP_MM + 12.0
    if finding == "intramedullary_metastasis":
        half = max(half, 0.5 * IM_OEDEMA_SEGMENTS[1] * 2.5 * f.half_height + 4.0)
    box = box_around(bg, f.centre, half)
    loc = f.to_local(voxel_world(bg, box))
    own = bg.bodies == f.label
    own_f = own.astype(np.float32)
    # the body's footprint across the spine axis: the mask through the body's mid-height plane
    mid_plane = loc.copy()
    mid_plane[..., 2] = 0.0
    inside = ndimage.map_coordinates(own_f, _world_to_voxel(bg, f.to_world(mid_plane)), order=0)
    footprint = np.clip(ndimage.gaussian_filter(inside, 1.0), 0.0, 1.0)
    images = {s: img.astype(np.float32) for s, img in bg.images.items()}  # float copies, painted below
    body_box = own_f[box]
    # the superior endplate per voxel column (lowered by a collapse)
    top = np.full(loc.shape[:-1], f.superior)
    if finding in COLLAPSES:
        source, top = _collapse_source(loc, f, _height_loss(finding, loc, f, rng), footprint)
        coords = _world_to_voxel(bg, f.to_world(source))
        for img in images.values():  # each still the untouched study: the warp reads from it
            img[box] = ndimage.map_coordinates(img, coords, order=1)
        body_box = ndimage.map_coordinates(own_f, coords, order=0)
    body = body_box > 0.5
    canal = (loc[..., 1] > f.canal[0]) & (loc[..., 1] < f.canal[1]) & (np.abs(loc[..., 0]) < 6.0)
    canal &= np.abs(loc[..., 2]) < f.half_height
    refs = {"csf": _csf({s: img[box] for s, img in bg.images.items()}, canal)}
    marrow, sd = _marrow_stats(bg, own)
    refs["marrow"] = marrow
    if finding in ("intradural_mass", "intramedullary_metastasis"):
        layers, centre = _canal_layers(finding, bg, an, f, loc, rng)
    elif finding in ("discitis", "schmorl_node", "modic1", "haemangioma"):
        above = an.neighbours(f)[0]
        above_body = bg.bodies[box] == above.label if above is not None else np.zeros_like(body)
        between = _disc_between(loc, f, above, footprint) if above is not None else None  # once, for both
        layers, centre = _mimic_layers(finding, f, loc, body, above_body, footprint, between, rng)
        if between is not None and between[0].sum() >= 8:
            refs["disc"] = {s: float(np.median(img[box][between[0]])) for s, img in bg.images.items()}
        refs.setdefault("disc", {s: 1.3 * v for s, v in marrow.items()})  # no disc in view: about a disc's
    else:
        layers, centre = _bone_layers(finding, f, loc, body, top, rng)
    lesion = np.zeros(bg.shape, dtype=bool)
    for kind, mask in layers:
        if not mask.any():
            continue
        weight = np.clip(ndimage.gaussian_filter(mask.astype(np.float32), 0.7), 0.0, 1.0)
        reference, ranges = MULTIPLES[kind]
        for s, img in images.items():
            lo, hi = ranges.get(s, (1.0, 1.0))
            value = refs[reference][s] * float(rng.uniform(lo, hi))
            noisy = value + rng.normal(0.0, sd[s], size=weight.shape).astype(np.float32)
            img[box] = img[box] * (1.0 - weight) + weight * noisy
        lesion[box] |= mask
    for s, img in images.items():
        images[s] = np.clip(img, 0.0, None)
    whole = own.copy()
    whole[box] = body
    return PlainStudy(images, lesion, whole, np.asarray(centre, dtype=float), finding, f.level)


def _collapsed_centre(f: BodyFrame, top: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The centre of a collapsed body: mid-depth, half-way between its endplates at mid-depth."""
    mid_p = 0.5 * (f.anterior + f.posterior)
    near = np.abs(p - mid_p) < 1.5
    top_mid = float(np.median(top[near])) if near.any() else f.superior
    return f.to_world(np.array([0.0, mid_p, 0.5 * (f.inferior + top_mid)]))


def eligible_bodies(bg: Background, an: SpineAnatomy) -> list[BodyFrame]:
    """Bodies whose inferior endplate and the disc above lie inside the field of view."""
    grid = Volume(bg.bodies, bg.affine)
    mid = [0.5 * (f.anterior + f.posterior) for f in an.bodies]
    return [
        f
        for f, m in zip(an.bodies, mid, strict=True)
        if grid.contains(f.to_world(np.array([0.0, m, f.superior + DISC_GAP_MM])), 0.0)
        and grid.contains(f.to_world(np.array([0.0, m, f.inferior])), 0.0)
    ]


def _record(
    case_id: str,
    study_id: str,
    subject: str,
    split: str,
    seqs: Mapping[str, str],
    centre: np.ndarray,
    **labels: str,
) -> dict[str, Any]:
    return dict(
        case_id=case_id,
        study_id=study_id,
        patient_id=subject,
        split=split,
        **seqs,
        x_mm=round(float(centre[0]), 2),
        y_mm=round(float(centre[1]), 2),
        z_mm=round(float(centre[2]), 2),
        **labels,
    )


def _subject_records(job: tuple[Any, ...]) -> list[dict[str, Any]]:
    """One subject's records (every body untouched, then each eligible body with each finding),
    its studies written under ``out/studies``: a job of :func:`generate_plain`."""
    spec, k, split, out, seed, names, cord_levels, crop_margin_mm = job
    bg = load_background(spec)
    an = derive_anatomy(bg, set(cord_levels) if cord_levels is not None else None)
    untouched = {s: os.path.relpath(p.resolve(), out) for s, p in spec.sequences.items()}
    records = [
        _record(
            f"{spec.study_id}_body_{f.level}",
            spec.study_id,
            spec.subject,
            split,
            untouched,
            f.centre,
            compartment="none",
            fracture="none",
            level=f.level,
            finding="normal",
        )
        for f in an.bodies
    ]
    for b, f in enumerate(eligible_bodies(bg, an)):
        for finding in names:
            if not eligible_for(finding, an, f):
                continue
            # seeded by subject, body and finding: the same studies whatever the number of workers
            rng = np.random.default_rng([seed, k, b, list(PLAIN_FINDINGS).index(finding)])
            study = render_plain(bg, f, finding, rng, an)
            study_id = f"{spec.study_id}_plain_{finding}_{f.level}"
            paths = write_crop(bg, study.images, [study.centre], out / "studies" / study_id, crop_margin_mm)
            compartment, fracture = PLAIN_FINDINGS[finding]
            records.append(
                _record(
                    f"{study_id}_r0",
                    study_id,
                    spec.subject,
                    split,
                    {s: os.path.relpath(path, out) for s, path in paths.items()},
                    study.centre,
                    compartment=compartment,
                    fracture=fracture,
                    level=f.level,
                    finding=finding,
                )
            )
    return records


def generate_plain(
    backgrounds: str | Path,
    subjects: Sequence[str] | Mapping[str, str],
    out: str | Path,
    seed: int = 0,
    levels: Sequence[str] | None = None,
    crop_margin_mm: float = 58.0,
    bottom_level: Mapping[str, str] | None = None,
    cord_levels: Sequence[str] | None = None,
    findings: Sequence[str] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Every eligible body of each subject with each plain finding (one body per study), plus
    every body of the untouched studies (none/none) -> ``out/manifest.csv``.

    ``subjects``: names (all in the test split), or subject -> split, so that a training mix
    can hold one renderer's training subjects and its checks their held-out ones.
    ``findings``: a subset of :data:`PLAIN_FINDINGS` (all by default). ``workers``: processes,
    one subject each (the same manifest and studies whatever their number)."""
    from tqdm.auto import tqdm

    from spinelesion.parallel import map_jobs

    out = Path(out).resolve()
    split_of = dict(subjects) if isinstance(subjects, Mapping) else {s: "test" for s in subjects}
    names = list(findings) if findings is not None else list(PLAIN_FINDINGS)
    unknown = sorted(set(names) - set(PLAIN_FINDINGS))
    if unknown:
        raise ValueError(
            f"unknown plain finding(s) {', '.join(unknown)}; choose from {', '.join(PLAIN_FINDINGS)}"
        )
    specs = [
        s
        for s in discover_backgrounds(backgrounds, levels, bottom_level=bottom_level)
        if s.subject in split_of
    ]
    missing = set(split_of) - {s.subject for s in specs}
    if missing:
        raise FileNotFoundError(f"{backgrounds}: no study with body masks for {', '.join(sorted(missing))}")
    jobs = [
        (spec, k, split_of[spec.subject], out, seed, names, cord_levels, crop_margin_mm)
        for k, spec in enumerate(specs)
    ]
    records: list[dict[str, Any]] = []
    done = map_jobs(_subject_records, jobs, workers)
    for part in tqdm(done, total=len(jobs), desc="plain renderer", unit="subject", disable=not progress):
        records.extend(part)
    return write_manifest(out / "manifest.csv", records)
