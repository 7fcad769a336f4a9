"""A study: one volume per sequence with its own geometry, and how to load one.

Three ways in, matching the data contract:

* a manifest row's paths: one DICOM series folder or NIfTI file per sequence;
* a DICOM export folder with any number of series: series are discovered, recognised from
  their metadata (or a user override) and one is picked per sequence;
* a folder of NIfTI files named by sequence (``t2.nii.gz``, ``T1c.nii``...).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinelesion.io.dicom import DicomError, SeriesInfo, discover_series, non_image_reason, read_series
from spinelesion.io.nifti import NIFTI_SUFFIXES, is_nifti, read_nifti
from spinelesion.io.reader import read_volume
from spinelesion.io.sequences import apply_override, guess_sequence
from spinelesion.io.volume import Volume
from spinelesion.labels import SEQUENCES

log = logging.getLogger(__name__)

NIFTI_NAME = re.compile(r"(?:^|[_\-. ])(t1c|t1ce|t1gd|t1_?post|t1|t2|stir)(?:[_\-. ]|$)", re.I)


@dataclass
class Study:
    study_id: str
    volumes: dict[str, Volume] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def sequences(self) -> list[str]:
        return [s for s in SEQUENCES if s in self.volumes]


class StudyError(ValueError):
    """A study that cannot be used at all, naming the study and the reason."""

    def __init__(self, study_id: str, reason: str):
        self.study_id, self.reason = study_id, reason
        super().__init__(f"study '{study_id}': {reason}")


def load_study_from_paths(study_id: str, sequences: Mapping[str, str | os.PathLike[str]]) -> Study:
    """Read the given sequence paths (DICOM series folders or NIfTI files)."""
    study = Study(study_id)
    for seq, path in sequences.items():
        if seq not in SEQUENCES:
            raise StudyError(study_id, f"unknown sequence name '{seq}' (allowed: {', '.join(SEQUENCES)})")
        try:
            study.volumes[seq] = read_volume(path)
        except (DicomError, ValueError, OSError) as exc:
            raise StudyError(study_id, f"{seq}: {exc}") from exc
    if not study.volumes:
        raise StudyError(study_id, "no sequence given")
    return study


def nifti_sequence_name(path: Path) -> str | None:
    """Sequence named by a NIfTI file name, e.g. ``sub-01_T2w.nii.gz`` -> ``t2``, ``t1c.nii`` -> ``t1c``."""
    stem = path.name
    for suffix in NIFTI_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"(?i)(t[12])w\b", r"\1", stem)
    m = NIFTI_NAME.search(stem)
    if not m:
        return None
    token = m.group(1).lower()
    return "t1c" if token.startswith("t1") and token != "t1" else token


def load_nifti_folder(folder: Path, study_id: str | None = None) -> Study:
    study = Study(study_id or folder.name)
    for path in sorted(p for p in folder.iterdir() if is_nifti(p)):
        seq = nifti_sequence_name(path)
        if seq is None:
            study.warnings.append(f"{path.name}: file name does not name a sequence (t1, t2, stir, t1c); skipped")
            continue
        if seq in study.volumes:
            study.warnings.append(f"{path.name}: a second {seq} file; kept {study.volumes[seq].meta['source']}")
            continue
        study.volumes[seq] = read_nifti(path)
    if not study.volumes:
        raise StudyError(study.study_id, f"{folder}: no NIfTI file named by sequence")
    return study


def _orientation_rank(info: SeriesInfo) -> float:
    """Prefer sagittal series (slice normal along L-R) when two series claim one sequence."""
    h = info.header
    try:
        o = np.asarray([float(v) for v in h.ImageOrientationPatient])  # type: ignore[union-attr]
        return float(abs(np.cross(o[:3], o[3:])[0]))
    except (AttributeError, TypeError, ValueError):
        return 0.0


def assign_series(series: list[SeriesInfo], overrides: Mapping[str, str] | None = None
                  ) -> tuple[dict[str, SeriesInfo], list[str]]:
    """Pick one series per sequence; returns the choice and warnings naming what was skipped."""
    overrides = dict(overrides or {})
    candidates: dict[str, list[tuple[float, SeriesInfo, str]]] = {}
    warnings: list[str] = []
    for info in series:
        assert info.header is not None
        reason = non_image_reason(info.header)
        if reason:
            warnings.append(f"{info.label}: skipped, {reason}")
            continue
        forced = apply_override(overrides, info.series_uid, info.number, info.description)
        if forced:
            if forced not in SEQUENCES:
                raise ValueError(f"override for {info.label} names unknown sequence '{forced}'")
            candidates.setdefault(forced, []).append((2.0, info, "user override"))
            continue
        meta = {k: info.header.get(k) for k in ("SeriesDescription", "ScanningSequence", "RepetitionTime",
                                                 "EchoTime", "InversionTime", "ContrastBolusAgent", "ImageType")}
        guess = guess_sequence(meta)
        if guess.sequence is None:
            warnings.append(f"{info.label}: skipped, {guess.reason}")
            continue
        candidates.setdefault(guess.sequence, []).append((guess.confidence, info, guess.reason))
    chosen: dict[str, SeriesInfo] = {}
    for seq, cands in candidates.items():
        cands.sort(key=lambda c: (c[0], _orientation_rank(c[1]), len(c[1].files)), reverse=True)
        chosen[seq] = cands[0][1]
        for _, other, _why in cands[1:]:
            warnings.append(f"{other.label}: also looks like {seq}; used {cands[0][1].label} "
                            "(rule: override, then confidence, then sagittal, then most slices)")
    return chosen, warnings


def group_dicom_studies(folder: str | os.PathLike[str]) -> tuple[dict[str, list[SeriesInfo]], list[tuple[Path, str]]]:
    """Series under ``folder`` grouped by StudyInstanceUID."""
    series, skipped = discover_series(folder)
    studies: dict[str, list[SeriesInfo]] = {}
    for info in series:
        studies.setdefault(info.study_uid or "unknown-study", []).append(info)
    return studies, skipped


def load_dicom_study(study_id: str, series: list[SeriesInfo], overrides: Mapping[str, str] | None = None) -> Study:
    """Read the series chosen for each sequence of one study."""
    chosen, warnings = assign_series(series, overrides)
    if not chosen:
        raise StudyError(study_id, "no series recognised as t1, t2, stir or t1c: " + "; ".join(warnings)
                         + " (name them with a sequence override)")
    study = Study(study_id, warnings=warnings)
    for seq in SEQUENCES:
        if seq not in chosen:
            continue
        try:
            study.volumes[seq] = read_series(chosen[seq])
        except DicomError as exc:
            study.warnings.append(f"{seq}: {exc}; sequence left out")
    if not study.volumes:
        raise StudyError(study_id, "no recognised series could be read: " + "; ".join(study.warnings))
    return study


def load_study_folder(folder: str | os.PathLike[str], overrides: Mapping[str, str] | None = None,
                      study_id: str | None = None) -> Study:
    """One study from a folder of DICOM series or of NIfTI files named by sequence."""
    folder = Path(folder)
    if any(is_nifti(p) for p in folder.iterdir()):
        return load_nifti_folder(folder, study_id)
    studies, _skipped = group_dicom_studies(folder)
    # A report or presentation state filed under another study does not make a second study.
    imaging = {uid: series for uid, series in studies.items() if any(s.is_image for s in series)}
    dropped = [f"{s.label}: skipped, {non_image_reason(s.header)}" for uid, series in studies.items()
               if uid not in imaging for s in series if s.header is not None]
    studies = imaging or studies
    if not studies:
        raise StudyError(study_id or folder.name, f"{folder}: no DICOM or NIfTI image found")
    if len(studies) > 1:
        raise StudyError(study_id or folder.name, f"{folder} holds {len(studies)} studies; give one study folder "
                                                   "or predict on the parent folder (one result per study)")
    uid, series = next(iter(studies.items()))
    study = load_dicom_study(study_id or uid, series, overrides)
    study.warnings.extend(dropped)
    return study
