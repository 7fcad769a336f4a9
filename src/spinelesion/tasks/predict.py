"""Prediction: predictions and saliency for new studies, straight from a DICOM export.

:func:`predict` is what ``spinelesion-predict`` runs (exit codes: see that module).
Studies predicted with warnings (a sequence left out, a changed reference grid...) still
count as predicted; their warnings are on the console, in ``run.json`` and in the
``warnings`` column of ``predictions.csv``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from spinelesion.formatting import printable
from spinelesion.inference.markups import is_markups_path
from spinelesion.tasks.arguments import ArgumentError, check_predict_args, parse_rois, scan_settings

log = logging.getLogger("spinelesion.predict")


class WindowBar:
    """A second progress bar, under the studies', for scan mode's windows inside one study (the
    total grows as refinement plans more windows); opened on the first report, so a study with
    given ROIs shows none."""

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self.bar: Any = None

    def __call__(self, done: int, planned: int) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=planned, desc="scan windows", unit="window", leave=False, disable=self.disable
            )
        self.bar.total = planned
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def predictor_config(cfg: DictConfig) -> Any:
    """The predictor's settings from ``configs/predict.yaml``'s sections, each checked for
    unknown keys where it is read (:func:`spinelesion.config_schema.validated`)."""
    from spinelesion.config_schema import PredictorSettings, SaliencySettings, validated
    from spinelesion.inference.predictor import PredictorConfig
    from spinelesion.inference.writers import input_root

    run = validated(
        PredictorSettings,
        {k: cfg.get(k) for k in ("device", "amp", "compile", "threads", "batch_size", "tta")},
        "predict",
    )
    scan, write_maps = scan_settings(cfg)  # write_maps: the predictor's, not the scan's
    saliency = validated(SaliencySettings, cfg.saliency, "saliency")
    output = output_settings(cfg)
    return PredictorConfig(
        device=str(run.device),
        amp=run.amp,
        compile=bool(run.compile),
        threads=run.threads,
        batch_size=int(run.batch_size),
        tta=run.tta,
        saliency_method=str(saliency.method),
        target_layer=saliency.target_layer,
        png=bool(saliency.png),
        scan=scan,
        write_maps=write_maps,
        source_paths=bool(output.source_paths),
        input_root=None if output.source_paths else str(input_root(str(cfg.input))),
        markups=bool(output.markups),
        dicom=output.dicom,
    )


def output_settings(cfg: DictConfig) -> Any:
    from spinelesion.config_schema import OutputSettings, validated

    return validated(OutputSettings, cfg.get("output"), "output")


def source_paths(cfg: DictConfig) -> bool:
    return bool(output_settings(cfg).source_paths)


def shown_path(cfg: DictConfig, path: object) -> str:
    """A path as outputs show it: in full with ``output.source_paths=true``, else relative to the
    input (the input itself, or a path elsewhere: its name)."""
    from spinelesion.inference.writers import input_root, relative_to_root

    shown = str(path) if source_paths(cfg) else relative_to_root(str(path), input_root(str(cfg.input)))
    return printable(shown)  # a non-UTF-8 file name as \xff escapes


def shown_text(cfg: DictConfig, text: str) -> str:
    """A failure reason or warning as outputs show it: input paths in it as :func:`shown_path` would."""
    from spinelesion.inference.writers import hide_root, input_root

    return text if source_paths(cfg) else hide_root(text, input_root(str(cfg.input)))


def unique_labels(labels: list[str]) -> list[str]:
    """Point labels as ROI ids: repeated ones numbered, so that every ROI keeps its own files."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return out


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run every study of ``cfg.input``; returns the run summary (also written as run.json)."""
    from spinelesion.inference.run_lock import output_folder
    from spinelesion.io.limits import configure

    check_predict_args(cfg)
    if Path(str(cfg.input)).resolve() == Path(str(cfg.output_dir)).resolve():
        raise ArgumentError(
            "output_dir",
            str(cfg.output_dir),
            "a folder other than the input folder (outputs "
            "would be mixed with the studies; a subfolder is fine)",
        )
    limits = cfg.get("limits") or {}
    configure(limits.get("max_study_gb"), limits.get("header_mb"))
    with output_folder(cfg.output_dir, "spinelesion-predict") as out, _logs_hide_input(cfg):
        return _predict(cfg, out)


class _HideInput(logging.Filter):
    """Input paths in log records as outputs show them (relative to the input): predict.log and
    the console quoted full PACS export paths, which often hold patient names."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = shown_text(self.cfg, message)
        if shown != message:
            record.msg, record.args = shown, None
        return True


@contextlib.contextmanager
def _logs_hide_input(cfg: DictConfig) -> Iterator[None]:
    """With ``output.source_paths=false``, every log handler hides the input's path for the run."""
    if source_paths(cfg):
        yield
        return
    hide = _HideInput(cfg)
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(hide)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(hide)


RUN_FILES = ("failed_studies.csv", "run.json")
"""Written at the end of a run: checked at its start (predictions.csv and .partial by the cohort)."""


def _predict(cfg: DictConfig, out: Path) -> dict[str, Any]:
    from spinelesion.atomic import refuse_symlinks, write_json
    from spinelesion.inference.cohort import CohortOutput, select_part
    from spinelesion.inference.inputs import discover_inputs
    from spinelesion.inference.predictor import Predictor
    from spinelesion.inference.writers import CSV_HEADER, roi_csv_rows, safe_name, write_csv
    from spinelesion.localize.model import load_locator
    from spinelesion.models.folder import load_model_folder, resolve_model

    for name in RUN_FILES:  # a link there stops the run now, not after every study was predicted
        refuse_symlinks(out / name)
    verify = cfg.get("verify_weights")
    verify = None if verify is None else bool(verify)
    net, meta = load_model_folder(cfg.model_dir, verify=verify)
    locator = load_locator(resolve_model(cfg.model_dir), meta, verify=verify)
    predictor = Predictor(net, meta, predictor_config(cfg), locator)
    rois = parse_rois(cfg.rois)
    roi_labels = None
    if is_markups_path(cfg.rois):  # Slicer point labels name the ROIs
        from spinelesion.inference.markups import read_markups

        roi_labels = unique_labels(read_markups(str(cfg.rois))[1])
    overrides = cast(dict[str, str], OmegaConf.to_container(cfg.sequences)) if cfg.sequences else {}
    skipped: list[tuple[Path, str]] = []
    items, failures = discover_inputs(
        cfg.input,
        rois,
        overrides,
        str(cfg.nifti_sequence),
        exclude=[out],
        skipped=skipped,
        progress=bool(cfg.get("progress", True)),
    )
    if roi_labels:
        for it in items:
            for r, label in zip(it.rois, roi_labels, strict=False):
                r.roi_id = label
    num_parts, part_id = int(cfg.get("num_parts", 1)), int(cfg.get("part_id", 0))
    if num_parts > 1:  # by a hash of the study id: the parts' union is the whole cohort, on any machine
        items = select_part(items, "study_id", num_parts, part_id)
        failures = select_part(failures, "study_id", num_parts, part_id)
        log.info("part %d of %d: %d study(ies)", part_id, num_parts, len(items))
    cohort = CohortOutput(out, "predictions.csv", CSV_HEADER, resume=bool(cfg.get("resume", False)))
    failed = [
        {"study_id": f.study_id, "source": shown_path(cfg, f.source), "reason": shown_text(cfg, f.reason)}
        for f in failures
    ]
    results = []
    resumed: list[str] = []
    log.info("%d study(ies) to predict on %s with %s", len(items), predictor.device, cfg.model_dir)
    from tqdm.auto import tqdm

    show = bool(cfg.get("progress", True))
    for item in tqdm(items, desc="studies", unit="study", disable=not show):
        if cohort.skip(safe_name(item.study_id)):
            resumed.append(item.study_id)
            continue
        start = time.perf_counter()
        windows = WindowBar(disable=not show)
        try:
            res = predictor.predict_study(item, cohort.staging, progress=windows)
            cohort.destinations(res.folder)  # a symbolic link where the study goes fails the study
        except Exception as exc:  # noqa: BLE001 - one bad study is reported, the rest go on
            cohort.discard(safe_name(item.study_id))
            reason = printable(shown_text(cfg, f"{type(exc).__name__}: {exc}"))
            log.error("study %s (%s) failed: %s", item.study_id, shown_path(cfg, item.source), reason)
            log.debug("%s", traceback.format_exc())
            failed.append(
                {"study_id": item.study_id, "source": shown_path(cfg, item.source), "reason": reason}
            )
            continue
        finally:
            windows.close()
        for w in res.warnings:
            log.warning("study %s: %s", item.study_id, w)
        cohort.append_rows(roi_csv_rows(item.study_id, res.rois, res.folder.name, res.warnings))
        cohort.commit(res.folder)
        results.append(
            {
                "study_id": item.study_id,
                "folder": res.folder.name,
                "rois": len(res.rois),
                "warnings": list(res.warnings),
                "notes": list(res.notes),
                "seconds": round(time.perf_counter() - start, 3),
                "timings": {k: round(v, 4) for k, v in res.timings.items()},
            }
        )
    cohort.close()
    write_csv(
        out / "failed_studies.csv",
        ["study_id", "source", "reason"],
        [[f["study_id"], f["source"], f["reason"]] for f in failed],
    )
    with_warnings = sum(1 for r in results if r["warnings"])
    summary = {
        "model": predictor.model_info,
        "weights_verified": bool(meta.get("weights_verified")),
        "device": str(predictor.device),
        "tta": list(predictor.tta),
        # Why a label may not be the most probable class: the fitted per-class offsets (given ROIs
        # and scan candidates), and the bar a scan candidate's p(lesion) must reach to be called.
        "decision": {
            "rule": predictor.policy.decision.to_json(),
            "scan_call_threshold": predictor.policy.scan_call_threshold(),
        },
        "input": shown_path(cfg, cfg.input),
        "counts": {
            "predicted": len(results),
            "with_warnings": with_warnings,
            "with_notes": sum(1 for r in results if r["notes"]),
            "failed": len(failed),
            "skipped_files": len(skipped),
        },
        "part": {"num_parts": num_parts, "part_id": part_id},
        "studies": results,
        "resumed": resumed,
        "failed": failed,
        "skipped_files": [{"path": shown_path(cfg, p), "reason": shown_text(cfg, why)} for p, why in skipped],
        "disclaimer": "demonstration model trained on synthetic data; not for clinical use",
    }
    write_json(out / "run.json", summary)
    log.info(
        "%d study(ies) predicted (%d with warnings), %d failed, %d file(s) skipped; outputs in %s",
        len(results),
        with_warnings,
        len(failed),
        len(skipped),
        out,
    )
    for f in failed:
        log.warning("failed: %s (%s): %s", f["study_id"], f["source"], f["reason"])
    return summary
