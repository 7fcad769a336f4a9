"""The worst of several held-out renderers' reports (``spinelesion.evaluation.renderers``):
what a release is judged by (issue 34), and the model card's last row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# report key -> "min" (higher is better) or "max" (lower is better); the model card's columns
GOALS: dict[str, str] = {
    "compartment_auc_macro": "min",
    "compartment_balanced_accuracy": "min",
    "compartment_ece": "max",
    "fracture_auc_benign_vs_pathologic": "min",
    "fracture_balanced_accuracy": "min",
    "sensitivity.intramedullary": "min",
    "sensitivity.intradural_extramedullary": "min",
    "sensitivity.benign": "min",
    "worst_mimic_called_normal": "min",
}


def value_at(report: Mapping[str, Any], key: str) -> float | None:
    node: Any = report
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def worst(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per goal of :data:`GOALS` (dots as underscores, so a rule can name it), the worst value
    over the renderers and which renderer it was (a renderer without the figure, e.g. no
    intramedullary case, does not count), and how many renderers were measured."""
    out: dict[str, Any] = {"renderers": len(reports)}
    for key, how in GOALS.items():
        found = [(v, name) for name, r in reports.items() if (v := value_at(r, key)) is not None]
        if found:
            value, name = (min if how == "min" else max)(found)
            out[key.replace(".", "_")] = {"value": value, "renderer": name}
    return out
