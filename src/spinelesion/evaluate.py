"""``spinelesion-evaluate``: a model folder (or checkpoint) on any contract manifest -> metrics.json + plots.

The manifest may come from anywhere (an external test set the model has never seen); its
studies are read, resampled and cropped exactly as the model's ``metadata.json`` says.
A study that cannot be read is skipped and listed in ``metrics.json`` under
``failed_studies``; the others are scored.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from spinelesion.atomic import atomic_path
from spinelesion.config_path import CONFIG_DIR

log = logging.getLogger("spinelesion.evaluate")


def load_model(model_dir: str | None, ckpt_path: str | None, verify: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """(network, metadata) from a model folder, or from a Lightning checkpoint when given."""
    from spinelesion.models.folder import load_checkpoint, load_model_folder

    if ckpt_path:
        net, meta = load_checkpoint(ckpt_path)
        hp = meta["hyper_parameters"]
        meta.update({"name": Path(ckpt_path).stem, "version": "checkpoint", "roi": hp.get("roi") or {},
                     "reference": hp.get("reference", "auto")})
        return net, meta
    if not model_dir:
        raise ValueError("give model_dir=<model folder> or ckpt_path=<checkpoint>")
    return load_model_folder(model_dir, verify=verify)


def evaluate_bank(net: Any, bank: Any, indices: Sequence[int], spec: Any, out_dir: str | Path,
                  batch_size: int = 32, device: str = "auto", n_boot: int = 1000, seed: int = 0,
                  plots: bool = True, extra: dict[str, Any] | None = None,
                  decision: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score ROIs ``indices`` of a :class:`RoiBank`; write metrics.json, predictions.csv, plots.

    ``decision`` is a model folder's ``metadata.json['decision']``: labels follow it (argmax without).
    """
    from torch.utils.data import DataLoader

    from spinelesion.data.dataset import RoiDataset
    from spinelesion.evaluation.plots import write_plots
    from spinelesion.evaluation.report import EvalInputs, compute_metrics, write_metrics
    from spinelesion.inference.batch import predict_logits, softmax_np
    from spinelesion.labels import TASKS
    from spinelesion.models.decision import DecisionRule

    rule = DecisionRule.from_meta({"decision": decision})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = RoiDataset(bank, indices, spec)
    logits = predict_logits(net, DataLoader(ds, batch_size=batch_size, shuffle=False), device=device)
    temps = net.temperature.detach().cpu().numpy()
    probs = {t: softmax_np(logits[t], float(temps[i])) for i, t in enumerate(TASKS)}
    indices, probs, dropped = _finite_only(list(indices), probs, bank)
    rows = [bank.rows[i] for i in indices]
    inputs = EvalInputs(
        case_ids=[r.case_id for r in rows], patient_ids=[r.patient_id for r in rows],
        findings=[r.finding for r in rows], levels=[r.level for r in rows],
        y_true={t: bank.targets[t][list(indices)].numpy() for t in TASKS}, probs=probs,
    )
    metrics = compute_metrics(inputs, n_boot=n_boot, seed=seed, rule=rule)
    if extra:
        metrics.update(extra)
    if dropped:
        metrics["non_finite_rois"] = dropped
    write_metrics(metrics, out_dir)
    _write_predictions(out_dir / "predictions.csv", rows, probs, {t: rule.labels(t, probs[t]) for t in TASKS})
    if plots:
        write_plots(inputs, metrics, out_dir)
    return metrics


def _check_bank_memory(manifest: Path, rows: Sequence[Any], spec: Any) -> None:
    """Refuse, before reading anything, a manifest whose ROI crops would not fit the memory cap:
    all crops are kept (float16) and one study's context crops are built at once (float32)."""
    from spinelesion.io.limits import LIMITS, ResourceLimitError, human
    from spinelesion.labels import SEQUENCES

    per_study: dict[str, int] = {}
    for r in rows:
        per_study[r.study_id] = per_study.get(r.study_id, 0) + 1
    n_ch = len(SEQUENCES)
    need = (len(rows) * n_ch * int(np.prod(spec.shape)) * 2
            + max(per_study.values(), default=0) * n_ch * int(np.prod(spec.context_shape)) * 4)
    if need > LIMITS.max_study_bytes:
        raise ResourceLimitError(f"{manifest}: {len(rows)} ROI(s) (up to {max(per_study.values())} in one study) "
                                 f"would need about {human(need)} of crops in memory, over the limit of "
                                 f"{human(LIMITS.max_study_bytes)} (limits.max_study_gb); evaluate a split "
                                 "(data.split=...) or a smaller manifest")


def _finite_only(indices: list[int], probs: dict[str, np.ndarray], bank: Any
                 ) -> tuple[list[int], dict[str, np.ndarray], list[str]]:
    """Leave out ROIs whose probabilities are not finite (a NaN image): never scored, listed instead."""
    ok = np.all([np.isfinite(p).all(1) for p in probs.values()], axis=0)
    if ok.all():
        return indices, probs, []
    dropped = [bank.rows[i].case_id for i, good in zip(indices, ok, strict=True) if not good]
    log.warning("%d ROI(s) with non-finite probabilities left out of the metrics, e.g. %s", len(dropped), dropped[0])
    if not ok.any():
        raise ValueError(f"every ROI got non-finite probabilities (e.g. {dropped[0]}): nothing to score")
    return [i for i, good in zip(indices, ok, strict=True) if good], {t: p[ok] for t, p in probs.items()}, dropped


def _write_predictions(path: Path, rows: Sequence[Any], probs: dict[str, np.ndarray],
                       labels: dict[str, np.ndarray]) -> None:
    from spinelesion.labels import TASKS

    header = ["case_id", "study_id", "patient_id", "finding", "level"]
    for t, classes in TASKS.items():
        header += [f"{t}_true", f"{t}_pred"] + [f"p_{t}_{c}" for c in classes]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, r in enumerate(rows):
            line = [r.case_id, r.study_id, r.patient_id, r.finding, r.level]
            for t, classes in TASKS.items():
                p = probs[t][i]
                line += [r.labels[t], classes[int(labels[t][i])]] + [f"{v:.6f}" for v in p]
            w.writerow(line)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Load the model, read the manifest's studies (skipping bad ones), score, write.

    The output folder is locked for the run (see :mod:`spinelesion.inference.run_lock`).
    """
    from spinelesion.cli import check_evaluate_args
    from spinelesion.inference.run_lock import output_folder
    from spinelesion.io.limits import configure

    check_evaluate_args(cfg)
    limits = cfg.get("limits") or {}
    configure(limits.get("max_study_gb"), limits.get("header_mb"))
    with output_folder(cfg.output_dir, "spinelesion-evaluate"):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    from spinelesion.data.cache import StudyCache
    from spinelesion.data.datamodule import roi_spec_from
    from spinelesion.data.dataset import build_roi_bank
    from spinelesion.data.manifest import read_manifest

    verify = cfg.get("verify_weights")
    net, meta = load_model(cfg.get("model_dir"), cfg.get("ckpt_path"), None if verify is None else bool(verify))
    spec = roi_spec_from(meta.get("roi"))
    manifest = read_manifest(cfg.data.manifest, check_files=False)
    rows = manifest.rows
    if cfg.data.get("split"):
        rows = [r for r in rows if r.split == cfg.data.split]
        if not rows:
            raise ValueError(f"{manifest.path}: no rows with split '{cfg.data.split}'")
    _check_bank_memory(manifest.path, rows, spec)
    cache = StudyCache(cfg.data.get("cache_dir"), reference=meta.get("reference", "auto"))
    bank = build_roi_bank(rows, cache, spec, on_error="skip")
    failed = [{"study_id": f.study_id, "rows": f.rows, "reason": f.reason} for f in bank.failures]
    if not len(bank):
        raise RuntimeError(f"no study of {manifest.path} could be read: {failed}")
    out_dir = Path(cfg.output_dir)
    extra = {"model": {"name": meta.get("name"), "version": meta.get("version"),
                       "weights_sha256": meta.get("weights_sha256")},
             "manifest": str(manifest.path), "failed_studies": failed}
    metrics = evaluate_bank(net, bank, list(range(len(bank))), spec, out_dir, batch_size=int(cfg.batch_size),
                            device=str(cfg.device), n_boot=int(cfg.bootstrap.n), seed=int(cfg.bootstrap.seed),
                            plots=bool(cfg.plots), extra=extra, decision=meta.get("decision"))
    for f in failed:
        log.warning("skipped study %s (rows %s): %s", f["study_id"], f["rows"], f["reason"])
    c, fr = metrics["compartment"], metrics["fracture"]
    log.info("compartment AUC %s, ECE %s | fracture benign-vs-pathologic AUC %s, ECE %s | %d ROIs, %d failed studies",
             c.get("auc_macro"), c.get("ece"), fr.get("auc_benign_vs_pathologic"), fr.get("ece"), len(bank), len(failed))
    log.info("wrote %s", out_dir / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Exit code 2 with a one-line message when nothing could be scored (bad manifest or
    argument, no readable study, unverified model); the traceback only with HYDRA_FULL_ERROR=1."""
    from spinelesion.cli import run_main

    run_main(evaluate, cfg, log)


if __name__ == "__main__":
    main()
