"""Compression fractures, benign (osteoporotic) or pathologic (malignant): radiology.md, task B.

Both collapse a body with oedema; the morphology decides. Each sign of the table is drawn
on its own at its configured rate (sources in ``docs/phantom.md``), so a benign fracture can
bulge and a pathologic one can hold a fluid cleft: the hard cases real series contain.
"""

from __future__ import annotations

import numpy as np

from spinelesion.phantom.anatomy import Anatomy, posterior_element_distance
from spinelesion.phantom.canvas import Canvas, ellipsoid_distance, smooth_noise, soft
from spinelesion.phantom.findings.base import Features, Finding, body_box, chance, plateau, textured
from spinelesion.phantom.findings.signals import (
    T1,
    T2,
    blastic_values,
    fluid_values,
    lytic_values,
    oedema_values,
    sclerotic_band_values,
)
from spinelesion.phantom.tissues import TissueTable

SHAPES = ("wedge", "biconcave", "crush")


class Fracture(Finding):
    """Compression fracture; ``benign`` (osteoporotic) or ``pathologic`` (malignant).

    ``chronic``: an old, healed benign fracture (collapse, normal marrow, no oedema);
    ``secondary``: an extra old fracture at another level of a study (its ROI is optional).
    """

    def __init__(self, kind: str = "benign", chronic: bool = False, secondary: bool = False) -> None:
        name = "osteoporotic_fracture" if kind == "benign" else "pathologic_fracture"
        super().__init__(name=name)
        self.kind, self.chronic, self.secondary = kind, chronic, secondary
        self.shape = "wedge"

    def draw_signs(self, rng: np.random.Generator, feat: Features) -> None:
        if self.kind == "benign":
            if not self.secondary:
                self.chronic = chance(rng, feat["benign_chronic_rate"])
            self.draw(
                rng,
                feat,
                whole_body_oedema="benign_diffuse_oedema_rate",
                fracture_line="fracture_line_rate",
                fluid_sign="fluid_sign_rate",
                retropulsion="retropulsion_rate",
                convex_border="benign_convex_border_rate",
                posterior_elements="benign_posterior_element_rate",
                concave_endplate="benign_concave_endplate_rate",
                multiple="benign_multiple_rate",
            )
            if self.chronic:  # healed: no oedema and nothing that needs it
                for sign in ("whole_body_oedema", "fracture_line", "fluid_sign", "posterior_elements"):
                    self.signs[sign] = False
            if self.chronic or self.secondary:
                self.signs["retropulsion"] = self.signs["multiple"] = False
            self.signs["oedema"] = not self.chronic
        else:
            self.draw(
                rng,
                feat,
                whole_body="pathologic_whole_body_rate",
                convex_border="convex_border_rate",
                posterior_elements="pathologic_pedicle_rate",
                angled_endplate="pathologic_angled_endplate_rate",
                fluid_sign="pathologic_fluid_sign_rate",
                epidural_mass="pathologic_epidural_rate",
                paraspinal_mass="pathologic_paraspinal_rate",
                other_metastases="pathologic_other_metastases_rate",
            )

    def _shape(self, rng: np.random.Generator, feat: Features) -> str:
        """Benign: concave endplate at its rate; pathologic: angled (wedge) at its rate; else by ``collapse_shape_p``."""
        p = dict(zip(SHAPES, (float(x) for x in feat["collapse_shape_p"]), strict=True))
        first, rest = (
            ("biconcave", ("wedge", "crush")) if self.kind == "benign" else ("wedge", ("biconcave", "crush"))
        )
        w = np.array([p[s] for s in rest]) + 1e-9
        other = str(rng.choice(rest, p=w / w.sum()))  # drawn either way: the sign changes only the shape
        return (
            first
            if self.signs.get("concave_endplate" if self.kind == "benign" else "angled_endplate")
            else other
        )

    def modify(self, an: Anatomy, rng: np.random.Generator, feat: Features) -> None:
        v = an.vertebrae[self.level_index]
        loss = float(rng.uniform(*feat["height_loss"]))
        shape = self._shape(rng, feat)
        if shape == "wedge":
            v.scale_front, v.scale_back = 1 - loss, 1 - loss * rng.uniform(0.0, 0.3)
        elif shape == "biconcave":
            v.scale_front = v.scale_back = 1 - loss * 0.35
            v.concavity = loss * 0.9
        else:
            v.scale_front = v.scale_back = 1 - loss
        if self.signs.get("convex_border"):
            v.posterior_bulge = float(rng.uniform(2.5, 5.5))
        else:  # straight or slightly concave posterior wall
            v.posterior_bulge = float(rng.uniform(-0.5, 0.8))
        v.state = self.kind
        self.shape = shape
        self.params["height_loss"] = loss
        self.occupies = {self.level_index}

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: Features) -> None:
        v = an.vertebrae[self.level_index]
        z_top = float(v.center[2] + 0.5 * v.height * v.scale_back)
        half_w = an.canal_w / 2
        amount = float(rng.uniform(2.0, 4.5))  # drawn either way: the sign changes only itself
        if self.signs.get("retropulsion"):
            self.params["retro_mm"] = amount
            an.mods.sac_indent_front.append(
                lambda x, z: amount * np.clip(1 - (x / half_w) ** 2, 0, 1) * plateau(z, z_top - 3, 3.0, 3.0)
            )
        if v.posterior_bulge > 0 and self.signs.get("convex_border"):
            bulge = v.posterior_bulge
            zc, hh = float(v.center[2]), 0.5 * v.height * v.scale_back
            an.mods.sac_indent_front.append(
                lambda x, z: (
                    bulge * np.clip(1 - (x / half_w) ** 2, 0, 1) * np.clip(1 - ((z - zc) / hh) ** 2, 0, 1)
                )
            )

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        v = an.vertebrae[self.level_index]
        box = body_box(cv, v, posterior=an.canal_ap + 8)
        if box is None:
            return
        u, vv, w = v.local(*cv.coords(box))
        shape = np.broadcast_shapes(u.shape, vv.shape, w.shape)
        noise = smooth_noise(rng, shape, 3.0 / cv.spacing)
        marrow = soft(v.body_distance(u, vv, w) + 1.2)
        hh = v.half_height(u, vv)
        self.center = v.center.copy()
        if self.chronic:  # an old, healed fracture: collapse with normal marrow
            self.record("lesion", box, marrow * 0)
            return
        if self.kind == "benign":
            self._paint_benign(cv, an, tt, rng, feat, box, (u, vv, w), noise, marrow, hh)
        else:
            self._paint_pathologic(cv, an, tt, rng, box, (u, vv, w), noise, marrow, hh)

    def _paint_benign(
        self,
        cv: Canvas,
        an: Anatomy,
        tt: TissueTable,
        rng: np.random.Generator,
        feat: Features,
        box: tuple[slice, slice, slice],
        uvw: tuple[np.ndarray, np.ndarray, np.ndarray],
        noise: np.ndarray,
        marrow: np.ndarray,
        hh: np.ndarray,
    ) -> None:
        v = an.vertebrae[self.level_index]
        u, vv, w = uvw
        superior = rng.random() < 0.8
        from_plate = (hh - w) if superior else (hh + w)  # mm below (or above) the fractured endplate
        diffuse = self.signs.get("whole_body_oedema", False)
        band = (
            float(rng.uniform(0.75, 0.95) * 2 * np.mean(hh))
            if diffuse
            else float(rng.uniform(*feat["oedema_band_mm"]))
        )
        oedema = soft(from_plate - band + 1.5 * noise, 1.5) * marrow
        if self.signs.get("posterior_elements"):  # oedema reaching the pedicles (rare in benign)
            pe = soft(posterior_element_distance(v, an, u, vv, w) + 1.0) * soft(
                vv - (v.depth / 2 + an.canal_ap + 3), 2.0
            )
            oedema = np.maximum(oedema, pe * soft(from_plate - band - 4.0, 2.0))
        cv.paint(box, oedema, textured(oedema_values(tt, rng), noise, rng))
        mask = oedema
        if self.signs.get("fracture_line"):  # low-signal band parallel to the endplate
            depth = float(rng.uniform(0.3, 0.6) * min(band, 8.0))
            line = soft(np.abs(from_plate - depth + 0.4 * noise) - 0.8, 0.6) * marrow
            cv.paint(box, line, sclerotic_band_values(tt), channels=[T1, T2])
        if self.signs.get("fluid_sign"):
            cleft = soft(
                np.maximum(
                    np.abs(from_plate - 2.2) - rng.uniform(0.8, 1.6),
                    np.abs(vv - rng.uniform(-0.15, 0.1) * v.depth) - rng.uniform(0.25, 0.4) * v.depth,
                ),
                0.6,
            )
            cleft = cleft * marrow
            cv.paint(box, cleft, fluid_values(tt))
            self.record("fluid_sign", box, cleft)
        if self.signs.get("retropulsion"):
            retro = self.params.get("retro_mm", 3.0)
            frag = ellipsoid_distance(
                u,
                vv - (v.depth / 2 + retro / 2),
                w - (np.mean(hh) - 3.5) * (1 if superior else -1),
                (0.28 * v.width, retro / 2 + 1.5, 3.0),
            )
            cv.paint(box, soft(frag, 0.8), tt["cortex"])
            cv.paint(box, soft(frag + 1.0, 0.8), tt["marrow"])
        self.record("lesion", box, mask)

    def _paint_pathologic(
        self,
        cv: Canvas,
        an: Anatomy,
        tt: TissueTable,
        rng: np.random.Generator,
        box: tuple[slice, slice, slice],
        uvw: tuple[np.ndarray, np.ndarray, np.ndarray],
        noise: np.ndarray,
        marrow: np.ndarray,
        hh: np.ndarray,
    ) -> None:
        v = an.vertebrae[self.level_index]
        u, vv, w = uvw
        if self.signs.get("whole_body"):
            region = marrow
        else:  # most of the body, from the posterior side
            keep = rng.uniform(0.55, 0.85)
            d = (-vv - (keep - 0.5) * v.depth) + 2.0 * noise
            region = soft(d, 2.0) * marrow
        if self.signs.get("posterior_elements"):
            pe = soft(posterior_element_distance(v, an, u, vv, w) + 1.0)
            near = soft(vv - (v.depth / 2 + an.canal_ap + 3), 2.0)  # pedicles, not the spinous process
            region = np.maximum(region, pe * near)
        vals = lytic_values(tt, rng) if rng.random() < 0.75 else blastic_values(tt, rng)
        cv.paint(box, region, textured(vals, noise, rng))
        if self.signs.get("fluid_sign"):
            cleft = soft(np.maximum(np.abs(hh - w - 2.2) - 1.0, np.abs(vv) - 0.3 * v.depth), 0.6) * marrow
            cv.paint(box, cleft, fluid_values(tt))
            self.record("fluid_sign", box, cleft)
        self.record("lesion", box, region)
