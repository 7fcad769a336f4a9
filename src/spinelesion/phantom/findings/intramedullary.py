"""Intramedullary metastasis: enhancing nodule, cord expansion, long oedema (radiology.md, task A)."""

from __future__ import annotations

import numpy as np

from spinelesion.phantom.anatomy import Anatomy, cord_geometry
from spinelesion.phantom.canvas import Canvas, ellipsoid_distance, smooth_noise, soft
from spinelesion.phantom.findings.base import Features, Finding, plateau
from spinelesion.phantom.findings.signals import intramedullary_nodule_values
from spinelesion.phantom.tissues import TissueTable


class IntramedullaryMetastasis(Finding):
    """Signs at their rates: ``expansion`` (cord enlarged, CSF pinched all round), ``oedema``
    (T2-bright cord over several segments), ``melanoma`` (T1-bright), ``haemorrhage`` (T2-dark)."""

    def __init__(self) -> None:
        super().__init__(name="intramedullary_metastasis")

    def draw_signs(self, rng: np.random.Generator, feat: Features) -> None:
        self.draw(rng, feat, expansion="im_expansion_rate", oedema="im_oedema_rate")
        u = rng.random()  # melanoma and haemorrhage exclude each other
        self.signs["melanoma"] = bool(u < feat["im_melanoma_rate"])
        self.signs["haemorrhage"] = bool(
            feat["im_melanoma_rate"] <= u < feat["im_melanoma_rate"] + feat["im_haemorrhage_rate"]
        )

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: Features) -> None:
        v = an.vertebrae[self.level_index]
        z0 = float(v.center[2] + rng.uniform(-0.5, 0.5) * v.height)
        if an.conus_z is not None:
            z0 = max(z0, an.conus_z + 0.8 * an.conus_len)  # in the cord, not the conus tip
        r = float(rng.uniform(*feat["im_nodule_radius_mm"]))
        exp_half = r + float(rng.uniform(6, 18))
        yc, b, a = (float(t[0]) for t in an.sac_geometry(np.array([z0])))
        max_scale = min((b - 0.7) / (an.cord_ap / 2), (a - 0.7) / (an.cord_w / 2)) - 1.0
        # Without the expansion sign the cord is barely wider (a small nodule): 5-15 %.
        full, slight = (
            float(rng.uniform(0.6, 1.0)),
            float(rng.uniform(0.05, 0.15)),
        )  # both drawn: signs change only themselves
        amount = float(max(0.25, full * max_scale)) if self.signs.get("expansion", True) else slight
        oedema_half = float(rng.uniform(*feat["im_oedema_half_length_mm"]))
        self.params.update(
            z0=z0,
            r=r,
            ecc=float(rng.uniform(-0.25, 0.25)),
            expansion=amount,
            oedema_half=oedema_half if self.signs.get("oedema", True) else 0.0,
        )
        strength = float(rng.uniform(0.6, 1.0))
        an.mods.cord_scale.append(lambda z: amount * plateau(z, z0, exp_half, 10.0))
        if self.signs.get("oedema", True):
            an.mods.cord_oedema.append(lambda z: strength * plateau(z, z0, oedema_half, 15.0))
        self.occupies = {self.level_index}

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        z0, r = self.params["z0"], self.params["r"]
        xc, yc, ra, rb = (float(t[0]) for t in cord_geometry(an, np.array([z0])))
        cx = xc + self.params["ecc"] * ra
        box = cv.box([cx - 12, yc - 12, z0 - 12], [cx + 12, yc + 12, z0 + 12])
        if box is None:
            return
        x, y, z = cv.coords(box)
        rr = min(r, 0.9 * max(ra, rb))
        cord_mask = soft(np.sqrt(((x - xc) / max(ra, 0.5)) ** 2 + ((y - yc) / max(rb, 0.5)) ** 2) - 1.0, 0.2)
        noise = smooth_noise(rng, np.broadcast_shapes(x.shape, y.shape, z.shape), 2.0)
        d = ellipsoid_distance(x - cx, y - yc, z - z0, (rr, rr * 0.9, rr * 1.3)) + 0.4 * noise
        mask = soft(d, 0.8) * cord_mask
        variant = (
            "melanoma"
            if self.signs.get("melanoma")
            else "haemorrhage"
            if self.signs.get("haemorrhage")
            else "plain"
        )
        cv.paint(box, mask, intramedullary_nodule_values(tt, rng, variant))
        self.record("lesion", box, mask)
        self.center = np.array([cx, yc, z0])
