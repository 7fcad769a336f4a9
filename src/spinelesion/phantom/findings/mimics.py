"""Mimics that must not be called malignant: haemangioma, Modic 1, Schmorl node, discitis."""

from __future__ import annotations

import numpy as np

from spinelesion.phantom.anatomy import Anatomy, disc_distance
from spinelesion.phantom.canvas import Canvas, ellipsoid_distance, smooth_noise, soft
from spinelesion.phantom.findings.base import Features, Finding, blob_in_body, body_box, textured, uvw_to_lps
from spinelesion.phantom.findings.signals import (
    T1C,
    haemangioma_values,
    infected_disc_values,
    oedema_values,
    rim_enhancement,
    soft_tissue_mass_values,
)
from spinelesion.phantom.tissues import TissueTable


class Haemangioma(Finding):
    """T1- and T2-bright well-defined lesion with vertical dark trabeculae (corduroy)."""

    def __init__(self) -> None:
        super().__init__(name="haemangioma")

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        v = an.vertebrae[self.level_index]
        r = rng.uniform(*feat["haemangioma_radius_mm"])
        radii = np.minimum(
            np.array([r, r * rng.uniform(0.8, 1.1), r * rng.uniform(0.8, 1.1)]),
            [v.width / 2 - 2, v.depth / 2 - 2, v.height / 2 - 1.5],
        )
        c = np.array(
            [
                rng.uniform(-0.25, 0.25) * v.width,
                rng.uniform(-0.25, 0.2) * v.depth,
                rng.uniform(-0.2, 0.2) * v.height,
            ]
        )
        out = blob_in_body(cv, an, v, rng, c, radii, irregular=0.5)
        if out is None:
            return
        box, mask, noise, (u, vv, w) = out
        full = textured(haemangioma_values(tt, rng), noise, rng)
        # corduroy: thickened vertical trabeculae, dark columns running along the spine
        lam = rng.uniform(2.5, 4.0)
        cols = ((np.cos(2 * np.pi * u / lam) > 0.8) | (np.cos(2 * np.pi * vv / lam) > 0.8)).astype(np.float32)
        cols = np.broadcast_to(cols, mask.shape)
        full = full * (1 - 0.45 * cols[None])
        cv.paint(box, mask, full)
        self.record("lesion", box, mask)
        self.center = v.center + uvw_to_lps(v, c)
        self.occupies = {self.level_index}


class Modic1(Finding):
    """Degenerated, narrowed disc with oedema bands along both endplates."""

    def __init__(self) -> None:
        super().__init__(name="modic1")

    def modify(self, an: Anatomy, rng: np.random.Generator, feat: Features) -> None:
        disc = an.discs[min(self.level_index, len(an.discs) - 1)]
        disc.degeneration = float(rng.uniform(0.75, 1.0))
        disc.height *= float(rng.uniform(0.55, 0.8))
        self.occupies = {self.level_index, self.level_index + 1}

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        di = min(self.level_index, len(an.discs) - 1)
        disc = an.discs[di]
        masks = []
        vals = oedema_values(tt, rng, strength=rng.uniform(0.8, 1.0))
        for v, sign in (
            (disc.upper, -1.0),
            (disc.lower, 1.0),
        ):  # inferior plate of the upper body, superior of the lower
            box = body_box(cv, v)
            if box is None:
                continue
            u, vv, w = v.local(*cv.coords(box))
            noise = smooth_noise(rng, np.broadcast_shapes(u.shape, vv.shape, w.shape), 2.5)
            hh = v.half_height(u, vv)
            from_plate = hh + sign * w
            band = float(rng.uniform(*feat["modic_band_mm"]))
            ap = soft(np.abs(vv - rng.uniform(-0.2, 0.2) * v.depth) - rng.uniform(0.25, 0.5) * v.depth, 2.0)
            mask = soft(from_plate - band + 1.2 * noise, 1.2) * soft(v.body_distance(u, vv, w) + 1.0) * ap
            cv.paint(box, mask, textured(vals, noise, rng))
            masks.append((box, mask))
        if masks:
            self.record("lesion", *masks[0])
        self.center = disc.center + np.array([0.0, rng.uniform(-0.2, 0.2) * disc.upper.depth, 0.0])


class SchmorlNode(Finding):
    """Endplate defect with disc material and a sclerotic rim, oedema around it at its rate."""

    def __init__(self) -> None:
        super().__init__(name="schmorl_node")

    def draw_signs(self, rng: np.random.Generator, feat: Features) -> None:
        self.draw(rng, feat, oedema="schmorl_oedema_rate")

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        v = an.vertebrae[self.level_index]
        box = body_box(cv, v)
        if box is None:
            return
        u, vv, w = v.local(*cv.coords(box))
        superior = rng.random() < 0.5
        sgn = 1.0 if superior else -1.0
        hh = float(np.mean(v.half_height(np.zeros(1), np.zeros(1))))
        r = rng.uniform(3.0, 6.5)
        c = np.array([rng.uniform(-0.2, 0.2) * v.width, rng.uniform(-0.25, 0.2) * v.depth, sgn * hh])
        d = ellipsoid_distance(u - c[0], vv - c[1], w - c[2], (r, r, r * 1.1))
        marrow = soft(v.body_distance(u, vv, w) + 0.2)
        if self.signs.get("oedema"):
            halo = soft(d - rng.uniform(2.5, 6.0), 2.0) * marrow
            cv.paint(box, halo, oedema_values(tt, rng, strength=rng.uniform(0.6, 1.0)))
        cv.paint(box, soft(d + 0.0, 0.8) * marrow, tt["cortex"])  # sclerotic rim
        node = soft(d + 1.0, 0.8) * marrow
        cv.paint(box, node, tt.mix("annulus", "nucleus", 0.4))
        self.record("lesion", box, soft(d, 1.0) * marrow)
        self.center = v.center + uvw_to_lps(v, c - np.array([0, 0, sgn * r * 0.4]))
        self.occupies = {self.level_index}


class Discitis(Finding):
    """Discitis-osteomyelitis: crosses the disc, both endplates and both bodies involved."""

    def __init__(self) -> None:
        super().__init__(name="discitis")

    def draw_signs(self, rng: np.random.Generator, feat: Features) -> None:
        self.draw(rng, feat, phlegmon="phlegmon_rate")

    def modify(self, an: Anatomy, rng: np.random.Generator, feat: Features) -> None:
        disc = an.discs[min(self.level_index, len(an.discs) - 1)]
        disc.height *= float(rng.uniform(0.55, 0.85))
        self.occupies = {self.level_index, self.level_index + 1}

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        disc = an.discs[min(self.level_index, len(an.discs) - 1)]
        oed = oedema_values(tt, rng, strength=rng.uniform(0.85, 1.0))
        reach = float(rng.uniform(*feat["discitis_oedema_mm"]))
        for v, sign in ((disc.upper, -1.0), (disc.lower, 1.0)):
            box = body_box(cv, v)
            if box is None:
                continue
            u, vv, w = v.local(*cv.coords(box))
            noise = smooth_noise(rng, np.broadcast_shapes(u.shape, vv.shape, w.shape), 2.5)
            from_plate = v.half_height(u, vv) + sign * w
            body = soft(v.body_distance(u, vv, w))  # includes the cortex: endplates eroded
            mask = soft(from_plate - reach + 2.0 * noise, 2.0) * body
            cv.paint(box, mask, textured(oed, noise, rng))
        box = cv.box(
            disc.center - np.array([disc.upper.width / 2 + 4, disc.upper.depth / 2 + 4, disc.height + 5]),
            disc.center + np.array([disc.upper.width / 2 + 4, disc.upper.depth / 2 + 4, disc.height + 5]),
        )
        if box is None:
            return
        u, vv, w = disc.local(*cv.coords(box))
        whole, _ = disc_distance(disc, u, vv, w)
        fluid = soft(whole + 0.5, 1.0)
        cv.paint(box, fluid, infected_disc_values(tt, rng))
        rim = fluid * (1 - soft(whole + 2.5, 1.0))
        cv.paint(box, rim, rim_enhancement(tt, rng), channels=[T1C])
        if self.signs.get("phlegmon"):
            x, y, z = cv.coords(box)
            front = disc.center[1] - disc.upper.depth / 2
            phleg = soft(
                np.maximum(np.abs(y - (front - 4)) - 3.5, np.abs(z - disc.center[2]) - disc.height - 6), 1.5
            )
            phleg = phleg * soft(np.abs(x) - disc.upper.width / 2, 2.0)
            cv.paint(box, phleg, soft_tissue_mass_values(tt, rng))
        self.record("lesion", box, fluid)
        self.center = disc.center.copy()
