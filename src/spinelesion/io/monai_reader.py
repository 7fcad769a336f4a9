"""The project's reader as a MONAI :class:`~monai.data.ImageReader`.

``LoadImage(reader=SpineSeriesReader())`` / ``LoadImaged(keys, reader=SpineSeriesReader())``
read what :func:`spinelesion.io.reader.read_volume` reads (a DICOM series folder, unsorted,
nested or compressed, with the project's checks and errors; a NIfTI file; a multi-frame
DICOM file) and return a :class:`~monai.data.MetaTensor` with the same voxels.

Affine convention: MONAI's own readers hand out **RAS** affines by default (``ITKReader``
and ``PydicomReader`` convert DICOM's LPS with ``affine_lps_to_ras=True``, ``NibabelReader``
keeps NIfTI's RAS) and record the frame in ``meta["space"]``; ``Orientationd`` and
``Spacingd`` read the affine in that frame. This reader does the same: by default the
MetaTensor's ``affine`` is ``LPS_TO_RAS @ Volume.affine`` with ``space="RAS"``, so a NIfTI
file gives exactly ``NibabelReader``'s affine. ``affine_lps_to_ras=False`` gives the
project's own voxel -> LPS affine with ``space="LPS"``. :func:`volume_from_metatensor`
turns either back into a :class:`~spinelesion.io.volume.Volume` (LPS).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from spinelesion.io.nifti import is_nifti
from spinelesion.io.reader import is_dicom_file, read_volume
from spinelesion.io.volume import LPS_TO_RAS, Volume

__all__ = ["SpineSeriesReader", "volume_from_metatensor"]

# Volume.meta entries copied into the MONAI meta dict: scalars only, so that MONAI's
# collation and MetaTensor pruning keep them (lists such as the DICOM file names are left out).
_META_SCALARS = (str, int, float, bool)


class SpineSeriesReader(ImageReader):
    """DICOM series folders, DICOM files and NIfTI files through :func:`read_volume`.

    Args:
        series_uid: the SeriesInstanceUID to read when a folder holds several image series
            (without it such a folder is an error naming the series, as in ``read_volume``).
        affine_lps_to_ras: RAS affines (MONAI's default, ``space="RAS"``) or the project's
            LPS (``space="LPS"``).
        channel_dim: as in MONAI's readers; ``None`` marks the data as channel-less, so
            ``EnsureChannelFirst`` adds the channel axis.
        dtype: voxel type handed out (the project reads float32).
    """

    def __init__(
        self,
        series_uid: str | None = None,
        affine_lps_to_ras: bool = True,
        channel_dim: int | str | None = None,
        dtype: Any = np.float32,
    ):
        super().__init__()
        self.series_uid = series_uid
        self.affine_lps_to_ras = affine_lps_to_ras
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.dtype = dtype

    def verify_suffix(self, filename: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str) -> bool:
        """True when every name is a folder (a DICOM series), a NIfTI file or a DICOM file."""
        for name in ensure_tuple(filename):
            path = Path(str(name))
            if not (path.is_dir() or is_nifti(path) or path.suffix.lower() == ".dcm" or is_dicom_file(path)):
                return False
        return True

    def read(
        self, data: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str, **kwargs: Any
    ) -> Volume | list[Volume]:
        """One :class:`Volume` per name (a list when several are given, stacked as channels later)."""
        series_uid = kwargs.get("series_uid", self.series_uid)
        names = ensure_tuple(data)
        volumes = [read_volume(str(n), series_uid=series_uid) for n in names]
        return volumes if len(names) > 1 else volumes[0]

    def get_data(self, img: Volume | Sequence[Volume]) -> tuple[np.ndarray, dict[str, Any]]:
        """(array, meta): voxels in (i, j, k) order, stacked on a new first axis for several
        volumes (which must share one grid, as MONAI requires), and MONAI's meta keys."""
        volumes = [img] if isinstance(img, Volume) else list(img)
        arrays: list[np.ndarray] = []
        meta: dict[str, Any] = {}
        for vol in volumes:
            header = self._meta(vol)
            if meta and not (
                np.allclose(header[MetaKeys.AFFINE], meta[MetaKeys.AFFINE])
                and tuple(header[MetaKeys.SPATIAL_SHAPE]) == tuple(meta[MetaKeys.SPATIAL_SHAPE])
            ):
                raise RuntimeError(
                    f"{vol.meta.get('source')}: grid differs from {meta.get('source')}; "
                    "volumes stacked as channels must share shape and affine (resample first)"
                )
            meta = meta or header
            arrays.append(np.asarray(vol.array, dtype=self.dtype))
        if len(arrays) == 1:
            return arrays[0], meta
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta

    def _meta(self, vol: Volume) -> dict[str, Any]:
        affine = LPS_TO_RAS @ vol.affine if self.affine_lps_to_ras else vol.affine.copy()
        header: dict[str, Any] = {k: v for k, v in vol.meta.items() if isinstance(v, _META_SCALARS)}
        if vol.meta.get("warnings"):
            header["spinelesion_warnings"] = "; ".join(map(str, vol.meta["warnings"]))
        header[MetaKeys.ORIGINAL_AFFINE] = affine
        header[MetaKeys.AFFINE] = affine.copy()
        header[MetaKeys.SPATIAL_SHAPE] = np.asarray(vol.shape)
        header[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
        header[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if self.channel_dim is None else self.channel_dim
        return header


def lps_affine(meta_affine: Any, space: Any) -> np.ndarray:
    """A MONAI affine (RAS unless ``space`` says LPS) as the project's voxel -> LPS affine."""
    affine = np.asarray(getattr(meta_affine, "numpy", lambda: meta_affine)(), dtype=np.float64)
    return affine if str(space) == str(SpaceKeys.LPS) else LPS_TO_RAS @ affine


def volume_from_metatensor(image: Any, meta: dict[str, Any] | None = None) -> Volume:
    """A :class:`Volume` (LPS) from a MetaTensor or (array, meta) as MONAI loaders return them.

    A leading channel axis of size one is dropped; the source and warnings are kept.
    """
    meta = dict(meta if meta is not None else getattr(image, "meta", {}))
    array = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    affine = getattr(image, "affine", None)
    affine = meta.get(MetaKeys.AFFINE) if affine is None else affine
    out_meta: dict[str, Any] = {
        "source": str(meta.get("filename_or_obj", meta.get("source", ""))),
        "format": str(meta.get("format", "monai")),
    }
    if meta.get("spinelesion_warnings"):
        out_meta["warnings"] = str(meta["spinelesion_warnings"]).split("; ")
    return Volume(array, lps_affine(affine, meta.get(MetaKeys.SPACE, SpaceKeys.RAS)), out_meta)
