"""Intradural-extramedullary findings: meningioma, schwannoma, drop metastases (radiology.md, task A)."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from spinelesion.phantom.anatomy import Anatomy, cord_geometry, sac_distance
from spinelesion.phantom.canvas import Canvas, ellipsoid_distance, smooth_noise, soft
from spinelesion.phantom.findings.base import Features, Finding, plateau, textured
from spinelesion.phantom.findings.signals import (
    T1C,
    T2,
    cyst_values,
    drop_values,
    meningioma_values,
    rim_enhancement,
    schwannoma_values,
)
from spinelesion.phantom.tissues import TissueTable


class IntraduralMass(Finding):
    """Meningioma or schwannoma inside the sac.

    Signs, each at its rate: the cord pushed to the opposite wall (``cord_displacement``),
    the CSF widened above and below the mass (``csf_cap``); meningioma: ``dural_tail``,
    ``calcification``; schwannoma: ``target_sign``, ``cystic``, ``dumbbell``.
    """

    def __init__(self, kind: str = "meningioma") -> None:
        super().__init__(name=kind)
        self.kind = kind

    def draw_signs(self, rng: np.random.Generator, feat: Features) -> None:
        self.draw(rng, feat, cord_displacement="cord_displacement_rate", csf_cap="csf_cap_rate")
        if self.kind == "meningioma":
            self.draw(rng, feat, dural_tail="dural_tail_rate", calcification="meningioma_calcification_rate")
        else:
            self.draw(
                rng, feat, target_sign="target_sign_rate", cystic="cystic_rate", dumbbell="dumbbell_rate"
            )

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: Features) -> None:
        v = an.vertebrae[self.level_index]
        if self.kind == "schwannoma" and self.level_index < len(an.discs):  # at the foramen level
            z0 = float(an.discs[self.level_index].center[2] + rng.uniform(-3, 3))
            phi = float(rng.choice([0.0, np.pi]) + rng.uniform(-0.5, 0.5))
        else:
            z0 = float(v.center[2] + rng.uniform(-0.4, 0.4) * v.height)
            phi = float(
                rng.choice([np.pi / 2, 0.0, np.pi, np.pi / 2 + 0.6, np.pi / 2 - 0.6]) + rng.uniform(-0.3, 0.3)
            )
        yc, b, a = (float(t[0]) for t in an.sac_geometry(np.array([z0])))
        r = float(rng.uniform(*feat["idem_radius_mm"]))
        rz = r * rng.uniform(1.1, 1.7)
        # Draws are the same whichever signs are on, so a sign changes only itself.
        cap_mm, small_shift = float(rng.uniform(*feat["csf_cap_mm"])), float(rng.uniform(0.1, 0.3))
        cap = cap_mm if self.signs.get("csf_cap", True) else 0.0
        # centre against the dura in direction phi (LPS: x = cos, y = sin -> sin>0 is dorsal)
        rad = np.hypot(a * np.cos(phi), b * np.sin(phi))
        dist = max(rad - 0.6 * r, 0.0)
        cx, cy = dist * np.cos(phi), yc + dist * np.sin(phi)
        # Without the displacement sign the cord only gives way a little (a small mass in a roomy sac).
        full_shift = min(1.3 * r, 0.8 * max(a, b))
        shift = full_shift if self.signs.get("cord_displacement", True) else small_shift * full_shift
        # The cap: the cord stays displaced beyond the mass, so CSF widens above and below it.
        # Without it, the cord returns to the midline right at the mass ends (no widened CSF).
        reach, ramp = (rz + cap, 4.0) if cap > 0 else (0.5 * rz, 0.6 * rz)
        self.params.update(z0=z0, phi=phi, r=r, rz=rz, cx=cx, cy=cy, cap=cap, shift=shift)
        an.mods.cord_du.append(lambda z: -np.cos(phi) * shift * plateau(z, z0, reach, ramp))
        an.mods.cord_dv.append(lambda z: -np.sin(phi) * shift * plateau(z, z0, reach, ramp))
        self.occupies = {self.level_index}

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        p = self.params
        z0, phi, r, rz, cx, cy = p["z0"], p["phi"], p["r"], p["rz"], p["cx"], p["cy"]
        box = cv.box([cx - 3 * r - 18, cy - 3 * r, z0 - rz - 20], [cx + 3 * r + 18, cy + 3 * r, z0 + rz + 20])
        if box is None:
            return
        x, y, z = cv.coords(box)
        shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
        noise = smooth_noise(rng, shape, 2.0)
        # broad base: flattened against the dura for meningioma, rounder for schwannoma
        if self.kind == "meningioma":
            radii = (r * 1.15, r * 0.9, rz) if abs(np.sin(phi)) > 0.7 else (r * 0.9, r * 1.15, rz)
        else:
            radii = (r, r, rz)
        d = ellipsoid_distance(x - cx, y - cy, z - z0, radii) + 0.5 * noise
        inside_sac = soft(sac_distance(an, x, y, z) + 0.4)
        mask = soft(d, 0.8) * inside_sac
        cord = tt["cord"]
        if self.kind == "meningioma":
            full = textured(meningioma_values(tt, rng), noise, rng)
            if self.signs.get("calcification"):
                calc = (noise > 1.2).astype(np.float32)
                full = full * (1 - calc[None]) + tt["cortex"][:, None, None, None] * calc[None]
            cv.paint(box, mask, full)
            if self.signs.get("dural_tail"):
                tail = float(rng.uniform(6, 14))
                d_sac = sac_distance(an, x, y, z)
                ang = np.arctan2(y - an.sac_geometry(z)[0], x)  # angle around the sac centre
                window = np.cos(ang - phi) > np.cos(0.5)
                strip = soft(np.abs(d_sac) - 0.7, 0.6) * window * plateau(z, z0, rz + tail, 3.0)
                cv.paint(box, strip, rim_enhancement(tt, rng), channels=[T1C])
        else:
            solid = schwannoma_values(tt, rng)
            full = textured(solid, noise, rng)
            if self.signs.get("target_sign"):  # T2 target: bright rim, darker centre
                core = soft(ellipsoid_distance(x - cx, y - cy, z - z0, np.array(radii) * 0.5), 1.0)
                full[T2] = full[T2] * (1 - core) + cord[T2] * 0.9 * core
            if self.signs.get("cystic"):
                cyst = soft(ellipsoid_distance(x - cx - 0.3 * r, y - cy, z - z0, np.array(radii) * 0.45), 1.0)
                full = full * (1 - cyst[None]) + cyst_values(tt)[:, None, None, None] * cyst[None]
            cv.paint(box, mask, full)
            if self.signs.get("dumbbell"):  # through the neural foramen
                side = 1.0 if cx >= 0 else -1.0
                ox = side * (an.canal_w / 2 + rng.uniform(6, 12))
                outer = ellipsoid_distance(x - ox, y - cy, z - z0, (r * 0.9, r * 0.9, rz * 0.9))
                waist = np.maximum(
                    np.hypot(y - cy, z - z0) - 2.5, np.maximum(side * (cx - x), side * (x - ox))
                )
                dumb = soft(np.minimum(outer, waist) + 0.5 * noise, 1.0)
                cv.paint(box, dumb, solid)
                mask = np.maximum(mask, dumb)
        self.record("lesion", box, mask)
        self.center = np.array([cx, cy, z0])


class DropMetastases(Finding):
    """Leptomeningeal seeding: enhancing nodules on cord and roots, sugar coating, clumped roots."""

    def __init__(self) -> None:
        super().__init__(name="drop_metastases")

    def draw_signs(self, rng: np.random.Generator, feat: Features) -> None:
        self.draw(
            rng,
            feat,
            visible_without_contrast="drop_visible_without_contrast_rate",
            sugar_coating="sugar_coating_rate",
            clumped_roots="clumped_roots_rate",
        )

    def shown_by(self, sequences: Collection[str]) -> bool:
        # radiology.md: drop metastases "can be invisible without" gadolinium. Those drawn
        # without the visible sign are near CSF on every sequence but T1 + contrast.
        return bool(self.signs.get("visible_without_contrast")) or "t1c" in sequences

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: Features) -> None:
        v = an.vertebrae[self.level_index]
        z0 = float(v.center[2] + rng.uniform(-0.4, 0.4) * v.height)
        self.params["z0"] = z0
        if (
            an.conus_z is not None and z0 < an.conus_z and self.signs.get("clumped_roots")
        ):  # roots only below the conus
            an.mods.clumped_roots = float(rng.uniform(0.5, 1.0))
        self.occupies = {self.level_index}

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        z0 = self.params["z0"]
        zs = np.array([z0])
        yc, b, a = (float(t[0]) for t in an.sac_geometry(zs))
        xc, ycord, ra, rb = (float(t[0]) for t in cord_geometry(an, zs))
        box = cv.box([-a - 3, yc - b - 3, z0 - 45], [a + 3, yc + b + 3, z0 + 45])
        if box is None:
            return
        x, y, z = cv.coords(box)
        vals = drop_values(tt, rng, visible=self.signs.get("visible_without_contrast", False))
        inside_sac = soft(sac_distance(an, x, y, z) + 0.5)
        mask = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), np.float32)
        n = int(rng.integers(2, 7))
        index_pos = None
        for k in range(n):
            rad = rng.uniform(3.0, 5.0) if k == 0 else rng.uniform(1.5, 3.5)
            dz = 0.0 if k == 0 else rng.uniform(-35, 35)
            ang = rng.uniform(0, 2 * np.pi)
            on_cord = ra > 0.5 and rng.random() < 0.6
            if on_cord:
                px, py = xc + (ra + rad * 0.5) * np.cos(ang), ycord + (rb + rad * 0.5) * np.sin(ang)
            else:  # on a root / the dorsal sac wall
                px, py = rng.uniform(-0.6, 0.6) * a, yc + rng.uniform(0.0, 0.75) * b
            mask = np.maximum(
                mask, soft(np.sqrt((x - px) ** 2 + (y - py) ** 2 + ((z - z0 - dz) / 1.3) ** 2) - rad, 0.8)
            )
            if k == 0:
                index_pos = np.array([px, py, z0])
        mask = mask * inside_sac
        cv.paint(box, mask, vals)
        if ra > 0.5 and self.signs.get("sugar_coating"):
            cx_, cy_, ra_, rb_ = cord_geometry(an, z)
            rr = np.sqrt(((x - cx_) / np.maximum(ra_, 0.3)) ** 2 + ((y - cy_) / np.maximum(rb_, 0.3)) ** 2)
            shell = (
                soft(np.abs(rr - 1.0) * np.minimum(ra_, rb_) - 0.6, 0.5)
                * plateau(z, z0, 25.0, 8.0)
                * (ra_ > 0.5)
            )
            cv.paint(box, shell * inside_sac, vals, channels=[T1C])
            mask = np.maximum(mask, shell * 0.5)
        self.record("lesion", box, mask)
        self.center = index_pos if index_pos is not None else np.array([0.0, yc, z0])
