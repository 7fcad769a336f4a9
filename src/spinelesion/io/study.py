"""A study: one volume per sequence with its own geometry, and how to load one.

Three ways in, matching the data contract:

* a manifest row's paths: one DICOM series folder or NIfTI file per sequence
  (:func:`load_study_from_paths`);
* a DICOM export folder with any number of series: series are discovered, recognised from
  their metadata (or a user override) and one is picked per sequence
  (:func:`load_study_folder`, :func:`assign_series`);
* a folder of NIfTI files named by sequence (``t2.nii.gz``, ``T1c.nii``, BIDS
  ``sub-01_ce-gadolinium_T1w.nii.gz``...).

When two series claim one sequence the choice follows one rule, and a warning names both:
a user override first, then a sagittal series (the plane the model reads), then the
higher recognition confidence, then more slices, then the later series number (a repeated
acquisition is usually the better one).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinelesion.io.dicom.discover import SeriesInfo, discover_series, non_image_reason
from spinelesion.io.dicom.errors import DicomError
from spinelesion.io.dicom.meta import acquisition_tags
from spinelesion.io.dicom.read import read_series
from spinelesion.io.dicom.values import fast_get
from spinelesion.io.limits import ResourceLimitError, check_study_bytes, special_file_reason
from spinelesion.io.nifti import NIFTI_SUFFIXES, is_nifti, load_header, read_nifti
from spinelesion.io.reader import read_volume
from spinelesion.io.sequences import apply_override, guess_sequence
from spinelesion.io.volume import Volume
from spinelesion.labels import SEQUENCES

log = logging.getLogger(__name__)

NIFTI_NAME = re.compile(r"(?:^|[_\-. ])(t1c|t1ce|t1gd|t1_?post|t1|t2|stir)(?:[_\-. ]|$)", re.I)
NOT_AN_IMAGE_NAME = re.compile(r"seg|mask|label|\broi\b|lesion|saliency|probab", re.I)


@dataclass
class Study:
    """One imaging study: a :class:`Volume` per sequence (each on its own grid) and warnings."""

    study_id: str
    volumes: dict[str, Volume] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def sequences(self) -> list[str]:
        """Sequences present, in channel order."""
        return [s for s in SEQUENCES if s in self.volumes]


class StudyError(ValueError):
    """A study that cannot be used at all, naming the study and the reason."""

    def __init__(self, study_id: str, reason: str):
        self.study_id, self.reason = study_id, reason
        super().__init__(f"study '{study_id}': {reason}")


def load_study_from_paths(study_id: str, sequences: Mapping[str, str | os.PathLike[str] | None]) -> Study:
    """Read the given sequence paths (DICOM series folders or NIfTI files); empty ones are skipped."""
    study = Study(study_id)
    for seq, path in sequences.items():
        if seq not in SEQUENCES:
            raise StudyError(study_id, f"unknown sequence name '{seq}' (allowed: {', '.join(SEQUENCES)})")
        if path is None or str(path) == "":
            continue
        try:
            study.volumes[seq] = read_volume(path)
        except (DicomError, ValueError, OSError) as exc:
            raise StudyError(study_id, f"{seq}: {exc}") from exc
    if not study.volumes:
        raise StudyError(study_id, "no sequence given")
    return study


def nifti_sequence_name(path: Path) -> str | None:
    """Sequence named by a NIfTI file name, e.g. ``sub-01_T2w.nii.gz`` -> ``t2``, ``T1c.nii`` -> ``t1c``,
    ``sub-01_ce-gadolinium_T1w.nii.gz`` -> ``t1c``; None for masks and segmentations."""
    stem = path.name
    for suffix in NIFTI_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    if NOT_AN_IMAGE_NAME.search(stem):
        return None
    stem = re.sub(r"(?i)(t[12])w\b", r"\1", stem)
    m = NIFTI_NAME.search(stem)
    if not m:
        return None
    token = m.group(1).lower()
    if token == "t1" and re.search(r"(?i)(^|_)ce-(?!none)", stem):  # BIDS contrast-enhanced entity
        return "t1c"
    return "t1c" if token.startswith("t1") and token != "t1" else token


def sequence_files(folder: Path) -> dict[str, Path]:
    """The files of ``folder`` named exactly ``<sequence>.nii.gz`` (t1, t2, stir, t1c), in
    SEQUENCES order: the layout of a prepared study folder (``t2star.nii.gz``, masks and
    segmentations beside them are not sequences the model reads)."""
    return {s: folder / f"{s}.nii.gz" for s in SEQUENCES if (folder / f"{s}.nii.gz").is_file()}


def load_nifti_folder(folder: Path, study_id: str | None = None) -> Study:
    """A study from NIfTI files named by sequence in ``folder`` (other files are named in warnings)."""
    study = Study(study_id or folder.name)
    shapes = []
    for path in sorted(p for p in folder.iterdir() if is_nifti(p)):
        reason = special_file_reason(path)
        if reason:
            study.warnings.append(f"{path.name}: {reason}")
        elif nifti_sequence_name(path) is not None:
            shapes.append(load_header(path).shape[:3])  # headers only: memory is checked before reading
    try:
        check_study_bytes(study.study_id, shapes)
    except ResourceLimitError as exc:
        raise StudyError(study.study_id, str(exc)) from exc
    for path in sorted(p for p in folder.iterdir() if is_nifti(p) and not special_file_reason(p)):
        seq = nifti_sequence_name(path)
        if seq is None:
            study.warnings.append(
                f"{path.name}: file name does not name an image sequence (t1, t2, stir, t1c); skipped"
            )
            continue
        if seq in study.volumes:
            study.warnings.append(
                f"{path.name}: a second {seq} file; kept {study.volumes[seq].meta['source']}"
            )
            continue
        study.volumes[seq] = read_nifti(path)
    if not study.volumes:
        raise StudyError(study.study_id, f"{folder}: no NIfTI file named by sequence")
    return study


def _normal(info: SeriesInfo) -> np.ndarray | None:
    """Slice normal of a series from its first header (classic or enhanced), or None."""
    h = info.header
    if h is None:
        return None
    o = fast_get(h, "ImageOrientationPatient")
    if o is None:
        for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            try:
                o = h[group][0].PlaneOrientationSequence[0].ImageOrientationPatient
                break
            except (KeyError, AttributeError, IndexError):
                continue
    try:
        v = np.asarray([float(x) for x in o], dtype=np.float64)
        return np.cross(v[:3], v[3:])
    except (TypeError, ValueError):
        return None


def is_sagittal(info: SeriesInfo) -> bool:
    n = _normal(info)
    return bool(n is not None and abs(n[0]) >= 0.7)  # within ~45 deg of left-right


def _rank(cand: tuple[float, SeriesInfo, str]) -> tuple[float, bool, float, int, int]:
    confidence, info, _ = cand
    forced = confidence > 1.0
    return (forced, is_sagittal(info), confidence, len(info.files), info.number or 0)


CHOICE_RULE = "override, then sagittal, then confidence, then most slices, then latest series number"


def assign_series(
    series: list[SeriesInfo], overrides: Mapping[str, str] | None = None
) -> tuple[dict[str, SeriesInfo], list[str]]:
    """Pick one series per sequence; returns the choice and warnings naming what was skipped.

    ``overrides`` maps a SeriesInstanceUID, a SeriesNumber or a description regex to a
    sequence name (``"ignore"`` or ``"skip"`` leaves that series out).
    """
    overrides = dict(overrides or {})
    candidates: dict[str, list[tuple[float, SeriesInfo, str]]] = {}
    warnings: list[str] = []
    for info in series:
        reason = info.unusable_reason()
        if reason:
            warnings.append(f"{info.label}: skipped, {reason}")
            continue
        forced = apply_override(overrides, info.series_uid, info.number, info.description)
        if forced in ("ignore", "skip"):
            warnings.append(f"{info.label}: skipped by the user")
            continue
        if forced:
            if forced not in SEQUENCES:
                raise ValueError(
                    f"override for {info.label} names unknown sequence '{forced}' "
                    f"(allowed: {', '.join(SEQUENCES)}, or 'ignore')"
                )
            candidates.setdefault(forced, []).append((2.0, info, "user override"))
            continue
        assert info.header is not None  # image series only: each has a readable header
        guess = guess_sequence(acquisition_tags(info.header))
        if guess.sequence is None:
            warnings.append(f"{info.label}: skipped, {guess.reason}")
            continue
        candidates.setdefault(guess.sequence, []).append((guess.confidence, info, guess.reason))
    chosen: dict[str, SeriesInfo] = {}
    for seq in SEQUENCES:
        cands = sorted(candidates.get(seq, []), key=_rank, reverse=True)
        if not cands:
            continue
        chosen[seq] = cands[0][1]
        log.debug("%s: %s (%s)", seq, cands[0][1].label, cands[0][2])
        for _, other, why in cands[1:]:
            msg = (
                f"{other.label} also looks like {seq} ({why}); used {cands[0][1].label} (rule: {CHOICE_RULE})"
            )
            warnings.append(msg)
            log.warning(msg)
    return chosen, warnings


def group_dicom_studies(
    folder: str | os.PathLike[str], exclude: Iterable[str | os.PathLike[str]] = (), progress: bool = False
) -> tuple[dict[str, list[SeriesInfo]], list[tuple[Path, str]]]:
    """Series under ``folder`` (minus ``exclude``) grouped by StudyInstanceUID, and the files
    skipped with why. Series without a StudyInstanceUID are grouped by patient, study date and
    StudyID, so that two patients' series never make one study."""
    series, skipped = discover_series(folder, exclude=exclude, progress=progress)
    studies: dict[str, list[SeriesInfo]] = {}
    for info in series:
        key = info.study_uid
        if not key:
            h = info.header
            parts = [
                str(h.get(k, "") or "") if h is not None else ""
                for k in ("PatientID", "StudyDate", "StudyID")
            ]
            key = "no-study-uid:" + "|".join(parts)
        studies.setdefault(key, []).append(info)
    return studies, skipped


def readable_study_id(key: str, series: list[SeriesInfo]) -> str:
    """A study's name in outputs: ``<StudyDate>_<6 hex of its UID>`` (``study_<hex>`` without a
    date), short enough for a PNG title and safe as a folder name; the hex keeps two studies of
    one day apart and is the same on every run. No patient name or ID: they never become file
    names (docs/promises.md); the StudyInstanceUID stays in the outputs' metadata."""
    import hashlib
    import re

    h = next((s.header for s in series if s.header is not None), None)
    date = re.sub(r"[^0-9]", "", str(h.get("StudyDate", "") or "") if h is not None else "")[:8]
    tag = hashlib.sha1(key.encode("utf-8")).hexdigest()[:6]
    return f"{date or 'study'}_{tag}"


def _declared_shape(info: SeriesInfo) -> tuple[int, int, int]:
    h = info.header
    assert h is not None  # image series only: each has a readable header
    rows = int(fast_get(h, "Rows", 0) or 0)
    cols = int(fast_get(h, "Columns", 0) or 0)
    frames = sum(int(fast_get(d, "NumberOfFrames", 1) or 1) for d in info.headers)
    return cols, rows, frames


def load_dicom_study(
    study_id: str, series: list[SeriesInfo], overrides: Mapping[str, str] | None = None
) -> Study:
    """Read the series chosen for each sequence of one study; unreadable ones become warnings."""
    chosen, warnings = assign_series(series, overrides)
    if not chosen:
        raise StudyError(
            study_id,
            "no series recognised as t1, t2, stir or t1c: "
            + "; ".join(warnings)
            + " (name them with a sequence override)",
        )
    try:  # from headers, before any pixel is read
        check_study_bytes(study_id, [_declared_shape(chosen[s]) for s in chosen])
    except ResourceLimitError as exc:
        raise StudyError(study_id, str(exc)) from exc
    study = Study(study_id, warnings=warnings)
    for seq in SEQUENCES:
        if seq not in chosen:
            continue
        try:
            study.volumes[seq] = read_series(chosen[seq])
        except DicomError as exc:
            lost = chosen[seq].unreadable
            beside = (
                f" ({len(lost)} file(s) beside it could not be read, e.g. {lost[0][0].name}: {lost[0][1]})"
                if lost
                else ""
            )
            study.warnings.append(f"{seq}: {exc}{beside}; sequence left out")
    if not study.volumes:
        raise StudyError(study_id, "no recognised series could be read: " + "; ".join(study.warnings))
    return study


def load_study_folder(
    folder: str | os.PathLike[str], overrides: Mapping[str, str] | None = None, study_id: str | None = None
) -> Study:
    """One study from a folder of DICOM series (any layout) or of NIfTI files named by sequence."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyError(study_id or folder.name, f"{folder}: not a folder")
    if any(is_nifti(p) for p in folder.iterdir()):
        return load_nifti_folder(folder, study_id)
    studies, _skipped = group_dicom_studies(folder)
    # A report or presentation state filed under another study does not make a second study.
    imaging = {uid: series for uid, series in studies.items() if any(s.is_image for s in series)}
    dropped = [
        f"{s.label}: skipped, {non_image_reason(s.header)}"
        for uid, series in studies.items()
        if uid not in imaging
        for s in series
        if s.header is not None
    ]
    studies = imaging or studies
    if not studies:
        raise StudyError(study_id or folder.name, f"{folder}: no DICOM or NIfTI image found")
    if len(studies) > 1:
        raise StudyError(
            study_id or folder.name,
            f"{folder} holds {len(studies)} studies; give one study folder "
            "or predict on the parent folder (one result per study)",
        )
    uid, series = next(iter(studies.items()))
    study = load_dicom_study(study_id or uid, series, overrides)
    study.warnings.extend(dropped)
    return study
