"""The predictor: a model folder in, per-study predictions, saliency NIfTI and PNGs out.

Built from a model folder alone (its ``metadata.json`` says how inputs must look). Per study,
four stages (:meth:`Predictor.predict_study`): prepare (read, check, resample onto the reference
grid), propose (scan mode's candidates or the given ROIs), classify and explain (batches of
ROIs: network, call policy, saliency pasted back onto the reference grid, the ROI's files),
write (maps, DICOM, markups, predictions.json last).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinelesion.config_schema import auto_flag
from spinelesion.data.dataset import roi_problems
from spinelesion.data.roi import RoiSpec
from spinelesion.formatting import printable
from spinelesion.inference.contrast import contrast_warnings
from spinelesion.inference.policy import CallPolicy
from spinelesion.inference.saliency import paste_box, saliency
from spinelesion.inference.scan import ScanConfig, neighbour_offsets, scan_study
from spinelesion.inference.writers import (
    hide_root,
    inside,
    safe_name,
    to_unit_uint8,
    write_predictions_json,
    write_unit_maps,
)
from spinelesion.labels import SEQUENCES, TASKS
from spinelesion.models.batch import (
    autocast_for,
    channels_last_helps,
    prepare_for_device,
    resolve_device,
    to_device,
)
from spinelesion.models.networks import tempered_softmax
from spinelesion.models.tta import forward_tta, mirrors_from_meta, mirrors_of

log = logging.getLogger(__name__)


@dataclass
class RoiRequest:
    roi_id: str
    center_lps: np.ndarray
    source: str = "given"  # "given" | "scan"


@dataclass
class StudyInput:
    """One study to predict: an id, where it came from, how to read it, and optional ROIs."""

    study_id: str
    source: str
    load: Callable[[], Any]  # -> spinelesion.io.study.Study
    rois: list[RoiRequest] = field(default_factory=list)

    def __post_init__(
        self,
    ) -> None:  # an id from a non-UTF-8 file name stays writable (source keeps the path)
        self.study_id = printable(self.study_id)


@dataclass
class StudyResult:
    study_id: str
    folder: Path
    rois: list[dict[str, Any]]
    warnings: list[str]  # degradations (a sequence left out, a changed grid...): console, run.json, CSV
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)  # "note: ..." (no degradation): predictions.json, run.json


@dataclass
class PredictorConfig:
    device: str = "auto"
    amp: bool | str = "auto"
    compile: bool = False
    threads: int | None = None
    batch_size: int = 32
    tta: bool | str = "auto"  # left-right mirroring of ROIs: auto = the model's metadata.json tta
    saliency_method: str = "occlusion"  # the one that points at the lesion (configs/predict.yaml)
    target_layer: str | None = None
    png: bool = True
    scan: ScanConfig = field(default_factory=ScanConfig)
    write_maps: bool = True
    source_paths: bool = False  # full input paths in outputs (PACS export paths often hold patient names)
    input_root: str | None = None  # warnings show paths below it relative to it (None: as they come)
    markups: bool = True  # rois.mrk.json per study: the ROIs with their labels, for 3D Slicer
    dicom: bool | str = (
        "auto"  # SR + saliency Parametric Maps for DICOM studies: auto (when highdicom is installed) | true | false
    )


@dataclass
class StudyJob:
    """One study between the predictor's stages: what was read and prepared, the ROIs proposed,
    what was answered and written, and the study's warnings, notes and timings. A sink (see
    :attr:`Predictor.sinks`) reads it and may add warnings or notes."""

    item: StudyInput
    study: Any  # spinelesion.io.study.Study
    array: np.ndarray  # (channels, X, Y, Z) on the reference grid
    affine: np.ndarray
    available: np.ndarray
    ref_name: str
    warnings: list[str]
    notes: list[str]
    timings: dict[str, float]
    folder: Path = Path()
    rois: list[RoiRequest] = field(default_factory=list)
    scan: Any = None  # scan mode's result when it proposed the ROIs
    stacks: dict[str, np.ndarray] = field(default_factory=dict)  # task -> every ROI's saliency map
    records: list[dict[str, Any]] = field(default_factory=list)


class Predictor:
    def __init__(
        self,
        net: torch.nn.Module,
        meta: Mapping[str, Any],
        cfg: PredictorConfig | None = None,
        locator: Any = None,
    ):
        """``locator``: the model folder's spine locator (:func:`spinelesion.localize.model.load_locator`),
        which limits scan mode to the spine; None: scans search the whole field of view."""
        cfg = cfg or PredictorConfig()
        self.locator = locator
        # auto / on / off read once (a copy: the caller's config stays as given); every later
        # test of them is `is True`, `is False` or "auto"
        self.cfg = replace(
            cfg,
            amp=auto_flag(cfg.amp, "amp"),
            tta=auto_flag(cfg.tta, "tta"),
            dicom=auto_flag(cfg.dicom, "output.dicom"),
        )
        if self.cfg.threads:
            torch.set_num_threads(int(self.cfg.threads))
        self.device = resolve_device(self.cfg.device)
        self.channels_last = channels_last_helps(self.device)
        self.meta = dict(meta)
        self.policy = CallPolicy(meta, self.cfg.scan)  # how probabilities become labels (policy.py)
        self.tta = tta_mirrors(self.cfg.tta, meta)
        if self.cfg.scan.lesion_rates and not meta.get("sampling_prior"):
            log.warning(
                "scan.lesion_rates: the model records no sampling prior (metadata sampling_prior); calls as trained"
            )
        self.spec = RoiSpec.from_config(meta["roi"], "model metadata roi")
        self.reference = str(meta.get("reference", "auto"))
        self.net = prepare_for_device(net, self.device)
        # Saliency needs gradients through the eager module; compile only the plain forward.
        self.forward = (
            torch.compile(self.net) if (self.cfg.compile and self.device.type == "cuda") else self.net
        )
        # The network registry names each backbone's stages and its default saliency stage.
        self.target_layer = (
            self.cfg.target_layer or meta.get("saliency_layer") or str(getattr(net, "saliency_layer", ""))
        )
        self.model_info = {
            "name": meta.get("name"),
            "version": meta.get("version"),
            "weights_sha256": meta.get("weights_sha256"),
        }
        # A study's writers, in order, each (name, fn(job)); predictions.json comes after them all.
        # Append your own (e.g. a PACS push): ``predictor.sinks.append(("mine", fn))``.
        self.sinks: list[tuple[str, Callable[[StudyJob], None]]] = [
            ("maps", self._write_maps),
            *([("dicom", self._write_dicom_sink)] if self.cfg.dicom is not False else []),
            *([("markups", self._write_markups)] if self.cfg.markups else []),
        ]

    @classmethod
    def from_model_dir(
        cls, model_dir: str | os.PathLike[str], cfg: PredictorConfig | None = None
    ) -> Predictor:
        from spinelesion.localize.model import load_locator
        from spinelesion.models.folder import load_model_folder, resolve_model

        net, meta = load_model_folder(model_dir)
        return cls(net, meta, cfg, load_locator(resolve_model(model_dir), meta))

    def scan(
        self,
        array: np.ndarray,
        affine: np.ndarray,
        available: np.ndarray,
        progress: Callable[[int, int], None] | None = None,
        cfg: ScanConfig | None = None,
    ) -> tuple[Any, list[str], list[str]]:
        """Scan mode on one prepared study, within the spine locator's region when the model has a
        locator and ``scan.spine_locator`` is on: (ScanResult, warnings, notes). Every scan of a
        model goes through here (prediction, mining, the release's checks); ``cfg``: other scan
        settings than the predictor's."""
        cfg = cfg or self.cfg.scan
        warnings: list[str] = []
        notes: list[str] = []
        region = None
        if self.locator is not None and cfg.spine_locator:
            from spinelesion.localize.region import locate

            mask, mask_affine, found_ml = locate(self.locator, array, affine, available, self.device)
            if mask is None:
                warnings.append(
                    f"spine locator found {found_ml:.1f} ml of vertebral body (under "
                    f"{self.locator.settings.min_body_ml:g} ml): scan searched the whole field of view"
                )
            else:
                region = (mask, mask_affine)
                notes.append(f"scan searched near the spine: {found_ml:.0f} ml of vertebral body found")
        result = scan_study(self.net, array, affine, available, self.spec, cfg, self.device, progress, region)
        return result, warnings, notes

    # -- pieces that tests and the benchmark call one by one -----------------------------------
    def prepare(self, study: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        from spinelesion.io.resample import to_reference

        array, affine, available, ref_name = to_reference(study, reference=self.reference)
        return np.asarray(array, np.float32), np.asarray(affine), np.asarray(available, bool), ref_name

    def crops(
        self, array: np.ndarray, affine: np.ndarray, available: np.ndarray, centers: Sequence[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's inputs: the MONAI transforms that make the training ROIs (context box,
        normalised over it, then its centre), on the study as prepared here (kept at float32:
        the training cache's float16 rounding is a storage choice, not a step of the data)."""
        from spinelesion.data.monai_transforms import study_image

        image = study_image(array, affine)
        out = self._roi_transforms({"image": image, "available": available, "rois": list(centers)})
        return torch.as_tensor(out["image"]).contiguous(), out["available"]

    @functools.cached_property
    def _roi_transforms(self) -> Callable[[dict[str, Any]], dict[str, Any]]:
        from monai.transforms import Compose

        from spinelesion.data.monai_transforms import CropRoisd, RobustUnitRanged, RoiCenterCropd

        return Compose(
            [CropRoisd(self.spec, context=True), RobustUnitRanged(), RoiCenterCropd(self.spec.shape)]
        )

    def classify(self, images: torch.Tensor, flags: torch.Tensor) -> dict[str, np.ndarray]:
        """Temperature-scaled probabilities per task, batched, averaged over the mirrors ``self.tta``."""
        temps = self.net.get_buffer("temperature").detach().float()
        out: dict[str, list[np.ndarray]] = {t: [] for t in TASKS}
        with torch.inference_mode():
            for s in range(0, images.shape[0], self.cfg.batch_size):
                x = to_device(images[s : s + self.cfg.batch_size], self.device, self.channels_last)
                f = flags[s : s + self.cfg.batch_size].to(self.device)
                with autocast_for(self.device, self.cfg.amp):
                    logits = forward_tta(self.forward, x, f, self.tta)
                for task, p in zip(TASKS, tempered_softmax(logits, temps), strict=True):
                    out[task].append(p.cpu().numpy())
        return {t: np.concatenate(v) for t, v in out.items()}

    def mean_over_neighbours(
        self,
        probs: Mapping[str, np.ndarray],
        array: np.ndarray,
        affine: np.ndarray,
        available: np.ndarray,
        centers: Sequence[np.ndarray],
        shift_mm: float,
    ) -> dict[str, np.ndarray]:
        """``probs`` (the answers at ``centers``) averaged with the answers at the six points
        ``shift_mm`` away along each axis: how scan candidates are classified (scan.py)."""
        offsets = neighbour_offsets(shift_mm)
        total = {t: np.asarray(p, np.float64).copy() for t, p in probs.items()}
        for offset in offsets:  # one shift at a time: memory stays that of one batch of crops
            images, flags = self.crops(array, affine, available, [np.asarray(c) + offset for c in centers])
            for t, p in self.classify(images, flags).items():
                total[t] += p
        return {t: (v / (1 + len(offsets))).astype(np.float32) for t, v in total.items()}

    def saliency(
        self,
        images: torch.Tensor,
        flags: torch.Tensor,
        probs: Mapping[str, np.ndarray],
        labels: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Maps on the ROI grid (R, *roi_shape) in [0, 1] for the predicted class of each task
        (``labels``, class indices per task; default: the decision rule's)."""
        chosen = labels if labels is not None else self.policy.labels(probs)
        classes = {t: np.asarray(chosen[t]).tolist() for t in TASKS}
        out: dict[str, list[np.ndarray]] = {t: [] for t in TASKS}
        for s in range(0, images.shape[0], self.cfg.batch_size):
            x = to_device(images[s : s + self.cfg.batch_size], self.device, self.channels_last)
            f = flags[s : s + self.cfg.batch_size].to(self.device)
            maps = saliency(
                self.net,
                x,
                f,
                {t: c[s : s + self.cfg.batch_size] for t, c in classes.items()},
                method=self.cfg.saliency_method,
                target_layer=self.target_layer,
            )
            for t in TASKS:
                out[t].append(maps[t].cpu().numpy())
        return {t: np.concatenate(v) for t, v in out.items()}

    # -- one study end to end -------------------------------------------------------------------
    def predict_study(
        self,
        item: StudyInput,
        output_dir: str | Path,
        progress: Callable[[int, int], None] | None = None,
    ) -> StudyResult:
        """One study through the stages: prepare (read, check, resample), propose (scan mode's
        candidates, or the given ROIs that can be answered), classify and explain (one batch at a
        time, so memory stays bounded however many ROIs a study has), write. ``progress`` is
        called with (windows classified, windows planned so far) while scan mode runs."""
        job = self._prepare_study(item)
        job.folder = inside(Path(output_dir), safe_name(item.study_id))
        self._propose(job, progress)
        self._classify_and_explain(job)
        self._write_study(job)
        return StudyResult(item.study_id, job.folder, job.records, job.warnings, job.timings, job.notes)

    # -- stages ------------------------------------------------------------------------------
    def _prepare_study(self, item: StudyInput) -> StudyJob:
        """Read, check (blank, NaN, degenerate or mislabelled sequences), resample onto the reference grid."""
        from spinelesion.inference.guards import check_study
        from spinelesion.io.limits import ResourceLimitError, check_study_bytes
        from spinelesion.io.resample import REFERENCE_ORDER, choose_reference
        from spinelesion.io.study import StudyError

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        study = item.load()
        timings["read"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        warnings = list(getattr(study, "warnings", []))
        warnings.extend(check_study(study))  # drops blank / NaN / degenerate sequences, or refuses
        warnings.extend(contrast_warnings(study.volumes))  # a t2 that looks fat-suppressed, a t1 like a T2
        ref_vol = study.volumes[choose_reference(list(study.volumes), self.reference)]
        try:  # the reference stack about to be built: every sequence resampled onto the reference grid
            check_study_bytes(item.study_id, [], channels=len(SEQUENCES) + 1, reference=ref_vol.shape)
        except ResourceLimitError as exc:
            raise StudyError(item.study_id, str(exc)) from exc
        array, affine, available, ref_name = self.prepare(study)
        notes = []  # in predictions.json, not counted as a degradation: a study need not have every sequence
        missing = [s for s, a in zip(SEQUENCES, available, strict=True) if not a]
        if missing:
            notes.append(f"missing sequence(s): {', '.join(missing)} (zero channel, flagged to the model)")
        preferred = self.reference if self.reference != "auto" else REFERENCE_ORDER[0]
        dropped = any(w.startswith(f"{preferred}:") and w.endswith("sequence left out") for w in warnings)
        if ref_name != preferred and dropped:
            warnings.append(
                f"reference grid changed: {preferred} was left out, so every output is on the "
                f"{ref_name} grid instead"
            )
        timings["preprocess"] = time.perf_counter() - t0
        return StudyJob(item, study, array, affine, available, ref_name, warnings, notes, timings)

    def _propose(self, job: StudyJob, progress: Callable[[int, int], None] | None) -> None:
        """The ROIs to answer: scan mode's candidates when none were given, else the given ones
        that can be answered (none from padding or a blank crop, as evaluate does)."""
        rois = list(job.item.rois)
        t_scan = 0.0
        if not rois:
            t0 = time.perf_counter()
            result, warnings, notes = self.scan(job.array, job.affine, job.available, progress)
            job.warnings.extend(warnings)
            job.notes.extend(notes)
            t_scan = time.perf_counter() - t0
            job.timings.update({f"scan_{k}": v for k, v in result.timings.items()})
            rois = [
                RoiRequest(f"scan{i + 1:02d}", c, "scan") for i, (c, _score) in enumerate(result.candidates)
            ]
            job.scan = result
            if not rois:
                job.warnings.append(
                    f"scan found no ROI above p(lesion or fracture) >= {self.cfg.scan.threshold}"
                )
        else:
            problems = roi_problems(
                job.array, job.affine, job.available, [r.center_lps for r in rois], self.spec
            )
            for r, why in zip(rois, problems, strict=True):
                if why:
                    job.warnings.append(
                        f"ROI {r.roi_id} at {np.round(r.center_lps, 1).tolist()} mm not answered: {why}"
                    )
            rois = [r for r, why in zip(rois, problems, strict=True) if not why]
        job.rois = rois
        job.timings["network"] = t_scan

    def _classify_and_explain(self, job: StudyJob) -> None:
        """Per batch of ROIs: crop, classify (scan candidates: the mean answer around each peak,
        labelled by the call policy), saliency, and the ROI's own files."""
        ref_shape = job.array.shape[1:]
        # Every ROI's map of a task in one uint8 volume stack, written once: one file per task
        # instead of two float32 files per ROI (writing them was 3/4 of a study's time).
        job.stacks = (
            {t: np.zeros((*ref_shape, len(job.rois)), np.uint8) for t in TASKS}
            if self.cfg.saliency_method != "none" and job.rois
            else {}
        )
        timings = job.timings
        chunk = max(1, int(self.cfg.batch_size))
        for s in range(0, len(job.rois), chunk):
            part = job.rois[s : s + chunk]
            centres = [r.center_lps for r in part]
            t0 = time.perf_counter()
            images, flags = self.crops(job.array, job.affine, job.available, centres)
            timings["preprocess"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            probs = self.classify(images, flags)
            if job.scan is not None:
                probs = self.mean_over_neighbours(
                    probs, job.array, job.affine, job.available, centres, self.cfg.scan.classify_shift_mm
                )
                labels = self.policy.scan_labels(probs)
            else:
                labels = self.policy.labels(probs)
            timings["network"] += time.perf_counter() - t0
            maps: dict[str, np.ndarray] = {}
            if self.cfg.saliency_method != "none":
                t0 = time.perf_counter()
                maps = self.saliency(images, flags, probs, labels)
                timings["saliency"] = timings.get("saliency", 0.0) + time.perf_counter() - t0
            del images, flags
            t0 = time.perf_counter()
            job.records.extend(
                self._write_rois(
                    job.folder,
                    part,
                    probs,
                    labels,
                    maps,
                    job.array,
                    job.affine,
                    job.available,
                    ref_shape,
                    job.stacks,
                    offset=s,
                )
            )
            timings["write"] = timings.get("write", 0.0) + time.perf_counter() - t0

    def _write_study(self, job: StudyJob) -> None:
        """The study's files through :attr:`sinks` (saliency and scan maps, DICOM, markups, your
        own), then predictions.json last: the study's other files are complete when it appears."""
        job.notes.append(
            f"reference grid: {job.ref_name} as read from disk (saliency NIfTI share its shape and affine)"
        )
        if job.stacks:
            job.notes.append(
                "saliency: one NIfTI per task holding every ROI's map (uint8 scaled to [0, 1]); "
                "a ROI's map is volume 'saliency_volume' (0-based, 4th axis) of its file"
            )
        for name, sink in self.sinks:
            t0 = time.perf_counter()
            sink(job)
            # DICOM timed apart: highdicom's pure-Python encoding dominates it
            key = "dicom" if name == "dicom" else "write"
            job.timings[key] = job.timings.get(key, 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        inputs = {
            s: (self._source(job.study.volumes[s].meta.get("source")) if s in job.study.volumes else None)
            for s in SEQUENCES
        }
        if self.cfg.input_root is not None:  # a warning may quote an input path (patient names)
            job.warnings = [hide_root(w, self.cfg.input_root) for w in job.warnings]
        # The contract has one list: degradations first, then the notes, each marked "note: " so a
        # reader (and run.json, which counts them apart) tells the two kinds the same way.
        job.notes = [f"note: {n}" for n in job.notes]
        write_predictions_json(
            job.folder / "predictions.json",
            job.item.study_id,
            self.model_info,
            inputs,
            job.records,
            job.warnings + job.notes,
        )
        job.timings["write"] = job.timings.get("write", 0.0) + time.perf_counter() - t0

    # -- sinks -------------------------------------------------------------------------------
    def _write_maps(self, job: StudyJob) -> None:
        """Every ROI's saliency map, one NIfTI per task; scan mode's probability maps."""
        for task, stack in job.stacks.items():
            write_unit_maps(inside(job.folder, saliency_file(task)), stack, job.affine)
        if job.scan is not None and self.cfg.write_maps:
            self._write_scan_maps(job.folder, job.scan, job.affine, job.array.shape[1:])

    def _write_dicom_sink(self, job: StudyJob) -> None:
        """DICOM SR and Parametric Maps beside a DICOM study (its warnings join the study's)."""
        if job.records:
            job.warnings.extend(
                self._write_dicom(job.folder, job.study, job.ref_name, job.records, job.stacks)
            )

    def _write_markups(self, job: StudyJob) -> None:
        """The ROIs and their labels as a 3D Slicer point list."""
        if job.records:
            from spinelesion.inference.markups import write_markups

            write_markups(job.folder / "rois.mrk.json", job.records, name=f"{job.folder.name} ROIs")

    def _write_dicom(
        self,
        folder: Path,
        study: Any,
        ref_name: str,
        records: list[dict[str, Any]],
        stacks: Mapping[str, np.ndarray],
    ) -> list[str]:
        """SR and saliency Parametric Maps when the reference series is DICOM; problems become warnings."""
        from spinelesion.inference import dicom_out

        ref_meta = study.volumes[ref_name].meta
        if ref_meta.get("format") != "dicom":
            return []
        if not dicom_out.available():
            if self.cfg.dicom is True:
                return [
                    "DICOM outputs not written: highdicom is not installed (pip install 'spinelesion[dicom-out]')"
                ]
            return []
        others = [
            v.meta for s, v in study.volumes.items() if s != ref_name and v.meta.get("format") == "dicom"
        ]
        try:
            dicom_out.write_study_dicom(
                folder,
                records,
                ref_meta,
                others,
                stacks,
                self.model_info,
                saliency_method=self.cfg.saliency_method,
                roi_extent_mm=tuple(float(v) for v in self.spec.extent_mm),
            )
        except Exception as exc:  # noqa: BLE001 - the study's other outputs stand; the reason is reported
            log.debug("DICOM outputs failed", exc_info=True)
            return [f"DICOM outputs not written: {type(exc).__name__}: {exc}"]
        return []

    def _source(self, source: object) -> str:
        """An input's path as outputs may show it: the file or folder name unless ``source_paths``."""
        text = str(source)
        return text if self.cfg.source_paths else Path(text).name

    def _write_rois(
        self,
        folder: Path,
        rois: Sequence[RoiRequest],
        probs: Mapping[str, np.ndarray],
        labels: Mapping[str, np.ndarray],
        maps: Mapping[str, np.ndarray],
        array: np.ndarray,
        affine: np.ndarray,
        available: np.ndarray,
        ref_shape: tuple[int, ...],
        stacks: Mapping[str, np.ndarray],
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        from spinelesion.inference.guards import checked_probabilities
        from spinelesion.inference.overlay import write_roi_png

        records = []
        tasks = list(maps)
        by_roi = np.stack([maps[t] for t in tasks], axis=1) if tasks else None  # (R, task, X, Y, Z)
        for i, r in enumerate(rois):
            rid = safe_name(r.roi_id)
            rec: dict[str, Any] = {
                "roi_id": r.roi_id,
                "center_lps_mm": [float(v) for v in r.center_lps],
                "source": r.source,
            }
            for task, classes in TASKS.items():
                p = checked_probabilities(task, r.roi_id, probs[task][i])
                rec[task] = {
                    "label": classes[int(labels[task][i])],
                    "probabilities": {c: float(v) for c, v in zip(classes, p, strict=True)},
                }
            rec["saliency"] = {}
            roi_affine = self.spec.affine(r.center_lps)
            # only the ROI's box of the study grid is sampled (every task's map at once); the rest stays 0
            box = paste_box(by_roi, roi_affine, affine, ref_shape, i) if by_roi is not None else None
            for k, task in enumerate(tasks):
                if box is not None:
                    index: tuple[slice | int, ...] = (*box[0], offset + i)
                    stacks[task][index] = to_unit_uint8(box[1][k])
                rec["saliency"][task] = saliency_file(task)
            if maps:
                rec["saliency_volume"] = offset + i
            if self.cfg.png and maps:
                write_roi_png(
                    inside(folder, f"png/{rid}.png"),
                    array,
                    affine,
                    available,
                    r.center_lps,
                    self.spec,
                    {t: maps[t][i] for t in maps},
                    rec,
                    title=f"{folder.name} / {r.roi_id}",
                    method=self.cfg.saliency_method,
                )
            records.append(rec)
        return records

    def _write_scan_maps(
        self, folder: Path, scan: Any, affine: np.ndarray, ref_shape: tuple[int, ...]
    ) -> None:
        from spinelesion.data.roi import sample_grid

        for task, classes in TASKS.items():
            on_ref = sample_grid(scan.probabilities[task], scan.affine, affine, ref_shape)[0].numpy()
            for c, cls in enumerate(classes):
                write_unit_maps(
                    inside(folder, f"probability/{task}_{cls}.nii.gz"), to_unit_uint8(on_ref[c]), affine
                )


def tta_mirrors(setting: bool | str, meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The mirrors to classify with: the model's (``auto``), none (false) or left-right (true).

    ``auto`` keeps the numbers the model was calibrated and evaluated with; a model from before
    mirroring has none."""
    flag = auto_flag(setting, "tta")
    if flag == "auto":
        return mirrors_from_meta(meta)
    return mirrors_of(["lr"] if flag else None)


def saliency_file(task: str) -> str:
    """Where a study's saliency maps of ``task`` go, relative to its folder."""
    return f"saliency/{task}.nii.gz"
