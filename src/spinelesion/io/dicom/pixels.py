"""Pixel data of one DICOM object as stored values, and their rescale to real values.

Uncompressed grayscale data (nearly every MR export) is read straight from the bytes with
numpy; compressed data goes through pydicom's decoder plugins, and when none is installed
for the transfer syntax the error names the package to install.

Nothing is decoded before the header is checked against the data: uncompressed PixelData
must hold exactly the bytes Rows x Columns x frames x samples x BitsAllocated describe (else
the slice would be read as sheared bytes); compressed frames must declare the header's size
in their own codec header, and that size must fit the memory limit, since decoders allocate
what the codestream claims. What is decoded must have the declared shape.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID

from spinelesion.io.dicom.codestreams import declared_size
from spinelesion.io.dicom.errors import DicomDecodeError, SeriesContext
from spinelesion.io.dicom.values import fast_get, has, pixel_bytes
from spinelesion.io.limits import ResourceLimitError, check_volume_bytes

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


def _is_compressed(ts: UID | None, name: str, ctx: SeriesContext) -> bool:
    """Whether the pixel data are encapsulated (compressed); an unknown transfer syntax is refused."""
    if ts is None:
        return False
    try:
        return bool(ts.is_compressed)
    except ValueError as exc:  # pydicom: "UID is not a transfer syntax"
        raise ctx.error(
            DicomDecodeError, f"{name}: unknown transfer syntax {ts}; its pixel data cannot be read"
        ) from exc


def check_decodable(ds: Dataset, name: str, ctx: SeriesContext) -> None:
    """Fail before reading a whole series when its compression cannot be decoded here."""
    ts = transfer_syntax(ds)
    if ts is None or not _is_compressed(ts, name, ctx):
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


def _pixel_format(ds: Dataset) -> tuple[int, int, int, int]:
    """(Rows, Columns, SamplesPerPixel, BitsAllocated) as the header declares them."""
    return (
        int(fast_get(ds, "Rows", 0) or 0),
        int(fast_get(ds, "Columns", 0) or 0),
        int(fast_get(ds, "SamplesPerPixel", 1) or 1),
        int(fast_get(ds, "BitsAllocated", 0) or 0),
    )


def _declared(rows: int, cols: int, frames: int, samples: int) -> str:
    """``Rows 100 x Columns 146``, with frames and samples when not 1."""
    parts = [f"Rows {rows}", f"Columns {cols}"]
    parts += [f"{frames} frames"] if frames != 1 else []
    parts += [f"{samples} samples"] if samples != 1 else []
    return " x ".join(parts)


def check_native_length(ds: Dataset, name: str, ctx: SeriesContext, frames: int) -> None:
    """Refuse uncompressed PixelData whose length is not what the header describes: with a
    wrong BitsAllocated, Rows or Columns the bytes would be read as a sheared image."""
    data = pixel_bytes(ds)
    if data is None:
        return  # no PixelData (or float pixel data): pydicom says what is wrong
    rows, cols, samples, bits = _pixel_format(ds)
    pixels = rows * cols * frames * samples
    if samples == 3 and fast_get(ds, "PhotometricInterpretation") == "YBR_FULL_422":
        pixels = pixels // 3 * 2  # chroma stored at half the horizontal resolution
    need = (pixels * bits + 7) // 8
    if len(data) == need or (need % 2 == 1 and len(data) == need + 1):  # odd lengths get one pad byte
        return
    raise ctx.error(
        DicomDecodeError,
        f"{name}: cannot read pixel data: PixelData holds {len(data)} bytes, but "
        f"{_declared(rows, cols, frames, samples)} at BitsAllocated {bits} need {need}; "
        "the header does not describe the stored pixels (damaged or wrongly edited file)",
    )


def check_encapsulated(ds: Dataset, name: str, ctx: SeriesContext, ts: UID, frames: int) -> None:
    """Before decoding compressed data: what the header declares fits the memory limit, and
    every encoded frame declares that same size in its codec header."""
    rows, cols, samples, _ = _pixel_format(ds)
    try:
        check_volume_bytes(name, (cols, rows, frames) + ((samples,) if samples != 1 else ()))
    except ResourceLimitError as exc:
        raise ctx.error(DicomDecodeError, f"{exc}; refused before decoding") from exc
    data = pixel_bytes(ds)
    if data is None:
        return  # no PixelData: pydicom says so
    offsets = None
    if has(ds, "ExtendedOffsetTable") and has(ds, "ExtendedOffsetTableLengths"):
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    count = 0
    try:
        encoded = data if isinstance(data, bytes) else bytes(data)
        for frame in generate_frames(encoded, number_of_frames=frames, extended_offsets=offsets):
            count += 1
            size = declared_size(ts, frame)
            if size is not None and size != (rows, cols, samples):
                what = f"frame {count}" if frames > 1 else "its frame"
                raise ctx.error(
                    DicomDecodeError,
                    f"{name}: {what} declares {size.rows} x {size.columns} pixels"
                    f"{f' x {size.samples} samples' if size.samples != 1 else ''} in its {ts.name} "
                    f"stream, the header {_declared(rows, cols, 1, samples)}; refused before decoding",
                )
    except DicomDecodeError:
        raise
    except ValueError as exc:  # broken encapsulation or codec header: no decoder reads it either
        raise ctx.error(
            DicomDecodeError, f"{name}: cannot read pixel data ({exc}; transfer syntax {ts.name})"
        ) from exc
    if count != frames:
        raise ctx.error(
            DicomDecodeError,
            f"{name}: cannot read pixel data: {count} encoded frame(s) where the header declares "
            f"{frames}; refused before decoding",
        )


def _fast_native(ds: Dataset, frames: int, ts: UID | None) -> np.ndarray | None:
    """Stored values of uncompressed grayscale data via numpy, or None when not that case
    (the length was checked by :func:`check_native_length`)."""
    bits = int(fast_get(ds, "BitsAllocated", 0))
    data = pixel_bytes(ds)
    if (
        data is None
        or bits not in (8, 16, 32)
        or int(fast_get(ds, "SamplesPerPixel", 1)) != 1
        or (ts is not None and ts.is_deflated)
    ):
        return None
    signed = int(fast_get(ds, "PixelRepresentation", 0)) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    if ts is not None and not ts.is_little_endian:
        dtype = dtype.newbyteorder(">")
    rows, cols = int(fast_get(ds, "Rows")), int(fast_get(ds, "Columns"))
    arr = np.frombuffer(data, dtype=dtype, count=frames * rows * cols).reshape(frames, rows, cols)
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
    """Stored pixel values as (frames, rows, columns), once the header is checked against the data."""
    frames = int(fast_get(ds, "NumberOfFrames", 1) or 1)
    ts = transfer_syntax(ds)
    if _is_compressed(ts, name, ctx):
        assert ts is not None
        check_decodable(ds, name, ctx)
        check_encapsulated(ds, name, ctx, ts, frames)
    else:
        check_native_length(ds, name, ctx, frames)
        fast = _fast_native(ds, frames, ts)
        if fast is not None:
            return fast
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises RuntimeError/ValueError/... here
        raise ctx.error(
            DicomDecodeError,
            f"{name}: cannot read pixel data ({type(exc).__name__}: {exc}; "
            f"transfer syntax {ts.name if ts else 'unknown'})",
        ) from exc
    rows, cols, samples, _ = _pixel_format(ds)
    if samples != 1:
        raise ctx.error(
            DicomDecodeError,
            f"{name}: colour pixel data ({ds.get('PhotometricInterpretation', '')}), not a grayscale image",
        )
    if arr.size != frames * rows * cols or arr.shape[-2:] != (rows, cols):
        raise ctx.error(
            DicomDecodeError,
            f"{name}: decoded pixel data have shape {'x'.join(map(str, arr.shape))}, the header "
            f"declares {_declared(rows, cols, frames, 1)}",
        )
    return arr.reshape(frames, rows, cols)


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
