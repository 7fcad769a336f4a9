"""NIfTI reading and writing with the RAS <-> LPS conversion in one place."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from spinelesion.atomic import atomic_path
from spinelesion.io.volume import LPS_TO_RAS, Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class NiftiError(ValueError):
    """A NIfTI file that cannot be used, with the file named in the message."""


def is_nifti(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | os.PathLike[str], dtype: type = np.float32) -> Volume:
    """Read a 3D NIfTI (a 4D file with one volume is accepted) into an LPS :class:`Volume`."""
    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises a zoo of types for broken files
        raise NiftiError(f"{path}: not a readable NIfTI file ({exc})") from exc
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        data = np.asarray(img.dataobj)[..., 0]
    elif len(shape) == 3:
        data = np.asarray(img.dataobj)
    else:
        raise NiftiError(f"{path}: expected a 3D image, got shape {shape}")
    # get_fdata-style scaling: dataobj applies scl_slope/scl_inter when present.
    array = np.asarray(data, dtype=dtype)
    ras = img.affine
    if not np.all(np.isfinite(ras)) or abs(np.linalg.det(ras[:3, :3])) < 1e-9:
        raise NiftiError(f"{path}: affine is singular or not finite")
    return Volume(array, LPS_TO_RAS @ ras, {"source": str(path), "format": "nifti"})


def write_nifti(volume: Volume, path: str | os.PathLike[str], dtype: type | None = None) -> Path:
    """Write ``volume`` as NIfTI (RAS affine in both qform and sform), atomically.

    The file appears under its final name only once it is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = volume.array if dtype is None else volume.array.astype(dtype)
    ras = LPS_TO_RAS @ volume.affine
    img = nib.Nifti1Image(array, ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
