"""Held-out renderers (issue 34): one model's figures on a renderer it never learnt from.

A model that scores well on its own renderer may have learnt how that renderer draws each class
rather than the sign that defines it. A renderer held out of training (the plain renderer for the
recipe's finetune1; the phantom or the insertion for a probe trained without it) measures the
signs; a release is judged by its worst held-out renderer. :func:`renderer_report` gathers, from
one ``spinelesion-evaluate`` run, the figures the issue's goals name;
:func:`spinelesion.scoring.renderers.worst` reads the worst of several reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spinelesion.evaluation.real import mimics_called_normal, right_per_finding
from spinelesion.evaluation.report import headline_metrics

HEADLINE = (
    "n",
    "compartment_auc_macro",
    "compartment_balanced_accuracy",
    "compartment_ece",
    "fracture_auc_benign_vs_pathologic",
    "fracture_balanced_accuracy",
    "fracture_ece",
)
"""The headline figures a renderer report keeps (:func:`spinelesion.evaluation.report.headline_metrics`)."""


def renderer_report(metrics: Mapping[str, Any], rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Headline metrics, per-class sensitivity (compartments and fractures in one map: their
    class names differ but for ``none``, kept apart as ``none_compartment``/``none_fracture``),
    each mimic's share called none/none and the worst of those, and both labels right per finding."""
    head = headline_metrics(dict(metrics))
    sens: dict[str, float | None] = {}
    for task in ("compartment", "fracture"):
        for name, value in (head.get(f"{task}_sensitivity") or {}).items():
            sens[f"none_{task}" if name == "none" else name] = value
    mimics = mimics_called_normal(rows)
    called = {k: v["called_normal"] for k, v in mimics["per_finding"].items()}
    known = [v for v in called.values() if v is not None]
    return {
        **{k: head.get(k) for k in HEADLINE},
        "sensitivity": sens,
        "mimics_called_normal": called,
        "worst_mimic_called_normal": min(known) if known else None,
        "per_finding": right_per_finding(rows),
    }
