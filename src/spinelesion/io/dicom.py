"""DICOM series: discovery in any folder, checks, and assembly into a :class:`Volume` by geometry.

Real exports are messy: files without extension, nested folders, several series and
non-DICOM files side by side, slices in arbitrary order. Slices are grouped by
SeriesInstanceUID and ordered by their position along the slice normal (never by file
name or InstanceNumber); the affine comes from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing; every problem is reported with the series and
the reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from spinelesion.io.volume import Volume, affine_from_dicom

log = logging.getLogger(__name__)

# Storage classes that carry no image to classify (SR, presentation states, RT objects,
# key objects, waveforms, encapsulated documents, segmentations, raw data).
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",   # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",   # presentation states
    "1.2.840.10008.5.1.4.1.1.481.",  # RT (plan, struct, dose, ...)
    "1.2.840.10008.5.1.4.1.1.9.",    # waveforms
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA
    "1.2.840.10008.5.1.4.1.1.66",    # raw data, spatial registration, segmentation
    "1.2.840.10008.5.1.4.1.1.67",    # real world value mapping
)
# Which pip package decodes a compressed transfer syntax for pydicom.
DECODERS = {
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (JPEG 2000 lossless)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg >= 2.2 (HTJ2K)",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg >= 2.2 (HTJ2K)",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg >= 2.2 (HTJ2K)",
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg or Pillow (JPEG baseline)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg or Pillow (JPEG extended)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg (JPEG lossless)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg (JPEG lossless SV1)",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg or pyjpegls (JPEG-LS lossless)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg or pyjpegls (JPEG-LS near-lossless)",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle or numpy (RLE)",
}
GEOMETRY_TAGS = ["SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
                 "Modality", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
                 "NumberOfFrames", "PatientID", "ImageType"]


class DicomError(ValueError):
    """A DICOM problem, naming where (file or series) and why."""

    def __init__(self, where: str | os.PathLike[str], reason: str, series_uid: str | None = None):
        self.where, self.reason, self.series_uid = str(where), reason, series_uid
        series = f" (series {series_uid})" if series_uid else ""
        super().__init__(f"{where}{series}: {reason}")


class DicomSeriesError(DicomError):
    """The slices of a series do not make one regular 3D volume."""


class DicomDecodeError(DicomError):
    """Pixel data that cannot be decoded here (typically a missing decoder package)."""


class NonImageError(DicomError):
    """An object that holds no image (report, RT, presentation state...)."""


@dataclass
class SeriesInfo:
    """One series found in a folder: its files and the header of its first file."""

    series_uid: str
    study_uid: str
    files: list[Path] = field(default_factory=list)
    header: Dataset | None = None

    @property
    def description(self) -> str:
        return str(self.header.get("SeriesDescription", "")) if self.header is not None else ""

    @property
    def number(self) -> int | None:
        value = self.header.get("SeriesNumber") if self.header is not None else None
        return int(value) if value not in (None, "") else None

    @property
    def label(self) -> str:
        parts = [f"series {self.number}" if self.number is not None else "series", f"'{self.description}'"]
        return " ".join(parts) + f" ({len(self.files)} file(s))"

    @property
    def is_image(self) -> bool:
        return non_image_reason(self.header) is None if self.header is not None else False


def non_image_reason(ds: Dataset) -> str | None:
    """Why a dataset is not an image we can use, or None."""
    sop = str(ds.get("SOPClassUID", ""))
    if any(sop.startswith(p) for p in NON_IMAGE_SOP_PREFIXES):
        name = getattr(ds.get("SOPClassUID"), "name", sop)
        return f"not an image ({name})"
    if "Rows" not in ds or "Columns" not in ds:
        return f"not an image (no Rows/Columns; SOP class {sop or 'unknown'})"
    return None


def _iter_files(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def _read_header(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        return None


def discover_series(folder: str | os.PathLike[str]) -> tuple[list[SeriesInfo], list[tuple[Path, str]]]:
    """Every DICOM series under ``folder`` (headers only), and the files skipped with why.

    Non-image series (reports, RT objects...) are returned too; use ``SeriesInfo.is_image``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(folder, "not a folder")
    series: dict[str, SeriesInfo] = {}
    skipped: list[tuple[Path, str]] = []
    files = list(_iter_files(folder))
    with ThreadPoolExecutor(max_workers=4) as pool:
        headers = list(pool.map(_read_header, files))
    for path, ds in zip(files, headers, strict=True):
        if ds is None:
            skipped.append((path, "not a DICOM file"))
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or f"no-series-uid:{path.parent}"
        info = series.setdefault(uid, SeriesInfo(uid, str(ds.get("StudyInstanceUID", ""))))
        info.files.append(path)
        if info.header is None:
            info.header = ds
    return list(series.values()), skipped


def _vec(ds: Dataset, tag: str, n: int, where: Path, uid: str) -> np.ndarray:
    value = ds.get(tag)
    if value is None:
        raise DicomSeriesError(where, f"missing {tag}: cannot place the image in patient space", uid)
    arr = np.asarray([float(v) for v in value], dtype=np.float64)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DicomSeriesError(where, f"{tag} must have {n} finite numbers, got {list(value)}", uid)
    return arr


def _decode(ds: Dataset, where: Path, uid: str) -> np.ndarray:
    """Pixel array of one dataset; a clear message when no decoder is installed."""
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    compressed = bool(ts is not None and getattr(ts, "is_compressed", False))
    if not compressed and "PixelData" in ds and ds.get("BitsAllocated") == 16 and ds.get("SamplesPerPixel", 1) == 1 \
            and int(ds.get("NumberOfFrames", 1) or 1) == 1:
        # Fast path for the common case (uncompressed 16-bit mono): no decoder machinery.
        dtype = np.int16 if ds.get("PixelRepresentation", 0) == 1 else np.uint16
        if ts is not None and not ts.is_little_endian:
            dtype = np.dtype(dtype).newbyteorder(">")
        n = int(ds.Rows) * int(ds.Columns)
        raw = np.frombuffer(ds.PixelData, dtype=dtype, count=n)
        return raw.reshape(int(ds.Rows), int(ds.Columns))
    try:
        return ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError here
        if compressed:
            package = DECODERS.get(str(ts), "a decoder plugin for pydicom")
            raise DicomDecodeError(where, f"pixel data is compressed ({ts.name}) and cannot be decoded here; "
                                          f"install {package} ({exc})", uid) from exc
        raise DicomDecodeError(where, f"cannot read pixel data ({exc})", uid) from exc


def _rescale(ds: Dataset, pixels: np.ndarray) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    out = pixels.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        out = out * np.float32(slope) + np.float32(intercept)
    return out


def volume_from_datasets(datasets: Sequence[Dataset], files: Sequence[Path], where: str | Path,
                         spacing_tolerance: float = 0.05, orientation_tolerance: float = 1e-3,
                         tilt_tolerance_deg: float = 0.5) -> Volume:
    """Assemble single-frame slices (or one multi-frame object) into a checked :class:`Volume`."""
    where = Path(where)
    first = datasets[0]
    uid = str(first.get("SeriesInstanceUID", ""))
    reason = non_image_reason(first)
    if reason:
        raise NonImageError(files[0], reason, uid)
    if len(datasets) == 1 and int(first.get("NumberOfFrames", 1) or 1) > 1:
        return _multiframe_volume(first, files[0], uid)
    multi = [f for d, f in zip(datasets, files, strict=True) if int(d.get("NumberOfFrames", 1) or 1) > 1]
    if multi:
        raise DicomSeriesError(where, f"mixes {len(multi)} multi-frame file(s) with single-frame slices "
                                      f"(e.g. {multi[0].name}); give one multi-frame object or single frames", uid)
    if len(datasets) < 2:
        raise DicomSeriesError(where, f"single-slice series ({files[0].name}): not a 3D volume", uid)

    orient = [_vec(d, "ImageOrientationPatient", 6, f, uid) for d, f in zip(datasets, files, strict=True)]
    o0 = orient[0]
    bad = [f.name for o, f in zip(orient, files, strict=True) if np.abs(o - o0).max() > orientation_tolerance]
    if bad:
        raise DicomSeriesError(where, f"mixed orientations in one series ({len(bad)} slice(s) differ from "
                                      f"{files[0].name}, e.g. {bad[0]})", uid)
    shapes = {(int(d.Rows), int(d.Columns)) for d in datasets}
    if len(shapes) > 1:
        raise DicomSeriesError(where, f"slices of different sizes {sorted(shapes)}", uid)
    row_dir, col_dir = o0[:3], o0[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.stack([_vec(d, "ImagePositionPatient", 3, f, uid) for d, f in zip(datasets, files, strict=True)])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    dist, positions = dist[order], positions[order]
    sorted_files = [files[i] for i in order]
    steps = np.diff(dist)
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        i = int(dup[0])
        raise DicomSeriesError(where, f"duplicated slice: {sorted_files[i].name} and {sorted_files[i + 1].name} "
                                      f"share position {dist[i]:.2f} mm along the normal", uid)
    step = float(np.median(steps))
    deviation = np.abs(steps - step)
    if np.any(deviation > max(spacing_tolerance, 0.01 * step)):
        gaps = np.flatnonzero(steps > 1.5 * step)
        if gaps.size:
            i = int(gaps[0])
            missing = int(round(steps[i] / step)) - 1
            raise DicomSeriesError(where, f"missing slice(s): about {missing} between {sorted_files[i].name} "
                                          f"({dist[i]:.2f} mm) and {sorted_files[i + 1].name} ({dist[i + 1]:.2f} mm); "
                                          f"expected a step of {step:.2f} mm", uid)
        raise DicomSeriesError(where, f"uneven slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm "
                                      f"(tolerance {spacing_tolerance} mm)", uid)
    step_vec = (positions[-1] - positions[0]) / (len(positions) - 1)
    cos = abs(float(np.dot(step_vec, normal))) / max(float(np.linalg.norm(step_vec)), 1e-9)
    tilt = float(np.degrees(np.arccos(min(cos, 1.0))))
    if tilt > tilt_tolerance_deg:
        raise DicomSeriesError(where, f"gantry tilt / sheared stack: slices advance {tilt:.1f} deg off their normal; "
                                      "resample it to an orthogonal grid first", uid)
    spacing = _vec(first, "PixelSpacing", 2, sorted_files[0], uid)
    slices = [_rescale(datasets[i], _decode(datasets[i], files[i], uid)) for i in order]
    array = np.stack(slices, axis=-1).transpose(1, 0, 2)  # (cols, rows, slices) = (i, j, k)
    affine = affine_from_dicom(positions[0], o0, spacing, step_vec)
    return Volume(np.ascontiguousarray(array), affine, _series_meta(first, sorted_files, where))


def _multiframe_volume(ds: Dataset, path: Path, uid: str) -> Volume:
    """Enhanced multi-frame (per-frame plane positions) or legacy GridFrameOffsetVector objects."""
    frames = int(ds.NumberOfFrames)
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")

    def group(item: Dataset | None, seq: str, tag: str) -> Any:
        if item is not None and seq in item and tag in item[seq][0]:
            return item[seq][0][tag].value
        return None

    if per_frame is not None:
        orient = group(shared, "PlaneOrientationSequence", "ImageOrientationPatient") or \
            group(per_frame[0], "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = group(shared, "PixelMeasuresSequence", "PixelSpacing") or \
            group(per_frame[0], "PixelMeasuresSequence", "PixelSpacing")
        pos = [group(f, "PlanePositionSequence", "ImagePositionPatient") for f in per_frame]
        if orient is None or spacing is None or any(p is None for p in pos):
            raise DicomSeriesError(path, "multi-frame object without per-frame plane positions/orientation", uid)
        positions = np.asarray([[float(v) for v in p] for p in pos])
        orientation = np.asarray([float(v) for v in orient])
    elif "GridFrameOffsetVector" in ds and "ImagePositionPatient" in ds:
        orientation = _vec(ds, "ImageOrientationPatient", 6, path, uid)
        spacing = ds.PixelSpacing
        normal = np.cross(orientation[:3], orientation[3:])
        offsets = np.asarray([float(v) for v in ds.GridFrameOffsetVector])
        positions = _vec(ds, "ImagePositionPatient", 3, path, uid)[None] + offsets[:, None] * normal[None]
    else:
        raise DicomSeriesError(path, f"multi-frame object ({frames} frames) without per-frame geometry "
                                     "(no PerFrameFunctionalGroupsSequence or GridFrameOffsetVector)", uid)
    if frames < 2:
        raise DicomSeriesError(path, "single-frame object: not a 3D volume", uid)
    normal = np.cross(orientation[:3], orientation[3:])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    steps = np.diff(dist[order])
    if np.any(steps < 1e-3) or np.abs(steps - np.median(steps)).max() > 0.05:
        raise DicomSeriesError(path, "multi-frame object with duplicated or uneven frame positions", uid)
    pixels = _decode(ds, path, uid).reshape(frames, int(ds.Rows), int(ds.Columns))[order]
    array = _rescale(ds, pixels).transpose(2, 1, 0)
    positions = positions[order]
    step_vec = (positions[-1] - positions[0]) / (frames - 1)
    affine = affine_from_dicom(positions[0], orientation, [float(v) for v in spacing], step_vec)
    return Volume(np.ascontiguousarray(array), affine, _series_meta(ds, [path], path))


def _series_meta(ds: Dataset, files: Sequence[Path], where: Path) -> dict[str, Any]:
    keys = ("SeriesDescription", "SeriesNumber", "Modality", "ScanningSequence", "SequenceVariant", "ScanOptions",
            "EchoTime", "RepetitionTime", "InversionTime", "ContrastBolusAgent", "MagneticFieldStrength",
            "Manufacturer", "StudyInstanceUID", "SeriesInstanceUID", "SliceThickness")
    meta: dict[str, Any] = {"source": str(where), "format": "dicom", "files": [str(f) for f in files]}
    for k in keys:
        if k in ds and ds.get(k) not in (None, ""):
            v = ds.get(k)
            meta[k] = str(v) if not isinstance(v, int | float) else v
    return meta


def read_series(info: SeriesInfo, **checks: float) -> Volume:
    """Read the pixels of a discovered series and assemble it."""
    where = info.files[0].parent
    datasets = []
    for f in info.files:
        try:
            datasets.append(pydicom.dcmread(f))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise DicomError(f, f"unreadable DICOM file ({exc})", info.series_uid) from exc
    return volume_from_datasets(datasets, info.files, where, **checks)


def read_dicom_folder(folder: str | os.PathLike[str], series_uid: str | None = None, **checks: float) -> Volume:
    """The one image series in ``folder`` (or the one named): one pass over the files.

    Other image series, non-image objects and non-DICOM files are named in the error when
    the choice is ambiguous; otherwise they are ignored (and logged).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(folder, "not a folder")
    files = list(_iter_files(folder))
    with ThreadPoolExecutor(max_workers=4) as pool:
        datasets = list(pool.map(_read_full, files))
    groups: dict[str, list[tuple[Dataset, Path]]] = {}
    not_dicom = 0
    for path, ds in zip(files, datasets, strict=True):
        if ds is None:
            not_dicom += 1
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((ds, path))
    if not groups:
        raise DicomError(folder, f"no DICOM file found ({not_dicom} other file(s))")
    if series_uid is not None:
        if series_uid not in groups:
            raise DicomError(folder, f"series {series_uid} not found; present: {', '.join(groups)}")
        chosen = groups[series_uid]
    else:
        images = {u: g for u, g in groups.items() if non_image_reason(g[0][0]) is None}
        if not images:
            first = next(iter(groups.values()))[0]
            raise NonImageError(folder, f"no image series; {non_image_reason(first[0])}")
        if len(images) > 1:
            desc = [f"{u} '{g[0][0].get('SeriesDescription', '')}' ({len(g)} files)" for u, g in images.items()]
            raise DicomError(folder, "several image series; name one (series_uid) or give one series per folder: "
                                     + "; ".join(desc))
        chosen = next(iter(images.values()))
    if not_dicom or len(groups) > 1:
        log.info("%s: ignored %d non-DICOM file(s) and %d other series", folder, not_dicom, len(groups) - 1)
    return volume_from_datasets([d for d, _ in chosen], [p for _, p in chosen], folder, **checks)


def _read_full(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        return None


def read_dicom_geometry(folder: str | os.PathLike[str]) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the one image series in ``folder`` from headers alone (no pixels)."""
    infos, _ = discover_series(folder)
    images = [s for s in infos if s.is_image]
    if len(images) != 1:
        raise DicomError(folder, f"expected one image series, found {len(images)}")
    info = images[0]
    headers = [_read_header(f) for f in info.files]
    first = headers[0]
    assert first is not None
    if int(first.get("NumberOfFrames", 1) or 1) > 1 or len(headers) < 2:
        vol = read_series(info)
        return vol.shape, vol.affine
    o = _vec(first, "ImageOrientationPatient", 6, info.files[0], info.series_uid)
    normal = np.cross(o[:3], o[3:])
    pos = np.stack([_vec(h, "ImagePositionPatient", 3, f, info.series_uid) for h, f in zip(headers, info.files, strict=True)])  # type: ignore[arg-type]
    pos = pos[np.argsort(pos @ normal)]
    step = (pos[-1] - pos[0]) / (len(pos) - 1)
    affine = affine_from_dicom(pos[0], o, _vec(first, "PixelSpacing", 2, info.files[0], info.series_uid), step)
    return (int(first.Columns), int(first.Rows), len(headers)), affine
