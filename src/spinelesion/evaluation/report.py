"""``metrics.json``: every metric the data contract asks for, per task, plus subgroups.

Undefined values (an AUC with one class absent, a sensitivity with no positives) are
written as ``null`` with the reason under ``notes``, never as NaN (which is not JSON).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinelesion.atomic import write_json
from spinelesion.labels import TASKS
from spinelesion.models.decision import DecisionRule
from spinelesion.scoring.bootstrap import patient_bootstrap
from spinelesion.scoring.calibration import ece, reliability
from spinelesion.scoring.metrics import (
    accuracy,
    auc_benign_vs_pathologic,
    auc_macro,
    balanced_accuracy,
    confusion,
    known,
    per_class_auc,
    sensitivity_specificity,
)


@dataclass
class EvalInputs:
    """Everything needed to score a set of ROIs. ``y_true`` uses IGNORE_INDEX for unknown."""

    case_ids: Sequence[str]
    patient_ids: Sequence[str]
    findings: Sequence[str]
    levels: Sequence[str]
    y_true: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]

    def subset(self, idx: np.ndarray) -> EvalInputs:
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return EvalInputs(
            pick(self.case_ids),
            pick(self.patient_ids),
            pick(self.findings),
            pick(self.levels),
            {t: v[idx] for t, v in self.y_true.items()},
            {t: v[idx] for t, v in self.probs.items()},
        )


def level_region(level: str) -> str:
    """``C5`` -> cervical, ``T12`` -> thoracic, ``L3`` -> lumbar, ``S1`` -> sacral; else unknown."""
    key = (level or "").strip().upper()[:1]
    return {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "sacral"}.get(key, "unknown")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return _clean(float(v))
    return v


def task_metrics(
    task: str,
    y: np.ndarray,
    probs: np.ndarray,
    patients: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    rule: DecisionRule | None = None,
) -> dict[str, Any]:
    """Metrics of one task. Labels (confusion, sensitivity, accuracies) follow ``rule`` when it
    has offsets for the task; the argmax figures are kept under ``decision`` to compare."""
    classes = TASKS[task]
    rule = rule or DecisionRule()
    m = known(y)
    yk, pk, pids = y[m], probs[m], np.asarray(patients)[m]
    pred = rule.labels(task, pk)
    cm = confusion(yk, pk, pred)
    ss = sensitivity_specificity(cm)
    aucs = per_class_auc(yk, pk)
    notes = []
    for c, a in zip(classes, aucs, strict=True):
        if a is None:
            notes.append(
                f"AUC of '{c}' undefined: the class is absent (or is the only class) among known labels"
            )
    out: dict[str, Any] = {
        "n": int(m.sum()),
        "n_unknown": int((~m).sum()),
        "classes": list(classes),
        "auc_macro": auc_macro(yk, pk),
        "balanced_accuracy": balanced_accuracy(yk, pk, pred),
        "accuracy": accuracy(yk, pk, pred),
        "ece": ece(yk, pk),
        "per_class": {
            c: {"sensitivity": s, "specificity": sp, "auc": a, "n": int((yk == i).sum())}
            for i, (c, (s, sp), a) in enumerate(zip(classes, ss, aucs, strict=True))
        },
        "confusion": cm.tolist(),
        "reliability": reliability(yk, pk),
    }
    cm_argmax = confusion(yk, pk)
    out["decision"] = {
        "rule": "log_offsets" if task in rule.offsets else "argmax",
        "offsets": rule.offsets.get(task),
        "balanced_accuracy_argmax": balanced_accuracy(yk, pk),
        "sensitivity_argmax": {
            c: s for c, (s, _) in zip(classes, sensitivity_specificity(cm_argmax), strict=True)
        },
    }
    boot = patient_bootstrap(lambda idx: auc_macro(yk[idx], pk[idx]), pids, n_boot, seed)
    out["auc_macro_ci95"] = boot["ci95"]
    out["bootstrap"] = {"unit": "patient", "n_boot": n_boot, "auc_macro_skipped": boot["n_skipped"]}
    ba = patient_bootstrap(lambda idx: balanced_accuracy(yk[idx], pk[idx], pred[idx]), pids, n_boot, seed)
    out["balanced_accuracy_ci95"] = ba["ci95"]
    if task == "fracture":
        out["auc_benign_vs_pathologic"] = auc_benign_vs_pathologic(yk, pk)
        bvp = patient_bootstrap(lambda idx: auc_benign_vs_pathologic(yk[idx], pk[idx]), pids, n_boot, seed)
        out["auc_benign_vs_pathologic_ci95"] = bvp["ci95"]
        out["bootstrap"]["auc_benign_vs_pathologic_skipped"] = bvp["n_skipped"]
        if out["auc_benign_vs_pathologic"] is None:
            notes.append("benign-vs-pathologic AUC undefined: needs both benign and pathologic rows")
    if notes:
        out["notes"] = notes
    return out


def subgroup_metrics(
    inputs: EvalInputs, keys: Sequence[str], rule: DecisionRule | None = None
) -> dict[str, Any]:
    """Per subgroup value: n, accuracy (of the rule's labels) and (where defined) AUCs for both tasks."""
    rule = rule or DecisionRule()
    out: dict[str, Any] = {}
    for value in sorted(set(keys)):
        idx = np.flatnonzero(np.asarray(keys) == value)
        entry: dict[str, Any] = {"n": int(len(idx))}
        for task in TASKS:
            y, p = inputs.y_true[task][idx], inputs.probs[task][idx]
            entry[task] = {
                "n": int(known(y).sum()),
                "accuracy": accuracy(y, p, rule.labels(task, p)),
                "auc_macro": auc_macro(y, p),
            }
            if task == "fracture":
                entry[task]["auc_benign_vs_pathologic"] = auc_benign_vs_pathologic(y, p)
        out[value or "(none)"] = entry
    return out


def compute_metrics(
    inputs: EvalInputs, n_boot: int = 1000, seed: int = 0, rule: DecisionRule | None = None
) -> dict[str, Any]:
    """The full ``metrics.json`` content; labels follow ``rule`` (argmax without one)."""
    out: dict[str, Any] = {}
    for task in TASKS:
        out[task] = task_metrics(
            task,
            np.asarray(inputs.y_true[task]),
            np.asarray(inputs.probs[task]),
            inputs.patient_ids,
            n_boot,
            seed,
            rule,
        )
    out["subgroups"] = {
        "finding": subgroup_metrics(inputs, list(inputs.findings), rule),
        "level_region": subgroup_metrics(inputs, [level_region(lv) for lv in inputs.levels], rule),
    }
    out["n_rois"] = len(inputs.case_ids)
    out["n_patients"] = len(set(inputs.patient_ids))
    return _clean(out)


def write_metrics(metrics: dict[str, Any], output_dir: str | Path) -> Path:
    return write_json(Path(output_dir) / "metrics.json", _clean(metrics))


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a model folder's ``metadata.json`` keeps per evaluated split."""
    c, f = metrics.get("compartment", {}), metrics.get("fracture", {})
    return {
        "n": c.get("n"),
        "compartment_auc_macro": c.get("auc_macro"),
        "compartment_auc_macro_ci95": c.get("auc_macro_ci95"),
        "compartment_balanced_accuracy": c.get("balanced_accuracy"),
        "compartment_ece": c.get("ece"),
        "fracture_auc_benign_vs_pathologic": f.get("auc_benign_vs_pathologic"),
        "fracture_auc_benign_vs_pathologic_ci95": f.get("auc_benign_vs_pathologic_ci95"),
        "fracture_auc_macro": f.get("auc_macro"),
        "fracture_balanced_accuracy": f.get("balanced_accuracy"),
        "fracture_ece": f.get("ece"),
        "compartment_sensitivity": {k: v.get("sensitivity") for k, v in (c.get("per_class") or {}).items()},
        "fracture_sensitivity": {k: v.get("sensitivity") for k, v in (f.get("per_class") or {}).items()},
        "decision_rule": (c.get("decision") or {}).get("rule"),
    }
