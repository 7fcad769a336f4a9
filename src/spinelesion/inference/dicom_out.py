"""DICOM results for DICOM studies (highdicom): a TID 1500 measurement report and saliency segmentations.

Per study, beside predictions.json:

- ``dicom/sr.dcm``: a Comprehensive 3D SR holding a TID 1500 Measurement Report with one
  measurement group per ROI: its centre as a 3D point on the reference series' frame of
  reference, both predicted labels as qualitative evaluations, every class probability as
  a measurement, and the model (name, version) as the algorithm; the source series are its
  evidence.
- ``dicom/saliency_<task>.dcm``: a FRACTIONAL Segmentation per task, one segment per ROI,
  frame by frame on the reference series' own slices, so it overlays the source series in
  OHIF and 3D Slicer.

Codes of this project's concepts use the private coding scheme ``99SPINELESION``.
Nothing here downloads anything: highdicom is a plain Python package.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spinelesion.atomic import atomic_path
from spinelesion.inference.dicom_encode import save
from spinelesion.labels import TASKS

log = logging.getLogger(__name__)

SCHEME = "99SPINELESION"
MANUFACTURER = "spinelesion"


def available() -> bool:
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def _code(value: str, meaning: str) -> Any:
    from pydicom.sr.coding import Code

    return Code(value[:16], SCHEME, meaning[:64])


# Type 2 attributes of the patient and study modules: present (maybe empty) in every valid
# object; anonymised exports often drop them, and highdicom copies them from the source.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _source_datasets(files: Sequence[str]) -> list[Any]:
    import pydicom

    out = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
        out.append(ds)
    return out


def _save(ds: Any, path: Path) -> Path:
    from pydicom.dataset import Dataset

    scheme = Dataset()  # a private coding scheme is declared in the object that uses it
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "spinelesion private concepts"
    scheme.CodingSchemeResponsibleOrganization = "spinelesion"
    ds.CodingSchemeIdentificationSequence = [scheme]
    with atomic_path(path) as tmp:  # makes the folder, after checking it follows no symbolic link
        save(ds, tmp)  # pydicom's bytes, written without its per-element overhead (falls back to it)
    return path


def write_sr(
    path: Path,
    records: Sequence[Mapping[str, Any]],
    sources: Sequence[Any],
    model: Mapping[str, Any],
    series_number: int = 9100,
    fast: bool = True,
) -> Any:
    """The TID 1500 measurement report of one study's ROIs; returns the dataset written
    (``fast=False``: built by highdicom alone, see :func:`_sr_document`)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    ref = sources[0]
    name, version = str(model.get("name") or "spinelesion"), str(model.get("version") or "unknown")
    algorithm = hd.sr.AlgorithmIdentification(name=name, version=version)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=name, manufacturer_name=MANUFACTURER, model_name=version
        ),
    )
    groups = []
    for rec in records:
        region = hd.sr.ImageRegion3D(
            "POINT", np.asarray([rec["center_lps_mm"]], dtype=np.float64), str(ref.FrameOfReferenceUID)
        )
        evaluations, measurements = [], []
        for task, classes in TASKS.items():
            evaluations.append(
                hd.sr.QualitativeEvaluation(
                    _code(task, f"spine lesion {task}"),
                    _code(f"{task[:4]}-{rec[task]['label']}", rec[task]["label"]),
                )
            )
            for cls in classes:
                measurements.append(
                    hd.sr.Measurement(
                        name=_code(f"p-{task[:4]}-{cls[:9]}", f"probability of {task} {cls}"),
                        value=float(rec[task]["probabilities"][cls]),
                        unit=codes.UCUM.NoUnits,
                    )
                )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=generate_uid(), identifier=str(rec["roi_id"])[:64]
                ),
                referenced_region=region,
                finding_type=_code("roi", "spine region of interest"),
                algorithm_id=algorithm,
                measurements=measurements,
                qualitative_evaluations=evaluations,
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_code("spine-mri", "MRI of the spine"),
        imaging_measurements=groups,
    )
    sr = (_sr_document if fast else hd.sr.Comprehensive3DSR)(
        evidence=list(sources),
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=f"{name} {version} ROI classification"[:64],
    )
    _save(sr, path)
    return sr


def _sr_document(content: Any, **kwargs: Any) -> Any:
    """``highdicom.sr.Comprehensive3DSR(content=content, ...)`` as a dataset, without its cost
    of reading the content tree back: it deep-copies the tree, parses the copy into content
    items and searches it for image references (~2/3 of building the SR, growing with the
    ROIs). The document is built around the root container without its children, which are
    attached afterwards; the dataset, written or compared, is the same (a test checks),
    because highdicom copies the root's elements in as they are, and this tree references
    no image (its ROIs are 3D points on the frame of reference), so the evidence found is
    the same. Only the object's parsed ``content`` property holds the root alone."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    stub = Dataset()
    for elem in content:
        if elem.keyword != "ContentSequence":
            stub.add(elem)
    stub.ContentSequence = []
    sr = hd.sr.Comprehensive3DSR(content=stub, **kwargs)
    sr.ContentSequence = content.ContentSequence
    return sr


def _unit_uint8_segmentation() -> Any:
    """``highdicom.seg.Segmentation`` taking FRACTIONAL values as uint8 already scaled to
    ``max_fractional_value`` (255): the saliency stacks as they are.

    Given floats in [0, 1], highdicom sorts the whole (slices, rows, columns, ROIs) array
    (``np.unique``) to check the range, and scales every frame back to uint8; both are ~1/3
    of building a SEG. Values that come from uint8 need neither; the frames, the overlap
    attribute and every other element are those highdicom writes from ``stack / 255`` (a
    test compares the two). Plain highdicom where its internals differ."""
    import highdicom as hd

    base = hd.seg.Segmentation
    if not all(hasattr(base, n) for n in ("_check_and_cast_pixel_array", "_get_segment_pixel_array")):
        return None

    class UnitUint8Segmentation(base):  # type: ignore[misc, valid-type]  # base is a variable: highdicom's class, checked above
        @classmethod
        def _check_and_cast_pixel_array(
            cls, pixel_array: Any, segment_numbers: np.ndarray, segmentation_type: Any, dtype: type
        ) -> tuple[Any, Any]:
            if (
                segmentation_type != hd.seg.SegmentationTypeValues.FRACTIONAL
                or pixel_array.dtype != np.uint8
                or pixel_array.ndim != 4
                or pixel_array.shape[-1] != len(segment_numbers)
            ):
                raise ValueError(
                    "unit-uint8 segmentation: a FRACTIONAL uint8 (frames, rows, columns, segments) array"
                )
            overlap = hd.seg.SegmentsOverlapValues  # what highdicom infers for fractional segments
            return pixel_array, (overlap.NO if pixel_array.shape[-1] == 1 else overlap.UNDEFINED)

        @staticmethod
        def _get_segment_pixel_array(
            pixel_array: np.ndarray,
            segment_number: int,
            described_segment_numbers: Any,
            segmentation_type: Any,
            max_fractional_value: int,
            dtype: type,
        ) -> np.ndarray:
            return pixel_array[:, :, segment_number - 1]

    return UnitUint8Segmentation


def write_saliency_seg(
    path: Path,
    stack: np.ndarray,
    records: Sequence[Mapping[str, Any]],
    sources: Sequence[Any],
    task: str,
    model: Mapping[str, Any],
    series_number: int,
    fast: bool = True,
) -> Any:
    """One task's saliency maps (uint8 (I, J, K, R) on the reference grid, 255 = 1) as a
    FRACTIONAL Segmentation with one segment per ROI; ``sources`` are the reference series'
    slices in the grid's K order (``fast=False``: highdicom given floats, see
    :func:`_unit_uint8_segmentation`)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    name, version = str(model.get("name") or "spinelesion"), str(model.get("version") or "unknown")
    # grid (I = column, J = row, K = slice) -> frames (K, rows, columns, segments)
    pixels: np.ndarray = np.ascontiguousarray(stack.transpose(2, 1, 0, 3), dtype=np.uint8)
    seg_class = _unit_uint8_segmentation() if fast else None
    if seg_class is None:
        seg_class, pixels = hd.seg.Segmentation, pixels.astype(np.float32) / 255.0
    algorithm = hd.AlgorithmIdentificationSequence(
        name=name, version=version, family=codes.cid7162.ArtificialIntelligence
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=k + 1,
            segment_label=f"{rec['roi_id']} {task} saliency"[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=_code("saliency", "saliency map"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k, rec in enumerate(records)
    ]
    seg = seg_class(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=segments,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=name[:64],
        software_versions=version[:64],
        device_serial_number="0",
        max_fractional_value=255,
        series_description=f"{name} {task} saliency"[:64],
        omit_empty_frames=True,
    )  # a ROI covers a few slices: its other frames are not stored
    _save(seg, path)
    return seg


def write_study_dicom(
    folder: Path,
    records: Sequence[Mapping[str, Any]],
    reference_meta: Mapping[str, Any],
    other_series: Sequence[Mapping[str, Any]],
    stacks: Mapping[str, np.ndarray],
    model: Mapping[str, Any],
) -> list[str]:
    """SR and saliency segmentations of one DICOM study; returns the files written (relative)."""
    files = list(reference_meta.get("files") or [])
    if reference_meta.get("format") != "dicom" or not files:
        return []
    hd_log = logging.getLogger("highdicom")
    if (
        hd_log.level == logging.NOTSET
    ):  # its INFO lines ("copy attributes of module ...") x 3 objects per study
        hd_log.setLevel(logging.WARNING)
    sources = _source_datasets(files)
    if len(sources) == 1 and int(getattr(sources[0], "NumberOfFrames", 1) or 1) > 1:
        log.warning(
            "%s: the reference series is one multi-frame file; DICOM outputs are written for "
            "single-frame series only",
            folder.name,
        )
        return []
    evidence = list(sources)
    for meta in other_series:  # every series used is evidence, the reference series first
        evidence.extend(_source_datasets(list(meta.get("files") or [])[:1]))
    written = []
    write_sr(folder / "dicom" / "sr.dcm", records, evidence, model)
    written.append("dicom/sr.dcm")
    for k, (task, stack) in enumerate(stacks.items()):
        if stack.shape[-1] and stack.shape[:3] == (
            int(sources[0].Columns),
            int(sources[0].Rows),
            len(sources),
        ):
            write_saliency_seg(
                folder / "dicom" / f"saliency_{task}.dcm",
                stack,
                records,
                sources,
                task,
                model,
                series_number=9101 + k,
            )
            written.append(f"dicom/saliency_{task}.dcm")
    return written
