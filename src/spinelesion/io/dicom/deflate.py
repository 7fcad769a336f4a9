"""Deflated Explicit VR Little Endian files: their inflated size bounded before pydicom reads them.

pydicom inflates the whole dataset of such a file in one ``zlib.decompress`` before parsing
a single element, so a 1 MB file of deflated zeros becomes 1 GiB in memory. Here the
dataset is inflated first in chunks that are counted and dropped: the first
:attr:`~spinelesion.io.limits.ReadLimits.header_bytes` give the header, and the whole may
then hold no more than an uncompressed file would (header, declared pixel data, slack;
see :func:`~spinelesion.io.limits.dicom_allowed_bytes`).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from spinelesion.io.dicom.errors import DicomError
from spinelesion.io.limits import LIMITS, MIB, dicom_allowed_bytes, dicom_pixel_bytes, human

# Explicit VRs whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # float, double float, PixelData
INFLATE_CHUNK = 16 * MIB


def file_meta_end(data: bytes) -> tuple[int, str]:
    """Offset where the dataset starts after the file meta group (0002), and its
    TransferSyntaxUID ('' when absent). The meta group is always little endian."""
    offset = 132 if data[128:132] == b"DICM" else 0
    ts = ""
    try:
        while offset + 8 <= len(data):
            group, element = struct.unpack_from("<HH", data, offset)
            if group != 0x0002:
                break
            vr = data[offset + 4 : offset + 6]
            if vr in _LONG_VRS:
                (length,) = struct.unpack_from("<I", data, offset + 8)
                start = offset + 12
            elif vr.isalpha() and vr.isupper():
                (length,) = struct.unpack_from("<H", data, offset + 6)
                start = offset + 8
            else:  # implicit VR: not conformant for the meta group, but pydicom reads it
                (length,) = struct.unpack_from("<I", data, offset + 4)
                start = offset + 8
            if element == 0x0010:
                ts = data[start : start + length].decode("ascii", "replace").strip("\0 ")
            offset = start + length
    except struct.error:
        pass  # truncated meta: pydicom reports it
    return offset, ts


def check_inflated_size(path: Path, data: bytes) -> None:
    """Refuse a deflated file whose dataset inflates to more than its header declares.

    A no-op for every other transfer syntax. ``data`` may be the start of the file only
    (discovery): what pydicom would inflate from it is bounded the same way.

    Raises:
        DicomError: naming the file, the bound and the declared pixel data.
    """
    start, ts = file_meta_end(data)
    if ts != DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        head = inflater.decompress(memoryview(data)[start:], LIMITS.header_bytes)
    except zlib.error:
        return  # not a deflate stream: pydicom fails on it at once
    if len(head) < LIMITS.header_bytes:
        return  # all of it inflated within the header budget
    buf = io.BytesIO(head)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = read_dataset(buf, False, True, stop_when=lambda tag, vr, length: tag in _PIXEL_TAGS)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt input
        raise DicomError(path, f"unreadable deflated DICOM header ({type(exc).__name__}: {exc})") from exc
    if buf.tell() >= len(head):
        raise DicomError(
            path,
            f"no pixel data within the first {human(len(head))} of its deflated dataset "
            "(header too long or file damaged; limit: limits.header_mb)",
        )
    allowed, total = dicom_allowed_bytes(ds, buf.tell()), len(head)
    try:
        while total <= allowed and not inflater.eof:
            chunk = inflater.decompress(inflater.unconsumed_tail, min(INFLATE_CHUNK, allowed + 1 - total))
            if not chunk:
                break  # input used up: a truncated stream, which pydicom reports
            total += len(chunk)
    except zlib.error:
        return  # pydicom stops at the same error, having inflated no more than counted here
    if total > allowed:
        declared = dicom_pixel_bytes(ds)
        what = f"{human(declared)} of pixel data" if declared else "no pixel data"
        raise DicomError(
            path,
            f"its deflated dataset inflates to more than {human(allowed)}, but its header "
            f"declares {what}; refused before inflating (a decompression bomb or a damaged file)",
        )
