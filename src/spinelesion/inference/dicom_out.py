"""DICOM results for DICOM studies (highdicom): a TID 1500 measurement report and saliency parametric maps.

Per study, beside predictions.json:

- ``dicom/sr.dcm``: a Comprehensive 3D SR holding a TID 1500 Measurement Report with one
  measurement group per ROI: its centre as a 3D point on the reference series' frame of
  reference, both predicted labels as qualitative evaluations, every class probability as
  a measurement, and the model (name, version) as the algorithm; the source series are its
  evidence.
- ``dicom/saliency_<task>.dcm``: a Parametric Map per task on the reference series' own
  slices: the saliency in [0, 1] (each voxel the maximum over the ROIs, whose own maps are
  in the saliency NIfTI), with a real world value mapping that says it is saliency, not a
  finding, so it overlays the source series as a continuous map, not as a lesion.

Everything is built and written through highdicom's and pydicom's public API (issue 36: a
shortcut through library internals saved ~0.1 s a study; trust is worth more).
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
from spinelesion.inference.writers import UNIT_SCALE
from spinelesion.labels import TASKS

log = logging.getLogger(__name__)

SCHEME = "99SPINELESION"
MANUFACTURER = "spinelesion"
METHOD_NAMES = {"occlusion": "occlusion", "gradcam": "Grad-CAM"}
"""How each saliency method (``saliency.method``) is named in the maps' labels."""


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
        ds.save_as(tmp, enforce_file_format=True)
    return path


def _model_name(model: Mapping[str, Any]) -> tuple[str, str]:
    return str(model.get("name") or "spinelesion"), str(model.get("version") or "unknown")


def write_sr(
    path: Path,
    records: Sequence[Mapping[str, Any]],
    sources: Sequence[Any],
    model: Mapping[str, Any],
    series_number: int = 9100,
    *,
    roi_extent_mm: Sequence[float] | None = None,
) -> Any:
    """The TID 1500 measurement report of one study's ROIs; returns the dataset written.

    Each ROI is its centre, a 3D POINT: the box the model read around it is the same for
    every ROI (the model's input, ``roi_extent_mm``), not a delineation of anything found,
    so it is an algorithm parameter rather than a region or a size a viewer would draw or
    list as the finding's (docs/outputs.md)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    ref = sources[0]
    name, version = _model_name(model)
    parameters = None
    if roi_extent_mm is not None:
        x, y, z = (float(v) for v in roi_extent_mm)
        parameters = [f"ROI box {x:g} x {y:g} x {z:g} mm (L-R x A-P x S-I, LPS axes) centred on the point"]
    algorithm = hd.sr.AlgorithmIdentification(name=name, version=version, parameters=parameters)
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
    sr = hd.sr.Comprehensive3DSR(
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


def saliency_label(task: str, method: str | None) -> str:
    """What a saliency map is, in words (the maps' LUT explanation and content description)."""
    how = f" ({METHOD_NAMES.get(method, method)})" if method else ""
    return f"{task} saliency{how}, not a finding or probability"[:64]


def write_saliency_pm(
    path: Path,
    stack: np.ndarray,
    sources: Sequence[Any],
    task: str,
    model: Mapping[str, Any],
    series_number: int,
    *,
    method: str | None = None,
) -> Any:
    """One task's saliency (uint8 (I, J, K, R >= 1) on the reference grid, 255 = 1) as a Parametric
    Map of the maximum over the ROIs; ``sources`` are the reference series' slices in the
    grid's K order, one frame each (highdicom takes each frame's position from its slice)."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    name, version = _model_name(model)
    # One map per file, not one channel per ROI: frames of several channels share positions,
    # which highdicom's own get_volume refuses (a viewer cannot be relied on to overlay them).
    # The maximum is every ROI's map where boxes do not overlap; each ROI's own is in the NIfTI.
    combined = stack[..., 0].copy()
    for r in range(1, stack.shape[3]):  # ~10x faster than stack.max(axis=3) along the short last axis
        np.maximum(combined, stack[..., r], out=combined)
    # grid (I = column, J = row, K = slice) -> frames (K, rows, columns); uint16 because the
    # Parametric Map IOD has no 8-bit integer pixels; the stored steps are the NIfTI's (1/255).
    pixels = np.ascontiguousarray(combined.transpose(2, 1, 0), dtype=np.uint16)
    label = saliency_label(task, method)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="saliency",
        lut_explanation=label,
        unit=codes.UCUM.NoUnits,
        value_range=(0, UNIT_SCALE),
        slope=1.0 / UNIT_SCALE,
        intercept=0.0,
        quantity_definition=_code("saliency", "saliency map"),
    )
    pm = hd.pm.ParametricMap(
        source_images=list(sources),
        pixel_array=pixels,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=name[:64],
        software_versions=version[:64],
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[  # stored 0..255 shown as black..white
            hd.VOILUTTransformation(window_center=UNIT_SCALE / 2, window_width=UNIT_SCALE + 1)
        ],
        content_label="SALIENCY",
        content_description=label,
        series_description=f"{name} {task} saliency"[:64],
    )
    # Frame Anatomy (the spine, an unpaired structure): without a frame laterality the series
    # needs Laterality (Type 2C), which dciodvfy reports missing; highdicom writes neither.
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [hd.sr.CodedConcept.from_code(codes.SCT.Spine)]
    anatomy.FrameLaterality = "U"
    pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
    _save(pm, path)
    return pm


def write_study_dicom(
    folder: Path,
    records: Sequence[Mapping[str, Any]],
    reference_meta: Mapping[str, Any],
    other_series: Sequence[Mapping[str, Any]],
    stacks: Mapping[str, np.ndarray],
    model: Mapping[str, Any],
    *,
    saliency_method: str | None = None,
    roi_extent_mm: Sequence[float] | None = None,
) -> list[str]:
    """SR and saliency parametric maps of one DICOM study; returns the files written (relative).
    ``saliency_method`` names the maps' method in their labels, ``roi_extent_mm`` the ROI box
    in the SR (both left out when not given)."""
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
    write_sr(folder / "dicom" / "sr.dcm", records, evidence, model, roi_extent_mm=roi_extent_mm)
    written.append("dicom/sr.dcm")
    for k, (task, stack) in enumerate(stacks.items()):
        if stack.shape[-1] and stack.shape[:3] == (
            int(sources[0].Columns),
            int(sources[0].Rows),
            len(sources),
        ):
            write_saliency_pm(
                folder / "dicom" / f"saliency_{task}.dcm",
                stack,
                sources,
                task,
                model,
                series_number=9101 + k,
                method=saliency_method,
            )
            written.append(f"dicom/saliency_{task}.dcm")
    return written
