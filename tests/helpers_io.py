"""Builders for the io tests: volumes on arbitrary grids, DICOM series written from them,
and pydicom's bundled test files (only those shipped in the wheel: never downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

from spinelesion.io.dicom.write import make_uid, write_dicom_series
from spinelesion.io.volume import Volume, grid_affine

# Columns are the LPS directions of the array axes i, j, k.
SAGITTAL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]]).T  # i->P, j->I, k->R
AXIAL = np.eye(3)  # i->L, j->P, k->S
CORONAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]).T  # i->L, j->I, k->P


def rotated(axes: np.ndarray, degrees: float) -> np.ndarray:
    """``axes`` turned by a few degrees about all three patient axes (an oblique plan)."""
    if not degrees:
        return axes
    return (
        Rotation.from_euler("xyz", [degrees, -0.6 * degrees, 0.3 * degrees], degrees=True).as_matrix() @ axes
    )


def make_volume(
    shape=(24, 28, 8),
    spacing=(1.0, 1.2, 3.5),
    axes=SAGITTAL,
    centre=(4.0, -10.0, 20.0),
    seed=0,
    oblique_deg: float = 0.0,
) -> Volume:
    """Random integer-valued image (exact through uint16 DICOM) on the described grid."""
    arr = np.random.default_rng(seed).integers(10, 1000, size=shape).astype(np.float32)
    return Volume(
        arr, grid_affine(np.asarray(centre, dtype=float), shape, spacing, rotated(axes, oblique_deg))
    )


def write_series(
    vol: Volume,
    folder: Path,
    desc: str = "T2 TSE SAG",
    study_uid: str | None = None,
    number: int = 1,
    **series,
) -> list[Path]:
    """``vol`` as a DICOM MR series (one file per slice) under ``folder``; returns the paths in slice order."""
    study_uid = study_uid or make_uid("study", folder.name)
    return write_dicom_series(
        vol,
        folder,
        study={"StudyInstanceUID": study_uid, "PatientID": "PAT-1"},
        series={
            "SeriesInstanceUID": make_uid(study_uid, desc, number),
            "SeriesDescription": desc,
            "SeriesNumber": number,
            **series,
        },
    )


def edit(path: Path, out: Path | None = None, **tags) -> Path:
    """Rewrite a DICOM file with some attributes changed (to ``out``, or in place)."""
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    if "SOPInstanceUID" in tags:
        ds.file_meta.MediaStorageSOPInstanceUID = tags["SOPInstanceUID"]
    target = out or path
    ds.save_as(target)
    return target


def pydicom_file(name: str) -> Path:
    """A DICOM file shipped inside pydicom; skips (never downloads) when it is not bundled."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not bundled with this pydicom")
    return Path(str(path))


def blob(vol: Volume, point_lps: np.ndarray, sigma_mm: float = 3.0) -> None:
    """Replace ``vol.array`` by a Gaussian blob centred on an LPS point (geometry-only marker)."""
    ijk = np.indices(vol.shape).reshape(3, -1).T
    d2 = np.sum((vol.voxel_to_world(ijk) - point_lps) ** 2, axis=1)
    vol.array[:] = (1000.0 * np.exp(-d2 / (2 * sigma_mm**2))).reshape(vol.shape)


def centroid_lps(array: np.ndarray, affine: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Intensity-weighted centre (LPS mm) of the voxels above ``threshold`` x max."""
    w = np.where(array > threshold * array.max(), array, 0.0)
    ijk = np.indices(array.shape).reshape(3, -1).T
    centre = (ijk * w.reshape(-1, 1)).sum(0) / w.sum()
    return centre @ affine[:3, :3].T + affine[:3, 3]
