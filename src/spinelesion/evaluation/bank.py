"""Score ROIs of a :class:`~spinelesion.data.dataset.RoiBank`: metrics.json, predictions.csv, plots.

Used by training (its splits) and by ``spinelesion-evaluate`` (any contract manifest).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spinelesion.atomic import atomic_path

log = logging.getLogger("spinelesion.evaluate")


def evaluate_bank(
    net: Any,
    bank: Any,
    indices: Sequence[int],
    spec: Any,
    out_dir: str | Path,
    batch_size: int = 32,
    device: str = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    plots: bool = True,
    extra: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
    tta: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Score ROIs ``indices`` of a :class:`RoiBank`; write metrics.json, predictions.csv, plots.

    ``decision`` is a model folder's ``metadata.json['decision']``: labels follow it (argmax without);
    ``tta`` its test-time mirrors (``metadata.json['tta']``).
    """
    from torch.utils.data import DataLoader

    from spinelesion.data.dataset import RoiDataset
    from spinelesion.evaluation.plots import write_plots
    from spinelesion.evaluation.report import EvalInputs, compute_metrics, write_metrics
    from spinelesion.labels import TASKS
    from spinelesion.models.batch import predict_logits
    from spinelesion.models.decision import DecisionRule
    from spinelesion.scoring.calibration import softmax

    rule = DecisionRule.from_meta({"decision": decision})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = RoiDataset(bank, indices, spec)
    logits = predict_logits(
        net, DataLoader(ds, batch_size=batch_size, shuffle=False), device=device, tta=tuple(tta)
    )
    temps = net.temperature.detach().cpu().numpy()
    probs = {t: softmax(logits[t], float(temps[i])) for i, t in enumerate(TASKS)}
    indices, probs, dropped = _finite_only(list(indices), probs, bank)
    rows = [bank.rows[i] for i in indices]
    inputs = EvalInputs(
        case_ids=[r.case_id for r in rows],
        patient_ids=[r.patient_id for r in rows],
        findings=[r.finding for r in rows],
        levels=[r.level for r in rows],
        y_true={t: bank.targets[t][list(indices)].numpy() for t in TASKS},
        probs=probs,
    )
    metrics = compute_metrics(inputs, n_boot=n_boot, seed=seed, rule=rule)
    if extra:
        metrics.update(extra)
    if dropped:
        metrics["non_finite_rois"] = dropped
    write_metrics(metrics, out_dir)
    _write_predictions(out_dir / "predictions.csv", rows, probs, {t: rule.labels(t, probs[t]) for t in TASKS})
    if plots:
        write_plots(inputs, metrics, out_dir)
    return metrics


def _finite_only(
    indices: list[int], probs: dict[str, np.ndarray], bank: Any
) -> tuple[list[int], dict[str, np.ndarray], list[str]]:
    """Leave out ROIs whose probabilities are not finite (a NaN image): never scored, listed instead."""
    ok = np.all([np.isfinite(p).all(1) for p in probs.values()], axis=0)
    if ok.all():
        return indices, probs, []
    dropped = [bank.rows[i].case_id for i, good in zip(indices, ok, strict=True) if not good]
    log.warning(
        "%d ROI(s) with non-finite probabilities left out of the metrics, e.g. %s", len(dropped), dropped[0]
    )
    if not ok.any():
        raise ValueError(f"every ROI got non-finite probabilities (e.g. {dropped[0]}): nothing to score")
    return (
        [i for i, good in zip(indices, ok, strict=True) if good],
        {t: p[ok] for t, p in probs.items()},
        dropped,
    )


def _write_predictions(
    path: Path, rows: Sequence[Any], probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> None:
    from spinelesion.labels import TASKS

    header = ["case_id", "study_id", "patient_id", "finding", "level"]
    for t, classes in TASKS.items():
        header += [f"{t}_true", f"{t}_pred"] + [f"p_{t}_{c}" for c in classes]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, r in enumerate(rows):
            line = [r.case_id, r.study_id, r.patient_id, r.finding, r.level]
            for t, classes in TASKS.items():
                p = probs[t][i]
                line += [r.labels[t], classes[int(labels[t][i])]] + [f"{v:.6f}" for v in p]
            w.writerow(line)
