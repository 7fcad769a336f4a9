"""Hard negatives for scan mode: where a model's scan finds "lesions" in untouched real spines.

Scan mode slides the classifier over every position of a study, most of which no training
ROI was centred on: the lower canal, posterior elements, sacrum, the soft tissue behind the
spine. On untouched real normal studies every scan candidate is a false one, so the
candidates a model proposes there are normal ROIs it has not learnt yet: detection tools
train on them in a second round (hard-negative mining). Only subjects of the train and val
splits are mined; held-out subjects stay held out.
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

from spinelesion.labels import SEQUENCES, TASKS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UntouchedStudy:
    study_id: str
    patient_id: str
    split: str
    sequences: dict[str, Path]  # absolute paths
    level: str


def untouched_studies(
    manifest: str | os.PathLike[str], splits: Iterable[str] = ("train", "val")
) -> list[UntouchedStudy]:
    """The untouched real studies of an insertion manifest (rows with finding ``normal``) in ``splits``."""
    manifest = Path(manifest)
    wanted = set(splits)
    seen: dict[str, UntouchedStudy] = {}
    with open(manifest, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["finding"] != "normal" or row["split"] not in wanted or row["study_id"] in seen:
                continue
            seqs = {s: (manifest.parent / row[s]).resolve() for s in SEQUENCES if row.get(s)}
            seen[row["study_id"]] = UntouchedStudy(
                row["study_id"], row["patient_id"], row["split"], seqs, row.get("level", "")
            )
    return list(seen.values())


def mine_study(predictor: Any, study: UntouchedStudy, scan_cfg: Any) -> list[tuple[np.ndarray, float, bool]]:
    """Scan candidates of one untouched study: (LPS centre, scan score, called a lesion by the ROI classifier)."""
    from spinelesion.inference.scan import scan_study
    from spinelesion.io.study import load_study_from_paths

    loaded = load_study_from_paths(study.study_id, {s: str(p) for s, p in study.sequences.items()})
    array, affine, available, _ = predictor.prepare(loaded)
    result = scan_study(predictor.net, array, affine, available, predictor.spec, scan_cfg, predictor.device)
    if not result.candidates:
        return []
    images, flags = predictor.crops(array, affine, available, [c for c, _ in result.candidates])
    probs = predictor.classify(images, flags)
    lesion = np.zeros(len(result.candidates), bool)
    for task in TASKS:
        lesion |= predictor.decision.labels(task, probs[task]) != 0
    return [(c, s, bool(x)) for (c, s), x in zip(result.candidates, lesion, strict=True)]


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
    tag = str(cfg.get("tag", out.name))  # case ids stay unique when several rounds join one training mix
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"studies": 0, "candidates": 0, "called_lesion": 0, "per_study": {}}
    for study in tqdm(list(studies), desc="mining", unit="study", disable=not progress):
        found = mine_study(predictor, study, scan_cfg)
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
    studies = untouched_studies(insert_manifest, cfg.get("splits", ("train", "val")))
    if not studies:
        raise ValueError(
            f"{insert_manifest}: no untouched (finding 'normal') study in the train/val splits to mine"
        )
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
