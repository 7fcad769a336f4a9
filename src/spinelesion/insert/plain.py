"""A second, plain lesion renderer: does the model read the radiology, or this project's insertion?

The released model is checked from outside on lesions inserted into real normal spines by code
written apart from this project: a lytic deposit, an osteoporotic wedge fracture with an oedema
band, or a pathologic collapse with whole-body replacement and a convex posterior wall, one body
per study. A model that learnt the habits of :mod:`spinelesion.insert` (its soft edges, its signal
recipes, its deformation fields) could pass its own held-out checks and fail there. This module
renders those three findings of docs/radiology.md the plainest way and shares no painting or
deformation code with the main insertion (only the body frames derived from the study's masks):

- signal as fixed multiples of the body's own median marrow signal per sequence;
- hard-edged shapes softened by one voxel's blur, Gaussian noise of the marrow's fine texture;
- height loss by stretching each column of the body along the spine axis, anterior more than
  posterior for a wedge, the disc above stretched into the gap; a convex posterior wall drawn
  as a parabola of lesion signal behind the body.

``generate_plain`` writes a contract manifest (crops of the inserted studies plus every body of
the untouched studies, none/none) for ``spinelesion-evaluate``.
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
from spinelesion.insert.anatomy import BodyFrame, SpineAnatomy, box_around, derive_anatomy, voxel_world
from spinelesion.insert.background import Background, discover_backgrounds, load_background
from spinelesion.insert.dataset import write_crop
from spinelesion.io.volume import Volume, apply_affine

# finding -> (compartment, fracture), the contract's labels
PLAIN_FINDINGS: dict[str, tuple[str, str]] = {
    "lytic_metastasis": ("extradural", "none"),
    "osteoporotic_fracture": ("none", "benign"),
    "pathologic_fracture": ("extradural", "pathologic"),
}
# Signal as a multiple of the body's median marrow signal, drawn per study and sequence.
# radiology.md: a lytic deposit and marrow oedema are T1 dark and T2 / STIR bright; the band of
# impacted trabeculae is dark on T1 and T2; whole-body replacement is abnormal on every sequence.
MULTIPLES: dict[str, dict[str, tuple[float, float]]] = {
    "lytic": {"t1": (0.45, 0.65), "t2": (1.5, 2.2), "stir": (2.0, 3.0), "t1c": (1.0, 1.4)},
    "oedema": {"t1": (0.5, 0.7), "t2": (1.4, 1.9), "stir": (1.8, 2.6), "t1c": (0.9, 1.2)},
    "line": {"t1": (0.35, 0.5), "t2": (0.45, 0.65), "stir": (0.6, 0.8), "t1c": (0.4, 0.6)},
    "replacement": {"t1": (0.45, 0.65), "t2": (1.3, 1.9), "stir": (1.8, 2.6), "t1c": (1.0, 1.4)},
}
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


def _collapse_source(
    loc: np.ndarray, f: BodyFrame, loss_anterior: float, loss_posterior: float, footprint: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where each voxel of a collapsed body reads from (local mm), and the new superior endplate.

    Inside the body's footprint the column between the inferior endplate and the lowered superior
    one is stretched from the whole body; above it the disc is stretched down into the gap."""
    p, t = loc[..., 1], loc[..., 2]
    frac = np.clip((p - f.anterior) / max(f.depth, 1e-6), 0.0, 1.0)
    loss = loss_anterior + (loss_posterior - loss_anterior) * frac
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


def render_plain(bg: Background, frame: BodyFrame, finding: str, rng: np.random.Generator) -> PlainStudy:
    """One of :data:`PLAIN_FINDINGS` in the body ``frame`` of a real study."""
    if finding not in PLAIN_FINDINGS:
        raise ValueError(f"unknown plain finding '{finding}'; choose from {', '.join(PLAIN_FINDINGS)}")
    f = frame
    half = max(f.half_width, f.depth, f.half_height) + DISC_GAP_MM + 12.0
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
    if finding != "lytic_metastasis":
        if finding == "osteoporotic_fracture":  # a wedge: the anterior height goes
            loss_a, loss_p = float(rng.uniform(0.2, 0.45)), float(rng.uniform(0.0, 0.08))
        else:  # a collapse of the whole body
            loss_a = float(rng.uniform(0.2, 0.45))
            loss_p = float(np.clip(loss_a + rng.uniform(-0.05, 0.05), 0.15, 0.5))
        source, top = _collapse_source(loc, f, loss_a, loss_p, footprint)
        coords = _world_to_voxel(bg, f.to_world(source))
        for img in images.values():  # each still the untouched study: the warp reads from it
            img[box] = ndimage.map_coordinates(img, coords, order=1)
        body_box = ndimage.map_coordinates(own_f, coords, order=0)
    body = body_box > 0.5
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
        centre = f.centre
    elif finding == "osteoporotic_fracture":
        depth = float(rng.uniform(4.0, 9.0))
        layers.append(("oedema", body & (t > top - depth) & (t <= top)))  # oedema under the endplate
        at = top - depth * float(rng.uniform(0.3, 0.6))
        layers.append(("line", body & (np.abs(t - at) < 0.8)))  # the low-signal band parallel to it
        centre = _collapsed_centre(f, top, p)
    else:
        # convex posterior wall: a parabola of lesion tissue behind the body, deepest at mid-height
        top_p = (
            float(np.median(top[np.abs(p - f.posterior) < 1.5]))
            if (np.abs(p - f.posterior) < 1.5).any()
            else f.superior
        )
        mid, half_h = 0.5 * (f.inferior + top_p), 0.5 * (top_p - f.inferior)
        bulge = float(rng.uniform(2.0, 4.0)) * np.clip(1.0 - ((t - mid) / max(half_h, 1e-6)) ** 2, 0.0, 1.0)
        wall = (p > f.posterior - 1.0) & (p <= f.posterior + bulge) & (np.abs(lat) <= 0.6 * f.half_width)
        layers.append(("replacement", body | (wall & (bulge > 0.3))))
        centre = _collapsed_centre(f, top, p)
    lesion = np.zeros(bg.shape, dtype=bool)
    marrow, sd = _marrow_stats(bg, own)
    for kind, mask in layers:
        weight = np.clip(ndimage.gaussian_filter(mask.astype(np.float32), 0.7), 0.0, 1.0)
        for s, img in images.items():
            lo, hi = MULTIPLES[kind].get(s, (1.0, 1.0))
            value = marrow[s] * float(rng.uniform(lo, hi))
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
    case_id: str, study_id: str, subject: str, seqs: Mapping[str, str], centre: np.ndarray, **labels: str
) -> dict[str, Any]:
    return dict(
        case_id=case_id,
        study_id=study_id,
        patient_id=subject,
        split="test",
        **seqs,
        x_mm=round(float(centre[0]), 2),
        y_mm=round(float(centre[1]), 2),
        z_mm=round(float(centre[2]), 2),
        **labels,
    )


def generate_plain(
    backgrounds: str | Path,
    subjects: Sequence[str],
    out: str | Path,
    seed: int = 0,
    levels: Sequence[str] | None = None,
    crop_margin_mm: float = 58.0,
    bottom_level: Mapping[str, str] | None = None,
) -> Path:
    """Every eligible body of each subject with each plain finding (one body per study), plus
    every body of the untouched studies (none/none) -> ``out/manifest.csv``."""
    out = Path(out).resolve()
    wanted = set(subjects)
    specs = [
        s for s in discover_backgrounds(backgrounds, levels, bottom_level=bottom_level) if s.subject in wanted
    ]
    missing = wanted - {s.subject for s in specs}
    if missing:
        raise FileNotFoundError(f"{backgrounds}: no study with body masks for {', '.join(sorted(missing))}")
    records: list[dict[str, Any]] = []
    for k, spec in enumerate(specs):
        bg = load_background(spec)
        an = derive_anatomy(bg)
        untouched = {s: os.path.relpath(p.resolve(), out) for s, p in spec.sequences.items()}
        for f in an.bodies:
            records.append(
                _record(
                    f"{spec.study_id}_body_{f.level}",
                    spec.study_id,
                    spec.subject,
                    untouched,
                    f.centre,
                    compartment="none",
                    fracture="none",
                    level=f.level,
                    finding="normal",
                )
            )
        for b, f in enumerate(eligible_bodies(bg, an)):
            for n, finding in enumerate(PLAIN_FINDINGS):
                rng = np.random.default_rng([seed, k, b, n])
                study = render_plain(bg, f, finding, rng)
                study_id = f"{spec.study_id}_plain_{finding}_{f.level}"
                paths = write_crop(
                    bg, study.images, [study.centre], out / "studies" / study_id, crop_margin_mm
                )
                seqs = {s: os.path.relpath(path, out) for s, path in paths.items()}
                compartment, fracture = PLAIN_FINDINGS[finding]
                records.append(
                    _record(
                        f"{study_id}_r0",
                        study_id,
                        spec.subject,
                        seqs,
                        study.centre,
                        compartment=compartment,
                        fracture=fracture,
                        level=f.level,
                        finding=finding,
                    )
                )
    return write_manifest(out / "manifest.csv", records)
