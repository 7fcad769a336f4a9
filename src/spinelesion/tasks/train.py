"""Training: fit the two-task network, calibrate it, export a model folder, evaluate it.

:func:`train` is what ``spinelesion-train`` runs; tests call it with a composed config.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from spinelesion.formatting import fmt_metric, fmt_value

log = logging.getLogger("spinelesion.train")


def _write_splits(path: Path, dm: Any) -> None:
    rows = dm.load_manifest().rows
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "study_id", "patient_id", "split"])
        for r in rows:
            w.writerow([r.case_id, r.study_id, r.patient_id, r.split])


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then (rank zero) calibrate, export and evaluate. Returns the run summary."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from spinelesion.data.datamodule import draw_shares, sampling_prior
    from spinelesion.evaluation.bank import evaluate_bank
    from spinelesion.evaluation.report import headline_metrics
    from spinelesion.models.calibrate import calibrate_and_decide
    from spinelesion.models.card import model_metadata, write_model_card
    from spinelesion.models.folder import check_resume_checkpoint, load_checkpoint, save_model_folder
    from spinelesion.models.tta import mirrors_of

    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:  # checked first: never a URL, never pickled code (Lightning would unpickle it)
        ckpt_path = str(check_resume_checkpoint(str(ckpt_path)))
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True)

    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")  # validates the manifest and every study before anything trains
    init_info = None
    if cfg.get("init_from"):  # fine-tuning: the released model's network config and weights
        from spinelesion.models.init_from import apply_to_config, init_module_from

        apply_to_config(cfg)
    module = hydra.utils.instantiate(cfg.model)
    if cfg.get("init_from"):
        roi = OmegaConf.to_container(cfg.data.roi, resolve=True)
        assert isinstance(roi, dict)
        init_info = init_module_from(
            module,
            str(cfg.init_from),
            str(cfg.get("init_from_mode", "all")),
            roi={str(k): v for k, v in roi.items()},
        )
    module.set_class_weights(dm.class_counts("train"))
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if trainer.is_global_zero:
        OmegaConf.save(cfg, out_dir / "config_resolved.yaml", resolve=True)
        _write_splits(out_dir / "splits.csv", dm)

    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    fit_seconds = time.perf_counter() - start

    summary: dict[str, Any] = {
        "output_dir": str(out_dir),
        "fit_seconds": round(fit_seconds, 1),
        "epochs": trainer.current_epoch,
    }
    planned = trainer.max_epochs
    if planned is not None and 0 < trainer.current_epoch < planned:
        # a wall-clock guard (trainer.max_time) or early stopping ended the schedule: say so loudly,
        # a cut learning-rate schedule is another model than the one the recipe describes
        log.warning("training ended after %d of %d planned epochs", trainer.current_epoch, planned)
        summary["stopped_before_max_epochs"] = True
    ckpt_cb = trainer.checkpoint_callback
    if isinstance(ckpt_cb, ModelCheckpoint) and ckpt_cb.dirpath:
        summary["best_checkpoint"] = ckpt_cb.best_model_path or None
        best = getattr(ckpt_cb, "best_model_score", None)
        if best is not None and cfg.get("optimized_metric"):
            summary["optimized_metric"] = {"name": str(cfg.optimized_metric), "best": round(float(best), 6)}
        last = Path(ckpt_cb.dirpath) / "last.ckpt"
        summary["last_checkpoint"] = str(last) if last.is_file() else None
    if (
        not trainer.is_global_zero
        or getattr(trainer, "fast_dev_run", False)
        or not summary.get("best_checkpoint")
    ):
        return summary

    net, _ = load_checkpoint(summary["best_checkpoint"])
    tta = mirrors_of(cfg.get("tta"), "tta")  # test-time mirrors: calibration and evaluation use them too
    decision: dict[str, Any] | None = None
    if cfg.get("calibrate", True) and dm.split_indices.get("val"):
        summary["temperature"], rule = calibrate_and_decide(
            net,
            dm.dataset("val", augment=False),
            batch_size=dm.eval_batch_size,
            decide=bool(cfg.get("decision_rule", True)),
            tta=tta,
        )
        decision = rule.to_json() if rule.offsets else None
    metadata = model_metadata(cfg, dm, net, fit_seconds=fit_seconds, epochs=trainer.current_epoch)
    if decision:
        metadata["decision"] = decision
    # what the sampler showed the network: scan mode moves its calls from it to real rates ...
    rows, weights = dm.draws("train")
    metadata["sampling_prior"] = sampling_prior(rows, weights)
    # ... and per site and place: a place drawn mostly as a lesion is learnt as one
    metadata["training"]["draws"] = draw_shares(rows, weights)
    if tta:
        metadata["tta"] = list(tta)
    if init_info:
        metadata["training"]["init_from"] = {**init_info, "folder": Path(str(cfg.init_from)).name}
    model_dir = Path(cfg.model_dir)
    evaluations: dict[str, Any] = {}
    for split in cfg.get("evaluate_splits") or []:
        if not dm.split_indices.get(split):
            dm.setup("test" if split == "test" else "validate")
        if not dm.split_indices.get(split):
            log.info("split '%s' is empty: not evaluated", split)
            continue
        metrics = evaluate_bank(
            net,
            dm.bank,
            dm.split_indices[split],
            dm.spec,
            out_dir / f"eval_{split}",
            batch_size=dm.eval_batch_size,
            decision=decision,
            tta=tta,
        )
        evaluations[split] = metrics
    metadata["metrics"] = {s: headline_metrics(m) for s, m in evaluations.items()}
    metadata = save_model_folder(net, model_dir, metadata)
    write_model_card(model_dir, metadata)
    summary["model_dir"] = str(model_dir)
    summary["metrics"] = metadata["metrics"]
    log.info("\n%s", _summary_table(summary))
    return summary


def _summary_table(summary: dict[str, Any]) -> str:
    lines = ["=" * 72, "spinelesion-train: done", "=" * 72]
    for split, m in (summary.get("metrics") or {}).items():
        lines.append(f"[{split}] n={m.get('n')}")
        lines.append(
            f"  compartment  AUC {fmt_metric(m['compartment_auc_macro'], m['compartment_auc_macro_ci95'])}"
            f"  bal.acc {fmt_value(m['compartment_balanced_accuracy'])}  ECE {fmt_value(m['compartment_ece'])}"
        )
        lines.append(
            f"  fracture     AUC b-vs-p {fmt_metric(m['fracture_auc_benign_vs_pathologic'], m['fracture_auc_benign_vs_pathologic_ci95'])}"
            f"  bal.acc {fmt_value(m['fracture_balanced_accuracy'])}  ECE {fmt_value(m['fracture_ece'])}"
        )
    if summary.get("temperature"):
        lines.append(f"temperature: {summary['temperature']}")
    lines.append(f"fit: {summary['fit_seconds']} s, {summary['epochs']} epoch(s)")
    for key in ("best_checkpoint", "last_checkpoint", "model_dir", "output_dir"):
        if summary.get(key):
            lines.append(f"{key.replace('_', ' ')}: {summary[key]}")
    lines.append("=" * 72)
    return "\n".join(lines)
