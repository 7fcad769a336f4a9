"""Whole DICOM files into memory and parsed: one ``open`` per file, reads ahead on threads."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from spinelesion.io.dicom.deflate import check_inflated_size
from spinelesion.io.dicom.discover import check_identity, prefetch, read_header, sniff
from spinelesion.io.dicom.errors import DicomError
from spinelesion.io.limits import MIB, ResourceLimitError, regular_size


class FileBytes(io.BytesIO):
    """A file's bytes in memory that still carry its name: pydicom sets ``Dataset.filename``
    from it, and the repr names the file in logs and tracebacks."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name

    def __repr__(self) -> str:
        return self.name


def read_dataset(path: Path, data: bytes | None = None) -> Dataset:
    """A whole DICOM file (header and pixel bytes), read with one ``open`` (or from ``data``).

    Parsing from memory is about a third faster than pydicom's many small file reads.
    """
    if data is None:
        got = _read_bytes(path)
        if isinstance(got, DicomError):
            raise got
        if isinstance(got, OSError):
            raise DicomError(path, f"cannot read the file ({got})") from got
        data = got
    kind = sniff(data)
    if kind is None:
        raise DicomError(path, "not a DICOM file")
    check_inflated_size(path, data)  # pydicom would inflate a deflated dataset whole
    try:
        ds = pydicom.dcmread(FileBytes(data, str(path)), force=kind == "raw")
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt input
        raise DicomError(path, f"unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    check_identity(ds, path, kind)
    return ds


PRECHECK_BYTES = 2 * MIB
"""Files larger than this have their header checked (bounded parse, size against the
declared pixel data) before they are read whole; smaller ones cannot cost much."""


def _read_bytes(path: Path) -> bytes | OSError | DicomError:
    """A whole regular file, once its size is plausible for what its header declares."""
    try:
        size = regular_size(path)
        if size > PRECHECK_BYTES:
            read_header(path)  # raises DicomError for a file much larger than it declares
        return path.read_bytes()
    except ResourceLimitError as exc:
        return DicomError(path, str(exc).removeprefix(f"{path}: "))
    except DicomError as exc:
        return exc
    except OSError as exc:
        return exc


def read_datasets(files: Sequence[Path]) -> list[Dataset | DicomError]:
    """Whole datasets of ``files`` in order, or the error of each file that is not DICOM.

    Threads read the bytes ahead (file reads release the GIL); parsing, which holds the
    GIL, stays on this thread, where it runs fastest.
    """
    out: list[Dataset | DicomError] = []
    for path, data in zip(files, prefetch(_read_bytes, files), strict=True):
        if isinstance(data, DicomError):
            out.append(data)
            continue
        if isinstance(data, OSError):
            out.append(DicomError(path, f"cannot read the file ({data})"))
            continue
        try:
            out.append(read_dataset(path, data))
        except DicomError as exc:
            out.append(exc)
    return out


def read_file_header(path: str | os.PathLike[str]) -> Dataset:
    """Header of one DICOM file (no pixels); :class:`DicomError` when it is not DICOM."""
    return read_header(Path(path))
