"""What ``predict`` was given -> a list of studies to run, each with a loader and optional ROIs.

Accepted: a manifest CSV (its rows are the ROIs), a NIfTI file, a folder of NIfTI files named
by sequence, a folder with DICOM series of one or several studies (grouped by
StudyInstanceUID, nested as deep as the export likes), or a folder of such study folders.
Problems found while listing inputs are returned as failures, never raised: one bad study
must not stop the others.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from spinelesion.formatting import printable
from spinelesion.inference.predictor import RoiRequest, StudyInput
from spinelesion.io.limits import special_file_reason
from spinelesion.io.nifti import is_nifti
from spinelesion.labels import SEQUENCES

log = logging.getLogger(__name__)


@dataclass
class InputFailure:
    study_id: str
    source: str
    reason: str

    def __post_init__(self) -> None:  # names from non-UTF-8 file names stay writable
        self.study_id, self.source, self.reason = (
            printable(v) for v in (self.study_id, self.source, self.reason)
        )


def _given_rois(points: Sequence[Sequence[float]] | None) -> list[RoiRequest]:
    out = []
    for k, p in enumerate(points or []):
        arr = np.asarray(p, dtype=np.float64)
        if arr.shape != (3,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"ROI {k + 1}: expected [x, y, z] in LPS mm, got {p}")
        out.append(RoiRequest(f"roi{k + 1:02d}", arr, "given"))
    return out


def from_manifest(path: Path) -> tuple[list[StudyInput], list[InputFailure]]:
    from spinelesion.data.manifest import read_manifest
    from spinelesion.io.study import load_study_from_paths

    manifest = read_manifest(path, check_files=False)  # missing files fail their own study, not the run
    items = []
    for study_id, rows in manifest.studies().items():
        seqs = dict(rows[0].sequences)
        rois = [RoiRequest(r.case_id, r.center_lps, "given") for r in rows]
        items.append(StudyInput(study_id, str(path), partial(load_study_from_paths, study_id, seqs), rois))
    return items, []


def _non_empty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _relative_id(path: Path, root: Path) -> str:
    """A study id from where it lies: its path relative to the input (BIDS ``sub-01/anat``), or
    the input's own name for the input itself; unique within a run and the same on every run."""
    return path.relative_to(root).as_posix() if path != root else root.name


def _joined_loader(uid: str, series: list, overrides: Mapping[str, str], nifti_dir: Path, sid: str):  # noqa: ANN202
    from spinelesion.io.study import load_dicom_study, load_nifti_folder

    def load():  # noqa: ANN202 - a Study
        study = load_dicom_study(uid, series, overrides)
        extra = load_nifti_folder(nifti_dir, sid)
        for seq, vol in extra.volumes.items():
            if seq in study.volumes:
                study.warnings.append(
                    f"{seq}: both a DICOM series and {vol.meta.get('source', 'a NIfTI file')}; "
                    "the DICOM series was used"
                )
            else:
                study.volumes[seq] = vol
        study.warnings.extend(extra.warnings)
        return study

    return load


def from_folder(
    folder: Path,
    overrides: Mapping[str, str],
    nifti_sequence: str,
    exclude: Sequence[str | os.PathLike[str]] = (),
    skipped: list[tuple[Path, str]] | None = None,
    progress: bool = False,
) -> tuple[list[StudyInput], list[InputFailure]]:
    """Studies below ``folder``; folders in ``exclude`` (the run's own output) and output
    folders of earlier runs are not read; pipes and devices go to ``skipped``, unopened.

    NIfTI studies are named by their folder's path relative to ``folder``; DICOM studies by
    PatientID, StudyDate and a short hash of their StudyInstanceUID (:func:`spinelesion.io.study.readable_study_id`). NIfTI files in the folder of a DICOM study (or in the folder that holds
    its series folders, or below it) join that study. In a folder of studies, each subfolder
    where nothing readable was found is a failure that names it.
    """
    from spinelesion.io.dicom.discover import OUTPUT_FOLDER_REASON, iter_files
    from spinelesion.io.limits import is_output_folder
    from spinelesion.io.study import (
        group_dicom_studies,
        load_dicom_study,
        load_nifti_folder,
        readable_study_id,
    )

    items: list[StudyInput] = []
    failures: list[InputFailure] = []
    # NIfTI studies: every folder (this one or below) that holds NIfTI files named by sequence
    # (zero-byte files do not make a study: their folder is reported as unreadable below)
    nifti_dirs = sorted(
        {p.parent for p in iter_files(folder, exclude=exclude) if is_nifti(p) and _non_empty(p)}
    )
    try:
        studies, not_dicom = group_dicom_studies(folder, exclude=exclude, progress=progress)
    except Exception as exc:  # noqa: BLE001 - reported, the NIfTI studies still run
        failures.append(InputFailure(folder.name, str(folder), f"cannot list DICOM files: {exc}"))
        studies, not_dicom = {}, []
    if skipped is not None:
        skipped.extend(
            (p, why) for p, why in not_dicom if "not a regular file" in why or why == OUTPUT_FOLDER_REASON
        )
    dicom = []
    for key, series in studies.items():
        if any(s.is_image for s in series):
            where = Path(os.path.commonpath([str(s.files[0].parent) for s in series]))
            dicom.append((readable_study_id(key, series), series, where))
    joined: set[Path] = set()
    for uid, series, src in dicom:
        # a NIfTI folder joins the one DICOM study it shares a study folder with
        mates = [d for d in nifti_dirs if d == src or src in d.parents or d in src.parents]
        mates = [
            d
            for d in mates
            if sum(1 for _u, _s, o in dicom if d == o or o in d.parents or d in o.parents) == 1
        ]
        if mates:
            d = mates[0]
            joined.add(d)
            items.append(
                StudyInput(uid, str(src), _joined_loader(uid, series, overrides, d, _relative_id(d, folder)))
            )
        else:
            items.append(StudyInput(uid, str(src), partial(load_dicom_study, uid, series, overrides)))
    for d in nifti_dirs:
        if d not in joined:
            sid = _relative_id(d, folder)
            items.append(StudyInput(sid, str(d), partial(load_nifti_folder, d, sid)))
    # NIfTI files that make a study are read, not ignored: the count names only the rest
    study_dirs = set(nifti_dirs)  # a set: a cohort lists thousands of files against thousands of folders
    ignored = [p for p, _why in not_dicom if not (p.parent in study_dirs and is_nifti(p))]
    if ignored:
        log.info(
            "%s: %d file(s) are neither DICOM nor a study's NIfTI and were ignored", folder, len(ignored)
        )
    # folders whose pipes, sockets or devices are already named among the skipped files
    sources = [Path(it.source) for it in items] + [
        p.parent for p, why in not_dicom if "not a regular file" in why
    ]
    if folder not in sources[: len(items)]:  # a folder of studies: every subfolder that gave none is named
        excluded = [Path(e).resolve() for e in exclude]
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if child.resolve() in excluded or is_output_folder(child):
                continue
            if not any(child == s or child in s.parents for s in sources):
                failures.append(
                    InputFailure(
                        _relative_id(child, folder),
                        str(child),
                        "nothing readable: no DICOM image series or NIfTI file named by sequence",
                    )
                )
    if not items and not failures:
        failures.append(InputFailure(folder.name, str(folder), "no DICOM image series or NIfTI file found"))
    return items, failures


def discover_inputs(
    path: str | os.PathLike[str],
    rois: Sequence[Sequence[float]] | None = None,
    overrides: Mapping[str, str] | None = None,
    nifti_sequence: str = "t2",
    exclude: Sequence[str | os.PathLike[str]] = (),
    skipped: list[tuple[Path, str]] | None = None,
    progress: bool = False,
) -> tuple[list[StudyInput], list[InputFailure]]:
    """Studies to predict, and what could not even be listed.

    ``exclude``: folders never read (the run's output folder, when it lies inside the input);
    ``skipped`` receives the pipes, sockets and devices found, which are never opened.
    """
    from spinelesion.io.nifti import read_nifti
    from spinelesion.io.study import Study, nifti_sequence_name

    path = Path(path)
    if not path.exists():
        return [], [InputFailure(path.name, str(path), "input does not exist")]
    special = special_file_reason(path) if not path.is_dir() else None
    if special:
        return [], [InputFailure(path.name, str(path), special)]
    given = _given_rois(rois)
    if path.is_file() and path.suffix.lower() == ".csv":
        items, failures = from_manifest(path)
        if given:
            for it in items:
                it.rois = list(given)
        return items, failures
    if path.is_file() and is_nifti(path):
        seq = nifti_sequence_name(path) or nifti_sequence
        # the file's stem; a file named by its sequence alone (sub-01/t2.nii.gz) takes its folder's name
        sid = path.name.split(".")[0]
        if re.sub(r"(?i)w$", "", sid).lower() in SEQUENCES and path.resolve().parent.name:
            sid = path.resolve().parent.name

        def load(p: Path = path, s: str = seq, i: str = sid) -> Study:
            return Study(i, {s: read_nifti(p)})

        return [StudyInput(sid, str(path), load, list(given))], []
    if path.is_dir():
        items, failures = from_folder(path, dict(overrides or {}), nifti_sequence, exclude, skipped, progress)
        for it in items:
            it.rois = list(given)
        return items, failures
    return [], [InputFailure(path.name, str(path), "not a manifest (.csv), NIfTI file or folder")]
