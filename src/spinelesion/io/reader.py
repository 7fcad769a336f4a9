"""One sequence path (DICOM series folder or NIfTI file) -> :class:`Volume` or its geometry."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from spinelesion.io.dicom import DicomError, read_dicom_folder, read_dicom_geometry
from spinelesion.io.nifti import NiftiError, is_nifti, read_nifti
from spinelesion.io.volume import LPS_TO_RAS, Volume


def read_volume(path: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """A DICOM folder holding one image series (or the one named), or a NIfTI file."""
    path = Path(path)
    if is_nifti(path):
        if not path.is_file():
            raise NiftiError(f"{path}: file not found")
        return read_nifti(path)
    if path.is_dir():
        return read_dicom_folder(path, series_uid=series_uid)
    if not path.exists():
        raise DicomError(path, "does not exist")
    raise DicomError(path, "neither a DICOM series folder nor a NIfTI file (.nii, .nii.gz)")


def read_geometry(path: str | os.PathLike[str]) -> tuple[tuple[int, int, int], np.ndarray]:
    """(shape, voxel-to-LPS affine) from headers only."""
    path = Path(path)
    if is_nifti(path):
        try:
            img = nib.load(str(path))
        except Exception as exc:  # nibabel raises many types for broken files
            raise NiftiError(f"{path}: not a readable NIfTI file ({exc})") from exc
        shape = tuple(int(s) for s in img.shape[:3])
        return shape, LPS_TO_RAS @ img.affine  # type: ignore[return-value]
    return read_dicom_geometry(path)
