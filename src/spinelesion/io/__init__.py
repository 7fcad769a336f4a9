"""Reading and writing studies: DICOM series, NIfTI, and the geometry that goes with them.

The geometry helpers are imported eagerly; the readers on first use (they pull in pydicom,
nibabel and torch), so ``import spinelesion.io.volume`` stays cheap for command-line help.

* :func:`read_volume` / :func:`read_geometry`: one sequence path (DICOM folder, NIfTI file).
* :class:`Study`, :func:`load_study_from_paths`, :func:`load_study_folder`: a study.
* :func:`to_reference`, :func:`resample_to`: every sequence on one grid, by geometry.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from spinelesion.io.volume import Volume, apply_affine, axis_codes, grid_affine, spacing_of

_LAZY = {
    "read_volume": "spinelesion.io.reader",
    "read_geometry": "spinelesion.io.reader",
    "Study": "spinelesion.io.study",
    "StudyError": "spinelesion.io.study",
    "load_study_from_paths": "spinelesion.io.study",
    "load_study_folder": "spinelesion.io.study",
    "to_reference": "spinelesion.io.resample",
    "resample_to": "spinelesion.io.resample",
    "DicomError": "spinelesion.io.dicom.errors",
    "DicomSeriesError": "spinelesion.io.dicom.errors",
    "DicomDecodeError": "spinelesion.io.dicom.errors",
    "NonImageError": "spinelesion.io.dicom.errors",
    "NiftiError": "spinelesion.io.nifti",
    "guess_sequence": "spinelesion.io.sequences",
}

__all__ = ["Volume", "apply_affine", "axis_codes", "grid_affine", "spacing_of", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spinelesion.io' has no attribute '{name}'")
