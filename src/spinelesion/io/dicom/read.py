"""DICOM series -> :class:`Volume`: the entry points, on top of discovery, files, checks and pixels.

* :func:`read_dicom_folder`: the one image series in a folder (or the one named), pixels and
  geometry, in one pass over the files.
* :func:`read_series`: a series found by :func:`discover_series`.
* :func:`read_dicom_geometry`: shape and affine from headers alone, with the same checks.

Slices are ordered along their normal, never by file name or InstanceNumber; the affine
comes from ImagePositionPatient / ImageOrientationPatient / PixelSpacing; RescaleSlope and
RescaleIntercept are applied. The array is float32 in (i, j, k) order: a view of a
(slices, rows, columns) buffer, so it is Fortran-contiguous, like arrays nibabel returns.

The other concerns have their own modules of :mod:`spinelesion.io.dicom` (see its docstring).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from spinelesion.io.dicom.discover import (
    SeriesInfo,
    common_folder,
    discover_series,
    geometry_reason,
    iter_files,
    non_image_reason,
)
from spinelesion.io.dicom.errors import (
    DicomError,
    DicomSeriesError,
    NonImageError,
    SeriesContext,
    series_label,
)
from spinelesion.io.dicom.files import read_datasets
from spinelesion.io.dicom.geometry import DEFAULT_CHECKS, SeriesChecks, StackGeometry, stack_geometry
from spinelesion.io.dicom.meta import series_meta
from spinelesion.io.dicom.multiframe import multiframe_layout, n_frames
from spinelesion.io.dicom.pixels import check_decodable, rescale_of, stored_frames, transfer_syntax
from spinelesion.io.dicom.values import fast_get, has
from spinelesion.io.limits import (
    LIMITS,
    ResourceLimitError,
    check_volume_bytes,
    human,
)
from spinelesion.io.volume import Volume

log = logging.getLogger(__name__)


def _checks(checks: SeriesChecks | None, tolerances: dict[str, float]) -> SeriesChecks:
    if checks is not None and tolerances:
        raise TypeError("give either checks= or tolerance keywords, not both")
    return checks if checks is not None else SeriesChecks(**tolerances)


def _names(files: Sequence[Path]) -> list[str]:
    """File names for messages; paths relative to the common folder when names repeat."""
    names = [f.name for f in files]
    if len(set(names)) == len(names):
        return names
    root = common_folder(files)
    return [os.path.relpath(f, root) for f in files]


def series_context(
    first: Dataset, files: Sequence[Path], where: str | os.PathLike[str] | None
) -> SeriesContext:
    return SeriesContext(
        Path(where) if where is not None else common_folder(files),
        str(first.get("SeriesInstanceUID", "")) or None,
        str(first.get("StudyInstanceUID", "")) or None,
        series_label(first.get("SeriesNumber"), first.get("SeriesDescription", "")),
    )


def header_geometry(
    headers: Sequence[Dataset],
    files: Sequence[Path],
    ctx: SeriesContext,
    checks: SeriesChecks = DEFAULT_CHECKS,
    strict: bool = True,
) -> StackGeometry:
    """Stack geometry of a series from its headers (pixels are not needed); ``strict``: with
    every regularity check reading runs (see :func:`stack_geometry`)."""
    first = headers[0]
    reason = non_image_reason(first)
    if reason:
        raise ctx.error(NonImageError, reason, where=files[0])
    names = _names(files)
    multi = [nm for d, nm in zip(headers, names, strict=True) if n_frames(d) > 1]
    if multi:
        if len(headers) == 1:
            return multiframe_layout(first, names[0], ctx, checks, strict=strict).geometry
        raise ctx.error(
            DicomSeriesError,
            f"{len(multi)} multi-frame file(s) (e.g. {multi[0]}) together with "
            f"{len(headers) - len(multi)} other file(s) in one series; read each "
            "multi-frame file on its own",
        )
    reason = geometry_reason(first)
    # A whole series without geometry is one message; a few files without it are named below.
    if reason and (reason.startswith("colour") or all(geometry_reason(d) for d in headers)):
        raise ctx.error(DicomSeriesError, f"{names[0]}: {reason}")
    return stack_geometry(
        [fast_get(d, "ImagePositionPatient") for d in headers],
        [fast_get(d, "ImageOrientationPatient") for d in headers],
        [fast_get(d, "PixelSpacing") for d in headers],
        [(int(fast_get(d, "Rows", 0)), int(fast_get(d, "Columns", 0))) for d in headers],
        names,
        ctx,
        checks,
        headers=headers,
        strict=strict,
    )


def volume_from_datasets(
    datasets: Sequence[Dataset],
    files: Sequence[Path],
    where: str | os.PathLike[str] | None = None,
    checks: SeriesChecks | None = None,
    ctx: SeriesContext | None = None,
    **tolerances: float,
) -> Volume:
    """Assemble single-frame slices (or one multi-frame object) into a checked :class:`Volume`.

    Args:
        datasets: full datasets (with pixel data) of one series, in any order.
        files: their paths (for messages and ``meta['files']``).
        where: the series folder named in messages (default: the files' common folder).
        checks / tolerances: :class:`SeriesChecks` or its fields as keywords.
    """
    if not datasets:
        raise DicomError(where or ".", "no DICOM file given")
    checks = _checks(checks, tolerances)
    first = datasets[0]
    ctx = ctx or series_context(first, files, where)
    names = _names(files)
    if len(datasets) == 1 and n_frames(first) > 1:
        return _multiframe_volume(first, files[0], names[0], ctx, checks)
    geometry = header_geometry(datasets, files, ctx, checks)
    check_decodable(first, names[0], ctx)  # once, before decoding anything
    try:
        check_volume_bytes(ctx.where, geometry.shape)
    except ResourceLimitError as exc:
        raise ctx.error(DicomSeriesError, str(exc).removeprefix(f"{ctx.where}: ")) from exc
    cols, rows, n = geometry.shape
    out = np.empty((n, rows, cols), dtype=np.float32)
    for k, idx in enumerate(geometry.order):
        ds = datasets[idx]
        out[k] = stored_frames(ds, names[idx], ctx)[0]  # converts to float32 while copying
        slope, intercept = rescale_of(ds)
        if slope != 1.0 or intercept != 0.0:
            out[k] *= np.float32(slope)
            out[k] += np.float32(intercept)
    sorted_files = [files[i] for i in geometry.order]
    meta = series_meta(first, sorted_files, ctx.where, transfer_syntax=str(transfer_syntax(first) or ""))
    return Volume(out.transpose(2, 1, 0), geometry.affine, meta)


def _multiframe_volume(
    ds: Dataset, path: Path, name: str, ctx: SeriesContext, checks: SeriesChecks
) -> Volume:
    reason = non_image_reason(ds)
    if reason:
        raise ctx.error(NonImageError, reason, where=path)
    layout = multiframe_layout(ds, name, ctx, checks)
    order = layout.geometry.order
    frames = stored_frames(ds, name, ctx)
    out = frames[order].astype(np.float32)
    rescale = layout.rescale[order]
    if np.any(rescale[:, 0] != 1.0) or np.any(rescale[:, 1] != 0.0):
        out *= rescale[:, 0, None, None].astype(np.float32)
        out += rescale[:, 1, None, None].astype(np.float32)
    meta = series_meta(ds, [path], ctx.where, transfer_syntax=str(transfer_syntax(ds) or ""))
    return Volume(out.transpose(2, 1, 0), layout.geometry.affine, meta)


def read_series(info: SeriesInfo, checks: SeriesChecks | None = None, **tolerances: float) -> Volume:
    """Read the pixels of a series found by :func:`discover_series` and assemble it."""
    ctx = info.context
    datasets = []
    for f, got in zip(info.files, read_datasets(info.files), strict=True):
        if isinstance(got, DicomError):
            raise ctx.error(DicomError, got.reason, where=f)
        datasets.append(got)
    return volume_from_datasets(datasets, info.files, checks=_checks(checks, tolerances), ctx=ctx)


def _choose(
    groups: dict[str, list[tuple[Dataset, Path]]], folder: Path, series_uid: str | None, not_dicom: int
) -> str:
    """The series to read: the one named, else the only image series with patient geometry."""

    def label(uid: str) -> str:
        ds = groups[uid][0][0]
        return (
            f"{series_label(ds.get('SeriesNumber'), ds.get('SeriesDescription', ''), len(groups[uid]))} {uid}"
        )

    if series_uid is not None:
        if series_uid not in groups:
            raise DicomError(
                folder,
                f"series {series_uid} not found; present: " + ("; ".join(label(u) for u in groups) or "none"),
            )
        return series_uid
    if not groups:
        raise DicomError(folder, f"no DICOM file found ({not_dicom} other file(s))")
    images = [u for u, g in groups.items() if non_image_reason(g[0][0]) is None]
    if not images:
        uid = next(iter(groups))
        raise NonImageError(
            folder, f"no image series here; {label(uid)}: {non_image_reason(groups[uid][0][0])}"
        )
    if len(images) == 1:
        return images[0]  # its own checks say what is wrong with it, if anything
    # Several: screenshots and other images without patient geometry do not count.
    placed = [u for u in images if any(geometry_reason(d) is None for d, _ in groups[u])]
    if len(placed) == 1:
        return placed[0]
    if not placed:
        uid = images[0]
        raise DicomSeriesError(folder, f"{label(uid)}: {geometry_reason(groups[uid][0][0])}")
    raise DicomError(
        folder,
        "several image series; name one (series_uid=...) or give one series per folder: "
        + "; ".join(label(u) for u in placed),
    )


def read_dicom_folder(
    folder: str | os.PathLike[str],
    series_uid: str | None = None,
    checks: SeriesChecks | None = None,
    **tolerances: float,
) -> Volume:
    """The one image series under ``folder`` (or the one named).

    Without ``series_uid`` (the contract's case: one series per folder) every file is read
    whole once, headers and pixels in one pass. With it, headers are scanned first and only
    that series' files are read, so a large export is never held in memory. Non-DICOM
    files, DICOMDIR, non-image objects and image series without patient geometry are
    ignored unless nothing else is there; several candidate series are an error that lists
    them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(folder, "not a folder" if folder.exists() else "does not exist")
    if series_uid is not None:
        infos, skipped = discover_series(folder)
        uid = _choose(
            {i.series_uid: list(zip(i.headers, i.files, strict=True)) for i in infos},
            folder,
            series_uid,
            len(skipped),
        )
        info = next(i for i in infos if i.series_uid == uid)
        if not info.is_image:
            reason = non_image_reason(info.header) if info.header is not None else None
            raise info.context.error(NonImageError, reason or "no readable header", where=info.files[0])
        return read_series(info, checks=checks, **tolerances)
    special: list[tuple[Path, str]] = []
    files = list(iter_files(folder, special))
    total = sum(f.stat().st_size for f in files)
    if total > LIMITS.max_study_bytes:
        raise DicomError(
            folder,
            f"{len(files)} file(s) of {human(total)} together, over the limit of "
            f"{human(LIMITS.max_study_bytes)} per study (limits.max_study_gb); refused unread",
        )
    groups: dict[str, list[tuple[Dataset, Path]]] = {}
    not_dicom = len(special)
    for path, ds in zip(files, read_datasets(files), strict=True):
        if isinstance(ds, DicomError) or has(ds, "DirectoryRecordSequence"):
            if isinstance(ds, DicomError) and ds.reason != "not a DICOM file":
                log.warning("%s", ds)  # a DICOM file that cannot be parsed: say so, it may be a slice
            not_dicom += 1
            continue
        groups.setdefault(str(fast_get(ds, "SeriesInstanceUID", "")), []).append((ds, path))
    uid = _choose(groups, folder, series_uid, not_dicom)
    chosen = groups[uid]
    if not_dicom or len(groups) > 1:
        log.info("%s: ignored %d non-DICOM file(s) and %d other series", folder, not_dicom, len(groups) - 1)
    datasets, paths = [d for d, _ in chosen], [p for _, p in chosen]
    return volume_from_datasets(
        datasets, paths, checks=_checks(checks, tolerances), ctx=series_context(datasets[0], paths, folder)
    )


def read_dicom_geometry(
    folder: str | os.PathLike[str],
    series_uid: str | None = None,
    strict: bool = False,
    checks: SeriesChecks | None = None,
    **tolerances: float,
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and voxel-to-LPS affine of the series :func:`read_dicom_folder` would read,
    from headers alone (no pixel data is read).

    By default only what places the grid is checked (tags present, one orientation, one
    size): a broken stack (gap, duplicate, uneven step, tilt) is reported when the series is
    read, per study. ``strict=True`` runs every check reading runs, and then agrees exactly
    with ``read_dicom_folder(folder).affine``.
    """
    folder = Path(folder)
    infos, skipped = discover_series(folder)
    groups = {i.series_uid: list(zip(i.headers, i.files, strict=True)) for i in infos}
    uid = _choose(groups, folder, series_uid, len(skipped))
    info = next(i for i in infos if i.series_uid == uid)
    geometry = header_geometry(
        info.headers,
        info.files,
        series_context(info.headers[0], info.files, folder),
        _checks(checks, tolerances),
        strict=strict,
    )
    return geometry.shape, geometry.affine
