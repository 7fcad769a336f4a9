"""Findings: what each lesion, fracture and mimic does to the anatomy and to each sequence.

Every finding follows a row of ``docs/radiology.md``. A finding works in up to four steps:
``modify`` (before layout: collapse a body, narrow a disc), ``canal`` (after layout: push
the dural sac, displace or expand the cord), ``paint`` (on top of the anatomy), and
``rois`` (the labelled regions it contributes). Feature rates come from the config
(``features``), so "not every benign fracture has a fluid sign" is a number a user can
change. Sizes of different classes overlap on purpose: size alone must not give the
answer away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spinelesion.phantom.anatomy import (
    Anatomy,
    Disc,
    Vertebra,
    cord_geometry,
    disc_distance,
    posterior_element_distance,
    sac_distance,
)
from spinelesion.phantom.canvas import Canvas, ellipsoid_distance, smooth_noise, soft
from spinelesion.phantom.tissues import TissueTable

T1, T2, STIR, T1C = 0, 1, 2, 3


def plateau(z: np.ndarray, z0: float, half: float, ramp: float) -> np.ndarray:
    """1 within ``half`` of z0, cosine ramp to 0 over ``ramp`` mm beyond."""
    d = np.clip((np.abs(np.asarray(z) - z0) - half) / max(ramp, 1e-3), 0, 1)
    return (0.5 + 0.5 * np.cos(np.pi * d)).astype(np.float32)


@dataclass
class RoiRecord:
    center: np.ndarray
    compartment: str
    fracture: str
    finding: str
    level: str
    index: int = -1  # position among the study's ROIs before any is dropped: keeps case ids stable


@dataclass
class Finding:
    """Base class; ``name`` is the manifest's ``finding``."""

    name: str = ""
    compartment: str = "none"
    fracture: str = "none"
    level_index: int = 0
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    truth: dict[str, tuple[tuple[slice, slice, slice], np.ndarray]] = field(default_factory=dict)
    extra: list[RoiRecord] = field(default_factory=list)
    params: dict[str, object] = field(default_factory=dict)
    # which vertebrae/discs it occupies, so others avoid them
    occupies: set[int] = field(default_factory=set)

    def modify(self, an: Anatomy, rng: np.random.Generator, feat: dict) -> None:  # before layout
        pass

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: dict) -> None:  # after layout
        pass

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        pass

    def rois(self, an: Anatomy) -> list[RoiRecord]:
        return [RoiRecord(self.center, self.compartment, self.fracture, self.name,
                          an.level_at(float(self.center[2])).name), *self.extra]

    def record(self, key: str, box: tuple[slice, slice, slice], mask: np.ndarray) -> None:
        self.truth[key] = (box, np.asarray(mask, dtype=np.float32))


# ------------------------------------------------------------------------------------------
# signal recipes (relative to the study's own tissue table)
# ------------------------------------------------------------------------------------------

def darker_than_disc_and_muscle(tt: TissueTable, rng: np.random.Generator, lo: float = 0.5, hi: float = 0.85) -> float:
    return float(rng.uniform(lo, hi) * min(tt["muscle"][T1], tt["annulus"][T1]))


def lytic_values(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    m, csf = tt["marrow"], tt["csf"]
    return np.array([darker_than_disc_and_muscle(tt, rng),
                     m[T2] + rng.uniform(0.5, 0.85) * (csf[T2] - m[T2]),
                     m[STIR] + rng.uniform(0.5, 0.85) * (csf[STIR] - m[STIR]),
                     m[T1C] + rng.uniform(0.45, 0.85) * (0.85 - m[T1C])], dtype=np.float32)


def blastic_values(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    m = tt["marrow"]
    dark = darker_than_disc_and_muscle(tt, rng, 0.25, 0.6)
    return np.array([dark, rng.uniform(0.08, 0.2), rng.uniform(0.06, 0.18),
                     m[T1C] * rng.uniform(0.8, 1.25)], dtype=np.float32)


def oedema_values(tt: TissueTable, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Marrow oedema: T1 dark(er), T2/STIR bright, enhancing (fracture, Modic 1, discitis)."""
    m, csf, mu = tt["marrow"], tt["csf"], tt["muscle"]
    s = strength
    return np.array([m[T1] + s * rng.uniform(0.65, 0.95) * (mu[T1] * 0.9 - m[T1]),
                     m[T2] + s * rng.uniform(0.25, 0.5) * (csf[T2] - m[T2]),
                     m[STIR] + s * rng.uniform(0.45, 0.75) * (csf[STIR] - m[STIR]),
                     m[T1C] + s * rng.uniform(0.35, 0.7) * (0.75 - m[T1C])], dtype=np.float32)


def soft_tissue_mass_values(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    mu, csf = tt["muscle"], tt["csf"]
    return np.array([mu[T1] * rng.uniform(0.8, 1.05), mu[T2] + rng.uniform(0.35, 0.6) * (csf[T2] - mu[T2]),
                     mu[STIR] + rng.uniform(0.35, 0.6) * (csf[STIR] - mu[STIR]), rng.uniform(0.7, 0.95)],
                    dtype=np.float32)


def textured(values: np.ndarray, noise: np.ndarray, amount: float) -> np.ndarray:
    return values[:, None, None, None] * (1 + amount * noise[None])


# ------------------------------------------------------------------------------------------
# helpers on bodies
# ------------------------------------------------------------------------------------------

def body_box(cv: Canvas, v: Vertebra, extra: float = 4.0, posterior: float = 0.0) -> tuple[slice, slice, slice] | None:
    lo = v.center - np.array([v.width / 2 + extra, v.depth / 2 + extra, v.height / 2 + extra])
    hi = v.center + np.array([v.width / 2 + extra, v.depth / 2 + extra + posterior, v.height / 2 + extra])
    return cv.box(lo, hi)


def blob_in_body(cv: Canvas, an: Anatomy, v: Vertebra, rng: np.random.Generator, centre_uvw: np.ndarray,
                 radii: np.ndarray, irregular: float = 1.5, pedicle: bool = False
                 ) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, tuple[np.ndarray, ...]] | None:
    """Soft mask of an irregular blob clipped to the body (and its pedicles when asked)."""
    box = body_box(cv, v, posterior=an.canal_ap + 8 if pedicle else 0.0)
    if box is None:
        return None
    u, vv, w = v.local(*cv.coords(box))
    shape = np.broadcast_shapes(u.shape, vv.shape, w.shape)
    noise = smooth_noise(rng, shape, 3.0 / cv.spacing)
    d = ellipsoid_distance(u - centre_uvw[0], vv - centre_uvw[1], w - centre_uvw[2], radii) + irregular * noise
    inside = soft(v.body_distance(u, vv, w) + 1.2)
    if pedicle:
        side = float(np.sign(centre_uvw[0]) or 1.0)
        ped = ellipsoid_distance(u - side * (an.canal_w / 2 + 3.5), vv - (v.depth / 2 + an.canal_ap / 2), w - 0.1 * v.height,
                                 (4.0, an.canal_ap / 2 + 2, 0.3 * v.height)) + irregular * noise
        d = np.minimum(d, ped)
        inside = np.maximum(inside, soft(posterior_element_distance(v, an, u, vv, w) + 1.0))
    return box, soft(d, 1.2) * inside, noise, (u, vv, w)


def body_centre_roi(v: Vertebra) -> np.ndarray:
    return v.center.copy()


# ------------------------------------------------------------------------------------------
# extradural
# ------------------------------------------------------------------------------------------

class BodyMetastasis(Finding):
    """Lytic, blastic or mixed marrow replacement favouring the posterior body and pedicle."""

    def __init__(self, kind: str = "lytic", **kw: object):
        super().__init__(name=f"{kind}_metastasis", compartment="extradural", fracture="none", **kw)  # type: ignore[arg-type]
        self.kind = kind

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        v = an.vertebrae[self.level_index]
        r = rng.uniform(*feat["metastasis_radius_mm"])
        radii = np.array([r * rng.uniform(0.8, 1.3), r * rng.uniform(0.75, 1.1), r * rng.uniform(0.7, 1.0)])
        radii = np.minimum(radii, [v.width / 2 - 2, v.depth / 2 - 2, v.height / 2 - 1.5])
        posterior = rng.random() < feat["metastasis_posterior_rate"]
        vc = rng.uniform(0.05, 0.3) * v.depth if posterior else rng.uniform(-0.3, 0.1) * v.depth
        uc = rng.uniform(-0.3, 0.3) * v.width
        wc = rng.uniform(-0.2, 0.2) * v.height
        pedicle = rng.random() < feat["metastasis_pedicle_rate"]
        out = blob_in_body(cv, an, v, rng, np.array([uc, vc, wc]), radii, pedicle=pedicle)
        if out is None:
            return
        box, mask, noise, _ = out
        if self.kind == "lytic":
            vals = textured(lytic_values(tt, rng), noise, 0.08)
        elif self.kind == "blastic":
            vals = textured(blastic_values(tt, rng), noise, 0.1)
        else:  # mixed: sclerotic islands within a lytic lesion
            islands = (noise > rng.uniform(-0.2, 0.5)).astype(np.float32)
            vals = (lytic_values(tt, rng)[:, None, None, None] * (1 - islands[None])
                    + blastic_values(tt, rng)[:, None, None, None] * islands[None])
        cv.paint(box, mask, vals)
        if self.kind == "lytic" and rng.random() < feat["halo_rate"]:
            u, vv, w = v.local(*cv.coords(box))
            rim = mask * (1 - soft(ellipsoid_distance(u - uc, vv - vc, w - wc, radii * 0.75), 1.0))
            cv.paint(box, rim, tt.mix(lytic_values(tt, rng), "csf", 0.5), channels=[T2, STIR])
        self.record("lesion", box, mask)
        self.center = v.center + _uvw_to_lps(v, np.array([uc, vc, wc]))
        self.occupies = {self.level_index}


def _uvw_to_lps(v: Vertebra, uvw: np.ndarray) -> np.ndarray:
    c, s = np.cos(v.tilt), np.sin(v.tilt)
    u, vv, w = uvw
    return np.array([u, vv * c + w * s, -vv * s + w * c])


class EpiduralExtension(Finding):
    """Anterior epidural soft tissue behind a body ("draped curtain" sparing the midline)."""

    def __init__(self, **kw: object):
        super().__init__(name="epidural_extension", compartment="extradural", fracture="none", **kw)  # type: ignore[arg-type]

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: dict) -> None:
        v = an.vertebrae[self.level_index]
        z0 = float(v.center[2] + rng.uniform(-0.25, 0.25) * v.height)
        half = float(rng.uniform(0.35, 0.8) * v.height)
        thick = float(rng.uniform(*feat["epidural_thickness_mm"]))
        spare = float(rng.uniform(0.45, 0.8))
        half_w = an.canal_w / 2 - 1.0
        self.params.update(z0=z0, half=half, thick=thick, spare=spare, half_w=half_w)

        def indent(x: np.ndarray, z: np.ndarray) -> np.ndarray:
            prof = np.clip(1 - (x / half_w) ** 2, 0, 1) * (1 - spare * np.exp(-(x / 2.5) ** 2))
            return thick * prof * plateau(z, z0, half, 6.0)

        an.mods.sac_indent_front.append(indent)
        an.mods.cord_dv.append(lambda z: 0.45 * thick * plateau(z, z0, half, 8.0))
        self.params["indent"] = indent
        self.occupies = {self.level_index}

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        p = self.params
        z0, half, thick = float(p["z0"]), float(p["half"]), float(p["thick"])  # type: ignore[arg-type]
        front_mid = float(an.canal_front(np.array([z0]))[0])
        box = cv.box([-an.canal_w / 2 - 2, front_mid - 6, z0 - half - 10], [an.canal_w / 2 + 2, front_mid + thick + 6, z0 + half + 10])
        if box is None:
            return
        x, y, z = cv.coords(box)
        front = an.canal_front(z)
        depth_in = p["indent"](x, z)  # type: ignore[operator]
        d = np.maximum(front - 0.5 - y, (y - front) - depth_in)
        mask = soft(d, 1.0) * (depth_in > 0.3)
        noise = smooth_noise(rng, mask.shape, 3.0)
        cv.paint(box, mask, textured(soft_tissue_mass_values(tt, rng), noise, 0.06))
        self.record("lesion", box, mask)
        self.center = np.array([0.0, front_mid + 0.45 * thick, z0])


class ParaspinalMass(Finding):
    def __init__(self, **kw: object):
        super().__init__(name="paraspinal_mass", compartment="extradural", fracture="none", **kw)  # type: ignore[arg-type]

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        v = an.vertebrae[self.level_index]
        side = float(rng.choice([-1.0, 1.0]))
        radii = np.array([rng.uniform(8, 16), rng.uniform(9, 18), rng.uniform(12, 26)])
        c = v.center + np.array([side * (v.width / 2 + radii[0] * rng.uniform(0.1, 0.6)),
                                 rng.uniform(-0.35, 0.3) * v.depth, rng.uniform(-0.3, 0.3) * v.height])
        box = cv.box(c - radii - 4, c + radii + 4)
        if box is None:
            return
        x, y, z = cv.coords(box)
        noise = smooth_noise(rng, np.broadcast_shapes(x.shape, y.shape, z.shape), 3.0)
        d = ellipsoid_distance(x - c[0], y - c[1], z - c[2], radii) + 1.5 * noise
        mask = soft(d, 1.5)
        vals = textured(soft_tissue_mass_values(tt, rng), noise, 0.08)
        if rng.random() < 0.4:  # necrotic centre: T2 bright, not enhancing
            core = soft(ellipsoid_distance(x - c[0], y - c[1], z - c[2], radii * 0.45), 1.5)
            vals = vals * (1 - core[None]) + tt.mix("csf", "muscle", 0.4)[:, None, None, None] * core[None]
        cv.paint(box, mask, vals)
        self.record("lesion", box, mask)
        self.center = c
        self.occupies = {self.level_index}


# ------------------------------------------------------------------------------------------
# intradural extramedullary
# ------------------------------------------------------------------------------------------

class IntraduralMass(Finding):
    """Meningioma or schwannoma: inside the sac, displacing the cord, with CSF caps."""

    def __init__(self, kind: str = "meningioma", **kw: object):
        super().__init__(name=kind, compartment="intradural_extramedullary", fracture="none", **kw)  # type: ignore[arg-type]
        self.kind = kind

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: dict) -> None:
        v = an.vertebrae[self.level_index]
        if self.kind == "schwannoma" and self.level_index < len(an.discs):  # at the foramen level
            z0 = float(an.discs[self.level_index].center[2] + rng.uniform(-3, 3))
            phi = float(rng.choice([0.0, np.pi]) + rng.uniform(-0.5, 0.5))
        else:
            z0 = float(v.center[2] + rng.uniform(-0.4, 0.4) * v.height)
            phi = float(rng.choice([np.pi / 2, 0.0, np.pi, np.pi / 2 + 0.6, np.pi / 2 - 0.6]) + rng.uniform(-0.3, 0.3))
        yc, b, a = (float(t[0]) for t in an.sac_geometry(np.array([z0])))
        r = float(rng.uniform(*feat["idem_radius_mm"]))
        rz = r * rng.uniform(1.1, 1.7)
        cap = float(rng.uniform(*feat["csf_cap_mm"]))
        # centre against the dura in direction phi (LPS: x = cos, y = sin -> sin>0 is dorsal)
        rad = np.hypot(a * np.cos(phi), b * np.sin(phi))
        dist = max(rad - 0.6 * r, 0.0)
        cx, cy = dist * np.cos(phi), yc + dist * np.sin(phi)
        shift = min(1.3 * r, 0.8 * max(a, b))
        self.params.update(z0=z0, phi=phi, r=r, rz=rz, cx=cx, cy=cy, cap=cap)
        an.mods.cord_du.append(lambda z: -np.cos(phi) * shift * plateau(z, z0, rz + cap, 4.0))
        an.mods.cord_dv.append(lambda z: -np.sin(phi) * shift * plateau(z, z0, rz + cap, 4.0))
        self.occupies = {self.level_index}

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        p = self.params
        z0, phi, r, rz, cx, cy = (float(p[k]) for k in ("z0", "phi", "r", "rz", "cx", "cy"))  # type: ignore[arg-type]
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
            vals = np.array([cord[T1] * rng.uniform(0.9, 1.1), cord[T2] * rng.uniform(0.95, 1.25),
                             cord[STIR] * rng.uniform(0.95, 1.2), rng.uniform(0.8, 0.95)], np.float32)
            full = textured(vals, noise, 0.03)
            if rng.random() < feat["meningioma_calcification_rate"]:
                calc = (noise > 1.2).astype(np.float32)
                full = full * (1 - calc[None]) + tt["cortex"][:, None, None, None] * calc[None]
            cv.paint(box, mask, full)
            if rng.random() < feat["dural_tail_rate"]:
                tail = float(rng.uniform(6, 14))
                d_sac = sac_distance(an, x, y, z)
                ang = np.arctan2(y - an.sac_geometry(z)[0], x)  # angle around the sac centre
                window = np.cos(ang - phi) > np.cos(0.5)
                strip = soft(np.abs(d_sac) - 0.7, 0.6) * window * plateau(z, z0, rz + tail, 3.0)
                cv.paint(box, strip, np.array([0, 0, 0, rng.uniform(0.7, 0.9)], np.float32), channels=[T1C])
        else:
            csf = tt["csf"]
            solid = np.array([cord[T1] * rng.uniform(0.75, 0.95), cord[T2] + rng.uniform(0.45, 0.8) * (csf[T2] - cord[T2]),
                              cord[STIR] + rng.uniform(0.4, 0.75) * (csf[STIR] - cord[STIR]), rng.uniform(0.7, 0.9)],
                             np.float32)
            full = textured(solid, noise, 0.06)
            if rng.random() < feat["target_sign_rate"]:  # T2 target: bright rim, darker centre
                core = soft(ellipsoid_distance(x - cx, y - cy, z - z0, np.array(radii) * 0.5), 1.0)
                full[T2] = full[T2] * (1 - core) + cord[T2] * 0.9 * core
            if rng.random() < feat["cystic_rate"]:
                cyst = soft(ellipsoid_distance(x - cx - 0.3 * r, y - cy, z - z0, np.array(radii) * 0.45), 1.0)
                cyst_vals = np.array([csf[T1] * 1.3, csf[T2] * 0.95, csf[STIR] * 0.95, 0.12], np.float32)
                full = full * (1 - cyst[None]) + cyst_vals[:, None, None, None] * cyst[None]
            cv.paint(box, mask, full)
            if rng.random() < feat["dumbbell_rate"]:  # through the neural foramen
                side = 1.0 if cx >= 0 else -1.0
                ox = side * (an.canal_w / 2 + rng.uniform(6, 12))
                outer = ellipsoid_distance(x - ox, y - cy, z - z0, (r * 0.9, r * 0.9, rz * 0.9))
                waist = np.maximum(np.hypot(y - cy, z - z0) - 2.5, np.maximum(side * (cx - x), side * (x - ox)))
                dumb = soft(np.minimum(outer, waist) + 0.5 * noise, 1.0)
                cv.paint(box, dumb, solid)
                mask = np.maximum(mask, dumb)
        self.record("lesion", box, mask)
        self.center = np.array([cx, cy, z0])


class DropMetastases(Finding):
    """Leptomeningeal seeding: enhancing nodules on cord and roots, sugar coating, clumped roots."""

    def __init__(self, **kw: object):
        super().__init__(name="drop_metastases", compartment="intradural_extramedullary", fracture="none", **kw)  # type: ignore[arg-type]

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: dict) -> None:
        v = an.vertebrae[self.level_index]
        self.params["z0"] = float(v.center[2] + rng.uniform(-0.4, 0.4) * v.height)
        if an.conus_z is not None and self.params["z0"] < an.conus_z and rng.random() < feat["clumped_roots_rate"]:  # type: ignore[operator]
            an.mods.clumped_roots = float(rng.uniform(0.5, 1.0))
        self.occupies = {self.level_index}

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        z0 = float(self.params["z0"])  # type: ignore[arg-type]
        zs = np.array([z0])
        yc, b, a = (float(t[0]) for t in an.sac_geometry(zs))
        xc, ycord, ra, rb = (float(t[0]) for t in cord_geometry(an, zs))
        box = cv.box([-a - 3, yc - b - 3, z0 - 45], [a + 3, yc + b + 3, z0 + 45])
        if box is None:
            return
        x, y, z = cv.coords(box)
        csf, cord = tt["csf"], tt["cord"]
        visible = rng.random() < feat["drop_visible_without_contrast_rate"]
        t2_mix = rng.uniform(0.55, 0.9) if visible else rng.uniform(0.05, 0.25)
        vals = np.array([csf[T1] + rng.uniform(0.3, 0.7) * (cord[T1] - csf[T1]), csf[T2] + t2_mix * (cord[T2] - csf[T2]),
                         csf[STIR] + t2_mix * (cord[STIR] - csf[STIR]), rng.uniform(0.75, 0.95)], np.float32)
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
            mask = np.maximum(mask, soft(np.sqrt((x - px) ** 2 + (y - py) ** 2 + ((z - z0 - dz) / 1.3) ** 2) - rad, 0.8))
            if k == 0:
                index_pos = np.array([px, py, z0])
        mask = mask * inside_sac
        cv.paint(box, mask, vals)
        if ra > 0.5 and rng.random() < feat["sugar_coating_rate"]:
            cx_, cy_, ra_, rb_ = cord_geometry(an, z)
            rr = np.sqrt(((x - cx_) / np.maximum(ra_, 0.3)) ** 2 + ((y - cy_) / np.maximum(rb_, 0.3)) ** 2)
            shell = soft(np.abs(rr - 1.0) * np.minimum(ra_, rb_) - 0.6, 0.5) * plateau(z, z0, 25.0, 8.0) * (ra_ > 0.5)
            cv.paint(box, shell * inside_sac, vals, channels=[T1C])
            mask = np.maximum(mask, shell * 0.5)
        self.record("lesion", box, mask)
        self.center = index_pos if index_pos is not None else np.array([0.0, yc, z0])


# ------------------------------------------------------------------------------------------
# intramedullary
# ------------------------------------------------------------------------------------------

class IntramedullaryMetastasis(Finding):
    def __init__(self, **kw: object):
        super().__init__(name="intramedullary_metastasis", compartment="intramedullary", fracture="none", **kw)  # type: ignore[arg-type]

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: dict) -> None:
        v = an.vertebrae[self.level_index]
        z0 = float(v.center[2] + rng.uniform(-0.5, 0.5) * v.height)
        if an.conus_z is not None:
            z0 = max(z0, an.conus_z + 18.0)
        r = float(rng.uniform(*feat["im_nodule_radius_mm"]))
        exp_half = r + float(rng.uniform(6, 18))
        yc, b, a = (float(t[0]) for t in an.sac_geometry(np.array([z0])))
        max_scale = min((b - 0.7) / (an.cord_ap / 2), (a - 0.7) / (an.cord_w / 2)) - 1.0
        amount = float(max(0.25, rng.uniform(0.6, 1.0) * max_scale))
        oedema_half = float(rng.uniform(*feat["im_oedema_half_length_mm"]))
        self.params.update(z0=z0, r=r, ecc=float(rng.uniform(-0.25, 0.25)))
        strength = float(rng.uniform(0.6, 1.0))
        an.mods.cord_scale.append(lambda z: amount * plateau(z, z0, exp_half, 10.0))
        an.mods.cord_oedema.append(lambda z: strength * plateau(z, z0, oedema_half, 15.0))
        self.occupies = {self.level_index}

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        z0, r = float(self.params["z0"]), float(self.params["r"])  # type: ignore[arg-type]
        xc, yc, ra, rb = (float(t[0]) for t in cord_geometry(an, np.array([z0])))
        cx = xc + float(self.params["ecc"]) * ra  # type: ignore[arg-type]
        box = cv.box([cx - 12, yc - 12, z0 - 12], [cx + 12, yc + 12, z0 + 12])
        if box is None:
            return
        x, y, z = cv.coords(box)
        rr = min(r, 0.9 * max(ra, rb))
        cord_mask = soft(np.sqrt(((x - xc) / max(ra, 0.5)) ** 2 + ((y - yc) / max(rb, 0.5)) ** 2) - 1.0, 0.2)
        noise = smooth_noise(rng, np.broadcast_shapes(x.shape, y.shape, z.shape), 2.0)
        d = ellipsoid_distance(x - cx, y - yc, z - z0, (rr, rr * 0.9, rr * 1.3)) + 0.4 * noise
        mask = soft(d, 0.8) * cord_mask
        cord, csf = tt["cord"], tt["csf"]
        vals = np.array([cord[T1] * rng.uniform(0.85, 1.05), cord[T2] + rng.uniform(0.2, 0.5) * (csf[T2] - cord[T2]),
                         cord[STIR] + rng.uniform(0.2, 0.5) * (csf[STIR] - cord[STIR]), rng.uniform(0.85, 1.0)], np.float32)
        u = rng.random()
        if u < feat["im_melanoma_rate"]:
            vals[T1] = rng.uniform(0.65, 0.85)
        elif u < feat["im_melanoma_rate"] + feat["im_haemorrhage_rate"]:
            vals[T2] = vals[STIR] = rng.uniform(0.1, 0.2)
        cv.paint(box, mask, vals)
        self.record("lesion", box, mask)
        self.center = np.array([cx, yc, z0])


# ------------------------------------------------------------------------------------------
# fractures
# ------------------------------------------------------------------------------------------

class Fracture(Finding):
    """Compression fracture; ``benign`` (osteoporotic) or ``pathologic`` (malignant)."""

    def __init__(self, kind: str = "benign", chronic: bool = False, **kw: object):
        name = "osteoporotic_fracture" if kind == "benign" else "pathologic_fracture"
        comp = "none" if kind == "benign" else "extradural"
        super().__init__(name=name, compartment=comp, fracture=kind, **kw)  # type: ignore[arg-type]
        self.kind, self.chronic = kind, chronic

    def modify(self, an: Anatomy, rng: np.random.Generator, feat: dict) -> None:
        v = an.vertebrae[self.level_index]
        loss = float(rng.uniform(*feat["height_loss"]))
        shape = rng.choice(["wedge", "biconcave", "crush"], p=feat["collapse_shape_p"])
        if shape == "wedge":
            v.scale_front, v.scale_back = 1 - loss, 1 - loss * rng.uniform(0.0, 0.3)
        elif shape == "biconcave":
            v.scale_front = v.scale_back = 1 - loss * 0.35
            v.concavity = loss * 0.9
        else:
            v.scale_front = v.scale_back = 1 - loss
        if self.kind == "pathologic":
            if rng.random() < feat["convex_border_rate"]:
                v.posterior_bulge = float(rng.uniform(2.5, 5.5))
        else:
            v.posterior_bulge = float(rng.uniform(-0.5, 0.8))
            self.params["retropulsion"] = (not self.chronic) and rng.random() < feat["retropulsion_rate"]
        v.state = self.kind
        self.params["shape"] = str(shape)
        self.occupies = {self.level_index}

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: dict) -> None:
        v = an.vertebrae[self.level_index]
        z_top = float(v.center[2] + 0.5 * v.height * v.scale_back)
        if self.params.get("retropulsion"):
            amount = float(rng.uniform(2.0, 4.5))
            self.params["retro_mm"] = amount
            an.mods.sac_indent_front.append(
                lambda x, z: amount * np.clip(1 - (x / (an.canal_w / 2)) ** 2, 0, 1) * plateau(z, z_top - 3, 3.0, 3.0))
        if self.kind == "pathologic" and v.posterior_bulge > 0:
            bulge = v.posterior_bulge
            zc, hh = float(v.center[2]), 0.5 * v.height * v.scale_back
            an.mods.sac_indent_front.append(
                lambda x, z: bulge * np.clip(1 - (x / (an.canal_w / 2)) ** 2, 0, 1) * np.clip(1 - ((z - zc) / hh) ** 2, 0, 1))

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        v = an.vertebrae[self.level_index]
        box = body_box(cv, v, posterior=an.canal_ap + 8)
        if box is None:
            return
        u, vv, w = v.local(*cv.coords(box))
        shape = np.broadcast_shapes(u.shape, vv.shape, w.shape)
        noise = smooth_noise(rng, shape, 3.0 / cv.spacing)
        body_d = v.body_distance(u, vv, w)
        marrow = soft(body_d + 1.2)
        hh = v.half_height(u, vv)
        self.center = body_centre_roi(v)
        if self.chronic:  # an old, healed fracture: collapse with normal marrow
            self.record("lesion", box, marrow * 0)
            return
        if self.kind == "benign":
            superior = rng.random() < 0.8
            from_plate = (hh - w) if superior else (hh + w)  # mm below (or above) the fractured endplate
            diffuse = rng.random() < feat["benign_diffuse_oedema_rate"]
            band = float(rng.uniform(0.75, 0.95) * 2 * np.mean(hh)) if diffuse else float(rng.uniform(*feat["oedema_band_mm"]))
            oedema = soft(from_plate - band + 1.5 * noise, 1.5) * marrow
            cv.paint(box, oedema, textured(oedema_values(tt, rng), noise, 0.05))
            mask = oedema
            if rng.random() < feat["fracture_line_rate"]:  # low-signal band parallel to the endplate
                depth = float(rng.uniform(0.3, 0.6) * min(band, 8.0))
                line = soft(np.abs(from_plate - depth + 0.4 * noise) - 0.8, 0.6) * marrow
                cv.paint(box, line, tt.mix("cortex", "marrow", 0.3), channels=[T1, T2])
            if rng.random() < feat["fluid_sign_rate"]:
                cleft = soft(np.maximum(np.abs(from_plate - 2.2) - rng.uniform(0.8, 1.6),
                                        np.abs(vv - rng.uniform(-0.15, 0.1) * v.depth) - rng.uniform(0.25, 0.4) * v.depth), 0.6)
                cleft = cleft * marrow
                cv.paint(box, cleft, np.array([tt["csf"][T1], tt["csf"][T2] * 0.95, tt["csf"][STIR] * 0.95, 0.1], np.float32))
                self.params["fluid_sign"] = True
                self.record("fluid_sign", box, cleft)
            if self.params.get("retropulsion"):
                retro = float(self.params.get("retro_mm", 3.0))  # type: ignore[arg-type]
                frag = ellipsoid_distance(u, vv - (v.depth / 2 + retro / 2), w - (np.mean(hh) - 3.5) * (1 if superior else -1),
                                          (0.28 * v.width, retro / 2 + 1.5, 3.0))
                cv.paint(box, soft(frag, 0.8), tt["cortex"])
                cv.paint(box, soft(frag + 1.0, 0.8), tt["marrow"])
            self.record("lesion", box, mask)
        else:
            partial = rng.random() < feat["pathologic_partial_rate"]
            if partial:  # most of the body, from the posterior side
                keep = rng.uniform(0.55, 0.85)
                d = (-vv - (keep - 0.5) * v.depth) + 2.0 * noise
                region = soft(d, 2.0) * marrow
            else:
                region = marrow
            pedicle = rng.random() < feat["pathologic_pedicle_rate"]
            if pedicle:
                pe = soft(posterior_element_distance(v, an, u, vv, w) + 1.0)
                near = soft(vv - (v.depth / 2 + an.canal_ap + 3), 2.0)  # pedicles, not the spinous process
                region = np.maximum(region, pe * near)
            vals = lytic_values(tt, rng) if rng.random() < 0.75 else blastic_values(tt, rng)
            cv.paint(box, region, textured(vals, noise, 0.1))
            if rng.random() < feat["pathologic_fluid_sign_rate"]:
                cleft = soft(np.maximum(np.abs(hh - w - 2.2) - 1.0, np.abs(vv) - 0.3 * v.depth), 0.6) * marrow
                cv.paint(box, cleft, np.array([tt["csf"][T1], tt["csf"][T2] * 0.95, tt["csf"][STIR] * 0.95, 0.1], np.float32))
            self.params.update(pedicle=pedicle, partial=partial)
            self.record("lesion", box, region)


# ------------------------------------------------------------------------------------------
# mimics (compartment none, fracture none)
# ------------------------------------------------------------------------------------------

class Haemangioma(Finding):
    def __init__(self, **kw: object):
        super().__init__(name="haemangioma", compartment="none", fracture="none", **kw)  # type: ignore[arg-type]

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        v = an.vertebrae[self.level_index]
        r = rng.uniform(*feat["haemangioma_radius_mm"])
        radii = np.minimum(np.array([r, r * rng.uniform(0.8, 1.1), r * rng.uniform(0.8, 1.1)]),
                           [v.width / 2 - 2, v.depth / 2 - 2, v.height / 2 - 1.5])
        c = np.array([rng.uniform(-0.25, 0.25) * v.width, rng.uniform(-0.25, 0.2) * v.depth, rng.uniform(-0.2, 0.2) * v.height])
        out = blob_in_body(cv, an, v, rng, c, radii, irregular=0.5)
        if out is None:
            return
        box, mask, noise, (u, vv, w) = out
        m, csf = tt["marrow"], tt["csf"]
        vals = np.array([m[T1] * rng.uniform(1.18, 1.4), m[T2] + rng.uniform(0.5, 0.8) * (csf[T2] - m[T2]),
                         m[STIR] + rng.uniform(0.1, 0.5) * (csf[STIR] - m[STIR]),
                         m[T1C] + rng.uniform(0.0, 0.6) * (0.7 - m[T1C])], np.float32)
        full = textured(vals, noise, 0.04)
        # corduroy: thickened vertical trabeculae, dark columns running along the spine
        lam = rng.uniform(2.5, 4.0)
        cols = ((np.cos(2 * np.pi * u / lam) > 0.8) | (np.cos(2 * np.pi * vv / lam) > 0.8)).astype(np.float32)
        cols = np.broadcast_to(cols, mask.shape)
        full = full * (1 - 0.45 * cols[None])
        cv.paint(box, mask, full)
        self.record("lesion", box, mask)
        self.center = v.center + _uvw_to_lps(v, c)
        self.occupies = {self.level_index}


class Modic1(Finding):
    def __init__(self, **kw: object):
        super().__init__(name="modic1", compartment="none", fracture="none", **kw)  # type: ignore[arg-type]

    def modify(self, an: Anatomy, rng: np.random.Generator, feat: dict) -> None:
        disc = an.discs[min(self.level_index, len(an.discs) - 1)]
        disc.degeneration = float(rng.uniform(0.75, 1.0))
        disc.height *= float(rng.uniform(0.55, 0.8))
        self.occupies = {self.level_index, self.level_index + 1}

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        di = min(self.level_index, len(an.discs) - 1)
        disc = an.discs[di]
        masks = []
        vals = oedema_values(tt, rng, strength=rng.uniform(0.8, 1.0))
        for v, sign in ((disc.upper, -1.0), (disc.lower, 1.0)):  # inferior plate of the upper body, superior of the lower
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
            cv.paint(box, mask, textured(vals, noise, 0.05))
            masks.append((box, mask))
        if masks:
            self.record("lesion", *masks[0])
        self.center = disc.center + np.array([0.0, rng.uniform(-0.2, 0.2) * disc.upper.depth, 0.0])


class SchmorlNode(Finding):
    def __init__(self, **kw: object):
        super().__init__(name="schmorl_node", compartment="none", fracture="none", **kw)  # type: ignore[arg-type]

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
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
        if rng.random() < feat["schmorl_oedema_rate"]:
            halo = soft(d - rng.uniform(2.5, 6.0), 2.0) * marrow
            cv.paint(box, halo, oedema_values(tt, rng, strength=rng.uniform(0.6, 1.0)))
        cv.paint(box, soft(d + 0.0, 0.8) * marrow, tt["cortex"])  # sclerotic rim
        node = soft(d + 1.0, 0.8) * marrow
        cv.paint(box, node, tt.mix("annulus", "nucleus", 0.4))
        self.record("lesion", box, soft(d, 1.0) * marrow)
        self.center = v.center + _uvw_to_lps(v, c - np.array([0, 0, sgn * r * 0.4]))
        self.occupies = {self.level_index}


class Discitis(Finding):
    """Discitis-osteomyelitis: crosses the disc, both endplates and both bodies involved."""

    def __init__(self, **kw: object):
        super().__init__(name="discitis", compartment="none", fracture="none", **kw)  # type: ignore[arg-type]

    def modify(self, an: Anatomy, rng: np.random.Generator, feat: dict) -> None:
        disc = an.discs[min(self.level_index, len(an.discs) - 1)]
        disc.height *= float(rng.uniform(0.55, 0.85))
        self.occupies = {self.level_index, self.level_index + 1}

    def paint(self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: dict) -> None:
        disc: Disc = an.discs[min(self.level_index, len(an.discs) - 1)]
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
            cv.paint(box, mask, textured(oed, noise, 0.06))
        box = cv.box(disc.center - np.array([disc.upper.width / 2 + 4, disc.upper.depth / 2 + 4, disc.height + 5]),
                     disc.center + np.array([disc.upper.width / 2 + 4, disc.upper.depth / 2 + 4, disc.height + 5]))
        if box is None:
            return
        u, vv, w = disc.local(*cv.coords(box))
        whole, _ = disc_distance(disc, u, vv, w)
        fluid = soft(whole + 0.5, 1.0)
        csf = tt["csf"]
        cv.paint(box, fluid, np.array([csf[T1] * 1.8, csf[T2] * rng.uniform(0.7, 0.9), csf[STIR] * rng.uniform(0.7, 0.9),
                                       rng.uniform(0.3, 0.5)], np.float32))
        rim = fluid * (1 - soft(whole + 2.5, 1.0))
        cv.paint(box, rim, np.array([0, 0, 0, rng.uniform(0.6, 0.8)], np.float32), channels=[T1C])
        if rng.random() < feat["phlegmon_rate"]:
            x, y, z = cv.coords(box)
            front = disc.center[1] - disc.upper.depth / 2
            phleg = soft(np.maximum(np.abs(y - (front - 4)) - 3.5, np.abs(z - disc.center[2]) - disc.height - 6), 1.5)
            phleg = phleg * soft(np.abs(x) - disc.upper.width / 2, 2.0)
            cv.paint(box, phleg, soft_tissue_mass_values(tt, rng))
        self.record("lesion", box, fluid)
        self.center = disc.center.copy()


FINDINGS: dict[str, Callable[[], Finding]] = {
    "lytic_metastasis": lambda: BodyMetastasis("lytic"),
    "blastic_metastasis": lambda: BodyMetastasis("blastic"),
    "mixed_metastasis": lambda: BodyMetastasis("mixed"),
    "epidural_extension": EpiduralExtension,
    "paraspinal_mass": ParaspinalMass,
    "meningioma": lambda: IntraduralMass("meningioma"),
    "schwannoma": lambda: IntraduralMass("schwannoma"),
    "drop_metastases": DropMetastases,
    "intramedullary_metastasis": IntramedullaryMetastasis,
    "osteoporotic_fracture": lambda: Fracture("benign"),
    "pathologic_fracture": lambda: Fracture("pathologic"),
    "haemangioma": Haemangioma,
    "modic1": Modic1,
    "schmorl_node": SchmorlNode,
    "discitis": Discitis,
}
"""Every finding the generator renders; keys are the manifest's ``finding`` values."""

DISC_FINDINGS = {"modic1", "discitis"}
