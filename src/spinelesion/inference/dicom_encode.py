"""Fast Explicit VR Little Endian encoding of the DICOM objects :mod:`.dicom_out` writes.

pydicom's writer spends ~25 us of Python per data element (a buffer per element, the
character set resolved again, the ambiguous-VR correction re-run in every sequence item);
a Segmentation's per-frame functional groups and a TID 1500 SR's content tree have
thousands of them, which made writing a study's DICOM results slower than everything else
it does. This encoder produces the *same bytes* as ``Dataset.save_as(enforce_file_format=True)``
(tests/test_dicom_out.py compares them) for what those objects hold: ASCII text, numbers,
UIDs, sequences, pixel data. Anything else (a non-ASCII name, a value too long for its
VR, another transfer syntax, a buffered value...) makes :func:`save` hand the whole
dataset to pydicom instead, so the output never depends on this shortcut being complete.
"""

from __future__ import annotations

import struct
from copy import deepcopy
from pathlib import Path
from typing import Any

_LONG_VR = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_NUMBER = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_TEXT = frozenset({"AE", "AS", "CS", "LO", "LT", "SH", "ST", "UC", "UR", "UT"})  # padded with a space
_DELEGATED = frozenset({"DA", "DT", "TM", "PN", "AT"})  # pydicom's own value writers, into a small buffer
_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
_SEQ_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_LUT_DESCRIPTORS = frozenset({0x00283002, 0x00283005, 0x00281101, 0x00281102, 0x00281103})


class Unsupported(Exception):
    """Something this encoder does not write exactly as pydicom would: use pydicom."""


def _is_multi(value: Any) -> bool:
    import numpy as np
    from pydicom.multival import MultiValue

    return isinstance(value, MultiValue | list | tuple | np.ndarray)


def _ascii(text: str) -> bytes:
    if not text.isascii():
        raise Unsupported("non-ASCII text")
    return text.encode("ascii")


def _number_string(value: Any) -> str:
    return value.original_string if hasattr(value, "original_string") else str(value)


def _value(vr: str, elem: Any, encodings: list[str]) -> bytes:
    value = elem.value
    if vr in _NUMBER:
        fmt = _NUMBER[vr]
        if _is_multi(value):
            return struct.pack(f"<{len(value)}{fmt}", *value)
        return struct.pack(f"<{fmt}", value)
    if vr == "UI" or vr in _TEXT:
        text = "\\".join(str(v) for v in value) if _is_multi(value) else value
        if isinstance(text, bytes) or not isinstance(text, str):
            raise Unsupported(f"{vr} value of type {type(text).__name__}")
        data = _ascii(text)
        return data + (b"\0" if vr == "UI" else b" ") if len(data) % 2 else data
    if vr in ("DS", "IS"):
        text = "\\".join(_number_string(v) for v in value) if _is_multi(value) else _number_string(value)
        data = _ascii(text)
        return data + b" " if len(data) % 2 else data
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        if not isinstance(value, bytes | bytearray):
            raise Unsupported(f"{vr} value of type {type(value).__name__}")
        return bytes(value) + b"\0" if len(value) % 2 and vr != "UN" else bytes(value)
    if vr in _DELEGATED:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import writers

        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, False
        fn, _param = writers[vr]  # type: ignore[index]  # pydicom types writers' keys as its VR enum; a str VR is one
        if vr == "PN":
            fn(buf, elem, encodings=encodings)  # type: ignore[operator]  # pydicom's writer table is typed loosely
            data = buf.getvalue()
            _ascii(data.decode("latin-1"))  # another character set could encode it otherwise
        else:
            fn(buf, elem)  # type: ignore[operator]  # pydicom's writer table is typed loosely
            data = buf.getvalue()
        return data
    raise Unsupported(f"VR {vr}")


def encode_dataset(ds: Any, encodings: list[str] | None = None, parents: tuple[Any, ...] = ()) -> bytes:
    """``ds`` (one dataset or sequence item, inside ``parents``, innermost first) as Explicit VR
    Little Endian bytes."""
    from pydicom.charset import convert_encodings
    from pydicom.filewriter import correct_ambiguous_vr_element

    charset = ds.get(0x00080005)
    encodings = (
        convert_encodings(charset.value)
        if charset is not None and charset.value
        else (encodings or ["iso8859"])
    )
    out: list[bytes] = []
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths are never written
        if tag.group in (0, 2):
            raise Unsupported("command or file meta elements in the dataset")
        if tag in _LUT_DESCRIPTORS:
            raise Unsupported("LUT descriptor")
        elem = ds[tag]  # a raw element read from a file is converted (its VR looked up)
        if elem.VR and len(elem.VR) != 2:  # 'OB or OW', 'US or SS'...: resolved in place, as dcmwrite does
            elem = correct_ambiguous_vr_element(elem, ds, True, [ds, *parents])
        vr = elem.VR
        if not vr or len(vr) != 2 or elem.is_buffered:
            raise Unsupported(f"element {tag} with VR {vr!r}")
        # as dcmwrite: native (uncompressed) pixel data has a defined length
        undefined = bool(elem.is_undefined_length) and tag != 0x7FE00010
        if undefined and vr != "SQ":
            raise Unsupported(f"{tag}: undefined length outside a sequence")
        if vr == "SQ":
            data = b"".join(_item(item, encodings, (ds, *parents)) for item in (elem.value or ()))
        elif elem.is_empty:
            data = b""
        else:
            data = _value(vr, elem, encodings)
        header = struct.pack("<HH", tag.group, tag.element) + vr.encode("ascii")
        if vr in _LONG_VR:
            out.append(header + struct.pack("<HI", 0, 0xFFFFFFFF if undefined else len(data)))
        else:
            if len(data) > 0xFFFF or undefined:
                raise Unsupported(f"{tag}: value too long for VR {vr}")
            out.append(header + struct.pack("<H", len(data)))
        out.append(data)
        if undefined:
            out.append(_SEQ_END)
    return b"".join(out)


def _item(item: Any, encodings: list[str], parents: tuple[Any, ...]) -> bytes:
    body = encode_dataset(item, encodings, parents)
    if getattr(item, "is_undefined_length_sequence_item", False):
        return _ITEM + struct.pack("<I", 0xFFFFFFFF) + body + _ITEM_END
    return _ITEM + struct.pack("<I", len(body)) + body


def encode_file(ds: Any) -> bytes:
    """The whole file (preamble, file meta, dataset) exactly as
    ``ds.save_as(..., enforce_file_format=True)`` writes it; raises :class:`Unsupported`."""
    from pydicom.dataset import FileMetaDataset, validate_file_meta
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian

    file_meta = deepcopy(ds.file_meta) if hasattr(ds, "file_meta") else FileMetaDataset()
    if file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
        raise Unsupported(f"transfer syntax {file_meta.get('TransferSyntaxUID')}")
    preamble = getattr(ds, "preamble", None)
    if preamble and len(preamble) != 128:
        raise Unsupported("preamble")
    body = encode_dataset(ds)
    ds_class, ds_instance = ds.get("SOPClassUID"), ds.get("SOPInstanceUID")
    if file_meta.get("MediaStorageSOPClassUID") is None or (
        ds_class and ds_class != file_meta.MediaStorageSOPClassUID
    ):
        file_meta.MediaStorageSOPClassUID = ds_class
    if file_meta.get("MediaStorageSOPInstanceUID") is None or (
        ds_instance and ds_instance != file_meta.MediaStorageSOPInstanceUID
    ):
        file_meta.MediaStorageSOPInstanceUID = ds_instance
    validate_file_meta(file_meta, enforce_standard=True)
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = False, True
    fp.write(preamble or b"\x00" * 128)
    fp.write(b"DICM")
    write_file_meta_info(fp, file_meta, enforce_standard=True)
    fp.write(body)
    return bytes(fp.getvalue())


def save(ds: Any, path: str | Path) -> str:
    """Write ``ds`` to ``path``: this encoder when it can, pydicom otherwise. Returns which."""
    try:
        data = encode_file(ds)
    except Unsupported:
        ds.save_as(str(path), enforce_file_format=True)
        return "pydicom"
    Path(path).write_bytes(data)
    return "fast"
