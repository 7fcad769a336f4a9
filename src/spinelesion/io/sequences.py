"""Which sequence (t1, t2, stir, t1c) a series is, from its metadata, with a reason.

Descriptions are vendor- and site-specific ("T2 TSE SAG", "Sag T2 FRFSE", "STIR", "TIRM",
"T1 FS +C", "POST GAD", "SAG T1 MPRAGE KM"...), so the description is read first, and the
acquisition tags decide when it says nothing:

* inversion recovery (ScanningSequence ``IR``) with a short TI is STIR: the TI that nulls
  fat is ~150 ms at 1.5 T and ~200-230 ms at 3 T (accepted: 80-300 ms); a TI of
  600-1200 ms with a short TE is an IR T1; a longer TI is FLAIR (not used here);
* spin-echo timing: TE >= 60 ms and TR >= 1500 ms is T2; TE <= 30 ms and TR <= 1000 ms
  is T1; a long TR with a short TE is proton density (not used here);
* a contrast agent (ContrastBolusAgent, or "post", "gad", "+C", "C+", "KM" in the
  description, unless it also says "pre", "w/o", "nativ") turns T1 into t1c.

A fat-suppressed T2 (FS, FatSat, SPAIR, SPIR, Dixon water) plays the role of STIR (a
fluid-sensitive fat-suppressed image, see ``docs/radiology.md``) and is recognised as
``stir`` with a lower confidence than a true STIR. Localisers, diffusion, derived maps,
subtractions, reformats, FLAIR, T2* and Dixon fat / opposed-phase images are skipped.
A user override always wins (:func:`apply_override`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SKIP = re.compile(
    r"locali[sz]er|scout|survey|\bloc\b|3.?plane|pilot|\bdwi\b|diffusion|\badc\b|\btrace\b|\bmip\b|"
    r"\bmpr\b|calibrat|\basset\b|refscan|\bsense\b.?ref|\bt2\*|t2star|\bswi\b|flair|myelo|\bphase\b|"
    r"\bmap\b|perfusion|\bdti\b|\bsub(traction)?\b|\bmedic\b|\bmerge\b|\bspectro|\bbolus|\bmra\b|"
    r"angio|\btof\b|screen.?(shot|save)|\bkey.?image",
    re.I,
)
CONTRAST = re.compile(
    r"\+ ?c\b|\bc ?\+|\+ ?gd|\bpost|\bgad|\bgd\b|contrast|\bkm\b|\+ ?km|\bmit km|enhanc|\bce\b|"
    r"\bt1c\b|\bt1 ?ce\b|\bt1\+|t1.?post",
    re.I,
)
NO_CONTRAST = re.compile(
    r"\bpre\b|\bpre[-_ ]?(gad|contrast|c)\b|\bw/?o\b|without|\bnativ|\bnon.?contrast|\bohne\b", re.I
)
STIR = re.compile(r"stir|tirm|short.?tau|\bt2.?ir\b", re.I)
FAT_SUPPRESSED = re.compile(
    r"\bfs\b|fat.?sat|\bfatsat|spair|\bspir\b|\bchess\b|fat.?supp|\bdixon.*\bw\b|water", re.I
)
DIXON_SKIP = re.compile(
    r"\bdixon.*\b(f|fat|opp?)\b|\bfat\b(?!.?(sat|supp))|opp(osed)?.?phase|out.?of.?phase", re.I
)
# "T1"/"T2" not inside a word or a level name ("T12-L5"), and not T2* / T2s / T1rho.
T2 = re.compile(r"(?<![a-z0-9])t2(?![0-9*s])|frfse|\bhaste\b|ssfse|\bspace\b|\bcube\b|\bdrive\b", re.I)
T1 = re.compile(
    r"(?<![a-z0-9])t1(?![0-9]|\s*rho)|mprage|\bvibe\b|\blava\b|\bthrive\b|\bspgr\b|\bflash\b|"
    r"\bbravo\b",
    re.I,
)
SKIP_IMAGE_TYPES = {
    "LOCALIZER",
    "MPR",
    "MIP",
    "MNIP",
    "SUB",
    "SUBTRACTION",
    "PROJECTION IMAGE",
    "ADC",
    "TRACEW",
    "TRACE",
    "FA",
    "CPR",
    "CURVED",
    "REFORMATTED",
    "DIFFUSION",
    "MOSAIC",
    "FAT",
    "OPP_PHASE",
    "OUT_PHASE",
    "OPPOSED_PHASE",
    "F",
}
NO_AGENT = {"", "NONE", "NO", "N/A", "NA", "-", "0", "NIL"}
FAT_SAT_OPTIONS = {"FS", "SFS", "FAT_SAT", "FATSAT", "SPAIR", "SPIR", "FSS"}


@dataclass(frozen=True)
class SequenceGuess:
    sequence: str | None  # None: skip this series
    reason: str
    confidence: float  # 0..1


def _num(meta: Mapping[str, Any], key: str) -> float | None:
    value = meta.get(key)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def _description(meta: Mapping[str, Any]) -> str:
    """Series description, with the protocol name when the description is empty."""
    desc = _text(meta.get("SeriesDescription")).strip()
    return desc or _text(meta.get("ProtocolName")).strip()


def _words(desc: str) -> str:
    """The description with underscores as spaces: ``T1W_TSE_SAG_FS_GD`` has word boundaries
    around ``GD`` only once the underscores (word characters to ``re``) are gone."""
    return desc.replace("_", " ")


def has_contrast(meta: Mapping[str, Any]) -> bool:
    """Whether the series was acquired after a contrast agent."""
    words = _words(_description(meta))
    if NO_CONTRAST.search(words):
        return False
    agent = _text(meta.get("ContrastBolusAgent")).strip().upper()
    return agent not in NO_AGENT or bool(CONTRAST.search(words))


def _image_type(meta: Mapping[str, Any]) -> set[str]:
    value = meta.get("ImageType")
    tokens = value if isinstance(value, list | tuple) else _text(value).replace("\\", ",").split(",")
    return {str(t).strip().upper() for t in tokens if str(t).strip()}


def _t1(contrast: bool, reason: str, confidence: float) -> SequenceGuess:
    return SequenceGuess(
        "t1c" if contrast else "t1", reason + (" after contrast" if contrast else ""), confidence
    )


def guess_sequence(meta: Mapping[str, Any]) -> SequenceGuess:
    """Classify one series from its attributes (DICOM keyword -> value, as in ``Volume.meta``)."""
    desc = _description(meta)
    words = _words(desc)  # what the patterns read; messages quote the description as written
    scanning = _text(meta.get("ScanningSequence")).upper()
    tr, te, ti = _num(meta, "RepetitionTime"), _num(meta, "EchoTime"), _num(meta, "InversionTime")
    image_type = _image_type(meta)
    timing = f"TR={tr:g} TE={te:g}" if tr is not None and te is not None else "no TR/TE"
    if SKIP.search(words):
        return SequenceGuess(None, f"description '{desc}' is not a structural sequence", 0.9)
    skip_types = sorted(image_type & SKIP_IMAGE_TYPES)
    if skip_types:
        return SequenceGuess(None, f"image type {'/'.join(skip_types)} is not a structural image", 0.8)
    if DIXON_SKIP.search(words):
        return SequenceGuess(None, f"description '{desc}' is a Dixon fat or opposed-phase image", 0.8)
    contrast = has_contrast(meta)
    inversion = "IR" in scanning.replace("\\", " ").split()
    options = set(_text(meta.get("ScanOptions")).upper().replace("\\", " ").split())
    if STIR.search(words):
        return SequenceGuess("stir", f"STIR in description '{desc}'", 0.95)
    if inversion and ti is not None and 80 <= ti <= 300:
        return SequenceGuess(
            "stir", f"inversion recovery with a fat-nulling TI of {ti:g} ms ('{desc}')", 0.85
        )
    if T1.search(words):
        return _t1(contrast, f"T1 in description '{desc}'", 0.9)
    if T2.search(words):
        if FAT_SUPPRESSED.search(words) or {"WATER", "W"} & image_type or FAT_SAT_OPTIONS & options:
            return SequenceGuess("stir", f"fat-suppressed T2 '{desc}' stands in for STIR", 0.75)
        return SequenceGuess("t2", f"T2 in description '{desc}'", 0.9)
    if contrast and CONTRAST.search(words) and not inversion:
        # "POST GAD", "SAG +C": post-contrast structural series are T1-weighted in practice.
        if te is None or te <= 30:
            return _t1(True, f"post-contrast description '{desc}' ({timing})", 0.75)
    # No keyword: decide from the acquisition.
    if inversion and ti is not None:
        if 600 <= ti <= 1200 and (te is None or te <= 30):
            return _t1(contrast, f"inversion-recovery T1 (TI {ti:g} ms, {timing})", 0.6)
        return SequenceGuess(
            None, f"inversion recovery with TI {ti:g} ms is neither STIR nor T1 ('{desc}')", 0.6
        )
    if te is not None and tr is not None:
        if te >= 60 and tr >= 1500:
            return SequenceGuess("t2", f"long TE and TR ({timing}) of '{desc}'", 0.6)
        if te <= 30 and tr <= 1000:
            return _t1(contrast, f"short TE and TR ({timing}) of '{desc}'", 0.6)
        if te <= 40 and tr >= 1500:
            return SequenceGuess(None, f"proton density timing ({timing}) of '{desc}'", 0.5)
    return SequenceGuess(None, f"cannot tell the sequence of '{desc}' ({timing}, TI={ti})", 0.0)


def apply_override(
    overrides: Mapping[Any, str], series_uid: str, series_number: int | None, description: str
) -> str | None:
    """The user's choice for a series, or None.

    Keys are tried in this order: a SeriesInstanceUID, a SeriesNumber (int or string), then
    a regular expression searched in the description (case-insensitive).
    """
    for key, seq in overrides.items():
        text = str(key)
        if text == series_uid or (series_number is not None and text == str(series_number)):
            return seq
    for key, seq in overrides.items():
        try:
            if re.search(str(key), description or "", re.I):
                return seq
        except re.error:
            continue
    return None
