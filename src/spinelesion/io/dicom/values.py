"""Fast access to the few plain attributes read from every slice.

``Dataset.get`` converts a raw element through pydicom's hooks, validation and value
classes: about 10 us per attribute, several times the cost of parsing it. A series read
touches ~15 attributes of every file, so the geometry and pixel-format tags are decoded
here straight from the raw bytes (ASCII numbers, unsigned shorts, UIDs). Anything
unusual (already converted, a sequence, an unexpected VR) goes through ``Dataset.get``.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

_TAGS: dict[str, Any] = {}
_VRS: dict[int, str] = {}
_TEXT_VRS = {"UI", "CS", "LO", "SH"}


def _tag(keyword: str) -> Any:
    tag = _TAGS.get(keyword)
    if tag is None:
        number = tag_for_keyword(keyword)
        if number is None:
            raise KeyError(keyword)
        tag = _TAGS[keyword] = Tag(number)
    return tag


def _vr(raw: RawDataElement) -> str:
    if raw.VR is not None:
        return str(raw.VR)
    vr = _VRS.get(raw.tag)
    if vr is None:
        vr = _VRS[raw.tag] = dictionary_VR(raw.tag)
    return vr


def fast_get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword, default)`` for DS/IS (float / int, or a list when multi-valued),
    US (int) and short text attributes, decoded without pydicom's conversion machinery."""
    tag = _tag(keyword)
    try:
        elem = ds.get_item(tag)
    except KeyError:
        return default
    if elem is None:
        return default
    if not isinstance(elem, RawDataElement):
        value = elem.value
        return default if value is None or value == "" else value
    raw = elem.value
    if raw is None or len(raw) == 0:
        return default
    vr = _vr(elem)
    try:
        if vr in ("DS", "IS"):
            parts = raw.decode("ascii").strip(" \x00").split("\\")
            nums: list[Any] = [float(p) if vr == "DS" else int(float(p)) for p in parts]
            return nums[0] if len(nums) == 1 else nums
        if vr == "US" and len(raw) == 2:
            return int.from_bytes(raw, "little" if elem.is_little_endian else "big")
        if vr in _TEXT_VRS:
            return raw.decode("ascii").strip(" \x00")
    except (UnicodeDecodeError, ValueError):
        pass  # let pydicom produce its own value (or its own error)
    return ds.get(keyword, default)


def has(ds: Dataset, keyword: str) -> bool:
    """``keyword in ds`` without the keyword-to-tag conversion on every call."""
    return ds.get_item(_tag(keyword)) is not None


def pixel_bytes(ds: Dataset) -> bytes | bytearray | None:
    """The PixelData value as bytes (native data), without conversion, or None."""
    elem = ds.get_item(_tag("PixelData"))
    if elem is None:
        return None
    value = elem.value
    return value if isinstance(value, bytes | bytearray) else None
