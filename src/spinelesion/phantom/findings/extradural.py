"""Extradural findings: body metastases, epidural extension, paraspinal mass (radiology.md, task A)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spinelesion.phantom.anatomy import Anatomy
from spinelesion.phantom.canvas import Canvas, ellipsoid_distance, smooth_noise, soft
from spinelesion.phantom.findings.base import Features, Finding, blob_in_body, plateau, textured, uvw_to_lps
from spinelesion.phantom.findings.signals import (
    STIR,
    T2,
    blastic_values,
    lytic_values,
    necrosis_values,
    soft_tissue_mass_values,
)
from spinelesion.phantom.tissues import TissueTable


class BodyMetastasis(Finding):
    """Lytic, blastic or mixed marrow replacement favouring the posterior body and pedicle."""

    def __init__(self, kind: str = "lytic") -> None:
        super().__init__(name=f"{kind}_metastasis")
        self.kind = kind

    def draw_signs(self, rng: np.random.Generator, feat: Features) -> None:
        self.draw(
            rng,
            feat,
            posterior_body="metastasis_posterior_rate",
            pedicle="metastasis_pedicle_rate",
            halo="halo_rate",
        )
        self.signs["halo"] = self.signs["halo"] and self.kind == "lytic"

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        v = an.vertebrae[self.level_index]
        r = rng.uniform(*feat["metastasis_radius_mm"])
        radii = np.array([r * rng.uniform(0.8, 1.3), r * rng.uniform(0.75, 1.1), r * rng.uniform(0.7, 1.0)])
        radii = np.minimum(radii, [v.width / 2 - 2, v.depth / 2 - 2, v.height / 2 - 1.5])
        vc = (
            rng.uniform(0.05, 0.3) * v.depth
            if self.signs["posterior_body"]
            else rng.uniform(-0.3, 0.1) * v.depth
        )
        uc = rng.uniform(-0.3, 0.3) * v.width
        wc = rng.uniform(-0.2, 0.2) * v.height
        out = blob_in_body(cv, an, v, rng, np.array([uc, vc, wc]), radii, pedicle=self.signs["pedicle"])
        if out is None:
            return
        box, mask, noise, _ = out
        if self.kind == "lytic":
            vals = textured(lytic_values(tt, rng), noise, rng)
        elif self.kind == "blastic":
            vals = textured(blastic_values(tt, rng), noise, rng)
        else:  # mixed: sclerotic islands within a lytic lesion
            islands = (noise > rng.uniform(-0.2, 0.5)).astype(np.float32)
            vals = (
                lytic_values(tt, rng)[:, None, None, None] * (1 - islands[None])
                + blastic_values(tt, rng)[:, None, None, None] * islands[None]
            )
        cv.paint(box, mask, vals)
        if self.signs["halo"]:
            u, vv, w = v.local(*cv.coords(box))
            rim = mask * (1 - soft(ellipsoid_distance(u - uc, vv - vc, w - wc, radii * 0.75), 1.0))
            cv.paint(box, rim, tt.mix(lytic_values(tt, rng), "csf", 0.5), channels=[T2, STIR])
        self.record("lesion", box, mask)
        self.center = v.center + uvw_to_lps(v, np.array([uc, vc, wc]))
        self.occupies = {self.level_index}


class EpiduralExtension(Finding):
    """Anterior epidural soft tissue behind a body ("draped curtain" sparing the midline)."""

    def __init__(self) -> None:
        super().__init__(name="epidural_extension")
        self.indent: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: Features) -> None:
        v = an.vertebrae[self.level_index]
        z0 = float(v.center[2] + rng.uniform(-0.25, 0.25) * v.height)
        half = float(rng.uniform(0.35, 0.8) * v.height)
        thick = float(rng.uniform(*feat["epidural_thickness_mm"]))
        spare = float(rng.uniform(0.45, 0.8))
        half_w = an.canal_w / 2 - 1.0
        self.params.update(z0=z0, half=half, thick=thick, spare=spare, half_w=half_w)

        def indent(x: np.ndarray, z: np.ndarray) -> np.ndarray:
            prof = np.clip(1 - (x / half_w) ** 2, 0, 1) * (1 - spare * np.exp(-((x / 2.5) ** 2)))
            return thick * prof * plateau(z, z0, half, 6.0)

        an.mods.sac_indent_front.append(indent)
        an.mods.cord_dv.append(lambda z: 0.45 * thick * plateau(z, z0, half, 8.0))
        self.indent = indent
        self.occupies = {self.level_index}

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        p = self.params
        z0, half, thick = p["z0"], p["half"], p["thick"]
        front_mid = float(an.canal_front(np.array([z0]))[0])
        box = cv.box(
            [-an.canal_w / 2 - 2, front_mid - 6, z0 - half - 10],
            [an.canal_w / 2 + 2, front_mid + thick + 6, z0 + half + 10],
        )
        if box is None or self.indent is None:
            return
        x, y, z = cv.coords(box)
        front = an.canal_front(z)
        depth_in = self.indent(x, z)
        d = np.maximum(front - 0.5 - y, (y - front) - depth_in)
        mask = soft(d, 1.0) * (depth_in > 0.3)
        noise = smooth_noise(rng, mask.shape, 3.0)
        cv.paint(box, mask, textured(soft_tissue_mass_values(tt, rng), noise, rng))
        self.record("lesion", box, mask)
        self.center = np.array([0.0, front_mid + 0.45 * thick, z0])


class ParaspinalMass(Finding):
    """Soft-tissue mass beside the body, sometimes with a necrotic centre."""

    def __init__(self) -> None:
        super().__init__(name="paraspinal_mass")

    def draw_signs(self, rng: np.random.Generator, feat: Features) -> None:
        self.draw(rng, feat, necrotic_centre="paraspinal_necrosis_rate")

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        v = an.vertebrae[self.level_index]
        side = float(rng.choice([-1.0, 1.0]))
        radii = np.array([rng.uniform(8, 16), rng.uniform(9, 18), rng.uniform(12, 26)])
        c = v.center + np.array(
            [
                side * (v.width / 2 + radii[0] * rng.uniform(0.1, 0.6)),
                rng.uniform(-0.35, 0.3) * v.depth,
                rng.uniform(-0.3, 0.3) * v.height,
            ]
        )
        box = cv.box(c - radii - 4, c + radii + 4)
        if box is None:
            return
        x, y, z = cv.coords(box)
        noise = smooth_noise(rng, np.broadcast_shapes(x.shape, y.shape, z.shape), 3.0)
        d = ellipsoid_distance(x - c[0], y - c[1], z - c[2], radii) + 1.5 * noise
        mask = soft(d, 1.5)
        vals = textured(soft_tissue_mass_values(tt, rng), noise, rng)
        if self.signs.get("necrotic_centre"):  # T2 bright, not enhancing
            core = soft(ellipsoid_distance(x - c[0], y - c[1], z - c[2], radii * 0.45), 1.5)
            vals = vals * (1 - core[None]) + necrosis_values(tt)[:, None, None, None] * core[None]
        cv.paint(box, mask, vals)
        self.record("lesion", box, mask)
        self.center = c
        self.occupies = {self.level_index}
