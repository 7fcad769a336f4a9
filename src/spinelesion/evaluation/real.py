"""Checks on real anatomy, from an evaluation's ``predictions.csv`` of real studies.

* **per dataset** (the part of ``patient_id`` before its first ``_``): how many untouched real
  bodies are called none/none, and the AUCs on inserted lesions;
* **paired**: each inserted body finding of a held-out subject beside the same vertebra
  untouched. A model that reads the lesion, and not the study's texture, changes its answer
  when the lesion is inserted and only then;
* **scan**: false lesion calls per untouched real study in scan mode (from ``predict``'s
  ``predictions.csv``).
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spinelesion.data.manifest import CANAL_PLACES, place_of
from spinelesion.labels import TASKS, encode
from spinelesion.scoring.metrics import auc_benign_vs_pathologic, auc_macro

CHRONIC = "osteoporotic_fracture_chronic"
"""A healed osteoporotic fracture: the shape alone, no signal change (the insertion's finding name)."""

BODY_FINDINGS = {
    "lytic_metastasis",
    "blastic_metastasis",
    "osteoporotic_fracture",
    CHRONIC,
    "pathologic_fracture",
    "haemangioma",
    "focal_fat",
    "schmorl_node",
}
"""Inserted findings centred on a body, so their ROI is the untouched body's ROI."""


def read_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def dataset_of(patient_id: str) -> str:
    return patient_id.split("_", 1)[0]


def _called_normal(r: Mapping[str, str]) -> bool:
    return r["compartment_pred"] == "none" and r["fracture_pred"] == "none"


def _correct(r: Mapping[str, str]) -> bool:
    return r["compartment_pred"] == r["compartment_true"] and r["fracture_pred"] == r["fracture_true"]


def _aucs(rows: Sequence[Mapping[str, str]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for task, classes in TASKS.items():
        y = np.array([encode(task, r[f"{task}_true"]) for r in rows])
        p = np.array([[float(r[f"p_{task}_{c}"]) for c in classes] for r in rows])
        if task == "compartment":
            out["compartment_auc_macro"] = auc_macro(y, p) if len(rows) else None
        else:
            out["fracture_auc_benign_vs_pathologic"] = auc_benign_vs_pathologic(y, p) if len(rows) else None
    return out


DERIVED = re.compile(r"_(?:(?:[A-Za-z]+_)*(?:ins\d{3}|app(?:\d{2})?)|plain_[a-z0-9_]+_[CTLS]\d{1,2})$")
"""The suffix of a study derived from a real one: ``<study>_<tag>ins007`` (a finding inserted),
``<study>_<tag>app`` / ``app03`` (the untouched study under a random appearance),
``<study>_plain_<finding>_<level>`` (the plain renderer's finding at a body)."""


def background_study(study_id: str) -> str:
    """The real study a derived study was made from (itself when it is not derived)."""
    return DERIVED.sub("", study_id)


def _is_untouched_body(r: Mapping[str, str]) -> bool:
    """A body ROI of a real study as acquired (not inserted into, not under a drawn appearance).
    Studies are told by id, not patient: one patient may have several exams (T1 and STIR)."""
    return (
        r["finding"] == "normal"
        and "_body" in r["case_id"]
        and background_study(r["study_id"]) == r["study_id"]
    )


def per_dataset(rows: Sequence[Mapping[str, str]]) -> dict[str, dict[str, Any]]:
    """Untouched real bodies called normal, and AUCs on inserted studies, per dataset."""
    groups: dict[str, list[Mapping[str, str]]] = defaultdict(list)
    for r in rows:
        groups[dataset_of(r["patient_id"])].append(r)
    out = {}
    for name, rs in sorted(groups.items()):
        bodies = [r for r in rs if _is_untouched_body(r)]
        normals = [r for r in rs if r["finding"] == "normal"]
        inserted = [r for r in rs if r["finding"] != "normal"]
        out[name] = {
            "subjects": len({r["patient_id"] for r in rs}),
            "untouched_bodies": len(bodies),
            "untouched_bodies_called_normal": _fraction(_called_normal(r) for r in bodies),
            "untouched_rois_called_normal": _fraction(_called_normal(r) for r in normals),
            "inserted_rois": len(inserted),
            "inserted_correct": _fraction(_correct(r) for r in inserted),
            **_aucs(rs),
        }
    return out


def paired(rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Each inserted body finding next to the same vertebra untouched (first body ROI of that level)."""
    untouched = _first_untouched_body(rows)
    pairs = []
    for r in rows:
        key = (background_study(r["study_id"]), r["level"])
        if r["finding"] in BODY_FINDINGS and r["case_id"].endswith("_r0") and key in untouched:
            pairs.append((untouched[key], r))
    lesions = [(u, i) for u, i in pairs if (i["compartment_true"], i["fracture_true"]) != ("none", "none")]
    mimics = [(u, i) for u, i in pairs if (i["compartment_true"], i["fracture_true"]) == ("none", "none")]
    return {
        "pairs": len(pairs),
        "untouched_called_normal": _fraction(_called_normal(u) for u, _ in pairs),
        # The answer changes when a lesion is inserted, and only then.
        "lesion_pairs": len(lesions),
        "changes_only_with_lesion": _fraction(
            _called_normal(u) and not _called_normal(i) for u, i in lesions
        ),
        "lesion_pairs_both_correct": _fraction(_called_normal(u) and _correct(i) for u, i in lesions),
        "mimic_pairs": len(mimics),
        "mimic_pairs_both_normal": _fraction(_called_normal(u) and _called_normal(i) for u, i in mimics),
    }


def _first_untouched_body(rows: Sequence[Mapping[str, str]]) -> dict[tuple[str, str], Mapping[str, str]]:
    """(study, level) -> the first body ROI of that level in the study as acquired (its centre)."""
    untouched: dict[tuple[str, str], Mapping[str, str]] = {}
    for r in rows:
        if _is_untouched_body(r):
            untouched.setdefault((r["study_id"], r["level"]), r)
    return untouched


def appearance_stability(rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Each untouched body beside the same body centre in randomised copies of its study
    (``<study>_app00``...): the share of pairs whose call (compartment and fracture) changes."""
    untouched = _first_untouched_body(rows)
    pairs = []
    seen: set[tuple[str, str, str]] = set()
    for r in rows:
        study = r["study_id"]
        key = (background_study(study), r["level"])
        if study == key[0] or "_app" not in study or "_body" not in r["case_id"] or key not in untouched:
            continue
        if (study, *key) in seen:  # the body centre, not its jittered copies
            continue
        seen.add((study, *key))
        pairs.append((untouched[key], r))

    def call(r: Mapping[str, str]) -> tuple[str, str]:
        return r["compartment_pred"], r["fracture_pred"]

    return {
        "pairs": len(pairs),
        "studies": len({u["study_id"] for u, _ in pairs}),
        "call_changed": _fraction(call(u) != call(c) for u, c in pairs),
        "normal_call_lost": _fraction(_called_normal(u) and not _called_normal(c) for u, c in pairs),
    }


def right_per_finding(rows: Sequence[Mapping[str, str]]) -> dict[str, dict[str, Any]]:
    """Per finding (untouched ROIs as ``normal``): ROIs, and the share with both labels right."""
    by_finding: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_finding[r["finding"]].append(_correct(r))
    return {k: {"n": len(v), "both_labels_right": _fraction(v)} for k, v in sorted(by_finding.items())}


def chronic_fractures(rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Healed osteoporotic fractures (the shape alone, no signal change: issue 33's "shape as
    evidence") and the untouched bodies beside them: how many fractures are called benign, how
    many any fracture, and what calling them cost the normal bodies of the same spines."""
    chronic = [r for r in rows if r["finding"] == CHRONIC]
    normal = [r for r in rows if r["finding"] == "normal" and place_of(r["case_id"]) == "body"]
    return {
        "n": len(chronic),
        "called_benign": _fraction(r["fracture_pred"] == "benign" for r in chronic),
        "called_fracture": _fraction(r["fracture_pred"] != "none" for r in chronic),
        "both_labels_right": _fraction(_correct(r) for r in chronic),
        "untouched_bodies": len(normal),
        "untouched_bodies_called_normal": _fraction(_called_normal(r) for r in normal),
    }


def mimics_called_normal(rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Inserted mimics and normal variants (labelled none/none) called none/none, per finding."""
    mimics = [
        r
        for r in rows
        if r["finding"] != "normal" and (r["compartment_true"], r["fracture_true"]) == ("none", "none")
    ]
    by_finding: dict[str, list[bool]] = defaultdict(list)
    for r in mimics:
        by_finding[r["finding"]].append(_called_normal(r))
    return {
        "n": len(mimics),
        "called_normal": _fraction(_called_normal(r) for r in mimics),
        "per_finding": {
            k: {"n": len(v), "called_normal": _fraction(v)} for k, v in sorted(by_finding.items())
        },
    }


def scan_false_calls(
    prediction_rows: Iterable[Mapping[str, str]],
    studies: Iterable[str] = (),
    lesions: Mapping[str, Sequence[Sequence[float]]] | None = None,
    radius_mm: float = 20.0,
) -> dict[str, Any]:
    """False lesion calls per study of ``predict``'s scan-mode ``predictions.csv``.

    ``studies`` names every study that was scanned: one where the scan proposed nothing has
    no row, yet counts (0 false calls) in the denominator. ``lesions`` (study -> labelled
    lesion centres, LPS mm) makes this a detection check on studies that have lesions: a
    lesion call within ``radius_mm`` of one of its study's lesions is a hit, not a false call,
    and each lesion with a hit counts as found.
    """
    lesions = lesions or {}
    per_study: dict[str, int] = defaultdict(int)
    candidates: dict[str, int] = {s: 0 for s in [*studies, *lesions]}
    found: dict[str, set[int]] = defaultdict(set)
    for r in prediction_rows:
        study = r["study_id"]
        candidates[study] = candidates.get(study, 0) + 1
        if r["compartment_label"] == "none" and r["fracture_label"] == "none":
            continue
        centres = np.asarray(lesions.get(study, ()), dtype=float).reshape(-1, 3)
        if len(centres):
            at = np.array([float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"])])
            near = np.flatnonzero(np.linalg.norm(centres - at, axis=1) <= radius_mm)
            if len(near):
                found[study].update(int(i) for i in near)
                continue
        per_study[study] += 1
    names = sorted(candidates)
    calls = [per_study[s] for s in names]
    out: dict[str, Any] = {
        "studies": len(names),
        "candidates": int(sum(candidates.values())),
        "false_calls": int(sum(calls)),
        "false_calls_per_study": float(np.mean(calls)) if calls else None,
        "per_study": {s: per_study[s] for s in names},
    }
    n_lesions = sum(len(v) for v in lesions.values())
    if n_lesions:
        out["lesions"] = n_lesions
        out["lesions_found"] = sum(len(v) for v in found.values())
        out["radius_mm"] = radius_mm
    return out


def normals_by_place(rows: Sequence[Mapping[str, str]]) -> dict[str, dict[str, Any]]:
    """Untouched real ROIs called none/none, per place (body, canal at a body's level, canal behind
    a disc, around the spine, anywhere) and, for the canal, per level: where a scan's false calls
    come from. Each place also counts the intradural-extramedullary and intramedullary calls."""
    groups: dict[str, list[Mapping[str, str]]] = defaultdict(list)
    for r in rows:
        place = place_of(r["case_id"])
        if r.get("finding") == "normal" and place:
            groups[place].append(r)
            if place in CANAL_PLACES and r.get("level"):
                groups[f"{place}@{r['level']}"].append(r)
    out: dict[str, dict[str, Any]] = {}
    for place in sorted(groups):  # each place followed by its levels
        rs = groups[place]
        out[place] = {
            "n": len(rs),
            "called_normal": _fraction(_called_normal(r) for r in rs),
            "intradural_calls": sum(r["compartment_pred"] == "intradural_extramedullary" for r in rs),
            "intramedullary_calls": sum(r["compartment_pred"] == "intramedullary" for r in rs),
        }
    return out


def _fraction(flags: Iterable[bool]) -> float | None:
    values = list(flags)
    return round(float(np.mean(values)), 4) if values else None
