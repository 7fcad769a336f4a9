"""The image size a compressed frame declares in its own codec header, read without decoding.

A decoder allocates what the codestream declares, not what the DICOM header says: a 60 KB
JPEG 2000 frame claiming 30000 x 30000 pixels costs gigabytes before anything can fail.
Comparing the two sizes first turns that into an error naming the frame. Only the marker
segments in front of the image data are read (JPEG 2000 SIZ, JPEG and JPEG-LS SOF).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pydicom.uid import UID, JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
# Start-of-frame markers: JPEG SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC); JPEG-LS SOF55 (F7).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
# Markers without a length field: TEM and RST0-7 (SOI and EOI are handled on their own).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class FrameSize(NamedTuple):
    rows: int
    columns: int
    samples: int


def _j2k_start(data: bytes) -> int:
    """Offset of the codestream: 0, or the contents of the ``jp2c`` box of a JP2 file."""
    if not data.startswith(JP2_SIGNATURE):
        return 0
    offset = 0
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if length == 1:  # the length follows as 8 bytes (XLBox)
            (length,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        if kind == b"jp2c":
            return offset + header
        if length < header:  # 0: the box runs to the end of the file, and it is not jp2c
            break
        offset += length
    raise ValueError("JP2 file without a codestream box (jp2c)")


def _j2k_size(data: bytes) -> FrameSize:
    offset = _j2k_start(data)
    if data[offset : offset + 4] != b"\xff\x4f\xff\x51":
        raise ValueError("the JPEG 2000 codestream does not start with SOC and SIZ markers")
    try:
        # SIZ (ISO/IEC 15444-1 A.5.1): Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, 4 tile fields, Csiz.
        _, _, xsiz, ysiz, xo, yo, _, _, _, _, csiz = struct.unpack_from(">HHIIIIIIIIH", data, offset + 4)
    except struct.error as exc:
        raise ValueError("truncated JPEG 2000 SIZ marker segment") from exc
    return FrameSize(ysiz - yo, xsiz - xo, csiz)


def _jpeg_size(data: bytes) -> FrameSize:
    """From the SOF segment, walking the segments before it (JPEG and JPEG-LS share the layout)."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("the JPEG stream does not start with an SOI marker")
    offset = 2
    try:
        while True:
            if data[offset] != 0xFF:
                raise ValueError(f"no marker at byte {offset} of the JPEG stream")
            while data[offset + 1] == 0xFF:  # fill bytes may precede a marker
                offset += 1
            marker = data[offset + 1]
            if marker in _SOF:
                rows, columns = struct.unpack_from(">HH", data, offset + 5)
                return FrameSize(rows, columns, data[offset + 9])
            if marker in (0xDA, 0xD9):  # SOS or EOI before any frame header
                raise ValueError("no frame header (SOF) before the scan data of the JPEG stream")
            if marker in _STANDALONE:
                offset += 2
                continue
            (length,) = struct.unpack_from(">H", data, offset + 2)
            offset += 2 + length
    except (IndexError, struct.error) as exc:
        raise ValueError("the JPEG stream ends before its frame header (SOF)") from exc


def declared_size(ts: UID, frame: bytes) -> FrameSize | None:
    """(rows, columns, samples) that an encoded frame declares, or None when the transfer
    syntax carries no size of its own (RLE: the decoder sizes its output from the DICOM header).

    Raises:
        ValueError: the codec header cannot be read (no decoder reads such a frame).
    """
    if ts in JPEG2000TransferSyntaxes:
        return _j2k_size(frame)
    if ts in JPEGLSTransferSyntaxes or ts in JPEGTransferSyntaxes:
        return _jpeg_size(frame)
    return None
