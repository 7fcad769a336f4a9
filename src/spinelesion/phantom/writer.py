"""Write a rendered study to disk as the data contract says: DICOM series, NIfTI, manifest rows."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from spinelesion.io.dicom.write import make_uid, write_dicom_series
from spinelesion.io.nifti import write_nifti
from spinelesion.io.volume import Volume
from spinelesion.phantom.acquisition import SEQ_NAMES
from spinelesion.phantom.study import RenderedStudy

SERIES_NUMBER = {"t2": 2, "t1": 3, "stir": 4, "t1c": 11}
BODY_PART = {"cervical": "CSPINE", "thoracic": "TSPINE", "lumbar": "LSPINE"}
MANUFACTURERS = ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips Medical Systems", "Canon Medical Systems"]


def study_tags(study: RenderedStudy, seed: int) -> dict[str, Any]:
    uid = make_uid("spinelesion-study", seed, study.study_id)
    rng = np.random.default_rng(
        int(hashlib.sha1(uid.encode()).hexdigest()[:8], 16)
    )  # stable across processes
    age = int(float(study.info["age"]))
    return {
        "StudyInstanceUID": uid,
        "FrameOfReferenceUID": make_uid(uid, "frame-of-reference"),
        "PatientID": study.patient_id,
        "PatientName": f"SYNTHETIC^{study.patient_id}",
        "PatientAge": f"{age:03d}Y",
        "PatientSex": str(study.info["sex"]),
        "StudyID": study.study_id[-16:],
        "StudyDate": f"2026{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        "StudyDescription": "MRI SPINE (synthetic)",
        "BodyPartExamined": BODY_PART[str(study.info["region"])],
        "Manufacturer": str(rng.choice(MANUFACTURERS)),
        "MagneticFieldStrength": float(study.info["field_strength"]),
    }


def write_study(
    study: RenderedStudy, out_dir: Path, formats: list[str], seed: int
) -> dict[str, dict[str, str]]:
    """Write every sequence; returns {format: {sequence: path relative to out_dir}}."""
    base = out_dir / "studies" / study.study_id
    tags = study_tags(study, seed)
    written: dict[str, dict[str, str]] = {"dicom": {}, "nifti": {}}
    for seq in SEQ_NAMES:
        if seq not in study.volumes:
            continue
        vol = study.volumes[seq]
        plan = study.plans[seq]
        if "dicom" in formats:
            folder = base / "dicom" / seq
            series = {
                "SeriesInstanceUID": make_uid(tags["StudyInstanceUID"], seq),
                "SeriesNumber": SERIES_NUMBER[seq],
                **plan.tags,
            }
            write_dicom_series(vol, folder, study=tags, series=series, slope=plan.slope)
            written["dicom"][seq] = str(folder.relative_to(out_dir))
        if "nifti" in formats:
            path = base / "nifti" / f"{seq}.nii.gz"
            exact_integers = plan.slope == 1.0
            write_nifti(
                Volume(vol.array, vol.affine), path, dtype=np.uint16 if exact_integers else np.float32
            )
            written["nifti"][seq] = str(path.relative_to(out_dir))
    return written


def manifest_records(study: RenderedStudy, paths: dict[str, str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for k, roi in enumerate(study.rois):
        rows.append(
            {
                "case_id": f"{study.study_id}_r{roi.index if roi.index >= 0 else k:02d}",
                "study_id": study.study_id,
                "patient_id": study.patient_id,
                "split": "",
                **{s: paths.get(s, "") for s in SEQ_NAMES},
                "x_mm": f"{roi.center[0]:.2f}",
                "y_mm": f"{roi.center[1]:.2f}",
                "z_mm": f"{roi.center[2]:.2f}",
                "compartment": "" if roi.unseen else roi.compartment,
                "drawn_compartment": roi.compartment,  # not a manifest column: splits stratify by it
                "fracture": roi.fracture,
                "level": roi.level,
                "finding": roi.finding,
            }
        )
    return rows
