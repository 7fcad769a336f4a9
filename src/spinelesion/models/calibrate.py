"""Temperature scaling of a trained network on held-out data (Guo et al., 2017)."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader

from spinelesion.data.dataset import RoiDataset
from spinelesion.labels import TASKS
from spinelesion.models.batch import predict_logits
from spinelesion.models.decision import DecisionRule, fit_rule
from spinelesion.models.networks import MultiTaskNet

log = logging.getLogger(__name__)


def calibrate_on(
    net: MultiTaskNet,
    dataset: RoiDataset,
    batch_size: int = 32,
    device: str = "auto",
    tta: tuple[str, ...] = (),
) -> dict[str, float]:
    """Fit one temperature per task on ``dataset`` (unaugmented), store it in ``net``."""
    return calibrate_and_decide(net, dataset, batch_size, device, decide=False, tta=tta)[0]


def calibrate_and_decide(
    net: MultiTaskNet,
    dataset: RoiDataset,
    batch_size: int = 32,
    device: str = "auto",
    decide: bool = True,
    tta: tuple[str, ...] = (),
) -> tuple[dict[str, float], DecisionRule]:
    """Temperatures (stored in ``net``), then the decision rule on the calibrated probabilities.

    One pass over ``dataset`` serves both fits, with the test-time mirrors ``tta`` the model will
    be run with. The rule's offsets belong in ``metadata.json['decision']``
    (:meth:`DecisionRule.to_json`), the mirrors in ``metadata.json['tta']``.
    """
    from spinelesion.scoring.calibration import fit_temperature, softmax

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    logits = predict_logits(net, loader, device=device, tta=tta)
    targets = {t: dataset.bank.targets[t][dataset.indices].numpy() for t in TASKS}
    temps: dict[str, float] = {}
    with torch.no_grad():
        for i, task in enumerate(TASKS):
            t = float(fit_temperature(logits[task], targets[task]))
            net.temperature[i] = t
            temps[task] = round(t, 4)
    log.info("temperature scaling on %d validation ROIs: %s", len(dataset), temps)
    if not decide:
        return temps, DecisionRule()
    probs = {t: softmax(logits[t], float(net.temperature[i])) for i, t in enumerate(TASKS)}
    return temps, fit_rule(probs, targets)
