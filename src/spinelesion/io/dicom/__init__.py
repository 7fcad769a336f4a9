"""DICOM series -> :class:`~spinelesion.io.volume.Volume`, one module per concern.

The reader contract (what the rest of spinelesion uses; everything below is imported here):

* :func:`read_dicom_folder` (the one image series of a folder, or the one named),
  :func:`read_series` (a series found by :func:`discover_series`) and
  :func:`read_dicom_geometry` (shape and affine from headers alone) return a ``Volume`` whose
  array is float32 in (i, j, k) order with its voxel-to-LPS affine, or raise a
  :class:`DicomError` subclass that names the series (or file) and the reason.
* :func:`discover_series` finds the image series under a folder without reading pixels.

Modules:

* :mod:`.read`: the entry points above, assembling a volume from datasets.
* :mod:`.files`: whole files into memory and parsed (read ahead on threads).
* :mod:`.discover`: walking folders, sniffing and parsing headers, grouping series.
* :mod:`.geometry`: stacking slices along their normal and the regularity checks.
* :mod:`.multiframe`: enhanced multi-frame objects.
* :mod:`.pixels`: decoding (transfer syntaxes, decoders, rescale), once the header is
  checked against the pixel data.
* :mod:`.codestreams`: the image size a compressed frame declares in its codec header.
* :mod:`.deflate`: the inflated size of deflated files, bounded before pydicom inflates them.
* :mod:`.values`: fast header value access.
* :mod:`.meta`: the series metadata kept with a volume.
* :mod:`.errors`: the error types and the series context they carry.
* :mod:`.write`: writing a volume as a DICOM series (the phantom and tests).
"""

from __future__ import annotations

from spinelesion.io.dicom.discover import SeriesInfo, discover_series, non_image_reason
from spinelesion.io.dicom.errors import DicomDecodeError, DicomError, DicomSeriesError, NonImageError
from spinelesion.io.dicom.files import read_dataset, read_datasets, read_file_header
from spinelesion.io.dicom.geometry import SeriesChecks
from spinelesion.io.dicom.pixels import DECODERS
from spinelesion.io.dicom.read import (
    header_geometry,
    read_dicom_folder,
    read_dicom_geometry,
    read_series,
    series_context,
    volume_from_datasets,
)

__all__ = [
    "DECODERS",
    "DicomDecodeError",
    "DicomError",
    "DicomSeriesError",
    "NonImageError",
    "SeriesChecks",
    "SeriesInfo",
    "discover_series",
    "header_geometry",
    "non_image_reason",
    "read_dataset",
    "read_datasets",
    "read_dicom_folder",
    "read_dicom_geometry",
    "read_file_header",
    "read_series",
    "series_context",
    "volume_from_datasets",
]
