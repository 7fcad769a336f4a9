"""Which sequence (t1, t2, stir, t1c) a DICOM series is, from its metadata, with a reason.

Descriptions are vendor-specific ("T2 TSE SAG", "Sag T2 FRFSE", "STIR", "TIRM", "T1 FS +C",
"POST GAD"...), so the description is read first and the acquisition tags (scanning
sequence, TR, TE, TI, contrast agent) confirm or decide. Anything that is clearly not a
structural sagittal/axial sequence (localiser, diffusion, derived maps) is skipped.
A user override always wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SKIP = re.compile(r"locali[sz]er|scout|survey|\bloc\b|3.?plane|\bdwi\b|diffusion|\badc\b|\btrace\b|\bmip\b|"
                  r"\bmpr\b|calibrat|\basset\b|refscan|\bsense\b ref|\bt2\*|t2star|\bswi\b|flair|myelo|\bphase\b|"
                  r"\bmap\b|perfusion|\bdti\b", re.I)
CONTRAST = re.compile(r"\+ ?c\b|\bc ?\+|post|\bgad|\bgd\b|contrast|\bkm\b|mit km|\+gd|enhanc", re.I)
STIR = re.compile(r"stir|tirm|short.?tau", re.I)
T2 = re.compile(r"t2(?![*s])|\bt2w|frfse|haste", re.I)
T1 = re.compile(r"t1(?!\s*rho)|\bt1w|mprage|vibe|\blava\b|\bthrive\b", re.I)


@dataclass(frozen=True)
class SequenceGuess:
    sequence: str | None  # None: skip this series
    reason: str
    confidence: float     # 0..1


def _num(meta: Mapping[str, Any], key: str) -> float | None:
    try:
        v = meta.get(key)
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def has_contrast(meta: Mapping[str, Any]) -> bool:
    agent = str(meta.get("ContrastBolusAgent", "") or "").strip()
    return bool(agent) or bool(CONTRAST.search(str(meta.get("SeriesDescription", "") or "")))


def guess_sequence(meta: Mapping[str, Any]) -> SequenceGuess:
    """Classify one series from a mapping of its DICOM attributes (keyword -> value)."""
    desc = str(meta.get("SeriesDescription", "") or "")
    scanning = str(meta.get("ScanningSequence", "") or "").upper()
    tr, te, ti = _num(meta, "RepetitionTime"), _num(meta, "EchoTime"), _num(meta, "InversionTime")
    image_type = str(meta.get("ImageType", "") or "").upper()
    if SKIP.search(desc):
        return SequenceGuess(None, f"description '{desc}' is not a structural sequence", 0.9)
    if "DERIVED" in image_type and "ORIGINAL" not in image_type:
        return SequenceGuess(None, f"derived image ({image_type})", 0.6)
    contrast = has_contrast(meta)
    why_c = " after contrast" if contrast else ""
    if STIR.search(desc) or ("IR" in scanning and ti is not None and ti < 300):
        return SequenceGuess("stir", f"STIR: description '{desc}', TI={ti}", 0.9 if STIR.search(desc) else 0.7)
    if T1.search(desc):
        return SequenceGuess("t1c" if contrast else "t1", f"T1 in description '{desc}'{why_c}", 0.9)
    if T2.search(desc):
        return SequenceGuess("t2", f"T2 in description '{desc}'", 0.9)
    # No keyword: decide from timing (spin-echo conventions, ms).
    if te is not None and tr is not None:
        if te >= 60 and tr >= 1500:
            return SequenceGuess("t2", f"long TE {te:g} and TR {tr:g} ms", 0.6)
        if te <= 30 and tr <= 1000:
            return SequenceGuess("t1c" if contrast else "t1", f"short TE {te:g} and TR {tr:g} ms{why_c}", 0.6)
    return SequenceGuess(None, f"cannot tell the sequence of '{desc}' (TR={tr}, TE={te}, TI={ti})", 0.0)


def apply_override(overrides: Mapping[str, str], series_uid: str, series_number: int | None,
                   description: str) -> str | None:
    """The user's choice for a series: keys are a SeriesInstanceUID, a SeriesNumber, or a
    regular expression matched against the description (case-insensitive)."""
    for key, seq in overrides.items():
        key = str(key)
        if key == series_uid or (series_number is not None and key == str(series_number)):
            return seq
    for key, seq in overrides.items():
        try:
            if re.search(str(key), description, re.I):
                return seq
        except re.error:
            continue
    return None
