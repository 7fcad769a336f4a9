"""Evaluation: a model folder (or checkpoint) on any contract manifest -> metrics.json + plots.

The manifest may come from anywhere (an external test set the model has never seen); its
studies are read, resampled and cropped exactly as the model's ``metadata.json`` says.
A study that cannot be read is skipped and listed in ``metrics.json`` under
``failed_studies``; the others are scored. :func:`evaluate` is what ``spinelesion-evaluate`` runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

log = logging.getLogger("spinelesion.evaluate")


def _check_bank_memory(manifest: Path, rows: Sequence[Any], spec: Any) -> None:
    """Refuse, before reading anything, a manifest whose ROI crops would not fit the memory cap:
    all crops are kept (float16) and one study's context crops are built at once (float32)."""
    from spinelesion.io.limits import LIMITS, ResourceLimitError, human
    from spinelesion.labels import SEQUENCES

    per_study: dict[str, int] = {}
    for r in rows:
        per_study[r.study_id] = per_study.get(r.study_id, 0) + 1
    n_ch = len(SEQUENCES)
    need = (
        len(rows) * n_ch * int(np.prod(spec.shape)) * 2
        + max(per_study.values(), default=0) * n_ch * int(np.prod(spec.context_shape)) * 4
    )
    if need > LIMITS.max_study_bytes:
        raise ResourceLimitError(
            f"{manifest}: {len(rows)} ROI(s) (up to {max(per_study.values())} in one study) "
            f"would need about {human(need)} of crops in memory, over the limit of "
            f"{human(LIMITS.max_study_bytes)} (limits.max_study_gb); evaluate a split "
            "(data.split=...) or a smaller manifest"
        )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Load the model, read the manifest's studies (skipping bad ones), score, write.

    The output folder is locked for the run (see :mod:`spinelesion.inference.run_lock`).
    """
    from spinelesion.inference.run_lock import output_folder
    from spinelesion.io.limits import configure
    from spinelesion.tasks.arguments import check_evaluate_args

    check_evaluate_args(cfg)
    limits = cfg.get("limits") or {}
    configure(limits.get("max_study_gb"), limits.get("header_mb"))
    with output_folder(cfg.output_dir, "spinelesion-evaluate"):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    from spinelesion.data.datamodule import roi_spec_from
    from spinelesion.data.manifest import read_manifest
    from spinelesion.data.monai_pipeline import build_roi_bank, warm_cache
    from spinelesion.evaluation.bank import evaluate_bank
    from spinelesion.models.folder import load_model
    from spinelesion.models.tta import mirrors_from_meta

    verify = cfg.get("verify_weights")
    net, meta = load_model(
        cfg.get("model_dir"), cfg.get("ckpt_path"), None if verify is None else bool(verify)
    )
    spec = roi_spec_from(meta.get("roi"))
    manifest = read_manifest(cfg.data.manifest, check_files=False)
    rows = manifest.rows
    if cfg.data.get("split"):
        rows = [r for r in rows if r.split == cfg.data.split]
        if not rows:
            raise ValueError(f"{manifest.path}: no rows with split '{cfg.data.split}'")
    _check_bank_memory(manifest.path, rows, spec)
    if cfg.data.get("cache_dir") and int(cfg.data.get("cache_workers") or 1) > 1:
        # studies not cached yet read over worker processes first (a failing one is named below)
        warm_cache(
            rows, spec, cfg.data.cache_dir, meta.get("reference", "auto"), workers=int(cfg.data.cache_workers)
        )
    # the crops a training on these studies kept in its cache_dir are read back from it
    bank = build_roi_bank(
        rows,
        spec,
        cfg.data.get("cache_dir"),
        meta.get("reference", "auto"),
        on_error="skip",
        refuse_unanswerable=True,
    )
    failed = [{"study_id": f.study_id, "rows": f.rows, "reason": f.reason} for f in bank.failures]
    if not len(bank):
        raise RuntimeError(f"no study of {manifest.path} could be read: {failed}")
    out_dir = Path(cfg.output_dir)
    extra = {
        "model": {
            "name": meta.get("name"),
            "version": meta.get("version"),
            "weights_sha256": meta.get("weights_sha256"),
        },
        "manifest": str(manifest.path),
        "failed_studies": failed,
    }
    metrics = evaluate_bank(
        net,
        bank,
        list(range(len(bank))),
        spec,
        out_dir,
        batch_size=int(cfg.batch_size),
        device=str(cfg.device),
        n_boot=int(cfg.bootstrap.n),
        seed=int(cfg.bootstrap.seed),
        plots=bool(cfg.plots),
        extra=extra,
        decision=meta.get("decision"),
        tta=mirrors_from_meta(meta),
    )
    for f in failed:
        log.warning("skipped study %s (rows %s): %s", f["study_id"], f["rows"], f["reason"])
    c, fr = metrics["compartment"], metrics["fracture"]
    log.info(
        "compartment AUC %s, ECE %s | fracture benign-vs-pathologic AUC %s, ECE %s | %d ROIs, %d failed studies",
        c.get("auc_macro"),
        c.get("ece"),
        fr.get("auc_benign_vs_pathologic"),
        fr.get("ece"),
        len(bank),
        len(failed),
    )
    log.info("wrote %s", out_dir / "metrics.json")
    return metrics
