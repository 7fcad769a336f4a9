"""Accuracy under an equal wall-clock budget: several networks, same data, same machine.

Each network trains with the same data, augmentation, batch size, optimiser and a constant
learning rate (a schedule sized in epochs would favour whichever network fits more epochs
in the budget) until ``budget_s`` of training time has passed; its best checkpoint is then
calibrated on validation data and scored by ``evaluate`` on the same test manifest. The
learning curve is validation AUC against training seconds, read from the CSV log.
The run itself is :func:`spinelesion.tasks.bench.train_and_evaluate`; here are its pieces.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

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
                points.append(
                    {
                        "seconds": float(row["time/train_seconds"]),
                        "score": float(row["val/score"]),
                        "auc_compartment": float(row.get("val/auc_compartment") or "nan"),
                        "auc_benign_vs_pathologic": float(row.get("val/auc_benign_vs_pathologic") or "nan"),
                    }
                )
    return points


def default_beats_baseline_everywhere(
    curves: dict[str, list[dict[str, float]]], default: str, baseline: str
) -> bool | None:
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
