"""Multi-frame objects: one file, many slices.

* Enhanced MR/CT (and legacy-converted enhanced) objects carry each frame's position in
  PerFrameFunctionalGroupsSequence, with orientation, pixel spacing and rescale either
  there or in SharedFunctionalGroupsSequence. Frames go through the same stack checks as
  single-frame slices, so several stacks, echoes or time points in one object are refused
  with the reason rather than interleaved.
* Legacy multi-frame objects are read when their geometry is unambiguous: one
  ImagePositionPatient/ImageOrientationPatient plus GridFrameOffsetVector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from spinelesion.io.dicom.errors import DicomSeriesError, SeriesContext
from spinelesion.io.dicom.geometry import DEFAULT_CHECKS, SeriesChecks, StackGeometry, numbers, stack_geometry
from spinelesion.io.dicom.pixels import rescale_of
from spinelesion.io.dicom.values import fast_get


@dataclass(frozen=True)
class FrameLayout:
    geometry: StackGeometry
    rescale: np.ndarray  # (frames, 2): slope, intercept of each stored frame


def n_frames(ds: Dataset) -> int:
    try:
        return int(fast_get(ds, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _item(parent: Dataset | None, seq: str) -> Dataset | None:
    if parent is None or seq not in parent:
        return None
    value = parent[seq].value
    return value[0] if value else None


def _group_value(frame: Dataset | None, shared: Dataset | None, seq: str, tag: str) -> Any:
    """A functional-group attribute, per-frame first, then shared."""
    for parent in (frame, shared):
        item = _item(parent, seq)
        if item is not None and tag in item:
            return item[tag].value
    return None


def _frame_attributes(frame: Dataset | None, shared: Dataset | None) -> dict[str, Any]:
    """What tells frames at one position apart, under the names the stack check reports."""
    out: dict[str, Any] = {}
    content = _item(frame, "FrameContentSequence")
    if content is not None:
        for src, dst in (("StackID", "StackID"), ("TemporalPositionIndex", "TemporalPositionIdentifier")):
            if src in content:
                out[dst] = content[src].value
    echo = _group_value(frame, shared, "MREchoSequence", "EffectiveEchoTime")
    if echo is not None:
        out["EchoTime"] = echo
    bval = _group_value(frame, shared, "MRDiffusionSequence", "DiffusionBValue")
    if bval is not None:
        out["DiffusionBValue"] = bval
    return out


def multiframe_layout(
    ds: Dataset, name: str, ctx: SeriesContext, checks: SeriesChecks = DEFAULT_CHECKS, strict: bool = True
) -> FrameLayout:
    """Geometry and per-frame rescale of a multi-frame object, from its header alone."""
    frames = n_frames(ds)
    rows, cols = int(ds.Rows), int(ds.Columns)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    if per_frame is not None:
        if len(per_frame) != frames:
            raise ctx.error(
                DicomSeriesError, f"{name}: {len(per_frame)} per-frame functional groups for {frames} frames"
            )
        positions = [
            _group_value(f, shared, "PlanePositionSequence", "ImagePositionPatient") for f in per_frame
        ]
        orientations = [
            _group_value(f, shared, "PlaneOrientationSequence", "ImageOrientationPatient") for f in per_frame
        ]
        spacings = [_group_value(f, shared, "PixelMeasuresSequence", "PixelSpacing") for f in per_frame]
        rescale = []
        for f in per_frame:
            item = _item(f, "PixelValueTransformationSequence") or _item(
                shared, "PixelValueTransformationSequence"
            )
            rescale.append(rescale_of(item if item is not None else ds))
        missing = [
            t
            for t, v in (
                ("ImagePositionPatient", positions),
                ("ImageOrientationPatient", orientations),
                ("PixelSpacing", spacings),
            )
            if any(x is None for x in v)
        ]
        if missing:
            raise ctx.error(
                DicomSeriesError,
                f"{name}: multi-frame object ({frames} frames) without "
                f"{', '.join(missing)} in its functional groups",
            )
        headers = [_frame_attributes(f, shared) for f in per_frame]
    elif "GridFrameOffsetVector" in ds and "ImagePositionPatient" in ds:
        orientation = numbers(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", name, ctx)
        origin = numbers(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", name, ctx)
        offsets = np.asarray([float(v) for v in ds.GridFrameOffsetVector], dtype=np.float64)
        if offsets.shape != (frames,):
            raise ctx.error(
                DicomSeriesError,
                f"{name}: GridFrameOffsetVector has {offsets.size} values for {frames} frames",
            )
        normal = np.cross(orientation[:3], orientation[3:])
        positions = list(origin[None] + offsets[:, None] * normal[None])
        orientations = [orientation] * frames
        spacings = [ds.get("PixelSpacing")] * frames
        rescale = [rescale_of(ds)] * frames
        headers = None
    else:
        raise ctx.error(
            DicomSeriesError,
            f"{name}: legacy multi-frame object ({frames} frames) whose frame positions "
            "are ambiguous (no PerFrameFunctionalGroupsSequence or "
            "GridFrameOffsetVector); export it as single-frame slices or Enhanced MR",
        )
    names = [f"{name} frame {i + 1}" for i in range(frames)]
    geometry = stack_geometry(
        positions,
        orientations,
        spacings,
        [(rows, cols)] * frames,
        names,
        ctx,
        checks,
        headers=headers,
        kind="frame",
        strict=strict,
    )
    return FrameLayout(geometry, np.asarray(rescale, dtype=np.float64))
