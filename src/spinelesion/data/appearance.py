"""Random appearance of a whole study: how another scanner and protocol might have imaged it.

The SynthSeg idea applied to real images: per study and sequence, a random smooth intensity
remapping (monotone, sometimes not), gamma, a coil bias field, thicker slices or coarser
in-plane pixels, more noise and, on T1, partial fat suppression. Anatomy and lesions stay
where they are; only the imaging changes, so a model trained across many draws has to read
the relations between tissues rather than one site's grey levels. The lesion is inserted
before the draw, so it follows the study's tissues through the remapping (a lytic deposit
brighter than marrow on T2 stays brighter than the remapped marrow while the remapping is
monotone, and moves with it when it is not).

Unlike :mod:`spinelesion.data.augment` (batched, on training ROIs), this works on a whole
study on its own grid: the insertion writes randomised studies to disk, and the stability
check redraws untouched real studies and asks whether the calls change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.interpolate import PchipInterpolator

FAT_BRIGHT = ("t1", "t1c")  # sequences on which fat is the brightest tissue (partial fat suppression)


@dataclass(frozen=True)
class AppearanceConfig:
    """Probabilities and ranges of one appearance draw, and which studies the insertion draws."""

    enabled: bool = False
    # Read by the insertion (spinelesion.insert.dataset): which written studies get a draw.
    prob: float = 0.5  # each study of a subject in ``splits``, inserted or untouched, with this probability
    splits: tuple[str, ...] = ("train",)  # evaluation sets stay as acquired
    copies: int = 0  # extra randomised copies of each untouched study, every split (the stability set)
    remap_prob: float = 0.8
    remap_knots: int = 6
    remap_jitter: float = 0.6  # knot increments ~ exp(N(0, jitter)): 0 is the identity
    non_monotone_prob: float = 0.2
    non_monotone_amount: float = 0.12  # a bump of up to this fraction of the range
    gamma: tuple[float, float] = (0.7, 1.5)
    bias_prob: float = 0.7
    bias_log_amplitude: float = 0.35  # the field's log spans about +- this
    bias_grid: int = 4  # control points per axis of the smooth field
    slice_prob: float = 0.4
    slice_mm: tuple[float, float] = (3.0, 6.0)  # slice thickness along the study's slice axis
    inplane_prob: float = 0.3
    inplane_mm: tuple[float, float] = (0.9, 1.8)
    noise_prob: float = 0.6
    noise_fraction: tuple[float, float] = (0.0, 0.05)  # Rician sigma as a fraction of the 99th percentile
    fat_suppression_prob: float = 0.15
    fat_suppression: tuple[float, float] = (0.3, 0.9)  # fraction of fat signal removed (T1 only)


def appearance_from_dict(values: Mapping[str, Any] | None) -> AppearanceConfig:
    """AppearanceConfig from a (Hydra) mapping; lists become tuples, unknown keys are errors."""
    if not values:
        return AppearanceConfig()
    known = {f.name for f in fields(AppearanceConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown appearance option(s): {', '.join(unknown)}")
    kwargs: dict[str, Any] = {
        k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in values.items()
    }
    return AppearanceConfig(**kwargs)


def remap_curve(rng: np.random.Generator, cfg: AppearanceConfig, monotone: bool) -> PchipInterpolator:
    """A smooth curve on [0, 1] with f(0) = 0 and f(1) = 1 (then a bump when not monotone)."""
    steps = np.exp(rng.normal(0.0, cfg.remap_jitter, cfg.remap_knots))
    knots_y = np.concatenate([[0.0], np.cumsum(steps)])
    knots_y /= knots_y[-1]
    knots_x = np.linspace(0.0, 1.0, cfg.remap_knots + 1)
    if not monotone:
        centre, width = rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.2)
        knots_y = knots_y + rng.uniform(-1, 1) * cfg.non_monotone_amount * np.exp(
            -0.5 * ((knots_x - centre) / width) ** 2
        )
        knots_y[0] = 0.0
    return PchipInterpolator(knots_x, knots_y, extrapolate=True)


def bias_field(shape: Sequence[int], rng: np.random.Generator, cfg: AppearanceConfig) -> np.ndarray:
    """A smooth multiplicative field exp(s), s cubic-interpolated from a coarse random grid."""
    coarse = rng.normal(0.0, 1.0, (cfg.bias_grid,) * 3).astype(np.float32)
    zoom = [n / cfg.bias_grid for n in shape]
    field = ndimage.zoom(coarse, zoom, order=3, mode="nearest", grid_mode=True)
    field = field[tuple(slice(0, int(n)) for n in shape)]
    span = float(np.abs(field).max()) or 1.0
    return np.exp(field / span * rng.uniform(0.0, cfg.bias_log_amplitude)).astype(np.float32)


def coarser(
    image: np.ndarray, spacing: Sequence[float] | np.ndarray, target_mm: Sequence[float | None]
) -> np.ndarray:
    """The image as if acquired at ``target_mm`` along each axis (None: unchanged): blurred by the
    coarser point spread, sampled on the coarse grid, and linearly resampled back."""
    out = image
    for axis, (mm, target) in enumerate(zip(spacing, target_mm, strict=True)):
        if target is None or target <= mm * 1.05:
            continue
        factor = float(target) / float(mm)
        sigma = [0.0, 0.0, 0.0]
        sigma[axis] = factor / 2.355
        out = ndimage.gaussian_filter(out, sigma, mode="nearest")
        n = out.shape[axis]
        coarse_n = max(int(round(n / factor)), 2)
        # Coarse sample centres spread over the same extent, then back with linear interpolation.
        centres = np.linspace(0, n - 1, coarse_n)
        sampled = np.take(out, np.rint(centres).astype(int), axis=axis)
        positions = np.interp(np.arange(n), centres, np.arange(coarse_n))
        lo = np.floor(positions).astype(int)
        hi = np.minimum(lo + 1, coarse_n - 1)
        w = (positions - lo).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = n
        w = w.reshape(shape)
        out = np.take(sampled, lo, axis=axis) * (1 - w) + np.take(sampled, hi, axis=axis) * w
    return out.astype(np.float32)


def randomise_sequence(
    image: np.ndarray,
    sequence: str,
    spacing: Sequence[float] | np.ndarray,
    slice_axis: int,
    rng: np.random.Generator,
    cfg: AppearanceConfig,
) -> np.ndarray:
    """One sequence of a study under one random appearance (same shape, same value range)."""
    img = image.astype(np.float32)
    top = float(np.percentile(img, 99.5)) or 1.0
    u = np.clip(img / top, 0.0, None)
    if rng.random() < cfg.fat_suppression_prob and sequence in FAT_BRIGHT:
        # Fat is the brightest tissue on T1: a soft membership over the top of the range
        # (fatty marrow, part fat, loses part of its signal too, as under real fat saturation).
        member = np.clip((u - 0.55) / 0.3, 0.0, 1.0)
        u = u * (1.0 - rng.uniform(*cfg.fat_suppression) * member)
    if rng.random() < cfg.remap_prob:
        curve = remap_curve(rng, cfg, monotone=rng.random() >= cfg.non_monotone_prob)
        inside = np.minimum(u, 1.0)
        # Above the 99.5th percentile the curve continues with its end slope (no clipping).
        u = np.clip(curve(inside) + (u - inside) * float(curve(1.0, 1)), 0.0, None).astype(np.float32)
    u = u ** np.float32(rng.uniform(*cfg.gamma))
    if rng.random() < cfg.bias_prob:
        u = u * bias_field(u.shape, rng, cfg)
    if rng.random() < cfg.noise_prob:
        sigma = float(rng.uniform(*cfg.noise_fraction))
        n1 = rng.normal(0.0, sigma, u.shape).astype(np.float32)
        n2 = rng.normal(0.0, sigma, u.shape).astype(np.float32)
        u = np.sqrt((u + n1) ** 2 + n2**2)  # magnitude images: Rician, never negative
    target: list[float | None] = [None, None, None]
    if rng.random() < cfg.slice_prob:
        target[slice_axis] = float(rng.uniform(*cfg.slice_mm))
    if rng.random() < cfg.inplane_prob:
        mm = float(rng.uniform(*cfg.inplane_mm))
        for axis in range(3):
            if axis != slice_axis:
                target[axis] = mm
    if any(t is not None for t in target):
        u = coarser(u, spacing, target)
    # Back to the original scale (stored types keep their range: an 8-bit study stays 8-bit).
    new_top = float(np.percentile(u, 99.5)) or 1.0
    return (u / new_top * top).astype(np.float32)


def randomise_study(
    images: Mapping[str, np.ndarray],
    spacing: Sequence[float] | np.ndarray,
    slice_axis: int,
    rng: np.random.Generator,
    cfg: AppearanceConfig,
) -> dict[str, np.ndarray]:
    """Every sequence of a study (one grid) under its own draw: sequences differ in protocol."""
    return {s: randomise_sequence(img, s, spacing, slice_axis, rng, cfg) for s, img in images.items()}
