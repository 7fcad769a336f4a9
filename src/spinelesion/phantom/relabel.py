"""Bring a phantom dataset written before ``Finding.shown_by`` up to today's labels.

A finding that its study's sequences cannot show (drop metastases drawn
without the visible-without-contrast sign, in a study without T1 + contrast) gets an unknown
compartment. Older datasets labelled them intradural-extramedullary: a canal that looks
normal, labelled diseased. The signs are drawn before anything is painted, so they are
recovered by planning each study again from its seeds (:func:`plan_study`), without rendering;
the images are left as they are.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from spinelesion.data.manifest import SEQUENCES, write_manifest
from spinelesion.phantom.study import plan_study

log = logging.getLogger(__name__)


def _index(identifier: str) -> int:
    """``S{seed:04d}{k:05d}`` / ``P{seed:04d}{p:05d}`` -> k / p."""
    return int(identifier[-5:])


def unseen_case_ids(rows: list[dict[str, str]], seed: int, phantom: dict) -> set[str]:
    """Case ids of ``rows`` whose finding the study's sequences (the row's non-empty sequence
    columns) cannot show, with the study planned again from the dataset's ``seed``."""
    out: set[str] = set()
    by_study: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r.get("finding", "") not in ("", "normal"):
            by_study.setdefault(r["study_id"], []).append(r)
    for study_id, study_rows in by_study.items():
        _, _, _, findings = plan_study(
            [seed, _index(study_id)],
            phantom,
            patient_seed=[seed, 100000 + _index(study_rows[0]["patient_id"])],
        )
        for r in study_rows:
            present = {s for s in SEQUENCES if r.get(s)}
            if any(f.name == r["finding"] and not f.shown_by(present) for f in findings):
                out.add(r["case_id"])
    return out


def relabel_unseen(folder: str | Path) -> int:
    """Rewrite ``folder``'s manifests (``manifest*.csv``) with unknown compartments where the
    study cannot show the finding; returns how many rows changed in ``manifest.csv``."""
    folder = Path(folder)
    info = json.loads((folder / "dataset.json").read_text())
    changed = 0
    for path in sorted(folder.glob("manifest*.csv")):
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        unseen = unseen_case_ids(rows, int(info["seed"]), info["config"])
        todo = [r for r in rows if r["case_id"] in unseen and r["compartment"]]
        for r in todo:
            r["compartment"] = ""
        if todo:
            write_manifest(path, rows)
        if path.name == "manifest.csv":
            changed = len(todo)
        log.info("%s: %d rows now of unknown compartment", path, len(todo))
    return changed
