"""Signal recipes: what each abnormal tissue looks like on T1, T2, STIR and fat-saturated T1c.

Every recipe is a function of the study's own tissue table (``TissueTable``, the normal
tissues' values drawn for this study) and returns one value per sequence, in the order
``T1, T2, STIR, T1C``. Recipes state relations, not absolute values ("darker than disc and
muscle on T1", "between marrow and CSF on STIR"), which is what ``docs/radiology.md``
gives, so they hold under any contrast the study draws. Code that inserts lesions into real
scans can call them with a table measured on that scan.
"""

from __future__ import annotations

import numpy as np

from spinelesion.phantom.tissues import TissueTable

T1, T2, STIR, T1C = 0, 1, 2, 3


def _vec(t1: float, t2: float, stir: float, t1c: float) -> np.ndarray:
    return np.array([t1, t2, stir, t1c], dtype=np.float32)


def toward(a: float, b: float, t: float) -> float:
    """``a`` moved a fraction ``t`` of the way to ``b``."""
    return float(a + t * (b - a))


def enhancing(tt: TissueTable, rng: np.random.Generator, lo: float, hi: float) -> float:
    """T1c of enhancing tissue: a fraction of the way from marrow to the brightest enhancement (vessel)."""
    # avid enhancement on fat-saturated T1c: well above suppressed marrow, whatever the draw
    top = max(float(tt["vessel"][T1C]) * 1.55, float(tt["marrow"][T1C]) * 3.0)
    return toward(float(tt["marrow"][T1C]), top, float(rng.uniform(lo, hi)))


def darker_than_disc_and_muscle(
    tt: TissueTable, rng: np.random.Generator, lo: float = 0.5, hi: float = 0.85
) -> float:
    """T1 of marrow replacement: below both muscle and disc (the abnormal-marrow rule)."""
    return float(rng.uniform(lo, hi) * min(tt["muscle"][T1], tt["annulus"][T1]))


def lytic_values(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    """Lytic deposit: T1 below disc and muscle, T2/STIR between marrow and CSF, enhancing."""
    m, csf = tt["marrow"], tt["csf"]
    return _vec(
        darker_than_disc_and_muscle(tt, rng),
        toward(m[T2], csf[T2], rng.uniform(0.5, 0.85)),
        toward(m[STIR], csf[STIR], rng.uniform(0.5, 0.85)),
        enhancing(tt, rng, 0.45, 0.85),
    )


def blastic_values(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    """Sclerotic deposit: dark on every sequence (near cortex), little enhancement."""
    m, cx, mu = tt["marrow"], tt["cortex"], tt["muscle"]
    return _vec(
        darker_than_disc_and_muscle(tt, rng, 0.25, 0.6),
        toward(cx[T2], min(mu[T2], m[T2]), rng.uniform(0.3, 0.9)),
        toward(cx[STIR], min(mu[STIR], m[STIR]), rng.uniform(0.2, 0.8)),
        m[T1C] * rng.uniform(0.8, 1.25),
    )


def oedema_values(tt: TissueTable, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Marrow oedema: T1 toward muscle, T2/STIR toward CSF (STIR above marrow), enhancing."""
    m, csf, mu = tt["marrow"], tt["csf"], tt["muscle"]
    s = strength
    return _vec(
        toward(m[T1], mu[T1] * 0.9, s * rng.uniform(0.65, 0.95)),
        toward(m[T2], csf[T2], s * rng.uniform(0.25, 0.5)),
        toward(m[STIR], csf[STIR], s * rng.uniform(0.45, 0.75)),
        toward(m[T1C], enhancing(tt, rng, 0.5, 0.8), s),
    )


def soft_tissue_mass_values(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    """Tumour soft tissue (epidural, paraspinal): T1 near muscle and well below marrow, T2/STIR above
    muscle, avid enhancement."""
    mu, csf = tt["muscle"], tt["csf"]
    t1 = min(
        float(mu[T1]) * rng.uniform(0.8, 1.05), float(tt["marrow"][T1]) * rng.uniform(0.35, 0.55)
    )  # T1-dark
    return _vec(
        t1,
        toward(mu[T2], csf[T2], rng.uniform(0.35, 0.6)),
        toward(mu[STIR], csf[STIR], rng.uniform(0.35, 0.6)),
        enhancing(tt, rng, 0.7, 1.0),
    )


def necrosis_values(tt: TissueTable) -> np.ndarray:
    """Necrotic centre: fluid-like on T2, not enhancing."""
    return tt.mix("csf", "muscle", 0.4)


def fluid_values(tt: TissueTable) -> np.ndarray:
    """Fluid cleft (the fluid sign): CSF-like, bright on T2/STIR, dark on T1, no enhancement."""
    csf = tt["csf"]
    return _vec(csf[T1], csf[T2] * 0.95, csf[STIR] * 0.95, min(float(csf[T1C]), float(tt["marrow"][T1C])))


def sclerotic_band_values(tt: TissueTable) -> np.ndarray:
    """Low-signal fracture band on T1 and T2: between cortex and marrow."""
    return tt.mix("cortex", "marrow", 0.3)


def haemangioma_values(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    """Haemangioma: T1 above marrow (fat), T2 bright, variable enhancement."""
    m, csf = tt["marrow"], tt["csf"]
    t1 = max(
        float(m[T1]) * rng.uniform(1.25, 1.45), toward(m[T1], tt["fat"][T1], rng.uniform(0.5, 0.9))
    )  # fat
    return _vec(
        t1,
        toward(m[T2], csf[T2], rng.uniform(0.5, 0.8)),
        toward(m[STIR], csf[STIR], rng.uniform(0.1, 0.5)),
        enhancing(tt, rng, 0.0, 0.6),
    )


def meningioma_values(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    """Meningioma: iso to cord on T1/T2, uniform brisk enhancement."""
    cord = tt["cord"]
    return _vec(
        cord[T1] * rng.uniform(0.9, 1.1),
        cord[T2] * rng.uniform(0.95, 1.25),
        cord[STIR] * rng.uniform(0.95, 1.2),
        enhancing(tt, rng, 0.8, 1.0),
    )


def schwannoma_values(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    """Schwannoma: T1 slightly below cord, T2/STIR between cord and CSF, enhancing."""
    cord, csf = tt["cord"], tt["csf"]
    return _vec(
        cord[T1] * rng.uniform(0.75, 0.95),
        toward(cord[T2], csf[T2], rng.uniform(0.45, 0.8)),
        toward(cord[STIR], csf[STIR], rng.uniform(0.4, 0.75)),
        enhancing(tt, rng, 0.65, 0.9),
    )


def cyst_values(tt: TissueTable) -> np.ndarray:
    """Cystic change in a tumour: fluid, no enhancement."""
    csf = tt["csf"]
    return _vec(csf[T1] * 1.3, csf[T2] * 0.95, csf[STIR] * 0.95, float(csf[T1C]) * 1.5)


def drop_values(tt: TissueTable, rng: np.random.Generator, visible: bool) -> np.ndarray:
    """Leptomeningeal nodule: bright after contrast; near CSF on T1, T2 and STIR unless ``visible``."""
    csf, cord = tt["csf"], tt["cord"]
    t2_mix = rng.uniform(0.55, 0.9) if visible else rng.uniform(0.05, 0.25)
    t1_mix = rng.uniform(0.3, 0.7)  # drawn either way: the draws after it stay where they were
    return _vec(
        toward(csf[T1], cord[T1], t1_mix if visible else t2_mix),
        toward(csf[T2], cord[T2], t2_mix),
        toward(csf[STIR], cord[STIR], t2_mix),
        enhancing(tt, rng, 0.75, 1.0),
    )


def intramedullary_nodule_values(
    tt: TissueTable, rng: np.random.Generator, variant: str = "plain"
) -> np.ndarray:
    """Cord metastasis: intensely enhancing; ``melanoma`` T1-bright, ``haemorrhage`` T2-dark."""
    cord, csf, fat = tt["cord"], tt["csf"], tt["fat"]
    v = _vec(
        cord[T1] * rng.uniform(0.85, 1.05),
        toward(cord[T2], csf[T2], rng.uniform(0.2, 0.5)),
        toward(cord[STIR], csf[STIR], rng.uniform(0.2, 0.5)),
        enhancing(tt, rng, 0.85, 1.05),
    )
    if variant == "melanoma":  # T1 shortening: toward fat, clearly above cord
        v[T1] = toward(float(cord[T1]), float(fat[T1]), rng.uniform(0.5, 0.9))
    elif variant == "haemorrhage":  # haemosiderin / deoxy-haemoglobin: T2 dark, below cord
        v[T2] = float(cord[T2]) * rng.uniform(0.25, 0.45)
        v[STIR] = float(cord[STIR]) * rng.uniform(0.25, 0.45)
    return v


def infected_disc_values(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    """Discitis: fluid-bright narrowed disc, T1 above CSF, mild central enhancement."""
    csf = tt["csf"]
    return _vec(
        csf[T1] * 1.8,
        csf[T2] * rng.uniform(0.85, 0.95),
        csf[STIR] * rng.uniform(0.85, 0.95),
        enhancing(tt, rng, 0.1, 0.35),
    )


def rim_enhancement(tt: TissueTable, rng: np.random.Generator) -> np.ndarray:
    """Only T1c matters (paint with ``channels=[T1C]``): an enhancing rim or dural tail."""
    return _vec(0.0, 0.0, 0.0, enhancing(tt, rng, 0.7, 0.95))
