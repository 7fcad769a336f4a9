"""One sequence path -> :class:`Volume`, or just its geometry.

A path is a folder holding a DICOM series (the only image series there, or the one named
by ``series_uid``), a NIfTI file (``.nii``, ``.nii.gz``), or a single DICOM file holding a
whole volume (an enhanced multi-frame object).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spinelesion.io.dicom import (
    DicomError,
    header_geometry,
    read_dataset,
    read_dicom_folder,
    read_dicom_geometry,
    read_file_header,
    series_context,
    volume_from_datasets,
)
from spinelesion.io.dicom.discover import sniff
from spinelesion.io.limits import special_file_reason
from spinelesion.io.nifti import NiftiError, is_nifti, load_header, read_nifti
from spinelesion.io.volume import LPS_TO_RAS, Volume


def is_dicom_file(path: Path) -> bool:
    """A regular file whose first bytes read as DICOM (a pipe is never opened: it would block)."""
    if special_file_reason(path):  # a pipe would block the read below forever
        return False
    try:
        with open(path, "rb") as fh:
            return sniff(fh.read(132)) is not None
    except OSError:
        return False


def _missing(path: Path) -> Exception:
    if is_nifti(path):
        return NiftiError(f"{path}: file not found")
    return DicomError(path, "does not exist")


def read_volume(path: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """A DICOM series folder (one image series, or the one named), a NIfTI file, or a
    multi-frame DICOM file, as an LPS :class:`Volume`."""
    path = Path(path)
    if not path.exists():
        raise _missing(path)
    if path.is_dir():
        return read_dicom_folder(path, series_uid=series_uid)
    if is_nifti(path):
        return read_nifti(path)
    if is_dicom_file(path):
        ds = read_dataset(path)
        return volume_from_datasets([ds], [path], ctx=series_context(ds, [path], path))
    raise DicomError(
        path,
        special_file_reason(path)
        or "neither a DICOM series folder, a DICOM file, nor a NIfTI file (.nii, .nii.gz)",
    )


def _nifti_geometry(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    img = load_header(path)
    shape = tuple(int(s) for s in img.shape)
    ras = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(ras)) or abs(np.linalg.det(ras[:3, :3])) < 1e-9:
        raise NiftiError(f"{path}: affine is singular or not finite")
    return (shape[0], shape[1], shape[2]), LPS_TO_RAS @ ras


def read_geometry(
    path: str | os.PathLike[str], series_uid: str | None = None, strict: bool = False
) -> tuple[tuple[int, int, int], np.ndarray]:
    """(shape, voxel-to-LPS affine) from headers only, equal to ``read_volume(path)``'s
    whenever that read succeeds.

    ``strict=False`` (for manifest checks: is an ROI inside the volume?) does not fail on a
    broken DICOM stack (missing or duplicated slices, uneven steps, tilt), which reading
    reports per study; ``strict=True`` runs every check reading runs.
    """
    path = Path(path)
    if not path.exists():
        raise _missing(path)
    if path.is_dir():
        return read_dicom_geometry(path, series_uid=series_uid, strict=strict)
    if is_nifti(path):
        return _nifti_geometry(path)
    if is_dicom_file(path):
        header = read_file_header(path)
        geometry = header_geometry([header], [path], series_context(header, [path], path), strict=strict)
        return geometry.shape, geometry.affine
    raise DicomError(path, "neither a DICOM series folder, a DICOM file, nor a NIfTI file (.nii, .nii.gz)")
