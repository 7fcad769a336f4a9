"""The series attributes a :class:`Volume` carries in ``meta`` and sequence recognition reads.

Plain Python values only (str, int, float, lists of them), so ``meta`` goes into JSON as is.
Enhanced MR objects keep TR/TE/TI in functional groups; they are lifted to the classic
keywords here so everything downstream reads one vocabulary. Patient identifiers are left
out on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

ACQUISITION_KEYS = (
    "SeriesDescription",
    "ProtocolName",
    "SequenceName",
    "SeriesNumber",
    "Modality",
    "ImageType",
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "MRAcquisitionType",
    "EchoTime",
    "RepetitionTime",
    "InversionTime",
    "FlipAngle",
    "EchoTrainLength",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "MagneticFieldStrength",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "SliceThickness",
    "SpacingBetweenSlices",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "SOPClassUID",
    "PulseSequenceName",
    "EchoPulseSequence",
)


def plain(value: Any) -> Any:
    """A DICOM value as str / int / float / list, or None for empty and person names."""
    if value is None or isinstance(value, PersonName):
        return None
    if isinstance(value, MultiValue | list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes | Dataset):
        return None
    text = str(value).strip()
    return text or None


def _first_item(ds: Dataset, seq: str) -> Dataset | None:
    if seq in ds and ds[seq].value:
        return ds[seq].value[0]
    return None


def _functional(ds: Dataset, seq: str, tag: str) -> Any:
    """An attribute from the shared, else the first per-frame, functional group."""
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        top = _first_item(ds, group)
        item = _first_item(top, seq) if top is not None else None
        if item is not None and tag in item:
            return item[tag].value
    return None


def acquisition_tags(ds: Dataset) -> dict[str, Any]:
    """Sequence-related attributes of a header (classic or enhanced MR), non-empty ones only."""
    out: dict[str, Any] = {}
    for key in ACQUISITION_KEYS:
        value = plain(ds.get(key))
        if value not in (None, [], ""):
            out[key] = value
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        lifted = {
            "RepetitionTime": _functional(ds, "MRTimingAndRelatedParametersSequence", "RepetitionTime"),
            "FlipAngle": _functional(ds, "MRTimingAndRelatedParametersSequence", "FlipAngle"),
            "EchoTime": _functional(ds, "MREchoSequence", "EffectiveEchoTime"),
            "InversionTime": _functional(ds, "MRModifierSequence", "InversionTimes"),
            "SliceThickness": _functional(ds, "PixelMeasuresSequence", "SliceThickness"),
        }
        for key, value in lifted.items():
            value = plain(value)
            if isinstance(value, list):
                value = value[0] if value else None
            if value is not None and key not in out:
                out[key] = value
        if str(ds.get("InversionRecovery", "")).upper() == "YES" and "ScanningSequence" not in out:
            out["ScanningSequence"] = "IR"
    return out


def series_meta(ds: Dataset, files: Sequence[Path], where: Path, **extra: Any) -> dict[str, Any]:
    """``Volume.meta`` of a DICOM series: source, format, files, and :func:`acquisition_tags`."""
    meta: dict[str, Any] = {"source": str(where), "format": "dicom", "files": [str(f) for f in files]}
    meta.update(acquisition_tags(ds))
    meta.update(extra)
    return meta
