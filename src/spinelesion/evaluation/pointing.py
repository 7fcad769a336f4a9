"""Does a saliency map point at the lesion? The peak's distance from the ROI centre.

A ROI is centred on its lesion (within the annotators' few millimetres), so a map that
explains a lesion call should peak near the centre. ``uniform`` is what a map that knows
nothing would score: the share of the ROI box within ``radius_mm`` of its centre.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _distances(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) of every voxel of a ROI grid from its centre."""
    centre = (np.asarray(shape, float) - 1) / 2
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return np.linalg.norm((grid - centre) * np.asarray(spacing, float), axis=-1)


def pointing(maps: np.ndarray, spacing: Sequence[float], radius_mm: float = 15.0) -> dict[str, float]:
    """``maps`` (R, X, Y, Z) on ROI grids of ``spacing`` mm: the median distance of each map's
    peak from the centre, the fraction of peaks within ``radius_mm``, the mean share of each
    map's mass within it, and what a uniform map would score (the box's share within it)."""
    maps = np.asarray(maps, dtype=np.float64)
    dist = _distances(maps.shape[1:], spacing)
    near = dist < radius_mm
    flat = maps.reshape(len(maps), -1)
    peaks = dist.reshape(-1)[np.argmax(flat, axis=1)]
    mass = flat.sum(1)
    share = np.where(mass > 0, (flat * near.reshape(-1)).sum(1) / np.where(mass > 0, mass, 1), 0.0)
    return {
        "n": len(maps),
        "median_peak_mm": round(float(np.median(peaks)), 1) if len(maps) else float("nan"),
        "peak_within": round(float(np.mean(peaks < radius_mm)), 3) if len(maps) else float("nan"),
        "share_within": round(float(np.mean(share)), 3) if len(maps) else float("nan"),
        "uniform": round(float(near.mean()), 3),
        "radius_mm": radius_mm,
    }
