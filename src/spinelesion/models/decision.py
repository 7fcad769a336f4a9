"""Decision rule on calibrated probabilities: per-class log offsets that favour rare classes.

``argmax p`` maximises accuracy, which on a class mix of 80 % normal means a rare class
(intramedullary, pathologic fracture) is named only when it is very sure. The label a user
sees should be right for every class, so the rule picks ``argmax(log p + b)`` with one
offset ``b_c`` per class, fitted on the validation split to maximise balanced accuracy
(mean per-class sensitivity) and averaged over bootstrap resamples (a few dozen rare-class
ROIs make a single fit follow noise). The fit may not lower the normal class's sensitivity
by more than ``NORMAL_RECALL_DROP``: in a real study most vertebrae are normal, and a rule
that buys rare-class sensitivity with false lesion calls on normal bodies (which balanced
accuracy, weighing "none" as one class in four, would accept) is wrong where it is used.
For a calibrated model ``b = -log prior`` is the Bayes rule for balanced error; the fit
starts there (and at zero, since class-weighted training may have rebalanced already) and
refines each offset by coordinate search. Offsets are stored as plain JSON numbers in
``metadata.json`` under ``decision``; a model folder without them uses argmax.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinelesion.labels import IGNORE_INDEX, TASKS

log = logging.getLogger(__name__)

KIND = "log_offsets"
_GRID = np.linspace(-3.0, 3.0, 61)
NORMAL = 0  # index of "none" in every task (labels.TASKS)
NORMAL_RECALL_DROP = 0.01  # the rule may lower the normal class's validation sensitivity this much
BOOTSTRAP = 30  # offsets averaged over this many resamples of the validation split


def decide(probs: np.ndarray, offsets: Sequence[float] | None) -> np.ndarray:
    """Class index per row: ``argmax(log p + offsets)`` (plain argmax without offsets)."""
    p = np.asarray(probs, dtype=np.float64)
    if offsets is None or p.size == 0:
        return p.argmax(1) if p.ndim == 2 else np.zeros(0, np.int64)
    return (np.log(np.clip(p, 1e-12, None)) + np.asarray(offsets, np.float64)[None]).argmax(1)


def balanced_accuracy_of(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (IGNORE_INDEX rows skipped)."""
    y, pred = np.asarray(y), np.asarray(pred)
    m = y != IGNORE_INDEX
    y, pred = y[m], pred[m]
    recalls = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else float("nan")


def recall_of(y: np.ndarray, pred: np.ndarray, c: int) -> float:
    """Sensitivity for class ``c`` (nan when absent)."""
    m = np.asarray(y) == c
    return float((np.asarray(pred)[m] == c).mean()) if m.any() else float("nan")


def fit_offsets(
    probs: np.ndarray,
    y: np.ndarray,
    min_count: int = 5,
    sweeps: int = 3,
    min_gain: float = 1e-3,
    keep_recall: Mapping[int, float] | None = None,
) -> np.ndarray:
    """Offsets maximising balanced accuracy of :func:`decide` on (``probs``, ``y``).

    ``keep_recall`` maps a class to the most its sensitivity may fall below argmax's
    (offsets that break it score as infeasible).

    Classes with fewer than ``min_count`` known rows keep offset 0 relative to the others
    (too few to tune on). A change is kept only when it gains at least ``min_gain``, and
    among equal gains the smaller offset wins, so the rule stays close to its start.
    """
    p = np.asarray(probs, np.float64)
    y = np.asarray(y)
    m = y != IGNORE_INDEX
    p, y = p[m], y[m]
    n_cls = p.shape[1]
    if len(y) == 0:
        return np.zeros(n_cls)
    counts = np.bincount(y, minlength=n_cls)
    tunable = [c for c in range(n_cls) if counts[c] >= min_count]
    logp = np.log(np.clip(p, 1e-12, None))

    floors = {
        c: recall_of(y, logp.argmax(1), c) - drop
        for c, drop in (keep_recall or {}).items()
        if c < n_cls and counts[c]
    }

    def score(b: np.ndarray) -> float:
        pred = (logp + b[None]).argmax(1)
        if any(recall_of(y, pred, c) < f - 1e-12 for c, f in floors.items()):
            return -1.0
        return balanced_accuracy_of(y, pred)

    prior = counts / counts.sum()
    bayes = np.where(counts >= min_count, -np.log(np.clip(prior, 1e-6, None)), 0.0)
    bayes[tunable] -= bayes[tunable].mean() if tunable else 0.0
    bayes = np.clip(bayes, _GRID[0], _GRID[-1])
    best, best_s = np.zeros(n_cls), score(np.zeros(n_cls))
    if score(bayes) > best_s + min_gain:
        best, best_s = bayes.copy(), score(bayes)
    for _ in range(sweeps):
        changed = False
        for c in tunable:
            trial = best.copy()
            scores = []
            for g in _GRID:
                trial[c] = g
                scores.append(score(trial))
            scores_a = np.asarray(scores)
            top = scores_a.max()
            if top <= best_s + min_gain:
                continue
            # among the best grid points, the one nearest zero: no larger shift than needed
            cands = _GRID[scores_a >= top - 1e-12]
            best[c] = float(cands[np.argmin(np.abs(cands))])
            best_s = top
            changed = True
        if not changed:
            break
    return best - (best[tunable].mean() if tunable else 0.0)


def bagged_offsets(
    probs: np.ndarray,
    y: np.ndarray,
    n_boot: int = BOOTSTRAP,
    keep_recall: Mapping[int, float] | None = None,
    min_count: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """:func:`fit_offsets` averaged over ``n_boot`` bootstrap resamples (bagging).

    A validation split holds a few dozen rare-class ROIs; offsets fitted on it once follow
    its noise (measured: fitted on the release model's validation split, the single fit lowered
    balanced accuracy on three of four test sets, the bagged one on one). After averaging, the
    normal class's offset is raised, if needed, until ``keep_recall`` holds on the whole split.
    """
    p, y = np.asarray(probs, np.float64), np.asarray(y)
    keep = dict(keep_recall or {})
    if n_boot <= 1:
        return fit_offsets(p, y, min_count=min_count, keep_recall=keep)
    known = np.flatnonzero(y != IGNORE_INDEX)
    rng = np.random.default_rng(seed)
    fits = [
        fit_offsets(p[idx], y[idx], min_count=min_count, keep_recall=keep)
        for idx in (rng.choice(known, size=len(known)) for _ in range(n_boot))
    ]
    b = np.mean(fits, 0) if fits else np.zeros(p.shape[1])
    arg = decide(p[known], None)
    for c, drop in keep.items():
        floor = recall_of(y[known], arg, c) - drop
        while recall_of(y[known], decide(p[known], b), c) < floor - 1e-12 and b[c] < _GRID[-1]:
            b[c] += 0.05
    return b


@dataclass
class DecisionRule:
    """Per-task log offsets; ``label`` and ``labels`` give what a user sees."""

    offsets: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def labels(self, task: str, probs: np.ndarray) -> np.ndarray:
        return decide(probs, self.offsets.get(task))

    def label(self, task: str, probs: np.ndarray) -> int:
        return int(self.labels(task, np.asarray(probs)[None])[0])

    def labels_per_task(self, probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Class index per row for every task of ``probs`` (task -> (rows, classes))."""
        return {t: self.labels(t, p) for t, p in probs.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "offsets": {t: [round(float(v), 4) for v in o] for t, o in self.offsets.items()},
            **self.info,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> DecisionRule:
        """The rule in ``meta['decision']``; an empty rule (argmax) when absent or unusable."""
        spec = (meta or {}).get("decision")
        if not isinstance(spec, Mapping) or spec.get("kind") != KIND:
            return cls()
        offsets: dict[str, list[float]] = {}
        for task, vals in (spec.get("offsets") or {}).items():
            if (
                task in TASKS
                and isinstance(vals, list)
                and len(vals) == len(TASKS[task])
                and all(isinstance(v, int | float) and np.isfinite(v) for v in vals)
            ):
                offsets[task] = [float(v) for v in vals]
            else:
                log.warning(
                    "decision offsets for '%s' ignored (expected %d numbers): %s",
                    task,
                    len(TASKS.get(task, ())),
                    vals,
                )
        return cls(offsets, {k: v for k, v in spec.items() if k not in ("kind", "offsets")})


def fit_rule(
    probs: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    min_count: int = 5,
    normal_recall_drop: float = NORMAL_RECALL_DROP,
    n_boot: int = BOOTSTRAP,
) -> DecisionRule:
    """Fit offsets per task (bagged over ``n_boot`` resamples), the normal class's sensitivity
    kept within ``normal_recall_drop`` of argmax's; ``info`` records validation balanced
    accuracy and normal sensitivity before and after."""
    offsets: dict[str, list[float]] = {}
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    normal_before: dict[str, float] = {}
    normal_after: dict[str, float] = {}
    for task in TASKS:
        p, y = np.asarray(probs[task]), np.asarray(targets[task])
        b = bagged_offsets(p, y, n_boot, keep_recall={NORMAL: normal_recall_drop}, min_count=min_count)
        offsets[task] = [float(v) for v in b]
        arg, ruled = decide(p, None), decide(p, b)
        before[task] = round(balanced_accuracy_of(y, arg), 4)
        after[task] = round(balanced_accuracy_of(y, ruled), 4)
        normal_before[task] = round(recall_of(y, arg, NORMAL), 4)
        normal_after[task] = round(recall_of(y, ruled, NORMAL), 4)
    n = {t: int((np.asarray(targets[t]) != IGNORE_INDEX).sum()) for t in TASKS}
    info = {
        "objective": "balanced_accuracy",
        "fitted_on": "validation",
        "n": n,
        "validation_balanced_accuracy_argmax": before,
        "validation_balanced_accuracy_rule": after,
        "normal_recall_drop_allowed": normal_recall_drop,
        "bootstrap_resamples": n_boot,
        "validation_normal_sensitivity_argmax": normal_before,
        "validation_normal_sensitivity_rule": normal_after,
    }
    log.info("decision rule (log offsets) %s: validation balanced accuracy %s -> %s", offsets, before, after)
    return DecisionRule(offsets, info)
