"""Normal spine anatomy in patient LPS millimetres, and its painting onto the object grid.

A segment of several levels (cervical, thoracic or lumbar) along a curved centreline in
the mid-sagittal plane: vertebral bodies (cortex, endplates, marrow), discs (annulus,
nucleus, degeneration), pedicles, laminae, spinous processes, the canal with epidural fat,
the thecal sac with CSF, the cord (conus and cauda equina roots in the lumbar sac),
paraspinal muscles, subcutaneous fat and the tissues in front of the spine. Every size,
curve and signal varies between patients.

Each vertebra has its own local frame: ``u`` left-right, ``v`` antero-posterior (posterior
positive), ``w`` along the spine (superior positive), tilted with the local curvature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spinelesion.phantom.canvas import (
    Canvas,
    box_distance,
    ellipsoid_distance,
    smooth_noise,
    soft,
    superellipse_distance,
)
from spinelesion.phantom.tissues import TissueTable

LEVELS = [
    "C2",
    "C3",
    "C4",
    "C5",
    "C6",
    "C7",
    *[f"T{i}" for i in range(1, 13)],
    *[f"L{i}" for i in range(1, 6)],
    "S1",
]
# (body height, AP depth, LR width, disc height, canal AP, canal LR, spinous length) in mm, per region
REGION_DIMS = {
    "cervical": (14.0, 16.0, 22.0, 5.0, 14.0, 22.0, 18.0),
    "thoracic": (21.0, 27.0, 32.0, 5.5, 14.0, 17.0, 30.0),
    "lumbar": (27.0, 34.0, 46.0, 10.0, 17.0, 22.0, 30.0),
}
ENLARGEMENT = (0.2, 0.55)  # lumbosacral enlargement: the cord up to 20-55 % wider (lumbar segments)
ENLARGEMENT_PEAK_MM, ENLARGEMENT_WIDTH_MM = 10.0, 35.0  # widest 10 mm above the conus, fading upwards
CONUS_LENGTH_MM = (22.0, 45.0)  # the conus narrows to its tip over this length
REGION_START = {"cervical": (1, 4), "thoracic": (3, 11), "lumbar": (15, 18)}  # first level index range


def region_of(level: str) -> str:
    return {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "lumbar"}[level[0]]


@dataclass
class Vertebra:
    name: str
    height: float
    depth: float
    width: float
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    tilt: float = 0.0
    # Shape changes made by findings (1.0 = normal height at that part of the body).
    scale_front: float = 1.0
    scale_back: float = 1.0
    concavity: float = 0.0  # extra central endplate depression (fraction of half height)
    posterior_bulge: float = 0.0  # mm; > 0 is a convex posterior border
    state: str = "none"  # fracture label of this body

    def local(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c, s = np.cos(self.tilt), np.sin(self.tilt)
        dy, dz = y - self.center[1], z - self.center[2]
        return x - self.center[0] + 0 * dy, dy * c - dz * s, dy * s + dz * c

    def half_height(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Half height across the body: wedge (front vs back) and central concavity."""
        t = np.clip((v + self.depth / 2) / self.depth, 0, 1)  # 0 anterior .. 1 posterior
        h = 0.5 * self.height * (self.scale_front + (self.scale_back - self.scale_front) * t)
        r2 = np.clip((u / (self.width / 2)) ** 2 + (v / (self.depth / 2)) ** 2, 0, 1)
        return h * (1.0 - (0.06 + self.concavity) * (1.0 - r2))

    def body_distance(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        hh = self.half_height(u, v)
        frac = np.clip(w / np.maximum(hh, 1e-3), -1, 1)
        # posterior border: slightly concave normally, convex when bulging (pathologic)
        back = self.depth / 2 + (self.posterior_bulge - 1.0) * (1.0 - frac**2)
        b = np.where(v > 0, back, self.depth / 2)
        d_xy = superellipse_distance(self.width / 2, b, u, v, n=2.4)
        return np.maximum(d_xy, np.abs(w) - hh)

    @property
    def region(self) -> str:
        return region_of(self.name)


@dataclass
class Disc:
    upper: Vertebra
    lower: Vertebra
    height: float
    degeneration: float = 0.0  # 0 healthy .. 1 dark, narrowed
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    tilt: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.upper.name}-{self.lower.name}"

    def local(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c, s = np.cos(self.tilt), np.sin(self.tilt)
        dy, dz = y - self.center[1], z - self.center[2]
        return x - self.center[0] + 0 * dy, dy * c - dz * s, dy * s + dz * c


@dataclass
class CanalMods:
    """Changes of the canal contents made by findings, as functions of LPS (x, z) or z."""

    cord_du: list[Callable[[np.ndarray], np.ndarray]] = field(default_factory=list)
    cord_dv: list[Callable[[np.ndarray], np.ndarray]] = field(default_factory=list)
    cord_scale: list[Callable[[np.ndarray], np.ndarray]] = field(default_factory=list)
    cord_oedema: list[Callable[[np.ndarray], np.ndarray]] = field(default_factory=list)
    sac_indent_front: list[Callable[[np.ndarray, np.ndarray], np.ndarray]] = field(default_factory=list)
    sac_indent_back: list[Callable[[np.ndarray, np.ndarray], np.ndarray]] = field(default_factory=list)
    clumped_roots: float = 0.0

    @staticmethod
    def total(fns: list, *args: np.ndarray) -> np.ndarray | float:
        out: np.ndarray | float = 0.0
        for f in fns:
            out = out + f(*args)
        return out


@dataclass
class Anatomy:
    region: str
    vertebrae: list[Vertebra]
    discs: list[Disc]
    curve: tuple[float, float, float]  # centreline y = a + b*t + c*t^2 with t = z / 100
    canal_ap: float
    canal_w: float
    fat_back: float
    cord_ap: float
    cord_w: float
    conus_z: float | None
    posterior_depth: float  # from the body centreline to the skin, mm
    subcut: float
    age: float
    roots: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (u, v, radius) offsets in the sac
    # The lumbosacral enlargement and the conus (real lumbar T2, vb2: the cord above the conus
    # fills most of the lower thoracic sac, then narrows over a few centimetres): how much wider
    # the cord grows there (fraction) and over how many mm the conus narrows to its tip.
    enlargement: float = 0.0
    conus_len: float = 14.0
    # Degenerative narrowing of the sac at disc levels (:func:`degenerate_canal`): per disc
    # (z of its centre, disc bulge into the canal mm, ligamentum flavum thickening mm, half length mm)
    stenosis: list[tuple[float, float, float, float]] = field(default_factory=list)
    mods: CanalMods = field(default_factory=CanalMods)

    def centre_y(self, z: np.ndarray | float) -> np.ndarray:
        a, b, c = self.curve
        t = np.asarray(z, dtype=np.float32) / 100.0
        return a + b * t + c * t * t

    def slope(self, z: np.ndarray | float) -> np.ndarray:
        _, b, c = self.curve
        return (b + 2 * c * np.asarray(z) / 100.0) / 100.0

    def depth_at(self, z: np.ndarray) -> np.ndarray:
        zs = [v.center[2] for v in self.vertebrae][::-1]
        ds = [v.depth for v in self.vertebrae][::-1]
        return np.interp(z, zs, ds).astype(np.float32)

    def canal_front(self, z: np.ndarray) -> np.ndarray:
        """y of the anterior canal wall (posterior surface of bodies and discs)."""
        return self.centre_y(z) + self.depth_at(z) / 2 + 0.5

    def sac_geometry(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(y centre, AP half-axis, LR half-axis) of the thecal sac at z."""
        front = self.canal_front(z)
        b = np.full_like(front, (self.canal_ap - self.fat_back) / 2 - 0.3)
        a = np.full_like(front, self.canal_w / 2 - 1.5)
        return front + 0.6 + b, b, a

    @property
    def z_range(self) -> tuple[float, float]:
        top, bottom = self.vertebrae[0], self.vertebrae[-1]
        return bottom.center[2] - bottom.height / 2, top.center[2] + top.height / 2

    def level_at(self, z: float) -> Vertebra:
        """The vertebra whose level (body plus half of each adjacent disc) contains z."""
        return min(self.vertebrae, key=lambda v: abs(v.center[2] - z))


def sample_anatomy(rng: np.random.Generator, cfg: dict, region: str | None = None) -> Anatomy:
    """Sizes, curvature and levels of one patient's spine segment (before layout)."""
    weights = cfg["region_weights"]
    if region is None:
        names = list(weights)
        p = np.array([weights[n] for n in names], dtype=float)
        region = str(rng.choice(names, p=p / p.sum()))
    # one extra level above and below: context that fills the field of view, never a finding
    n = int(rng.integers(cfg["levels"][0], cfg["levels"][1] + 1)) + 2
    lo, hi = REGION_START[region]
    start = min(int(rng.integers(lo, hi + 1)), len(LEVELS) - n)
    names = LEVELS[start : start + n]
    size = float(rng.uniform(*cfg["size_scale"]))
    h0, d0, w0, disc0, cap0, caw0, sp0 = REGION_DIMS[region]
    verts = []
    for i, name in enumerate(names):
        grow = 1.0 + 0.03 * i  # bodies grow caudally
        verts.append(
            Vertebra(
                name,
                height=h0 * size * grow * rng.uniform(0.94, 1.06),
                depth=d0 * size * grow * rng.uniform(0.94, 1.06),
                width=w0 * size * grow * rng.uniform(0.94, 1.06),
            )
        )
    age = float(rng.uniform(*cfg["age"]))
    degeneration_rate = float(np.clip((age - 25) / 60, 0, 1)) * cfg["disc_degeneration"]
    discs = []
    for up, low in zip(verts[:-1], verts[1:], strict=True):
        deg = float(
            np.clip(rng.beta(1.2, 3.0) + (rng.random() < degeneration_rate) * rng.uniform(0.3, 0.8), 0, 1)
        )
        discs.append(
            Disc(up, low, height=disc0 * size * rng.uniform(0.85, 1.15) * (1 - 0.35 * deg), degeneration=deg)
        )
    # lordosis (cervical, lumbar): the middle lies anterior to the ends; kyphosis: posterior
    curve_sign = 1.0 if region in ("cervical", "lumbar") else -1.0
    amp = float(rng.uniform(*cfg["curvature_mm"])) * curve_sign
    conus = None
    cord_ap, cord_w = (7.5, 11.0) if region == "cervical" else (6.5, 8.5)
    cord_ap *= size * rng.uniform(0.9, 1.1)
    cord_w *= size * rng.uniform(0.9, 1.1)
    anatomy = Anatomy(
        region=region,
        vertebrae=verts,
        discs=discs,
        curve=(0.0, float(rng.uniform(-8, 8)), amp),
        canal_ap=cap0 * size * rng.uniform(0.88, 1.12),
        canal_w=caw0 * size * rng.uniform(0.9, 1.1),
        fat_back={"cervical": 1.0, "thoracic": 2.5, "lumbar": 4.0}[region] * rng.uniform(0.6, 1.4),
        cord_ap=cord_ap,
        cord_w=cord_w,
        conus_z=conus,
        posterior_depth={"cervical": 75.0, "thoracic": 85.0, "lumbar": 95.0}[region]
        * size
        * rng.uniform(0.85, 1.2),
        subcut=float(rng.uniform(6, 30)),
        age=age,
    )
    return anatomy


def layout(anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Stack bodies and discs along z (centred on 0) and place them on the curved centreline."""
    items: list[tuple[str, object, float]] = []
    for i, v in enumerate(anatomy.vertebrae):
        mean_scale = 0.5 * (v.scale_front + v.scale_back) * (1 - 0.5 * v.concavity)
        items.append(("v", v, v.height * mean_scale))
        if i < len(anatomy.discs):
            items.append(("d", anatomy.discs[i], anatomy.discs[i].height))
    total = sum(h for _, _, h in items)
    z = total / 2
    centres = []
    for kind, obj, h in items:
        centres.append((kind, obj, z - h / 2))
        z -= h
    # curve[2] holds the bow in mm (ends relative to the middle) until the length is known
    _, slope, bow = anatomy.curve
    half = total / 200.0  # t = z / 100 at either end
    anatomy.curve = (0.0, slope, bow / max(half * half, 1e-6))
    for _kind, obj, zc in centres:
        y = float(anatomy.centre_y(zc))
        tilt = float(np.arctan(anatomy.slope(zc)))
        obj.center = np.array([0.0, y, zc])  # type: ignore[attr-defined]  # vertebra or disc: both have it
        obj.tilt = tilt  # type: ignore[attr-defined]  # vertebra or disc: both have it
    if anatomy.region == "lumbar":
        l1 = next((v for v in anatomy.vertebrae if v.name in ("L1", "L2", "T12")), None)
        if l1 is not None:
            offset = {"T12": -0.8, "L1": 0.0, "L2": 0.9}[l1.name] * l1.height
            anatomy.conus_z = float(l1.center[2] + offset + rng.uniform(-8, 8))
        else:  # segment entirely below the conus: only roots
            anatomy.conus_z = float(anatomy.z_range[1] + 50)
    n_roots = int(rng.integers(10, 18))
    anatomy.roots = np.stack(
        [rng.uniform(-0.75, 0.75, n_roots), rng.uniform(0.0, 0.75, n_roots), rng.uniform(0.6, 1.0, n_roots)],
        1,
    )
    # drawn last: the draws before (sizes, levels, roots) stay those of earlier phantom versions
    anatomy.enlargement = float(rng.uniform(*ENLARGEMENT))
    anatomy.conus_len = float(rng.uniform(*CONUS_LENGTH_MM))


def degenerate_canal(anatomy: Anatomy, rng: np.random.Generator, cfg: dict | None) -> None:
    """Degenerative narrowing of the canal at disc levels, a normal finding of adult spines that
    no lesion class is: a disc bulging into the front of the canal and a thickened ligamentum
    flavum pressing on its back, the sac narrowed to an hourglass between two levels. Real lumbar
    exams of older patients show it at most levels (VB1, 2026-12-07), and a model that had only
    seen capacious sacs called the narrowed ones intradural masses (the bright CSF above and below
    a narrowing reads like a mass's CSF caps). Each disc narrows at ``rate`` x (0.3 + 0.7 x its
    degeneration); ``cfg`` None or rate 0: none (and no draw, so earlier renderings stay as
    they were). After :func:`layout`: the discs' centres are known."""
    rate = float((cfg or {}).get("rate", 0.0))
    if rate <= 0:
        return
    front_mm, back_mm = cfg["front_mm"], cfg["back_mm"]  # type: ignore[index]
    for disc in anatomy.discs:
        if rng.random() >= rate * (0.3 + 0.7 * disc.degeneration):
            continue
        front = float(rng.uniform(*front_mm)) * (0.5 + 0.5 * disc.degeneration)
        back = float(rng.uniform(*back_mm))
        half = 0.5 * disc.height + float(rng.uniform(1.0, 4.0))
        anatomy.stenosis.append((float(disc.center[2]), front, back, half))


def stenosis_profile(
    an: Anatomy, x: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """How far (mm) disc bulges push the sac's front wall back and thickened ligaments push its
    back wall forward at LPS (x, z): greatest in the midline at each narrowed disc's centre."""
    front: np.ndarray | float = 0.0
    back: np.ndarray | float = 0.0
    if not an.stenosis:
        return front, back
    across = np.sqrt(np.clip(1.0 - (x / max(an.canal_w / 2, 1e-3)) ** 2, 0.0, 1.0))
    for zc, f, b, half in an.stenosis:
        along = np.exp(-0.5 * ((z - zc) / half) ** 2) * across
        front = front + f * along
        back = back + b * along
    return front, back


def canvas_bounds(anatomy: Anatomy, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    z0, z1 = anatomy.z_range
    margin = cfg["margin_mm"]
    ys = anatomy.centre_y(np.array([z0, z1, (z0 + z1) / 2]))
    lo = np.array([-cfg["slab_half_width_mm"], float(ys.min()) - cfg["anterior_mm"], z0 - margin])
    hi = np.array([cfg["slab_half_width_mm"], float(ys.max()) + anatomy.posterior_depth + 10, z1 + margin])
    return lo, hi


# --------------------------------------------------------------------------------------------
# painting
# --------------------------------------------------------------------------------------------


def paint_background(cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator) -> None:
    """Soft tissues around the spine: muscle, fat, skin, air, and what lies in front."""
    box = (slice(0, cv.shape[0]), slice(0, cv.shape[1]), slice(0, cv.shape[2]))
    x, y, z = cv.coords(box)
    yc = an.centre_y(z)
    rel = y - yc  # mm posterior of the body centreline
    texture = smooth_noise(rng, cv.shape, 12.0 / cv.spacing)
    # front: organs/soft tissue mixed with fat
    fat_mix = np.clip(0.5 + 0.35 * smooth_noise(rng, cv.shape, 8.0 / cv.spacing), 0, 1)
    front = tt["soft_tissue"][:, None, None, None] * (1 - fat_mix) + tt["fat"][:, None, None, None] * fat_mix
    cv.img[:] = front * (1 + 0.08 * texture)[None]
    depth = an.depth_at(z)
    # prevertebral muscle band (psoas / longus colli) hugging the front of the bodies
    band = soft(np.abs(rel + depth / 2 + 6) - 6, 2.0) * soft(np.abs(x) - (an.canal_w + 22), 3.0)
    cv.paint(box, band, tt["muscle"])
    # posterior: paraspinal muscle, subcutaneous fat, skin, air
    skin = an.posterior_depth
    muscle_end = skin - an.subcut
    post_muscle = soft(np.maximum(depth / 2 - rel, rel - muscle_end), 2.0)
    cv.paint(box, post_muscle, tt["muscle"][:, None, None, None] * (1 + 0.05 * texture[None]))
    cv.paint(box, soft(np.maximum(muscle_end - rel, rel - skin), 1.5), tt["fat"])
    cv.paint(box, soft(skin - rel, 1.0), tt["air"])
    if an.region == "thoracic":  # lungs beside and in front of the thoracic spine
        lung = soft(np.maximum(26 - np.abs(x), rel + depth / 2 + 4), 3.0)
        cv.paint(box, lung, tt["lung"])
    if an.region == "cervical":  # airway in front of the cervical spine
        airway = soft(np.maximum(np.abs(x) - 9, np.abs(rel + depth / 2 + 22) - 6), 1.5)
        cv.paint(box, airway, tt["air"])
    # great vessel in front of the spine (aorta on the left: +x in LPS), a flow void on spin echo
    if an.region != "cervical":
        vessel = soft(np.sqrt((x - 14) ** 2 + (rel + depth / 2 + 14) ** 2) - 11, 1.0)
        cv.paint(box, vessel, tt["vessel"])


def posterior_element_distance(
    v: Vertebra, an: Anatomy, u: np.ndarray, vv: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """Pedicles, laminae, spinous process and articular processes as a union of rounded boxes."""
    d_back = v.depth / 2
    cw, cap = an.canal_w, an.canal_ap
    h = v.height
    ped_u = cw / 2 + 3.5
    pedicle = box_distance(
        np.abs(u) - ped_u, vv - (d_back + cap / 2), w - 0.1 * h, (3.5, cap / 2 + 2.5, 0.28 * h), 1.5
    )
    lam_v = d_back + cap + 2.5
    lamina = box_distance(u, vv - lam_v, w + 0.05 * h, (ped_u + 2.5, 2.8, 0.45 * h), 1.2)
    sp_len = REGION_DIMS[v.region][6] * (v.depth / REGION_DIMS[v.region][1])
    slope = {"cervical": 0.15, "thoracic": 0.8, "lumbar": 0.1}[v.region]
    t = vv - (lam_v + sp_len / 2)
    # spinous processes point down and back (steeply in the thoracic spine)
    spinous = box_distance(u, t, w + 0.1 * h - slope * (vv - lam_v), (2.5, sp_len / 2, 0.22 * h + 2), 1.5)
    facet = box_distance(np.abs(u) - (ped_u + 2), vv - (d_back + cap + 1.0), w, (3.5, 3.5, 0.62 * h), 1.5)
    return np.minimum(np.minimum(pedicle, lamina), np.minimum(spinous, facet))


def vertebra_box(
    v: Vertebra, an: Anatomy, cv: Canvas, posterior: bool = True
) -> tuple[slice, slice, slice] | None:
    reach = v.depth / 2 + (an.canal_ap + REGION_DIMS[v.region][6] * 1.6 + 12 if posterior else 4)
    lo = v.center + np.array([-(v.width / 2 + 12), -v.depth / 2 - 6, -v.height * 0.9 - 8])
    hi = v.center + np.array([v.width / 2 + 12, reach, v.height * 0.9 + 8])
    return cv.box(lo, hi)


def paint_vertebra(
    cv: Canvas,
    an: Anatomy,
    v: Vertebra,
    tt: TissueTable,
    rng: np.random.Generator,
    cortex_mm: float = 1.2,
    focus_rate: float = 0.0,
) -> None:
    box = vertebra_box(v, an, cv)
    if box is None:
        return
    x, y, z = cv.coords(box)
    u, vv, w = v.local(x, y, z)
    shape = np.broadcast_shapes(u.shape, vv.shape, w.shape)
    texture = smooth_noise(rng, shape, 4.0 / cv.spacing)
    heterogeneity = 0.02 + 0.06 * tt.fat_fraction  # fattier marrow is patchier
    marrow = tt["marrow"][:, None, None, None] * (1 + heterogeneity * texture[None])
    pe = posterior_element_distance(v, an, u, vv, w)
    cv.paint(box, soft(pe), tt["cortex"])
    cv.paint(box, soft(pe + cortex_mm), marrow * 0.97)
    d = v.body_distance(u, vv, w)
    cv.paint(box, soft(d), tt["cortex"])
    cv.paint(box, soft(d + cortex_mm), marrow)
    if focus_rate > 0 and rng.random() < focus_rate:
        paint_marrow_foci(cv, box, v, (u, vv, w), d + cortex_mm + 1.0, tt, rng)


def paint_marrow_foci(
    cv: Canvas,
    box: tuple[slice, slice, slice],
    v: Vertebra,
    uvw: tuple[np.ndarray, np.ndarray, np.ndarray],
    inside: np.ndarray,
    tt: TissueTable,
    rng: np.random.Generator,
) -> None:
    """Normal marrow heterogeneity: focal fat (T1 brighter, STIR dark) and red-marrow islands.

    A red-marrow island is darker than yellow marrow on T1 but stays brighter than muscle and
    disc, which is what separates it from a deposit (radiology.md: darker than disc or muscle
    is abnormal).
    """
    u, vv, w = uvw
    m, mu, disc = tt["marrow"], tt["muscle"], tt["annulus"]
    floor = 1.12 * max(float(mu[0]), float(disc[0]))
    for _ in range(int(rng.integers(1, 4))):
        c = rng.uniform(-0.3, 0.3, 3) * np.array([v.width, v.depth, v.height])
        r = float(rng.uniform(2.0, 5.0))
        mask = soft(ellipsoid_distance(u - c[0], vv - c[1], w - c[2], (r, r, r * 0.8)), 1.0) * soft(inside)
        if rng.random() < 0.6:  # focal fat
            vals = tt.mix(m, "fat", float(rng.uniform(0.4, 0.8)))
        else:  # red marrow island: less fat, more water
            vals = m.copy()
            vals[0] = max(floor, float(m[0]) * float(rng.uniform(0.75, 0.9)))
            vals[2] = float(m[2]) * float(rng.uniform(1.1, 1.4))
        cv.paint(box, mask, vals)


def paint_basivertebral_vein(cv: Canvas, v: Vertebra, tt: TissueTable) -> None:
    lo = v.center - np.array([6, 0, 4])
    hi = v.center + np.array([6, v.depth / 2 + 2, 4])
    box = cv.box(lo, hi)
    if box is None:
        return
    u, vv, w = v.local(*cv.coords(box))
    d = ellipsoid_distance(u, vv - (v.depth / 2 - 4), w, (3.0, 4.5, 1.2))
    cv.paint(box, soft(d, 0.8), tt.mix("marrow", "csf", 0.55))


def disc_distance(disc: Disc, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whole disc, nucleus) signed distances."""
    depth = 0.5 * (disc.upper.depth + disc.lower.depth) + 1.5
    width = 0.5 * (disc.upper.width + disc.lower.width) + 1.0
    bulge = 1.0 + 0.08 * disc.degeneration
    d_xy = superellipse_distance(width / 2 * bulge, depth / 2 * bulge, u, v, n=2.4)
    whole = np.maximum(d_xy, np.abs(w) - disc.height / 2 - 1.2)  # overlaps the endplates a little
    nucleus = ellipsoid_distance(u, v + 0.08 * depth, w, (0.33 * width, 0.3 * depth, 0.3 * disc.height))
    return whole, nucleus


def paint_disc(cv: Canvas, disc: Disc, tt: TissueTable) -> None:
    depth = max(disc.upper.depth, disc.lower.depth)
    lo = disc.center - np.array([disc.upper.width / 2 + 6, depth / 2 + 6, disc.height + 6])
    hi = disc.center + np.array([disc.upper.width / 2 + 6, depth / 2 + 6, disc.height + 6])
    box = cv.box(lo, hi)
    if box is None:
        return
    u, v, w = disc.local(*cv.coords(box))
    whole, nucleus = disc_distance(disc, u, v, w)
    # only where the bodies are not (the endplate cortex stays)
    up_u, up_v, up_w = disc.upper.local(*cv.coords(box))
    lo_u, lo_v, lo_w = disc.lower.local(*cv.coords(box))
    outside_bodies = (1 - soft(disc.upper.body_distance(up_u, up_v, up_w) + 0.3)) * (
        1 - soft(disc.lower.body_distance(lo_u, lo_v, lo_w) + 0.3)
    )
    cv.paint(box, soft(whole) * outside_bodies, tt["annulus"])
    nucleus_value = tt.mix("nucleus", "nucleus_degenerated", disc.degeneration)
    cv.paint(box, soft(nucleus, 1.5) * outside_bodies, nucleus_value)


def canal_box(cv: Canvas, an: Anatomy) -> tuple[slice, slice, slice] | None:
    z0, z1 = an.z_range
    ys = an.canal_front(np.linspace(z0, z1, 16))
    lo = np.array([-(an.canal_w / 2 + 3), float(ys.min()) - 12, cv.origin[2]])
    hi = np.array(
        [an.canal_w / 2 + 3, float(ys.max()) + an.canal_ap + 12, cv.origin[2] + cv.spacing * cv.shape[2]]
    )
    return cv.box(lo, hi)


def sac_distance(an: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    yc, b, a = an.sac_geometry(z)
    d = superellipse_distance(a, b, x, y - yc, n=2.2)
    bulge, flavum = stenosis_profile(an, x, z)
    front = CanalMods.total(an.mods.sac_indent_front, x, z) + bulge
    back = CanalMods.total(an.mods.sac_indent_back, x, z) + flavum
    d = np.maximum(d, (yc - b + front) - y)  # anterior wall pushed back by extradural disease
    return np.maximum(d, y - (yc + b - back))


def cord_geometry(an: Anatomy, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x centre, y centre, LR half-axis, AP half-axis) of the cord at z (0 radius below the conus)."""
    yc, b, a = an.sac_geometry(z)
    du = CanalMods.total(an.mods.cord_du, z)
    dv = CanalMods.total(an.mods.cord_dv, z)
    scale = 1.0 + CanalMods.total(an.mods.cord_scale, z)
    taper: float | np.ndarray = 1.0
    if an.conus_z is not None:
        above = z - an.conus_z
        taper = np.clip(above / an.conus_len, 0.0, 1.0) ** 0.5
        # widest just above the conus, fading over the lower thoracic levels
        peak = an.conus_len + ENLARGEMENT_PEAK_MM
        bump = np.exp(-0.5 * (np.maximum(above - peak, 0.0) / ENLARGEMENT_WIDTH_MM) ** 2)
        scale = scale + an.enlargement * bump
    ra = np.minimum(an.cord_w / 2 * scale, a - 0.4) * taper
    rb = np.minimum(an.cord_ap / 2 * scale, b - 0.4) * taper
    xc = np.clip(0.0 + du, -(a - ra), a - ra)
    ycord = np.clip(yc - 0.12 * b + dv, yc - (b - rb), yc + (b - rb))
    return xc + 0 * z, ycord, ra + 0 * z, rb + 0 * z


def paint_canal(cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator) -> None:
    box = canal_box(cv, an)
    if box is None:
        return
    x, y, z = cv.coords(box)
    front = an.canal_front(z)
    canal = superellipse_distance(an.canal_w / 2, an.canal_ap / 2, x, y - (front + an.canal_ap / 2), n=2.2)
    cv.paint(box, soft(canal), tt["fat"])
    # anterior epidural veins: a thin layer behind the bodies, off the midline
    veins = soft(np.maximum(np.abs(y - front - 0.8) - 0.8, 3 - np.abs(x)), 0.8) * soft(canal)
    cv.paint(box, veins, tt["epidural_vein"])
    if an.stenosis:  # the bulging disc (its degenerated signal) and the thickened ligament
        bulge, flavum = stenosis_profile(an, x, z)
        disc_value = tt.mix("annulus", "nucleus_degenerated", 0.5)
        cv.paint(box, soft(np.maximum(front - y, y - (front + bulge)), 0.7) * soft(canal), disc_value)
        back_wall = front + an.canal_ap
        cv.paint(
            box, soft(np.maximum(back_wall - flavum - y, y - back_wall), 0.7) * soft(canal), tt["ligament"]
        )
    d_sac = sac_distance(an, x, y, z)
    cv.paint(box, soft(d_sac), tt["dura"])
    cv.paint(box, soft(d_sac + 0.6), tt["csf"])
    xc, yc, ra, rb = cord_geometry(an, z)
    cord = superellipse_distance(np.maximum(ra, 1e-3), np.maximum(rb, 1e-3), x - xc, y - yc, n=2.0)
    cord = np.where(ra > 0.3, cord, 10.0)
    oedema = np.clip(CanalMods.total(an.mods.cord_oedema, z), 0, 1)
    cord_value = (
        tt["cord"][:, None, None, None] * (1 - oedema)
        + tt.mix("cord", "csf", 0.55)[:, None, None, None] * oedema
    )
    inside_sac = soft(d_sac + 0.6)
    cv.paint(box, soft(cord, 0.8) * inside_sac, cord_value * np.ones((1, 1, 1, 1), np.float32))
    if an.conus_z is not None:
        paint_roots(cv, an, tt, box, x, y, z, inside_sac, rng)


def paint_roots(
    cv: Canvas,
    an: Anatomy,
    tt: TissueTable,
    box: tuple[slice, slice, slice],
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    inside_sac: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Cauda equina: thin roots below the conus, lying dorsally in the supine sac."""
    yc, b, a = an.sac_geometry(z)
    below = np.clip((an.conus_z - z) / 6.0, 0, 1)
    clump = an.mods.clumped_roots
    mask = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), np.float32)
    for ru, rv, rr in an.roots:
        wob = 1.2 * np.sin(z / 23.0 + 7 * ru)
        cu = (ru * (1 - 0.6 * clump)) * a + wob
        cv_ = yc + (rv * (1 - 0.5 * clump)) * b
        radius = (0.55 + 0.45 * rr) * (1 + 0.8 * clump)
        d = np.sqrt((x - cu) ** 2 + (y - cv_) ** 2) - radius
        mask = np.maximum(mask, soft(d, 0.7))
    cv.paint(box, mask * below * inside_sac, tt["cord"])
