"""Stacking slices into a 3D grid by geometry, with every check a real export needs.

Slices are ordered by their position along the slice normal (the cross product of the
ImageOrientationPatient row and column directions), never by file name or InstanceNumber.
The stack must be regular: one orientation, one size and pixel spacing, no duplicated or
missing positions, an even step, and a step parallel to the normal (no gantry tilt).
Single-frame series and the frames of a multi-frame object go through the same checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spinelesion.io.dicom.errors import DicomSeriesError, SeriesContext
from spinelesion.io.volume import affine_from_dicom

# Tags that tell apart two images at one position (multi-echo, dynamic, diffusion...).
DISTINGUISHING_TAGS = (
    "EchoNumbers",
    "EchoTime",
    "TemporalPositionIdentifier",
    "AcquisitionNumber",
    "TriggerTime",
    "DiffusionBValue",
    "ImageType",
    "InversionTime",
    "StackID",
)


@dataclass(frozen=True)
class SeriesChecks:
    """Tolerances of the stack checks.

    Attributes:
        spacing_tolerance: mm a step may differ from the median step (or 1 % of it, whichever
            is larger) before the spacing counts as uneven.
        orientation_tolerance: largest difference of an ImageOrientationPatient component
            between slices of one series.
        tilt_tolerance_deg: largest angle between the slice step and the slice normal.
    """

    spacing_tolerance: float = 0.05
    orientation_tolerance: float = 1e-3
    tilt_tolerance_deg: float = 0.5


DEFAULT_CHECKS = SeriesChecks()


@dataclass(frozen=True)
class StackGeometry:
    """Where each input slice goes and the voxel-to-LPS affine of the stacked grid."""

    order: np.ndarray  # input index of slice k
    affine: np.ndarray
    shape: tuple[int, int, int]  # (columns, rows, slices) = (i, j, k)


def plane_name(orientation: np.ndarray) -> str:
    normal = np.cross(orientation[:3], orientation[3:])
    axis = int(np.argmax(np.abs(normal)))
    return ("sagittal", "coronal", "axial")[axis] + ("" if abs(normal[axis]) > 0.995 else " (oblique)")


def numbers(value: Any, n: int, tag: str, name: str, ctx: SeriesContext) -> np.ndarray:
    """``n`` finite floats from a multi-valued DICOM attribute, or a named error."""
    if value is None or (isinstance(value, str | bytes) and not value.strip()):
        raise ctx.error(
            DicomSeriesError, f"{name}: missing {tag}, so the image cannot be placed in patient space"
        )
    try:
        arr = np.asarray(
            [
                float(v)
                for v in (
                    value
                    if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str)
                    else [value]
                )
            ],
            dtype=np.float64,
        )
    except (TypeError, ValueError) as exc:
        raise ctx.error(DicomSeriesError, f"{name}: {tag} is not numeric ({value!r})") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ctx.error(DicomSeriesError, f"{name}: {tag} must hold {n} finite numbers, got {list(arr)}")
    return arr


def _unit_orientation(o: np.ndarray, name: str, ctx: SeriesContext) -> np.ndarray:
    row, col = o[:3], o[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if abs(nr - 1) > 0.01 or abs(nc - 1) > 0.01 or abs(float(row @ col)) > 0.01:
        raise ctx.error(
            DicomSeriesError,
            f"{name}: ImageOrientationPatient {list(np.round(o, 4))} is not two orthogonal unit vectors",
        )
    # Vendors round to a few decimals: renormalise so the affine is a clean rotation.
    return np.concatenate([row / nr, col / nc])


def _why_duplicate(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> str:
    if a is None or b is None:
        return ""
    differ = [t for t in DISTINGUISHING_TAGS if str(a.get(t, "")) != str(b.get(t, ""))]
    if not differ:
        return " (an identical copy? both files hold the same slice)"
    shown = ", ".join(f"{t} {a.get(t, '')} vs {b.get(t, '')}" for t in differ[:2])
    return (
        f"; they differ in {shown}: the series holds several images per position "
        "(multi-echo, dynamic or diffusion?); export or name one sub-series"
    )


def stack_geometry(
    positions: Sequence[Any],
    orientations: Sequence[Any],
    spacings: Sequence[Any],
    sizes: Sequence[tuple[int, int]],
    names: Sequence[str],
    ctx: SeriesContext,
    checks: SeriesChecks = DEFAULT_CHECKS,
    headers: Sequence[Mapping[str, Any]] | Sequence[Any] | None = None,
    kind: str = "slice",
    strict: bool = True,
) -> StackGeometry:
    """Order ``n`` slices along their normal and check they form one regular grid.

    Args:
        positions, orientations, spacings: raw ImagePositionPatient, ImageOrientationPatient
            and PixelSpacing values of each slice.
        sizes: (Rows, Columns) of each slice.
        names: what to call each slice in messages (file name, ``frame 7``).
        headers: per-slice attributes, only used to explain duplicated positions.
        kind: ``"slice"`` or ``"frame"``, for messages.
        strict: run the regularity checks (duplicates, gaps, even spacing, tilt, collinearity).
            Without them the grid runs from the first to the last position in ``n`` even
            steps: enough to place a point, not to trust the voxels.

    Raises:
        DicomSeriesError: naming the series, the offending slices and the reason.
    """
    n = len(names)
    if n < 2:
        raise ctx.error(
            DicomSeriesError, f"single-{kind} series ({names[0] if names else 'nothing'}): not a 3D volume"
        )
    orient = np.stack(
        [numbers(o, 6, "ImageOrientationPatient", nm, ctx) for o, nm in zip(orientations, names, strict=True)]
    )
    diff = np.abs(orient - orient[0]).max(axis=1)
    bad = np.flatnonzero(diff > checks.orientation_tolerance)
    if bad.size:
        planes = sorted({plane_name(o) for o in orient})
        hint = " (a multi-plane localiser?)" if len(planes) > 1 else ""
        raise ctx.error(
            DicomSeriesError,
            f"mixed orientations in one series: {bad.size} of {n} {kind}s differ "
            f"from {names[0]} (e.g. {names[int(bad[0])]}); planes: "
            f"{', '.join(planes)}{hint}",
        )
    o0 = _unit_orientation(orient[0], names[0], ctx)
    size_set = sorted({(int(r), int(c)) for r, c in sizes})
    if len(size_set) > 1:
        raise ctx.error(DicomSeriesError, f"{kind}s of different sizes (rows, columns) {size_set}")
    spacing = np.stack(
        [numbers(s, 2, "PixelSpacing", nm, ctx) for s, nm in zip(spacings, names, strict=True)]
    )
    if np.abs(spacing - spacing[0]).max() > 1e-3 * max(float(spacing[0].max()), 1.0):
        i = int(np.argmax(np.abs(spacing - spacing[0]).max(axis=1)))
        raise ctx.error(
            DicomSeriesError,
            f"pixel spacing differs between {kind}s: {list(spacing[0])} in "
            f"{names[0]}, {list(spacing[i])} in {names[i]}",
        )
    if np.any(spacing[0] <= 0):
        raise ctx.error(DicomSeriesError, f"{names[0]}: PixelSpacing {list(spacing[0])} must be positive")
    pos = np.stack(
        [numbers(p, 3, "ImagePositionPatient", nm, ctx) for p, nm in zip(positions, names, strict=True)]
    )
    normal = np.cross(o0[:3], o0[3:])
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    dist, pos = dist[order], pos[order]
    sorted_names = [names[i] for i in order]
    steps = np.diff(dist)
    if not strict:
        step_vec = (pos[-1] - pos[0]) / (n - 1)
        if np.linalg.norm(step_vec) < 1e-6:  # all at one position: any non-singular step
            step_vec = normal
        rows, cols = size_set[0]
        return StackGeometry(order, affine_from_dicom(pos[0], o0, spacing[0], step_vec), (cols, rows, n))

    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        i = int(dup[0])
        why = _why_duplicate(headers[order[i]], headers[order[i + 1]]) if headers is not None else ""
        raise ctx.error(
            DicomSeriesError,
            f"duplicated {kind}: {sorted_names[i]} and {sorted_names[i + 1]} share "
            f"position {dist[i]:.2f} mm along the normal ({dup.size} duplicate(s) "
            f"in all){why}",
        )
    step = float(np.median(steps))
    tolerance = max(checks.spacing_tolerance, 0.01 * step)
    if np.any(np.abs(steps - step) > tolerance):
        gaps = np.flatnonzero(steps > 1.5 * step)
        if gaps.size:
            i = int(gaps[0])
            missing = int(round(steps[i] / step)) - 1
            raise ctx.error(
                DicomSeriesError,
                f"missing {kind}(s): about {missing} between {sorted_names[i]} "
                f"({dist[i]:.2f} mm) and {sorted_names[i + 1]} ({dist[i + 1]:.2f} mm) "
                f"along the normal; expected a step of {step:.2f} mm"
                + (f" ({gaps.size} gaps in all)" if gaps.size > 1 else ""),
            )
        i = int(np.argmax(np.abs(steps - step)))
        raise ctx.error(
            DicomSeriesError,
            f"uneven {kind} spacing: steps from {steps.min():.3f} to {steps.max():.3f} "
            f"mm around {step:.3f} mm (worst between {sorted_names[i]} and "
            f"{sorted_names[i + 1]}; tolerance {tolerance:.3f} mm)",
        )
    step_vec = (pos[-1] - pos[0]) / (n - 1)
    cos = abs(float(step_vec @ normal)) / max(float(np.linalg.norm(step_vec)), 1e-9)
    tilt = float(np.degrees(np.arccos(min(cos, 1.0))))
    if tilt > checks.tilt_tolerance_deg:
        raise ctx.error(
            DicomSeriesError,
            f"gantry tilt / sheared stack: {kind}s advance {tilt:.1f} deg off their "
            f"normal (tolerance {checks.tilt_tolerance_deg} deg); resample it to an "
            "orthogonal grid first",
        )
    # Every slice on the line through the first and last: no in-plane jumps between slices
    # (deviations along the normal were judged by the spacing check above).
    dev = pos - (pos[0] + np.arange(n)[:, None] * step_vec[None])
    off = np.linalg.norm(dev - (dev @ normal)[:, None] * normal[None], axis=1)
    if off.max() > max(tolerance, 0.1 * float(spacing[0].min())) + 1e-6:
        i = int(np.argmax(off))
        raise ctx.error(
            DicomSeriesError,
            f"{sorted_names[i]} lies {off[i]:.2f} mm off the line of the other "
            f"{kind}s: the stack is not a regular grid",
        )
    affine = affine_from_dicom(pos[0], o0, spacing[0], step_vec)
    rows, cols = size_set[0]
    return StackGeometry(order, affine, (cols, rows, n))
