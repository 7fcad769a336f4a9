"""One real T2 spine imaged as a T1 or a STIR: real anatomy under another sequence's contrast.

Only one real lumbar site in ``../shared`` has T1 and STIR exams (VB1); the model that must
read a new site's T1 and STIR without having seen it learnt those sequences from the phantom
alone (left out, VB1's STIR bodies were 0.72 called normal, T1 0.92: 2026-12-07). SynthSeg
trains on real label maps under random contrasts; here each tissue of a real T2 is given the
signal that ``docs/radiology.md`` says it has on the target sequence, relative to the same
study's other tissues, and the study's own texture and noise are kept. The ranges hold the
literature's relations and take in what the real T1 and STIR exams of ``../shared`` measure
(VB1, 2026-12-07: T1 fat 2.3-3.3x muscle, marrow 1.1-1.6x, CSF 0.5x, disc 0.7-1.0x; STIR fat
0.2x, marrow 0.9x, CSF 2.5-2.9x, disc 1.2-1.3x):

============  ==========================  ====================================
tissue        T1                          STIR
============  ==========================  ====================================
fat           brightest (2.2-3.6x muscle) suppressed (0.15-0.6x muscle)
marrow        bright (1.05-1.7x muscle)   dark, about muscle (0.6-1.1x)
CSF           dark (0.35-0.65x muscle)    bright, as on T2
disc          intermediate (0.7-1.05x)    bright nucleus, as on T2
muscle        intermediate                intermediate
============  ==========================  ====================================

Where each tissue lies comes from the study's masks and derived anatomy
(:func:`~spinelesion.insert.anatomy.derive_anatomy`): the labelled bodies, the CSF run behind
each body (the thecal sac, carried a level above the first labelled body and a body's height
below the last: the sac runs on to S2), the discs between bodies; anything else brighter than muscle is taken for
fat (on a T2 fast spin echo fat and fluid are both bright: bowel and bladder fluid away from
the spine become T1-bright, a known error of this map, away from every ROI the model reads).
Lesions are inserted after the synthesis, painted with the target sequence's radiology relative
to the synthesised tissues (:mod:`spinelesion.insert.paint`), as on a real T1 or STIR.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from spinelesion.insert.anatomy import SpineAnatomy, box_around, local_coords
from spinelesion.insert.background import Background
from spinelesion.io.body_outline import under_skin_layers

TARGETS = ("t1", "stir")
SAC_HALF_WIDTH_MM = 10.0  # the lumbar thecal sac is ~15-20 mm wide
SAC_MARGIN_MM = (2.0, 5.0)  # the sac: the CSF run found behind a body, this much wider in front and behind
SOFT_MM = 1.0  # region edges blurred this much: no seam where one tissue's map meets another's


def fat_level(image: np.ndarray, affine: np.ndarray) -> float | None:
    """The subcutaneous fat level of a study (75th percentile of the layer under the skin, as the
    contrast check measures it: :mod:`spinelesion.inference.contrast`); None without air around it."""
    layers = under_skin_layers(image, affine, deep_mm=np.inf)
    if layers is None or layers[0].size < 100:
        return None
    return float(np.percentile(layers[0], 75))


def tissue_regions(bg: Background, an: SpineAnatomy) -> dict[str, np.ndarray]:
    """Boolean maps of the bodies, the thecal sac (the CSF run behind each body, a level
    above the first and a body's height below the last) and the discs, on ``bg``'s grid."""
    shape = bg.shape
    sac = np.zeros(shape, bool)
    disc = np.zeros(shape, bool)
    frames = an.bodies
    for i, f in enumerate(frames):
        below = frames[i + 1] if i + 1 < len(frames) else None
        gap = 10.0 if below is None else float(np.linalg.norm(below.centre - f.centre)) - 2 * f.half_height
        gap = float(np.clip(gap, 4.0, 16.0))
        # the sac of this level: from the body's top to the next body (past the ends: further)
        top = f.superior + (2 * f.half_height + gap if i == 0 else 0.0)
        bottom = f.inferior - (gap if below is not None else f.half_height + gap)
        lo, hi = sorted((top, bottom))
        half = max(abs(lo), abs(hi), f.canal[1] + SAC_MARGIN_MM[1], -f.anterior, f.half_width) + 4.0
        box = box_around(bg, f.centre, half)
        local = local_coords(bg, box, f)
        l_, p_, t_ = local[..., 0], local[..., 1], local[..., 2]
        # the CSF run as found behind the body's middle, widened: across a level the sac drifts
        # against the body's frame (lordosis), and CSF left bright on a T1 is a sign of nothing
        c0, c1 = f.canal[0] - SAC_MARGIN_MM[0], f.canal[1] + SAC_MARGIN_MM[1]
        sac[box] |= (np.abs(l_) <= SAC_HALF_WIDTH_MM) & (p_ >= c0) & (p_ <= c1) & (t_ >= lo) & (t_ <= hi)
        low_end = f.inferior - gap
        disc[box] |= (
            (np.abs(l_) <= f.half_width)
            & (p_ >= f.anterior)
            & (p_ <= f.posterior)
            & (t_ <= f.inferior)
            & (t_ >= min(low_end, f.inferior))
        )
    bodies = bg.bodies > 0
    disc &= ~bodies
    return {"bodies": bodies, "sac": sac & ~bodies, "disc": disc & ~sac}


def synthesise(
    bg: Background, an: SpineAnatomy, target: str, rng: np.random.Generator, source: str = "t2"
) -> Background:
    """The study of ``bg`` imaged as ``target`` (t1 or stir) alone, made from its ``source`` image."""
    if target not in TARGETS:
        raise ValueError(f"contrast synthesis: target {target!r} is not one of {', '.join(TARGETS)}")
    if source not in bg.images:
        raise ValueError(f"{bg.spec.study_id}: no {source} image to synthesise {target} from")
    u = np.asarray(bg.images[source], np.float32)
    t = an.tissues[source]
    muscle, marrow = float(t["muscle"]), float(t["marrow"])
    csf, disc_ref = float(t["csf"]), float(t["disc"])
    fat = fat_level(u, bg.affine)
    if fat is None or fat <= muscle * 1.1:
        fat = float(np.percentile(u[u > muscle], 90)) if (u > muscle).any() else 2.0 * muscle
    regions = tissue_regions(bg, an)
    sigma = SOFT_MM / bg.spacing
    w = {k: ndimage.gaussian_filter(v.astype(np.float32), sigma) for k, v in regions.items()}
    w["other"] = np.clip(1.0 - w["bodies"] - w["sac"] - w["disc"], 0.0, 1.0)
    fatness = np.clip((u - muscle) / max(fat - muscle, 1e-6), 0.0, 1.0)
    if target == "stir":
        residual = rng.uniform(0.15, 0.6) * muscle  # fat left after inversion recovery
        maps = {
            "other": u * (1.0 - fatness * (1.0 - residual / max(fat, 1e-6))),  # texture kept
            "bodies": u * (rng.uniform(0.6, 1.1) * muscle / max(marrow, 1e-6)),
            "sac": u,  # CSF bright, roots and cord dark in it, as on T2
            "disc": u,
        }
    else:
        fat_t1 = rng.uniform(2.2, 3.6) * muscle
        csf_t1 = rng.uniform(0.35, 0.65) * muscle
        # fluid from halfway between muscle and CSF up (noise and partial volume below the CSF
        # reference stay fluid); the cord and roots (1.05-1.5x muscle on T2) mostly keep their signal
        fluidness = np.clip((u - muscle) / max(0.5 * (csf - muscle), 1e-6), 0.0, 1.0)
        maps = {
            "other": u * (1.0 + fatness * (fat_t1 / max(fat, 1e-6) - 1.0)),
            "bodies": u * (rng.uniform(1.05, 1.7) * muscle / max(marrow, 1e-6)),
            # CSF dark; what is no brighter than muscle there (roots, cord, ligament) keeps its signal
            "sac": u + fluidness * (csf_t1 - u),
            "disc": u * (rng.uniform(0.7, 1.05) * muscle / max(disc_ref, 1e-6)),
        }
    total = sum(w[k] for k in maps)
    v = sum(w[k] * maps[k] for k in maps) / np.maximum(total, 1e-6)
    # Within the source's range (its storage type: vb2 is 8-bit): a brighter image is scaled down
    # towards its noise floor (the air, where there is air: a raised floor reads as no air).
    floor = min(float(np.percentile(u, 0.5)), float(np.percentile(v, 0.5)))
    top, peak = float(np.percentile(u, 99.9)), float(np.percentile(v, 99.9))
    if peak > top:
        v = floor + (v - floor) * ((top - floor) / max(peak - floor, 1e-6))
    v = np.clip(v, 0.0, None)
    return replace(bg, images={target: v.astype(np.float32)}, dtypes={target: bg.dtypes[source]})
