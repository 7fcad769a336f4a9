"""Pixel data of one DICOM object as stored values, and their rescale to real values.

Uncompressed grayscale data (nearly every MR export) is read straight from the bytes with
numpy; compressed data goes through pydicom's decoder plugins, and when none is installed
for the transfer syntax the error names the package to install.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from spinelesion.io.dicom.errors import DicomDecodeError, SeriesContext
from spinelesion.io.dicom.values import fast_get, pixel_bytes

# Which pip package decodes a compressed transfer syntax for pydicom (pydicom's own
# "missing dependencies" text is added to the message too).
DECODERS = {
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (with pylibjpeg) for JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (with pylibjpeg) for JPEG 2000",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg >= 2.2 (with pylibjpeg) for HTJ2K",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg >= 2.2 (with pylibjpeg) for HTJ2K",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg >= 2.2 (with pylibjpeg) for HTJ2K",
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (with pylibjpeg) or Pillow for JPEG baseline",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg (with pylibjpeg) or Pillow for JPEG extended",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg (with pylibjpeg) for JPEG lossless",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg (with pylibjpeg) for JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "pyjpegls, or pylibjpeg-libjpeg (with pylibjpeg), for JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "pyjpegls, or pylibjpeg-libjpeg (with pylibjpeg), for JPEG-LS near-lossless",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (pydicom's own RLE decoder needs only numpy)",
}


def transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    ts = fast_get(meta, "TransferSyntaxUID") if meta is not None else None
    return UID(str(ts)) if ts else None


def check_decodable(ds: Dataset, name: str, ctx: SeriesContext) -> None:
    """Fail before reading a whole series when its compression cannot be decoded here."""
    ts = transfer_syntax(ds)
    if ts is None or not ts.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise ctx.error(
            DicomDecodeError,
            f"{name}: pixel data use transfer syntax {ts.name} ({ts}), which pydicom "
            "cannot decode at all; convert the series (e.g. dcmdjpeg, gdcmconv --raw)",
        ) from exc
    if not decoder.is_available:
        package = DECODERS.get(str(ts), "a decoder plugin for pydicom")
        missing = "; ".join(decoder.missing_dependencies)
        raise ctx.error(
            DicomDecodeError,
            f"{name}: pixel data are compressed ({ts.name}, {ts}) and no decoder is "
            f"installed: pip install {package} (pydicom plugins missing: {missing})",
        )


def _fast_native(ds: Dataset, frames: int) -> np.ndarray | None:
    """Stored values of uncompressed grayscale data via numpy, or None when not that case."""
    ts = transfer_syntax(ds)
    bits = int(fast_get(ds, "BitsAllocated", 0))
    data = pixel_bytes(ds)
    if (
        data is None
        or bits not in (8, 16, 32)
        or int(fast_get(ds, "SamplesPerPixel", 1)) != 1
        or (ts is not None and (ts.is_compressed or ts.is_deflated))
    ):
        return None
    signed = int(fast_get(ds, "PixelRepresentation", 0)) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    if ts is not None and not ts.is_little_endian:
        dtype = dtype.newbyteorder(">")
    rows, cols = int(fast_get(ds, "Rows")), int(fast_get(ds, "Columns"))
    count = frames * rows * cols
    if len(data) < count * dtype.itemsize:
        return None  # truncated: let pydicom produce its own message
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(frames, rows, cols)
    stored = int(fast_get(ds, "BitsStored", bits))
    if stored < bits:
        # Bits above BitsStored may hold junk (old overlays) or lack the sign extension:
        # shift them out, as pydicom does with correct_unused_bits=True, but only when needed.
        lo, hi = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
        if arr.size and (arr.min() < lo or arr.max() > hi):
            shift = bits - stored
            arr = np.right_shift(np.left_shift(arr, shift), shift)
    return arr


def stored_frames(ds: Dataset, name: str, ctx: SeriesContext) -> np.ndarray:
    """Stored pixel values as (frames, rows, columns)."""
    frames = int(fast_get(ds, "NumberOfFrames", 1) or 1)
    fast = _fast_native(ds, frames)
    if fast is not None:
        return fast
    check_decodable(ds, name, ctx)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises RuntimeError/ValueError/... here
        ts = transfer_syntax(ds)
        raise ctx.error(
            DicomDecodeError,
            f"{name}: cannot read pixel data ({type(exc).__name__}: {exc}; "
            f"transfer syntax {ts.name if ts else 'unknown'})",
        ) from exc
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ctx.error(
            DicomDecodeError,
            f"{name}: colour pixel data ({ds.get('PhotometricInterpretation', '')}), not a grayscale image",
        )
    return arr.reshape(frames, int(ds.Rows), int(ds.Columns))


def rescale_of(item: Dataset) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of a dataset or functional-group item; (1, 0) when absent."""

    def num(key: str, default: float) -> float:
        value = fast_get(item, key)
        try:
            return float(value) if value not in (None, "") else default
        except (TypeError, ValueError):
            return default

    slope = num("RescaleSlope", 1.0)
    return (slope if slope != 0 else 1.0), num("RescaleIntercept", 0.0)
