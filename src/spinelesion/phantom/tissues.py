"""Tissue signal per sequence (T1, T2, STIR, T1 + gadolinium with fat saturation).

Values are relative (about 0..1) and follow the anatomy table of ``docs/radiology.md``:
fatty marrow bright on T1 (brighter than muscle and disc), intermediate on T2, dark on STIR;
CSF dark on T1 and very bright on T2/STIR; cord intermediate; a healthy nucleus bright on
T2; fat bright on T1, intermediate-bright on fast spin-echo T2, dark on STIR and on
fat-saturated post-contrast T1. Every study draws its own values around these (scanner,
field strength, parameters), so no tissue has a fixed intensity the model could memorise.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#                   T1     T2     STIR   T1c(FS)
BASE: dict[str, tuple[float, float, float, float]] = {
    "air":          (0.00, 0.00, 0.00, 0.00),
    "fat":          (0.95, 0.72, 0.06, 0.08),
    "muscle":       (0.34, 0.24, 0.22, 0.20),
    "cortex":       (0.05, 0.05, 0.05, 0.05),
    "ligament":     (0.07, 0.08, 0.08, 0.10),
    "annulus":      (0.30, 0.28, 0.30, 0.16),
    "nucleus":      (0.33, 0.85, 0.80, 0.18),
    "nucleus_degenerated": (0.28, 0.22, 0.24, 0.15),
    "csf":          (0.10, 1.00, 0.95, 0.08),
    "cord":         (0.42, 0.45, 0.42, 0.28),
    "dura":         (0.10, 0.15, 0.15, 0.35),
    "epidural_vein": (0.30, 0.55, 0.55, 0.65),
    "vessel":       (0.05, 0.08, 0.10, 0.55),   # flow void on SE; enhances on T1c
    "soft_tissue":  (0.45, 0.40, 0.35, 0.30),
    "lung":         (0.02, 0.03, 0.04, 0.03),
}


def marrow_signal(fat_fraction: float) -> np.ndarray:
    """Yellow/red marrow mix: T1 rises and STIR falls with the fat fraction (older = fattier)."""
    f = float(np.clip(fat_fraction, 0.0, 1.0))
    return np.array([0.40 + 0.55 * f, 0.38 + 0.30 * f, 0.34 - 0.28 * f, 0.30 - 0.14 * f], dtype=np.float32)


class TissueTable:
    """Per-study tissue values: BASE times a random factor per tissue and sequence."""

    def __init__(self, rng: np.random.Generator, spread: float = 0.10, age: float = 60.0,
                 overrides: Mapping[str, tuple[float, float, float, float]] | None = None):
        self.values: dict[str, np.ndarray] = {}
        base = dict(BASE)
        base.update(overrides or {})
        for name, v in base.items():
            factor = np.exp(rng.normal(0.0, spread, size=4)).astype(np.float32)
            self.values[name] = np.asarray(v, dtype=np.float32) * factor
        # Marrow fat fraction rises with age; individual variation around it.
        self.fat_fraction = float(np.clip(0.35 + 0.006 * (age - 20) + rng.normal(0, 0.08), 0.35, 0.92))
        self.values["marrow"] = marrow_signal(self.fat_fraction) * np.exp(rng.normal(0.0, spread / 2, 4)).astype(np.float32)
        # Keep the relations radiology relies on, whatever the draw.
        m, mu, d = self.values["marrow"], self.values["muscle"], self.values["annulus"]
        m[0] = max(m[0], 1.25 * max(mu[0], d[0]))           # marrow T1 brighter than muscle and disc
        self.values["csf"][1] = max(self.values["csf"][1], 1.3 * self.values["cord"][1])  # CSF >> cord on T2

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def mix(self, a: str | np.ndarray, b: str | np.ndarray, t: float) -> np.ndarray:
        va = self.values[a] if isinstance(a, str) else a
        vb = self.values[b] if isinstance(b, str) else b
        return (1 - t) * va + t * vb
