"""The project's study preparation as small MONAI dictionary transforms.

A study item is a dict with one path per sequence (``t1``, ``t2``, ``stir``, ``t1c``; empty
or absent when the study lacks it) and ``rois``, a list of LPS centres in mm. In order:

* :class:`LoadStudyd`: each sequence path -> MetaTensor, through :class:`SpineSeriesReader`;
* :class:`ToReferenced`: every sequence onto the reference grid by geometry
  (:func:`spinelesion.io.resample.to_reference`) -> ``image`` (C, I, J, K) and ``available`` (C,);
* :class:`HalfPrecisiond`: float16 with per-channel robust scaling
  (:func:`spinelesion.data.cache.to_half`), the precision the training ROIs are cropped from;
* :class:`CropRoisd`: context boxes around the ROI centres -> (R, C, *context)
  (:func:`spinelesion.data.roi.crop_rois`);
* :class:`RobustUnitRanged`: per-ROI, per-channel percentile normalisation
  (:func:`spinelesion.data.normalize.robust_unit_range`);
* :class:`RoiCenterCropd`: the network input, the central ROI of each context box.

Each wraps a plain function (:func:`~spinelesion.io.resample.to_reference`,
:func:`~spinelesion.data.cache.to_half`, :func:`~spinelesion.data.roi.crop_rois`,
:func:`~spinelesion.data.normalize.robust_unit_range`, :func:`~spinelesion.data.dataset.roi_problems`),
the ones ``spinelesion-predict`` also calls (it skips the float16 rounding), so the ROIs equal those
functions' numbers bit for bit (tested). All are deterministic (a ``PersistentDataset`` caches them).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform
from monai.utils import MetaKeys, SpaceKeys

from spinelesion.data.roi import RoiSpec, center_crop, crop_rois
from spinelesion.labels import SEQUENCES

IMAGE, AVAILABLE, ROIS = "image", "available", "rois"


def as_roi_spec(spec: RoiSpec | Mapping[str, Any] | None) -> RoiSpec:
    """A :class:`RoiSpec` from itself or from a config mapping (bundle JSON, Hydra)."""
    if isinstance(spec, RoiSpec):
        return spec
    values = dict(spec or {})  # RoiSpec turns lists into tuples; missing keys keep its defaults
    return RoiSpec(**{k: values[k] for k in ("shape", "spacing", "margin") if k in values})


class LoadStudyd(MapTransform):
    """Sequence paths -> MetaTensors (RAS affine, ``space`` in meta); empty paths are dropped.

    The reader is given at call time, so a file it refuses raises the project's own error
    (naming file and reason) instead of MONAI trying its other readers.
    """

    def __init__(self, keys: KeysCollection = SEQUENCES, series_uid: str | None = None):
        super().__init__(keys, allow_missing_keys=True)
        from spinelesion.io.monai_reader import SpineSeriesReader

        self.reader = SpineSeriesReader(series_uid=series_uid)
        self.loader = LoadImage(image_only=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from spinelesion.io.dicom.errors import DicomError
        from spinelesion.io.study import StudyError

        d = dict(data)
        for key in list(self.key_iterator(d)):
            if d[key] is None or str(d[key]) == "":
                del d[key]
            elif not isinstance(d[key], MetaTensor):
                try:
                    d[key] = self.loader(d[key], reader=self.reader)
                except (DicomError, ValueError, OSError) as exc:  # the message load_study_from_paths gives
                    raise StudyError(str(d.get("study_id", "study")), f"{key}: {exc}") from exc
        return d


def study_image(array: np.ndarray | torch.Tensor, affine: np.ndarray, **meta: Any) -> MetaTensor:
    """A study on its reference grid, (C, I, J, K) with its voxel-to-LPS ``affine``, as the
    MetaTensor the ROI transforms read (RAS affine, ``space="RAS"``, like MONAI's readers)."""
    from spinelesion.io.volume import LPS_TO_RAS

    return MetaTensor(
        torch.as_tensor(array),
        affine=torch.as_tensor(LPS_TO_RAS @ np.asarray(affine), dtype=torch.float64),
        meta={MetaKeys.SPACE: SpaceKeys.RAS, **meta},
    )


class ToReferenced(MapTransform):
    """Sequences -> ``image`` (C, I, J, K) on the reference grid, in :data:`SEQUENCES` order,
    missing sequences as zero channels flagged in ``available``.

    ``image`` is a MetaTensor whose affine is the reference grid's in RAS (``space="RAS"``),
    like MONAI's readers; ``reference`` names the sequence whose grid it is, ``sources``
    the file or folder each sequence was read from.
    """

    def __init__(
        self, keys: KeysCollection = SEQUENCES, reference: str = "auto", study_id_key: str = "study_id"
    ):
        super().__init__(keys, allow_missing_keys=True)
        self.reference = reference
        self.study_id_key = study_id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from spinelesion.io.monai_reader import volume_from_metatensor
        from spinelesion.io.resample import to_reference
        from spinelesion.io.study import Study, StudyError

        d = dict(data)
        study_id = str(d.get(self.study_id_key, "study"))
        volumes = {str(k): volume_from_metatensor(d.pop(k)) for k in list(self.key_iterator(d))}
        if not volumes:
            raise StudyError(study_id, "no sequence given")
        study = Study(study_id, volumes)
        array, affine, available, ref_name = to_reference(study, reference=self.reference)
        d[IMAGE] = study_image(np.asarray(array, dtype=np.float32), affine, reference=ref_name)
        d[AVAILABLE] = torch.as_tensor(np.asarray(available), dtype=torch.float32)
        d["reference"] = ref_name
        d["sources"] = {name: str(vol.meta.get("source", "")) for name, vol in volumes.items()}
        return d


class HalfPrecisiond(MapTransform):
    """float16 with each channel divided by a robust maximum (:func:`~spinelesion.data.cache.to_half`:
    the training ROIs' precision, half the memory; the normalisation downstream is scale-free)."""

    def __init__(self, keys: KeysCollection = IMAGE):
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from spinelesion.data.cache import to_half

        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            half = torch.from_numpy(to_half(np.asarray(img.detach().cpu().numpy(), dtype=np.float32)))
            d[key] = (
                MetaTensor(half, meta=dict(img.meta)) if isinstance(img, MetaTensor) else half
            )  # meta holds the affine
        return d


def _lps_affine(image: Any) -> np.ndarray:
    from spinelesion.io.monai_reader import lps_affine

    return lps_affine(image.affine, image.meta.get(MetaKeys.SPACE, SpaceKeys.RAS))


class CropRoisd(MapTransform):
    """``image`` (C, I, J, K) MetaTensor -> (R, C, *box) tensor of boxes around ``rois``
    (LPS mm), axis-aligned in the patient frame at the ROI spacing; ``available`` -> (R, C).
    ``problems_key``: also why each ROI cannot be answered, None where it can
    (:func:`spinelesion.data.dataset.roi_problems`, judged on the study before cropping, as
    predict judges it)."""

    def __init__(
        self,
        spec: RoiSpec | Mapping[str, Any] | None = None,
        keys: KeysCollection = IMAGE,
        rois_key: str = ROIS,
        available_key: str = AVAILABLE,
        context: bool = True,
        problems_key: str | None = None,
    ):
        super().__init__(keys)
        self.spec = as_roi_spec(spec)
        self.rois_key, self.available_key, self.context = rois_key, available_key, context
        self.problems_key = problems_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        centers = [np.asarray(c, dtype=np.float64) for c in d[self.rois_key]]
        if not centers:
            raise ValueError("no ROI centre given (rois: a list of [x, y, z] in LPS mm)")
        for key in self.key_iterator(d):
            img = d[key]
            array = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
            if self.problems_key is not None:
                from spinelesion.data.dataset import roi_problems

                flags = np.asarray(d[self.available_key], dtype=bool)
                d[self.problems_key] = roi_problems(array, _lps_affine(img), flags, centers, self.spec)
            d[key] = crop_rois(array.float(), _lps_affine(img), centers, self.spec, context=self.context)
        avail = torch.as_tensor(d[self.available_key], dtype=torch.float32)
        d[self.available_key] = avail.expand(len(centers), -1).clone() if avail.ndim == 1 else avail
        return d


class RobustUnitRanged(MapTransform):
    """Per-ROI, per-channel [p1, p99] of the non-zero voxels -> [0, 1], clipped; unavailable
    channels exactly zero (:func:`robust_unit_range`)."""

    def __init__(
        self,
        keys: KeysCollection = IMAGE,
        available_key: str = AVAILABLE,
        lower: float = 1.0,
        upper: float = 99.0,
    ):
        super().__init__(keys)
        self.available_key, self.lower, self.upper = available_key, lower, upper

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from spinelesion.data.normalize import robust_unit_range

        d = dict(data)
        flags = torch.as_tensor(d[self.available_key], dtype=torch.float32)
        for key in self.key_iterator(d):
            d[key] = robust_unit_range(torch.as_tensor(d[key]), flags, lower=self.lower, upper=self.upper)
        return d


class RoiCenterCropd(MapTransform):
    """The central ``shape`` of each context box (last three axes): the network input."""

    def __init__(self, shape: Sequence[int], keys: KeysCollection = IMAGE):
        super().__init__(keys)
        self.shape = tuple(int(s) for s in shape)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = center_crop(torch.as_tensor(d[key]), self.shape).contiguous()
        return d


def study_transforms(
    spec: RoiSpec, reference: str = "auto", half: bool = False, context: bool = True, problems: bool = False
) -> list[Any]:
    """Load -> reference grid -> (float16) -> ROI boxes -> normalisation, as a list for ``Compose``;
    ``problems``: each ROI's reason not to be answered in ``problems`` (:class:`CropRoisd`)."""
    out: list[Any] = [LoadStudyd(), ToReferenced(reference=reference)]
    if half:
        out.append(HalfPrecisiond())
    out += [CropRoisd(spec, context=True, problems_key="problems" if problems else None), RobustUnitRanged()]
    if not context:
        out.append(RoiCenterCropd(spec.shape))
    return out
