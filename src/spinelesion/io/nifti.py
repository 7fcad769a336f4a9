"""NIfTI reading and writing with the RAS <-> LPS conversion in one place."""

from __future__ import annotations

import gzip
import logging
import math
import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from spinelesion.atomic import atomic_path
from spinelesion.io.limits import ResourceLimitError, check_volume_bytes, human, regular_size
from spinelesion.io.volume import LPS_TO_RAS, Volume

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class NiftiError(ValueError):
    """A NIfTI file that cannot be used, with the file named in the message."""


def is_nifti(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _gzip_ends_within(path: Path, n: int) -> bool:
    """Whether the gzip stream of ``path`` ends (cut short) before ``n`` bytes decompress."""
    try:
        with gzip.open(path, "rb") as fh:
            fh.read(n)
    except EOFError:
        return True
    except (OSError, zlib.error):  # not gzip, or damaged rather than short: said otherwise
        return False
    return False


def declared_bytes(img: Any) -> int:
    """Bytes of a NIfTI file up to the end of the voxels its header declares: the voxel offset
    (the array proxy's: nibabel zeroes a loaded header's ``vox_offset``) plus the voxels."""
    hdr = img.header
    offset = int(getattr(img.dataobj, "offset", hdr.get_data_offset()))
    return offset + math.prod(img.shape) * int(hdr.get_data_dtype().itemsize)


def _check_voxel_size(path: Path, img: Any) -> None:
    """Refuse a zero, negative or non-finite voxel size where it places the voxels (no sform).

    nibabel repairs such a header while loading it (0 becomes 1 mm, a negative size its absolute
    value) with only a log line, so the raw header is read again, unrepaired."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as fh:
        raw = type(img.header).from_fileobj(fh, check=False)
    if int(raw["sform_code"]) > 0:  # the sform alone places the voxels
        return
    zooms = [float(z) for z in raw["pixdim"][1:4]]
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise NiftiError(
            f"{path}: voxel size (pixdim) {zooms} is zero, negative or not finite and no sform "
            "gives the geometry; nibabel would read it as 1 mm (fix the header)"
        )


def load_header(path: str | os.PathLike[str]) -> Any:
    """The nibabel image of a NIfTI file, header only (no voxel is read), checked against what
    reading it would cost: a regular file, a 3D shape, memory under the cap, and (for
    uncompressed files) enough bytes for the voxels the header declares."""
    path = Path(path)
    try:
        size = regular_size(path)
        img: Any = nib.load(str(path))  # nibabel's FileBasedImage type lacks the NIfTI header API
    except ResourceLimitError as exc:
        raise NiftiError(str(exc)) from exc
    except Exception as exc:  # nibabel raises a zoo of types for broken files
        # nibabel sniffs a short header as "Cannot work out file type": say it is cut short
        if str(path).lower().endswith(".gz") and _gzip_ends_within(path, 352):  # header + extension flag
            raise NiftiError(
                f"{path}: truncated: the compressed file ends within the NIfTI header (copy it again)"
            ) from exc
        raise NiftiError(f"{path}: not a readable NIfTI file ({exc})") from exc
    shape = tuple(int(s) for s in img.shape)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)) or min(shape) < 1:
        raise NiftiError(f"{path}: expected a 3D image, got shape {shape}")
    _check_voxel_size(path, img)
    if not str(path).lower().endswith(".gz"):
        need = declared_bytes(img)
        if size < need:
            raise NiftiError(
                f"{path}: truncated: the header declares {'x'.join(map(str, shape))} voxels "
                f"({human(need)} with the header), the file holds {human(size)}"
            )
    try:
        check_volume_bytes(path, shape[:3])
    except ResourceLimitError as exc:
        raise NiftiError(str(exc)) from exc
    return img


def form_warnings(path: Path, img: Any, tol_mm: float = 1e-3) -> list[str]:
    """Warnings about the NIfTI orientation fields, stating the rule the affine came from
    (nibabel's: the sform when its code is set, else the qform, else pixdim alone)."""
    hdr = img.header
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    if qcode > 0 and scode > 0:
        q, s = img.get_qform(), img.get_sform()
        diff = float(np.max(np.abs(q - s)))
        if not np.allclose(q, s, atol=tol_mm):
            return [
                f"{path.name}: qform and sform disagree (largest difference {diff:.3g}); used the sform "
                "(rule: sform when its code is set, else qform)"
            ]
    elif qcode == 0 and scode == 0:
        return [
            f"{path.name}: neither qform nor sform is set; voxel sizes from pixdim, orientation assumed "
            "RAS (NIfTI method 1): check left/right"
        ]
    return []


GZ_TAIL_BYTES = 1 << 20  # read past the declared voxels to reach gzip's trailer, at most this much


def _read_gz_checked(path: Path, img: Any) -> Any:
    """``img`` read again from the bytes of its gzip stream up to its end, so that gzip checks its
    CRC and length: nibabel reads only the bytes the header declares and never reaches the
    trailer, so a flipped byte inside the data was read as voxels without a word. Memory and
    time stay bounded by the header (the caller's cap) plus ``GZ_TAIL_BYTES``: a stream with more
    than that beyond its voxels (a zip bomb's tail) is read as declared, unchecked, with a warning."""
    need = declared_bytes(img)
    with gzip.open(path, "rb") as fh:
        raw = fh.read(need)
        if len(raw) < need:
            raise EOFError("the compressed stream ends early")
        if len(fh.read(GZ_TAIL_BYTES)) == GZ_TAIL_BYTES:  # the stream goes on: its end not reached
            log.warning(
                "%s: more than %d bytes follow the declared voxels; gzip's CRC was not checked",
                path,
                GZ_TAIL_BYTES,
            )
    return type(img).from_bytes(raw)


def read_nifti(path: str | os.PathLike[str], dtype: type = np.float32) -> Volume:
    """Read a 3D NIfTI (a 4D file with one volume is accepted) into an LPS :class:`Volume`.

    Warnings about the orientation fields are logged and kept in ``meta['warnings']``.
    """
    path = Path(path)
    img = load_header(path)
    shape = img.shape
    if np.issubdtype(img.get_data_dtype(), np.complexfloating) or img.get_data_dtype().names:
        # a cast would keep the real part silently: not the magnitude image the model reads
        raise NiftiError(
            f"{path}: {img.get_data_dtype()} voxels (complex or structured); pass the magnitude image"
        )
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise NiftiError(f"{path}: expected a 3D image, got shape {shape}")
    try:
        if str(path).lower().endswith(".gz"):
            img = _read_gz_checked(path, img)
        data = np.asarray(img.dataobj)
    except EOFError as exc:  # gzip's message names no file
        raise NiftiError(
            f"{path}: truncated: the compressed file ends before the {'x'.join(map(str, shape))} "
            f"{img.get_data_dtype()} voxels its header declares (copy it again)"
        ) from exc
    except (OSError, zlib.error) as exc:  # a damaged gzip stream (CRC, deflate data), a failing disk
        raise NiftiError(
            f"{path}: voxel data cannot be read, the file is damaged ({exc}; copy it again)"
        ) from exc
    if len(shape) == 4:
        data = data[..., 0]
    # get_fdata-style scaling: dataobj applies scl_slope/scl_inter when present.
    array: np.ndarray = np.asarray(data, dtype=dtype)
    ras = img.affine
    if not np.all(np.isfinite(ras)) or abs(np.linalg.det(ras[:3, :3])) < 1e-9:
        raise NiftiError(f"{path}: affine is singular or not finite")
    notes = form_warnings(path, img)
    for note in notes:
        log.warning("%s", note)
    return Volume(array, LPS_TO_RAS @ ras, {"source": str(path), "format": "nifti", "warnings": notes})


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
