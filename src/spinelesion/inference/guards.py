"""Guards on values: a study is predicted only from images that carry information.

A volume that is entirely NaN, constant (all zero), too small to be a 3D image, or placed
by a degenerate affine would still give the network something to answer: an answer from
garbage. Such a sequence is left out with a warning; a study left with none is refused
with the reasons. Scattered non-finite voxels are set to 0 with a warning. Probabilities
are checked finite and normalised before they are written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from spinelesion.io.study import StudyError
from spinelesion.io.volume import Volume, spacing_of

log = logging.getLogger(__name__)

MIN_VOXELS_PER_AXIS = 2
SPACING_MM = (1e-3, 1e3)
"""Voxel sizes outside this range (mm) are not a scanner's: a unit or header error."""


def volume_problem(name: str, vol: Volume) -> str | None:
    """Why ``vol`` cannot be predicted from, or None; fixes scattered non-finite voxels in place."""
    if min(vol.shape) < MIN_VOXELS_PER_AXIS:
        return (
            f"{name}: {'x'.join(map(str, vol.shape))} voxels; a 3D image needs at least "
            f"{MIN_VOXELS_PER_AXIS} voxels along every axis"
        )
    aff = vol.affine
    spacing = spacing_of(aff)
    if not np.all(np.isfinite(aff)) or not np.all((spacing > SPACING_MM[0]) & (spacing < SPACING_MM[1])):
        return f"{name}: degenerate affine (voxel sizes {np.round(spacing, 4).tolist()} mm)"
    # Columns nearly parallel: |det| small next to the product of the voxel sizes.
    if abs(np.linalg.det(aff[:3, :3])) < 1e-3 * float(np.prod(spacing)):
        return f"{name}: degenerate affine (its axes are nearly parallel)"
    finite = np.isfinite(vol.array)
    n_bad = int(finite.size - np.count_nonzero(finite))
    if n_bad == finite.size:
        return f"{name}: every voxel is NaN or infinite"
    if n_bad:
        vol.array = np.where(finite, vol.array, 0).astype(vol.array.dtype, copy=False)
        vol.meta.setdefault("warnings", []).append(
            f"{name}: {n_bad} non-finite voxel(s) of {finite.size} set to 0"
        )
    lo, hi = float(np.min(vol.array)), float(np.max(vol.array))
    if lo == hi:
        return f"{name}: every voxel has the same value ({lo:g}); a blank image"
    return None


def check_study(study: Any) -> list[str]:
    """Drop unusable sequences from ``study`` (warnings returned) or raise :class:`StudyError`."""
    warnings: list[str] = []
    problems: list[str] = []
    volumes: dict[str, Volume] = study.volumes
    for name in list(volumes):
        problem = volume_problem(name, volumes[name])
        warnings.extend(volumes[name].meta.get("warnings", []) if problem is None else [])
        if problem:
            problems.append(problem)
            del volumes[name]
    if not volumes:
        raise StudyError(study.study_id, "no usable image: " + "; ".join(problems))
    warnings.extend(f"{p}; sequence left out" for p in problems)
    return warnings


def checked_probabilities(task: str, roi_id: str, p: np.ndarray) -> np.ndarray:
    """``p`` as float64 summing to 1; :class:`ValueError` when the network gave non-finite values."""
    p = np.asarray(p, dtype=np.float64)
    total = float(p.sum())
    if not np.all(np.isfinite(p)) or not np.isfinite(total) or total <= 0 or np.any(p < 0):
        raise ValueError(
            f"the network returned non-finite or negative {task} probabilities for ROI {roi_id} "
            f"({p.tolist()}); nothing written for this study"
        )
    return p / total


def finite_probs(probs: Mapping[str, np.ndarray]) -> bool:
    return all(bool(np.all(np.isfinite(v))) for v in probs.values())
