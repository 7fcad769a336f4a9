"""Scan mode's operating point: how sure a scan candidate must be before it is called a lesion.

A ROI a user points at is a place someone already suspects; a scan candidate is the peak of
a map over thousands of windows on mostly normal anatomy, so it needs a higher bar, as
detection tools choose theirs on a free-response curve. Each scan candidate is recorded
once with the classifier's answer around it (:class:`~spinelesion.tasks.hard_negatives.ScanCandidate`);
every threshold is then scored offline: lesions found (a call within ``radius_mm``) against
false calls per study. :func:`choose_call_threshold` picks the bar on validation studies,
never on the held-out ones it is reported on.

False calls are counted twice: over every study, and over the untouched (healthy) ones alone.
Only the second is the rate a user meets on a healthy exam: a study with an inserted finding is
written as a crop around it (insert/dataset.py), so most of the field of view a scan walks on a
whole exam (the sacrum, the pelvis, the abdomen in front of the spine) is not there to be called.
On the fourth release run (2026-12-07) the validation studies, mostly such crops, gave 0.38 false
calls per study while the held-out subjects' whole untouched exams gave 3.0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from spinelesion.evaluation.real import scan_false_calls

THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.5, 1.0, 0.05))


def scan_record(
    study_id: str, lesions: Sequence[Sequence[float]], candidates: Iterable[Any]
) -> dict[str, Any]:
    """One scanned study as JSON-able data: its labelled lesion centres and its candidates."""
    return {
        "study_id": study_id,
        "lesions": [[float(v) for v in c] for c in lesions],
        "candidates": [
            {
                "centre": [float(v) for v in c.centre],
                "p_lesion": c.p_lesion,
                "rule_lesion": c.rule_lesion,
                **({"probs": c.probs} if getattr(c, "probs", None) else {}),
            }
            for c in candidates
        ],
    }


def at_threshold(
    records: Sequence[Mapping[str, Any]], threshold: float, radius_mm: float = 20.0
) -> dict[str, Any]:
    """False calls and lesions found of the scanned studies with candidates called at ``threshold``."""
    rows = []
    for rec in records:
        for c in rec["candidates"]:
            called = bool(c["rule_lesion"]) and c["p_lesion"] >= threshold
            x, y, z = c["centre"]
            label = "lesion" if called else "none"
            rows.append(
                {
                    "study_id": rec["study_id"],
                    "x_mm": x,
                    "y_mm": y,
                    "z_mm": z,
                    "compartment_label": label,
                    "fracture_label": "none",
                }
            )
    lesions = {r["study_id"]: r["lesions"] for r in records if r["lesions"]}
    out = scan_false_calls(rows, [r["study_id"] for r in records], lesions, radius_mm)
    out["threshold"] = threshold
    if out.get("lesions"):
        out["sensitivity"] = out["lesions_found"] / out["lesions"]
    healthy = [r["study_id"] for r in records if not r["lesions"]]
    if healthy:
        out["untouched_studies"] = len(healthy)
        out["untouched_false_calls_per_study"] = float(np.mean([out["per_study"][s] for s in healthy]))
    return out


def operating_curve(
    records: Sequence[Mapping[str, Any]], thresholds: Sequence[float] = THRESHOLDS, radius_mm: float = 20.0
) -> list[dict[str, Any]]:
    """:func:`at_threshold` at every threshold, lowest first (without the per-study counts)."""
    points = [at_threshold(records, t, radius_mm) for t in sorted(thresholds)]
    return [{k: v for k, v in p.items() if k != "per_study"} for p in points]


def choose_call_threshold(
    curve: Sequence[Mapping[str, Any]],
    max_sensitivity_loss: float = 0.02,
    max_untouched_false_calls: float | None = None,
) -> float:
    """The bar, among the thresholds that find at most ``max_sensitivity_loss`` (a fraction of the
    lesions) fewer lesions than the lowest one:

    - with ``max_untouched_false_calls`` and untouched studies on the curve: the lowest threshold
      whose false calls per untouched study are within that budget, else the one with the fewest
      of them (the lowest on a tie);
    - otherwise the one with the fewest false calls per study (the lowest on a tie).

    Without lesions, the lowest threshold."""
    base = curve[0]
    if not base.get("lesions"):
        return float(base["threshold"])
    floor = base["sensitivity"] - max_sensitivity_loss - 1e-9
    allowed = [p for p in curve if p["sensitivity"] >= floor]
    if max_untouched_false_calls is not None and base.get("untouched_studies"):
        within = [
            p for p in allowed if p["untouched_false_calls_per_study"] <= max_untouched_false_calls + 1e-9
        ]
        if within:
            return float(min(p["threshold"] for p in within))
        best = min(allowed, key=lambda p: (p["untouched_false_calls_per_study"], p["threshold"]))
        return float(best["threshold"])
    best = min(allowed, key=lambda p: (p["false_calls_per_study"], p["threshold"]))
    return float(best["threshold"])
