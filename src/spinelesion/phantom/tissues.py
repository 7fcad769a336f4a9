"""Tissue signal per sequence (T1, T2, STIR, T1 + gadolinium with fat saturation).

Values are relative (about 0..1) and follow the anatomy table of ``docs/radiology.md``:
fatty marrow bright on T1 (brighter than muscle and disc), intermediate on T2, dark on STIR;
CSF dark on T1 and very bright on T2/STIR; cord intermediate; a healthy nucleus bright on
T2; fat bright on T1, intermediate-bright on fast spin-echo T2, dark on STIR and on
fat-saturated post-contrast T1. Every study draws its own values around these (scanner,
field strength, parameters), so no tissue has a fixed intensity the model could memorise.

With ``contrast_spread`` > 0 (SynthSeg-style randomised contrast, Billot et al. 2023) each
value is drawn from a much wider log-normal range and then only the relations radiology
relies on are restored (:func:`enforce_relations`): the network has to learn relations,
not values.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#                   T1     T2     STIR   T1c(FS)
BASE: dict[str, tuple[float, float, float, float]] = {
    "air": (0.00, 0.00, 0.00, 0.00),
    "fat": (0.95, 0.72, 0.06, 0.08),
    "muscle": (0.34, 0.24, 0.22, 0.20),
    "cortex": (0.05, 0.05, 0.05, 0.05),
    "ligament": (0.07, 0.08, 0.08, 0.10),
    "annulus": (0.30, 0.28, 0.30, 0.16),
    "nucleus": (0.33, 0.85, 0.80, 0.18),
    "nucleus_degenerated": (0.28, 0.22, 0.24, 0.15),
    "csf": (0.10, 1.00, 0.95, 0.08),
    "cord": (0.42, 0.45, 0.42, 0.28),
    "dura": (0.10, 0.15, 0.15, 0.35),
    "epidural_vein": (0.30, 0.55, 0.55, 0.65),
    "vessel": (0.05, 0.08, 0.10, 0.55),  # flow void on SE; enhances on T1c
    "soft_tissue": (0.45, 0.40, 0.35, 0.30),
    "lung": (0.02, 0.03, 0.04, 0.03),
}


def marrow_signal(fat_fraction: float) -> np.ndarray:
    """Yellow/red marrow mix: T1 rises and STIR falls with the fat fraction (older = fattier)."""
    f = float(np.clip(fat_fraction, 0.0, 1.0))
    return np.array([0.40 + 0.55 * f, 0.38 + 0.30 * f, 0.34 - 0.28 * f, 0.30 - 0.14 * f], dtype=np.float32)


T1, T2, STIR, T1C = 0, 1, 2, 3


def enforce_relations(v: dict[str, np.ndarray]) -> None:
    """Restore, in place, the relations of radiology.md's anatomy table after a random draw.

    Only orderings are imposed (with margins), never values: T1 marrow above muscle and disc,
    fat at least marrow, CSF dark; T2/STIR CSF very bright (above cord, marrow, muscle and
    disc), healthy nucleus above annulus, a degenerated one not; STIR fat and marrow dark
    (below muscle); T1c fat-saturated fat dark, vessels enhancing above marrow; cortex and
    ligament darkest everywhere.
    """
    mu, an, m, fat, csf, cord = v["muscle"], v["annulus"], v["marrow"], v["fat"], v["csf"], v["cord"]
    nuc, deg = v["nucleus"], v["nucleus_degenerated"]
    m[T1] = max(m[T1], 1.25 * max(mu[T1], an[T1]))
    fat[T1] = max(fat[T1], 1.05 * m[T1])
    csf[T1] = min(csf[T1], 0.6 * min(mu[T1], an[T1], cord[T1]))
    cord[T1] = min(max(cord[T1], 1.2 * csf[T1]), 0.9 * m[T1])
    for ch in (T2, STIR):
        csf[ch] = max(csf[ch], 2.0 * max(cord[ch], m[ch], mu[ch], an[ch]))
        nuc[ch] = max(nuc[ch], 1.5 * an[ch])
        nuc[ch] = min(nuc[ch], 0.95 * csf[ch])
        deg[ch] = min(deg[ch], 1.1 * an[ch])
    fat[STIR] = min(fat[STIR], 0.5 * mu[STIR])
    m[STIR] = min(m[STIR], 0.9 * mu[STIR])
    fat[T1C] = min(fat[T1C], 0.6 * mu[T1C])
    v["vessel"][T1C] = max(v["vessel"][T1C], 1.6 * max(m[T1C], mu[T1C], cord[T1C]))
    darkest = 0.4 * min(float(x) for x in (mu.min(), an.min(), cord.min()))
    for name in ("cortex", "ligament"):
        v[name][:] = np.minimum(v[name], darkest)


class TissueTable:
    """Per-study tissue values: BASE times a random factor per tissue and sequence.

    ``spread``: log-normal sigma of the usual per-study variation (v1: 0.10).
    ``contrast_spread``: when > 0, a further, wide log-normal factor per tissue and sequence
    (randomised contrast), after which :func:`enforce_relations` restores the orderings.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        spread: float = 0.10,
        age: float = 60.0,
        overrides: Mapping[str, tuple[float, float, float, float]] | None = None,
        contrast_spread: float = 0.0,
    ):
        self.values: dict[str, np.ndarray] = {}
        base = dict(BASE)
        base.update(overrides or {})
        for name, v in base.items():
            factor = np.exp(rng.normal(0.0, spread, size=4)).astype(np.float32)
            self.values[name] = np.asarray(v, dtype=np.float32) * factor
        # Marrow fat fraction rises with age; individual variation around it.
        self.fat_fraction = float(np.clip(0.35 + 0.006 * (age - 20) + rng.normal(0, 0.08), 0.35, 0.92))
        self.values["marrow"] = marrow_signal(self.fat_fraction) * np.exp(
            rng.normal(0.0, spread / 2, 4)
        ).astype(np.float32)
        if contrast_spread > 0:
            # A separate stream: switching it on leaves every other draw of the study unchanged.
            crng = np.random.default_rng(rng.integers(2**63))
            for name in sorted(self.values):
                self.values[name] = self.values[name] * np.exp(crng.normal(0.0, contrast_spread, 4)).astype(
                    np.float32
                )
            enforce_relations(self.values)
        else:
            # Keep the relations radiology relies on, whatever the draw (v1: the two that mattered).
            m, mu, d = self.values["marrow"], self.values["muscle"], self.values["annulus"]
            m[0] = max(m[0], 1.25 * max(mu[0], d[0]))  # marrow T1 brighter than muscle and disc
            self.values["csf"][1] = max(
                self.values["csf"][1], 1.3 * self.values["cord"][1]
            )  # CSF >> cord on T2

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def mix(self, a: str | np.ndarray, b: str | np.ndarray, t: float) -> np.ndarray:
        va = self.values[a] if isinstance(a, str) else a
        vb = self.values[b] if isinstance(b, str) else b
        return (1 - t) * va + t * vb
