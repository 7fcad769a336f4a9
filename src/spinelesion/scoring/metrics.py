"""Classification metrics on label indices and probability matrices, unknown labels skipped.

Plain numpy, no scikit-learn: the AUC is the Mann-Whitney statistic with midranks for ties,
which is exactly the area under the empirical ROC curve.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from spinelesion.labels import IGNORE_INDEX


def known(y: np.ndarray) -> np.ndarray:
    return np.asarray(y) != IGNORE_INDEX


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC of ``score`` for boolean ``positive``; None when a class is absent."""
    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos = int(positive.sum())
    n_neg = int(positive.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    r = rankdata(score)  # midranks: a tie counts one half
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def per_class_auc(y: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """One-vs-rest AUC per class over rows with a known label."""
    m = known(y)
    y, probs = np.asarray(y)[m], np.asarray(probs)[m]
    return [binary_auc(y == c, probs[:, c]) for c in range(probs.shape[1])]


def auc_macro(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean one-vs-rest AUC over the classes that have both positives and negatives.

    A class absent from the data has no defined AUC and is left out of the mean (the
    per-class table shows it as null); None when no class qualifies.
    """
    aucs = [a for a in per_class_auc(y, probs) if a is not None]
    return float(np.mean(aucs)) if aucs else None


def auc_benign_vs_pathologic(
    y: np.ndarray, probs: np.ndarray, benign: int = 1, pathologic: int = 2
) -> float | None:
    """AUC on rows whose truth is benign or pathologic, scoring p(path) / (p(benign) + p(path))."""
    y = np.asarray(y)
    m = (y == benign) | (y == pathologic)
    if not m.any():
        return None
    p = np.asarray(probs)[m]
    score = p[:, pathologic] / np.clip(p[:, benign] + p[:, pathologic], 1e-12, None)
    return binary_auc(y[m] == pathologic, score)


def predicted(probs: np.ndarray, pred: np.ndarray | None = None) -> np.ndarray:
    """The labels given (a decision rule's), else the argmax of ``probs``."""
    return np.asarray(probs).argmax(1) if pred is None else np.asarray(pred)


def confusion(y: np.ndarray, probs: np.ndarray, pred: np.ndarray | None = None) -> np.ndarray:
    """C x C counts, rows = truth, columns = prediction (``pred``, else argmax), known labels only."""
    m = known(y)
    c = probs.shape[1]
    out = np.zeros((c, c), dtype=np.int64)
    np.add.at(out, (np.asarray(y)[m], predicted(probs, pred)[m]), 1)
    return out


def sensitivity_specificity(cm: np.ndarray) -> list[tuple[float | None, float | None]]:
    """(sensitivity, specificity) one-vs-rest per class from a confusion matrix."""
    total = cm.sum()
    out = []
    for c in range(cm.shape[0]):
        tp = cm[c, c]
        fn = cm[c].sum() - tp
        fp = cm[:, c].sum() - tp
        tn = total - tp - fn - fp
        sens = float(tp / (tp + fn)) if tp + fn else None
        spec = float(tn / (tn + fp)) if tn + fp else None
        out.append((sens, spec))
    return out


def balanced_accuracy(y: np.ndarray, probs: np.ndarray, pred: np.ndarray | None = None) -> float | None:
    """Mean recall over the classes present in the truth."""
    cm = confusion(y, probs, pred)
    recalls = [s for s, _ in sensitivity_specificity(cm) if s is not None]
    return float(np.mean(recalls)) if recalls else None


def accuracy(y: np.ndarray, probs: np.ndarray, pred: np.ndarray | None = None) -> float | None:
    m = known(y)
    if not m.any():
        return None
    return float((predicted(probs, pred)[m] == np.asarray(y)[m]).mean())
