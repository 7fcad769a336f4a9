"""Hard negatives for scan mode: where a model's scan finds "lesions" in untouched real spines.

Scan mode slides the classifier over every position of a study, most of which no training
ROI was centred on: the lower canal, posterior elements, sacrum, the soft tissue behind the
spine. On untouched real normal studies every scan candidate is a false one, so the
candidates a model proposes there are normal ROIs it has not learnt yet: detection tools
train on them in a second round (hard-negative mining). Only subjects of the train and val
splits are mined; held-out subjects stay held out.

Studies with labelled lesions (the phantom's) can be mined too (``studies: all``): a candidate
within ``exclude_mm`` of one of the study's labelled ROIs is not mined, the rest are false calls
on normal anatomy around the lesion.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from spinelesion.data.manifest import is_twin
from spinelesion.labels import SEQUENCES, TASKS

log = logging.getLogger(__name__)

# Findings whose signal reaches far along the canal (cord oedema, seeding along the roots): the
# phantom keeps normal ROIs 90 mm from them, so a study with one is not mined at all.
LONG_REACH = frozenset({"intramedullary_metastasis", "drop_metastases"})


@dataclass(frozen=True)
class UntouchedStudy:
    """A study to scan: untouched (real normal spines), or with labelled lesions to keep away from."""

    study_id: str
    patient_id: str
    split: str
    sequences: dict[str, Path]  # absolute paths
    level: str
    lesions: tuple[tuple[float, float, float], ...] = ()  # labelled lesion centres (LPS mm) to keep away from


def study_rows(
    manifest: str | os.PathLike[str], splits: Iterable[str] = ("train", "val")
) -> dict[str, list[dict[str, str]]]:
    """A manifest's rows in ``splits``, grouped by study (in file order). Twins (an inserted study's
    untouched crop, :func:`spinelesion.data.manifest.is_twin`) are left out: they are training pairs,
    and as "untouched studies" they would be mined (hundreds of crops) and would dilute the scan
    operating point's false calls per whole healthy exam."""
    wanted = set(splits)
    rows: dict[str, list[dict[str, str]]] = {}
    with open(manifest, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["split"] in wanted and not is_twin(row["study_id"]):
                rows.setdefault(row["study_id"], []).append(row)
    return rows


def study_of(
    manifest: str | os.PathLike[str],
    rows: list[dict[str, str]],
    lesions: tuple[tuple[float, float, float], ...] = (),
) -> UntouchedStudy:
    """The study of one study's manifest rows, its sequence paths resolved against the manifest."""
    first, parent = rows[0], Path(manifest).parent
    seqs = {s: (parent / first[s]).resolve() for s in SEQUENCES if first.get(s)}
    return UntouchedStudy(
        first["study_id"], first["patient_id"], first["split"], seqs, first.get("level", ""), lesions
    )


def untouched_studies(
    manifest: str | os.PathLike[str], splits: Iterable[str] = ("train", "val"), with_lesions: bool = False
) -> list[UntouchedStudy]:
    """The studies of a manifest in ``splits`` to mine.

    By default the untouched ones (every row ``normal``: an insertion manifest's untouched real
    studies). ``with_lesions``: every study, each with its labelled lesion centres (the phantom's),
    but those with a finding of ``LONG_REACH``.
    """
    out = []
    for mine in study_rows(manifest, splits).values():
        lesions = tuple(
            (float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"])) for r in mine if r["finding"] != "normal"
        )
        if lesions and (not with_lesions or any(r["finding"] in LONG_REACH for r in mine)):
            continue
        out.append(study_of(manifest, mine, lesions))
    return out


@dataclass(frozen=True)
class ScanCandidate:
    """One scan candidate of a study, as prediction's scan mode classifies it."""

    centre: np.ndarray  # LPS mm
    score: float  # the map's 1 - p(none) at the peak
    p_lesion: float  # the mean answer around it: the larger task's 1 - p(none), at the scan's lesion rates
    rule_lesion: bool  # the decision rule names a lesion class (before any call threshold)
    probs: dict[str, list[float]] | None = None  # the mean answer per task, as trained (before the rates)

    def called(self, call_threshold: float) -> bool:
        """A lesion call at this threshold (:meth:`CallPolicy.scan_labels`)."""
        return self.rule_lesion and self.p_lesion >= call_threshold


def scan_candidates(predictor: Any, study: UntouchedStudy, scan_cfg: Any) -> list[ScanCandidate]:
    """Scan candidates of one study with the classifier's answer around each (scan.py)."""
    from spinelesion.io.study import load_study_from_paths

    loaded = load_study_from_paths(study.study_id, {s: str(p) for s, p in study.sequences.items()})
    array, affine, available, _ = predictor.prepare(loaded)
    result, warnings, _ = predictor.scan(array, affine, available, cfg=scan_cfg)
    for w in warnings:
        log.warning("%s: %s", study.study_id, w)
    if not result.candidates:
        return []
    centres = [c for c, _ in result.candidates]
    images, flags = predictor.crops(array, affine, available, centres)
    probs = predictor.mean_over_neighbours(
        predictor.classify(images, flags), array, affine, available, centres, scan_cfg.classify_shift_mm
    )
    p_lesion = predictor.policy.scan_lesion_probability(probs, scan_cfg)
    rule = predictor.policy.labels(probs)
    named = np.any([np.asarray(rule[t]) != 0 for t in TASKS], axis=0)
    return [
        ScanCandidate(
            np.asarray(c), float(s), float(p), bool(n), {t: [float(v) for v in probs[t][i]] for t in TASKS}
        )
        for i, ((c, s), p, n) in enumerate(zip(result.candidates, p_lesion, named, strict=True))
    ]


def mine_study(predictor: Any, study: UntouchedStudy, scan_cfg: Any) -> list[tuple[np.ndarray, float, bool]]:
    """Scan candidates of one untouched study: (LPS centre, scan score, called a lesion by the ROI
    classifier as prediction's scan mode calls it: the mean answer around the candidate)."""
    bar = predictor.policy.scan_call_threshold(scan_cfg)
    return [(c.centre, c.score, c.called(bar)) for c in scan_candidates(predictor, study, scan_cfg)]


def hard_negative_records(
    studies: Iterable[UntouchedStudy],
    predictor: Any,
    out: Path,
    cfg: Mapping[str, Any],
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Manifest records (none/none) at the scan candidates of ``predictor`` on each study, and a summary.

    ``cfg``: threshold, max_rois, min_distance_mm (the scan's, usually looser than prediction's
    so that near misses are mined too) and any other ScanConfig field (stride_mm, sigma_scale),
    copies (jittered copies of each point), jitter_mm, seed, tag (in each case id; default: the
    output folder's name).
    """
    from dataclasses import fields

    from spinelesion.inference.scan import ScanConfig
    from spinelesion.insert.dataset import normal_record

    scan_keys = {f.name for f in fields(ScanConfig)}
    scan_cfg = ScanConfig(
        **{
            "threshold": 0.3,
            "max_rois": 16,
            "min_distance_mm": 15.0,
            **{k: v for k, v in cfg.items() if k in scan_keys},
        }
    )
    rng = np.random.default_rng(int(cfg.get("seed", 0)))
    copies, jitter = int(cfg.get("copies", 2)), float(cfg.get("jitter_mm", 3.0))
    exclude = float(cfg.get("exclude_mm", 25.0))
    tag = str(cfg.get("tag", out.name))  # case ids stay unique when several rounds join one training mix
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"studies": 0, "candidates": 0, "called_lesion": 0, "per_study": {}}
    for study in tqdm(list(studies), desc="mining", unit="study", disable=not progress):
        found = mine_study(predictor, study, scan_cfg)
        if study.lesions:  # a candidate near a labelled lesion is a detection, not a false call
            near = np.asarray(study.lesions, dtype=float)
            found = [f for f in found if np.linalg.norm(near - f[0], axis=1).min() > exclude]
        seqs = {s: os.path.relpath(p, out) for s, p in study.sequences.items()}
        for k, (centre, _score, _called) in enumerate(found):
            for j in range(1 + copies):  # the candidate, then jittered copies: it weighs like a body's ROIs
                point = centre + (rng.uniform(-jitter, jitter, 3) if j else 0.0)
                case_id = f"{study.study_id}_{tag}{k:02d}_{j}"
                records.append(
                    normal_record(
                        case_id, study.study_id, study.patient_id, seqs, point, study.level, split=study.split
                    )
                )
        summary["studies"] += 1
        summary["candidates"] += len(found)
        summary["called_lesion"] += sum(c for _, _, c in found)
        summary["per_study"][study.study_id] = {
            "candidates": len(found),
            "called_lesion": sum(c for _, _, c in found),
            "max_score": round(max((s for _, s, _ in found), default=0.0), 3),
        }
    return records, summary


def mine_hard_negatives(
    insert_manifest: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    cfg: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``output_dir/manifest.csv`` of hard negatives (+ ``mining.json``); returns the manifest."""
    from spinelesion.atomic import write_json
    from spinelesion.data.manifest import write_manifest

    cfg = dict(cfg or {})
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with_lesions = cfg.get("studies", "untouched") == "all"
    studies = untouched_studies(insert_manifest, cfg.get("splits", ("train", "val")), with_lesions)
    studies = studies[: int(cfg["max_studies"])] if cfg.get("max_studies") else studies
    if not studies:
        kind = (
            "study (far-reaching findings left out)" if with_lesions else "untouched (finding 'normal') study"
        )
        raise ValueError(f"{insert_manifest}: no {kind} in the train/val splits to mine")
    from spinelesion.inference.predictor import Predictor, PredictorConfig

    predictor = Predictor.from_model_dir(model_dir, PredictorConfig(saliency_method="none"))
    records, summary = hard_negative_records(
        studies, predictor, out, cfg, progress=bool(cfg.get("progress", True))
    )
    path = write_manifest(out / "manifest.csv", records)
    write_json(
        out / "mining.json",
        {
            "model": Path(model_dir).name,
            "settings": {k: v for k, v in cfg.items() if k != "progress"},
            **summary,
        },
    )
    log.info(
        "%d hard negatives from %d candidates in %d studies (%d called a lesion) -> %s",
        len(records),
        summary["candidates"],
        summary["studies"],
        summary["called_lesion"],
        path,
    )
    return path
