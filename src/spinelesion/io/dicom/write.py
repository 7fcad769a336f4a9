"""Write a :class:`Volume` as a DICOM MR series (one file per slice, Explicit VR Little Endian).

Used by the synthetic data generator and by tests that need odd series (oblique, shuffled,
rescaled). The geometry tags come from the volume's LPS affine, so whatever reads the
series back by geometry recovers the same affine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from spinelesion.io.volume import Volume

# A fixed UID root keeps generated UIDs valid (digits and dots, <= 64 chars) and
# deterministic: the same entropy gives the same UID.
UID_PREFIX = "1.2.826.0.1.3680043.10.1137."


def make_uid(*entropy: object) -> str:
    """Deterministic DICOM UID from any printable entropy sources."""
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(e) for e in entropy]))


def _fmt(value: float) -> str:
    """Decimal String value that fits DICOM's 16-character limit."""
    text = f"{value:.6g}"
    return text if len(text) <= 16 else f"{value:.4e}"


def to_stored(array: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Real values -> uint16 stored values for ``real = stored * slope + intercept``."""
    stored = np.rint((np.asarray(array, dtype=np.float64) - intercept) / slope)
    return np.clip(stored, 0, 65535).astype(np.uint16)


TYPE2_EMPTY = (
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "PatientPosition",  # 2C, required for MR without a Patient Orientation Code Sequence
    "PositionReferenceIndicator",
    "Manufacturer",
    "ScanOptions",
    "MRAcquisitionType",
    "EchoTime",
    "EchoTrainLength",
)
"""Type 2 attributes of the MR Image IOD's modules written empty when the caller gives none."""


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    study: Mapping[str, Any],
    series: Mapping[str, Any],
    slope: float = 1.0,
    intercept: float = 0.0,
    file_names: str = "instance",
) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice ``k`` into ``folder``.

    Args:
        study: study-level attributes: ``StudyInstanceUID``, ``PatientID``, ``PatientName``,
            and optionally ``StudyDate``, ``PatientAge``, ``PatientSex``, ``StudyID``,
            ``FrameOfReferenceUID``, ``MagneticFieldStrength``, ``Manufacturer``.
        series: series-level attributes: ``SeriesInstanceUID``, ``SeriesNumber``,
            ``SeriesDescription``, and any MR acquisition tags to copy verbatim
            (``ScanningSequence``, ``SequenceVariant``, ``ScanOptions``, ``EchoTime``,
            ``RepetitionTime``, ``InversionTime``, ``ContrastBolusAgent``...).
        slope, intercept: RescaleSlope / RescaleIntercept written to every slice; pixel
            values are stored as ``(real - intercept) / slope`` in uint16.
        file_names: ``"instance"`` (``IM0001.dcm``...) or ``"uid"`` (SOPInstanceUID, no suffix).

    Returns:
        The written paths, in slice order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = volume.affine
    spacing = volume.spacing
    row_dir = affine[:3, 0] / spacing[0]
    col_dir = affine[:3, 1] / spacing[1]
    normal = np.cross(row_dir, col_dir)
    stored = to_stored(volume.array, slope, intercept)
    series_uid = str(series["SeriesInstanceUID"])
    date = str(study.get("StudyDate", "20260101"))
    time = str(study.get("StudyTime", "120000"))
    window_hi = float(np.percentile(volume.array, 99.5)) if volume.array.size else 1.0

    paths: list[Path] = []
    n_slices = volume.shape[2]
    for k in range(n_slices):
        sop_uid = make_uid(series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        name = f"IM{k + 1:04d}.dcm" if file_names == "instance" else sop_uid
        path = folder / name
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "MR"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.StudyInstanceUID = str(study["StudyInstanceUID"])
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = str(
            study.get("FrameOfReferenceUID", make_uid(study["StudyInstanceUID"], "for"))
        )
        ds.PatientName = str(study.get("PatientName", "ANON"))
        ds.PatientID = str(study.get("PatientID", "ANON"))
        for key in (
            "PatientAge",
            "PatientSex",
            "StudyID",
            "Manufacturer",
            "MagneticFieldStrength",
            "BodyPartExamined",
            "AccessionNumber",
            "StudyDescription",
        ):
            if key in study:
                setattr(ds, key, study[key])
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
        ds.SeriesNumber = int(series.get("SeriesNumber", 1))
        ds.InstanceNumber = k + 1
        for key, value in series.items():
            if key not in ("SeriesInstanceUID", "SeriesNumber"):
                setattr(ds, key, value)
        for key in TYPE2_EMPTY:  # Type 2: present, empty when unknown (dciodvfy reports them missing)
            if key not in ds:
                setattr(ds, key, "")
        position = affine[:3, 3] + k * affine[:3, 2]
        ds.ImagePositionPatient = [_fmt(v) for v in position]
        ds.ImageOrientationPatient = [_fmt(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_fmt(spacing[1]), _fmt(spacing[0])]  # (between rows, between columns)
        ds.SliceThickness = _fmt(float(volume.meta.get("slice_thickness", spacing[2])))
        ds.SpacingBetweenSlices = _fmt(spacing[2])
        ds.SliceLocation = _fmt(float(np.dot(position, normal)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = _fmt(slope)
        ds.RescaleIntercept = _fmt(intercept)
        ds.RescaleType = "US"
        ds.WindowCenter = _fmt(window_hi / 2)
        ds.WindowWidth = _fmt(max(window_hi, 1.0))
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
        paths.append(path)
    return paths
