"""Signal for inserted tissue, set relative to the study's own tissues, with its own noise.

:data:`RECIPES` holds, for every kind of abnormal tissue and every sequence, where its
signal lies between tissues measured in the study (``docs/radiology.md``): on T2 a lytic
deposit lies between marrow and CSF; on T1 it is darker than disc and muscle; oedema is
bright on STIR; a blastic deposit is dark on all sequences. Values are drawn per insertion
from these ranges, so only the relations carry the class, not a fixed intensity.

:func:`paint` replaces the *smooth* part of the image under a soft mask and keeps the
high-frequency residual, so the painted region has exactly the study's noise and fine
texture; masks are blurred by the acquisition's point spread first
(:meth:`Background.native_sigma_vox`), so edges are as sharp as the study's own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

Tissues = dict[str, float]
Recipe = Callable[[Tissues, np.random.Generator], float]


def _between(lo: str, hi: str, a: float, b: float) -> Recipe:
    """A point between tissue ``lo`` and tissue ``hi``: lo + U(a, b) * (hi - lo)."""
    return lambda t, rng: t[lo] + float(rng.uniform(a, b)) * (t[hi] - t[lo])


def _darker_than(names: tuple[str, ...], a: float, b: float) -> Recipe:
    """U(a, b) times the darkest of ``names``: below all of them."""
    return lambda t, rng: min(t[n] for n in names) * float(rng.uniform(a, b))


def _times(name: str, a: float, b: float) -> Recipe:
    return lambda t, rng: t[name] * float(rng.uniform(a, b))


def _enhancing(base: Recipe, a: float, b: float) -> Recipe:
    """T1 + gadolinium: the T1 value raised by U(a, b)."""
    return lambda t, rng: base(t, rng) * float(rng.uniform(a, b))


_T1_DARK = _darker_than(("disc", "muscle"), 0.5, 0.85)

RECIPES: dict[str, dict[str, Recipe]] = {
    # Marrow oedema (fracture, Modic 1, discitis): T1 dark, T2 / STIR bright.
    "oedema": {
        "t1": _darker_than(("marrow",), 0.45, 0.75),
        "t2": _between("marrow", "csf", 0.25, 0.55),
        "stir": _between("marrow", "csf", 0.4, 0.8),
        "t1c": _times("marrow", 0.8, 1.1),
    },
    # Lytic metastasis: T1 darker than disc and muscle, T2 / STIR bright, enhances.
    "lytic": {
        "t1": _T1_DARK,
        "t2": _between("marrow", "csf", 0.3, 0.75),
        "stir": _between("marrow", "csf", 0.45, 0.9),
        "t1c": _enhancing(_T1_DARK, 1.4, 2.2),
    },
    # Blastic (sclerotic) metastasis: dark on every sequence.
    "blastic": {
        "t1": _darker_than(("disc", "muscle"), 0.3, 0.6),
        "t2": _darker_than(("marrow", "muscle"), 0.45, 0.75),
        "stir": _darker_than(("marrow",), 0.4, 0.8),
        "t1c": _darker_than(("disc", "muscle"), 0.4, 0.75),
    },
    # Whole-body replacement of a pathologic fracture: abnormal signal, weaker than a focal lytic deposit.
    "replacement": {
        "t1": _T1_DARK,
        "t2": _between("marrow", "csf", 0.15, 0.55),
        "stir": _between("marrow", "csf", 0.35, 0.8),
        "t1c": _enhancing(_T1_DARK, 1.3, 2.0),
    },
    # Fluid sign / cleft: follows CSF.
    "fluid": {
        "t1": _times("csf", 0.9, 1.2),
        "t2": _times("csf", 0.85, 1.05),
        "stir": _times("csf", 0.85, 1.05),
        "t1c": _times("csf", 0.9, 1.2),
    },
    # Low-signal band parallel to the endplate (impacted trabeculae) on T1 and T2.
    "band": {
        "t1": _darker_than(("marrow", "disc"), 0.35, 0.6),
        "t2": _darker_than(("marrow",), 0.35, 0.65),
        "stir": _darker_than(("marrow",), 0.6, 0.9),
        "t1c": _darker_than(("marrow", "disc"), 0.4, 0.7),
    },
    # Epidural / paraspinal soft tissue: T1 dark (muscle-like), T2 intermediate-bright, enhances avidly.
    "soft_tissue": {
        "t1": _times("muscle", 0.85, 1.1),
        "t2": _between("marrow", "csf", 0.15, 0.5),
        "stir": _between("marrow", "csf", 0.4, 0.8),
        "t1c": _enhancing(_times("muscle", 0.85, 1.1), 1.6, 2.4),
    },
    # Meningioma: isointense to cord on T1 and T2, brisk uniform enhancement.
    "meningioma": {
        "t1": _times("cord", 0.9, 1.1),
        "t2": _times("cord", 0.85, 1.15),
        "stir": _times("cord", 0.9, 1.2),
        "t1c": _times("cord", 1.6, 2.4),
    },
    # Nerve-sheath tumour: T2 brighter than cord (target sign handled by the finding).
    "schwannoma": {
        "t1": _times("cord", 0.85, 1.05),
        "t2": _between("cord", "csf", 0.2, 0.6),
        "stir": _between("cord", "csf", 0.2, 0.6),
        "t1c": _times("cord", 1.5, 2.3),
    },
    # Leptomeningeal deposit: intermediate nodules in the CSF, vivid enhancement.
    "drop": {
        "t1": _times("cord", 0.9, 1.1),
        "t2": _times("cord", 0.8, 1.2),
        "stir": _times("cord", 0.8, 1.2),
        "t1c": _times("cord", 1.8, 2.6),
    },
    # Cord oedema around an intramedullary deposit: T2 bright over several segments.
    "cord_oedema": {
        "t1": _times("cord", 0.8, 0.95),
        "t2": _between("cord", "csf", 0.35, 0.7),
        "stir": _between("cord", "csf", 0.35, 0.7),
        "t1c": _times("cord", 0.85, 1.0),
    },
    # Intramedullary nodule: intermediate on T2, intense enhancement.
    "im_nodule": {
        "t1": _times("cord", 0.85, 1.05),
        "t2": _times("cord", 0.9, 1.3),
        "stir": _times("cord", 0.9, 1.3),
        "t1c": _times("cord", 2.0, 3.0),
    },
    # Haemorrhagic nodule: T2 dark.
    "haemorrhage": {
        "t1": _times("cord", 0.9, 1.4),
        "t2": _times("cord", 0.35, 0.65),
        "stir": _times("cord", 0.4, 0.7),
        "t1c": _times("cord", 1.0, 1.5),
    },
    # Haemangioma: fat and slow flow, T1 and T2 bright.
    "haemangioma": {
        "t1": _times("marrow", 1.1, 1.35),
        "t2": _between("marrow", "csf", 0.35, 0.75),
        "stir": _between("marrow", "csf", 0.2, 0.6),
        "t1c": _times("marrow", 1.1, 1.4),
    },
    # Focal fatty marrow (a fat island, a normal variant in most adult spines): fat signal,
    # brighter than the mixed marrow around it on T1 and fast spin-echo T2, suppressed on STIR
    # and on fat-saturated T1 + gadolinium, no enhancement.
    "focal_fat": {
        "t1": _times("marrow", 1.1, 1.4),
        "t2": _between("marrow", "csf", 0.1, 0.4),
        "stir": _times("marrow", 0.45, 0.8),
        "t1c": _times("marrow", 0.6, 0.9),
    },
    # Degenerated disc: dark on T2, low on T1.
    "degenerated_disc": {
        "t1": _times("disc", 0.7, 0.9),
        "t2": _times("disc", 0.5, 0.8),
        "stir": _times("disc", 0.5, 0.85),
        "t1c": _times("disc", 0.7, 0.9),
    },
    # Disc material (Schmorl node) and infected, fluid-filled disc (discitis).
    "disc": {
        "t1": _times("disc", 0.9, 1.1),
        "t2": _times("disc", 0.9, 1.1),
        "stir": _times("disc", 0.9, 1.1),
        "t1c": _times("disc", 0.9, 1.2),
    },
    "disc_fluid": {
        "t1": _darker_than(("disc",), 0.6, 0.85),
        "t2": _between("disc", "csf", 0.5, 1.0),
        "stir": _between("disc", "csf", 0.5, 1.0),
        "t1c": _times("disc", 1.3, 1.8),
    },
}


def signal(kind: str, sequence: str, tissues: Tissues, rng: np.random.Generator) -> float:
    """A value for ``kind`` on ``sequence``, relative to the study's ``tissues``."""
    return float(RECIPES[kind][sequence](tissues, rng))


def soft_mask(mask: np.ndarray, sigma_vox: np.ndarray) -> np.ndarray:
    """A (0..1) mask blurred by the acquisition's point spread."""
    return np.clip(ndimage.gaussian_filter(mask.astype(np.float32), sigma_vox), 0.0, 1.0)


def texture(rng: np.random.Generator, shape: tuple[int, ...], scale_vox: float, amount: float) -> np.ndarray:
    """Smooth multiplicative heterogeneity with mean 0 and sd ``amount``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), scale_vox)
    sd = float(noise.std()) or 1.0
    return noise / sd * amount


def paint(
    image: np.ndarray,
    box: tuple[slice, slice, slice],
    weight: np.ndarray,
    value: float | np.ndarray,
    heterogeneity: np.ndarray | None = None,
    residual_sigma: float = 1.5,
) -> None:
    """Set the smooth signal under ``weight`` (box-shaped, 0..1) to ``value``, in place.

    The image's high-pass residual (noise and fine texture) is kept, so the painted region
    cannot be told apart by its noise.
    """
    region = image[box]
    smooth = ndimage.gaussian_filter(region, residual_sigma)
    target = np.asarray(value, dtype=np.float32) * (
        1.0 + (heterogeneity if heterogeneity is not None else 0.0)
    )
    image[box] = region + weight * (target + (region - smooth) - region)


def quantise(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the study's own storage type (integer studies stay integer: no tell-tale
    continuous values inside the lesion)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    return image.astype(dtype)
