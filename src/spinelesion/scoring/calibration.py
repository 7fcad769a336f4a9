"""Calibration: expected calibration error, reliability curves, temperature scaling."""

from __future__ import annotations

import numpy as np
import torch

from spinelesion.scoring.metrics import known


def reliability(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict[str, list[float | int]]:
    """Top-label reliability: per equal-width confidence bin, mean confidence, accuracy, count."""
    m = known(y)
    y, probs = np.asarray(y)[m], np.asarray(probs)[m]
    conf = probs.max(1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(1) == y).astype(float) if len(probs) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out: dict[str, list[float | int]] = {
        "lower": edges[:-1].tolist(),
        "upper": edges[1:].tolist(),
        "confidence": [],
        "accuracy": [],
        "count": [],
    }
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        out["count"].append(n)
        out["confidence"].append(float(conf[sel].mean()) if n else float("nan"))
        out["accuracy"].append(float(correct[sel].mean()) if n else float("nan"))
    return out


def ece(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float | None:
    """Top-label expected calibration error with ``bins`` equal-width bins (Guo et al. 2017):
    the count-weighted mean |accuracy - confidence| over bins."""
    rel = reliability(y, probs, bins)
    counts = np.asarray(rel["count"], dtype=float)
    if counts.sum() == 0:
        return None
    gap = np.abs(
        np.nan_to_num(np.asarray(rel["accuracy"], float))
        - np.nan_to_num(np.asarray(rel["confidence"], float))
    )
    return float((counts * gap).sum() / counts.sum())


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    m = known(y)
    p = softmax(np.asarray(logits)[m], temperature)
    return float(-np.log(np.clip(p[np.arange(len(p)), np.asarray(y)[m]], 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, max_iter: int = 200) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on rows with known labels.

    Optimised over log T with L-BFGS (T stays positive); 1.0 when no row has a label.
    """
    m = known(y)
    if not m.any():
        return 1.0
    z = torch.as_tensor(np.asarray(logits)[m], dtype=torch.float64)
    t = torch.as_tensor(np.asarray(y)[m], dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), t)
        loss.backward()
        return loss

    opt.step(closure)
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))
