"""Reading and writing studies: DICOM series, NIfTI, and the geometry that goes with them."""

from __future__ import annotations

from spinelesion.io.volume import Volume, apply_affine, axis_codes, grid_affine, spacing_of

__all__ = ["Volume", "apply_affine", "axis_codes", "grid_affine", "spacing_of"]
