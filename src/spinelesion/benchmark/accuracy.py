"""Accuracy under an equal wall-clock budget: several networks, same data, same machine.

Each network trains with the same data, augmentation, batch size, optimiser and a constant
learning rate (a schedule sized in epochs would favour whichever network fits more epochs
in the budget) until ``budget_s`` of training time has passed; its best checkpoint is then
calibrated on validation data and scored by ``evaluate`` on the same test manifest. The
learning curve is validation AUC against training seconds, read from the CSV log.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from omegaconf import open_dict

from spinelesion.config_path import compose_config

log = logging.getLogger(__name__)


def budget_string(seconds: float) -> str:
    s = int(seconds)
    return f"00:{s // 3600:02d}:{(s % 3600) // 60:02d}:{s % 60:02d}"


def learning_curve(csv_path: Path) -> list[dict[str, float]]:
    """(train seconds, val AUCs) per validation from a Lightning CSV log."""
    points = []
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("time/train_seconds") and row.get("val/score"):
                points.append({"seconds": float(row["time/train_seconds"]), "score": float(row["val/score"]),
                               "auc_compartment": float(row.get("val/auc_compartment") or "nan"),
                               "auc_benign_vs_pathologic": float(row.get("val/auc_benign_vs_pathologic") or "nan")})
    return points


def train_and_evaluate(model: str, train_manifest: Path, test_manifest: Path, out: Path, budget_s: float,
                       cache_dir: Path, seed: int = 0, n_boot: int = 500) -> dict[str, Any]:
    from spinelesion.evaluate import evaluate
    from spinelesion.train import train

    cfg = compose_config("train", [f"model={model}", f"data.manifest={train_manifest}", f"data.cache_dir={cache_dir}",
                                   "logger=csv", f"trainer.max_time={budget_string(budget_s)}", "trainer.max_epochs=100000",
                                   "model.scheduler.name=none", "evaluate_splits=[]", "data.progress=false",
                                   "callbacks.progress_bar=null", f"seed={seed}"])
    ev = compose_config("eval", [f"data.manifest={test_manifest}", f"data.cache_dir={cache_dir}", f"bootstrap.n={n_boot}",
                                 "plots=false"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "train")
        cfg.model_dir = str(out / "train" / "model")
    summary = train(cfg)
    with open_dict(ev):
        ev.model_dir = summary["model_dir"]
        ev.output_dir = str(out / "eval")
        ev.paths.output_dir = str(out / "eval")
    metrics = evaluate(ev)
    c, f = metrics["compartment"], metrics["fracture"]
    return {
        "model": model, "budget_s": budget_s, "epochs": summary["epochs"], "fit_seconds": summary["fit_seconds"],
        "compartment_auc_macro": c["auc_macro"], "compartment_auc_macro_ci95": c["auc_macro_ci95"],
        "compartment_balanced_accuracy": c["balanced_accuracy"], "compartment_ece": c["ece"],
        "fracture_auc_benign_vs_pathologic": f["auc_benign_vs_pathologic"],
        "fracture_auc_benign_vs_pathologic_ci95": f["auc_benign_vs_pathologic_ci95"],
        "fracture_balanced_accuracy": f["balanced_accuracy"], "fracture_ece": f["ece"],
        "curve": learning_curve(out / "train" / "csv" / "metrics.csv"),
        "metrics_json": str(out / "eval" / "metrics.json"),
    }


def default_beats_baseline_everywhere(curves: dict[str, list[dict[str, float]]], default: str, baseline: str) -> bool | None:
    """Whether ``default``'s best-so-far validation score exceeds ``baseline``'s at every
    time on the baseline's curve (step functions: the best checkpoint up to that time)."""
    a, b = curves.get(default) or [], curves.get(baseline) or []
    if not a or not b:
        return None

    def best_by(points: list[dict[str, float]], t: float) -> float | None:
        vals = [p["score"] for p in points if p["seconds"] <= t]
        return max(vals) if vals else None

    for p in b:
        ours = best_by(a, p["seconds"])
        theirs = best_by(b, p["seconds"])
        if ours is None or theirs is None or ours <= theirs:
            return False
    return True
