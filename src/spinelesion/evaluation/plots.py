"""ROC curves, reliability diagrams and confusion matrices per task, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spinelesion.atomic import atomic_path  # noqa: E402
from spinelesion.evaluation.report import EvalInputs  # noqa: E402
from spinelesion.labels import TASKS  # noqa: E402
from spinelesion.scoring.metrics import known  # noqa: E402

FOOTER = (
    "spinelesion - metrics on the data given; synthetic-data models are demonstrations, not clinical tools"
)


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold."""
    order = np.argsort(-score, kind="mergesort")
    pos = positive[order].astype(float)
    s = score[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(pos)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(pos.sum(), 1)]
    fpr = np.r_[0.0, fps / max(len(pos) - pos.sum(), 1)]
    return fpr, tpr


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.text(0.5, 0.005, FOOTER, ha="center", fontsize=6, color="gray")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def plot_roc(task: str, y: np.ndarray, probs: np.ndarray, metrics: dict[str, Any], path: Path) -> Path:
    m = known(y)
    y, probs = y[m], probs[m]
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for c, name in enumerate(TASKS[task]):
        pos = y == c
        if pos.all() or not pos.any():
            continue
        fpr, tpr = roc_curve(pos, probs[:, c])
        auc = metrics["per_class"][name]["auc"]
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {auc:.3f}, n={int(pos.sum())})")
    if task == "fracture":
        sel = (y == 1) | (y == 2)
        if (y[sel] == 1).any() and (y[sel] == 2).any():
            score = probs[sel, 2] / np.clip(probs[sel, 1] + probs[sel, 2], 1e-12, None)
            fpr, tpr = roc_curve(y[sel] == 2, score)
            ax.plot(
                fpr,
                tpr,
                "k--",
                lw=2,
                label=f"benign vs pathologic (AUC {metrics['auc_benign_vs_pathologic']:.3f})",
            )
    ax.plot([0, 1], [0, 1], color="lightgray", lw=1)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    macro = metrics.get("auc_macro")
    ax.set_title(f"{task}: ROC, one vs rest (macro AUC {macro:.3f})" if macro is not None else f"{task}: ROC")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    else:  # every ROI has one true class (e.g. normals only): say why the plot is empty
        ax.text(
            0.5,
            0.8,
            "no ROC: every ROI has the same true class",
            ha="center",
            fontsize=8,
            backgroundcolor="white",
        )
    ax.set_aspect("equal")
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(task: str, metrics: dict[str, Any], path: Path) -> Path:
    rel = metrics["reliability"]
    lower, upper = np.asarray(rel["lower"]), np.asarray(rel["upper"])
    acc = np.asarray([np.nan if v is None else v for v in rel["accuracy"]], float)
    conf = np.asarray([np.nan if v is None else v for v in rel["confidence"]], float)
    counts = np.asarray(rel["count"], float)
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    width = upper - lower
    ok = counts > 0
    ax.bar(lower[ok], acc[ok], width=width[ok], align="edge", alpha=0.7, edgecolor="k", label="accuracy")
    # each bin once more at its mean confidence: on the diagonal when the bin is calibrated
    ax.plot(conf[ok], acc[ok], "o", color="tab:red", ms=4, label="bin at its mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    e = metrics.get("ece")
    ax.set_title(f"{task}: reliability (ECE {e:.3f})" if e is not None else f"{task}: reliability")
    ax.legend(fontsize=7, loc="upper left")
    axh.bar(lower, counts, width=width, align="edge", color="gray", edgecolor="k")
    axh.set_xlabel("confidence (top class)")
    axh.set_ylabel("ROIs")
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(task: str, metrics: dict[str, Any], path: Path) -> Path:
    cm = np.asarray(metrics["confusion"], dtype=float)
    classes = TASKS[task]
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(1.4 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{norm[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.6 else "black",
            )
    short = [
        c.replace("intradural_extramedullary", "IDEM").replace("intramedullary", "intramed.") for c in classes
    ]
    ax.set_xticks(range(len(classes)), short, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), short, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ba = metrics.get("balanced_accuracy")
    ax.set_title(
        f"{task}: confusion (balanced acc. {ba:.3f})" if ba is not None else f"{task}: confusion", fontsize=10
    )
    fig.tight_layout()
    return _save(fig, path)


def write_plots(inputs: EvalInputs, metrics: dict[str, Any], output_dir: str | Path) -> list[Path]:
    out = Path(output_dir)
    paths = []
    for task in TASKS:
        y, p, m = np.asarray(inputs.y_true[task]), np.asarray(inputs.probs[task]), metrics[task]
        if m["n"] == 0:
            continue
        paths.append(plot_roc(task, y, p, m, out / f"roc_{task}.png"))
        paths.append(plot_reliability(task, m, out / f"reliability_{task}.png"))
        paths.append(plot_confusion(task, m, out / f"confusion_{task}.png"))
    return paths
