"""Class priors: what the network was trained on, and what a scan meets.

The balanced sampler shows the network every class about equally often, so its calibrated
probabilities answer "which class, if all were equally common": right for a place a user
points at (the decision rule then favours rare classes on purpose), not for a scan's call,
where an intradural-extramedullary tumour is one spinal lesion in eighteen and an
intramedullary one in a hundred or more (docs/radiology.md). With ``scan.lesion_rates`` (opt-in:
on validation it cost rare-class lesions and saved no false call, docs/outputs.md) scan mode
re-weighs each candidate's probabilities from the sampling prior
(:func:`spinelesion.data.datamodule.sampling_prior`, recorded in the model's metadata) to given rates before it asks
whether the candidate is a lesion (Bayes' rule under a change of prior, Saerens et al., Neural
Computation 2002): an ambiguous blob in the canal stays a normal conus, a clear one is still
called. The commonest lesion class keeps its weight against "none", so that balance stays the
fitted operating point's business; the rarer ones need their real odds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from spinelesion.labels import TASKS


def check_rates(rates: Mapping[str, Mapping[str, float]] | None) -> None:
    """A clear error for rates that name an unknown task or class, or are not finite and > 0."""
    for task, per in (rates or {}).items():
        if task not in TASKS:
            raise ValueError(f"scan.lesion_rates names task {task!r}, not one of {list(TASKS)}")
        unknown = sorted(set(per or {}) - set(TASKS[task][1:]))
        if unknown:
            raise ValueError(f"scan.lesion_rates names {unknown}, not lesion classes of {list(TASKS[task])}")
        bad = {
            k: v
            for k, v in (per or {}).items()
            if not isinstance(v, int | float) or not np.isfinite(v) or v <= 0
        }
        if bad:
            raise ValueError(f"scan.lesion_rates must be finite and > 0: {bad}")


def rate_weights(prior: Sequence[float], classes: Sequence[str], rates: Mapping[str, float]) -> np.ndarray:
    """Per class, the factor that moves a probability from ``prior`` to ``rates`` (relative rates
    of lesion classes). The commonest named class keeps factor 1, as do none and any class the
    rates leave out; the others are scaled to their rate relative to it: the call between "some
    lesion" and "none" stays the operating point's, and a rare class needs its real odds."""
    p = np.asarray(prior, np.float64)
    if len(p) != len(classes):
        raise ValueError(f"a prior of {len(p)} classes for {len(classes)} classes {list(classes)}")
    w = np.ones(len(classes))
    named = [c for c in rates if p[classes.index(c)] > 0]  # a class never sampled has nothing to move
    if not named:
        return w
    anchor = max(named, key=lambda c: rates[c])
    ratio_anchor = float(rates[anchor]) / p[classes.index(anchor)]
    for c in named:
        w[classes.index(c)] = float(rates[c]) / p[classes.index(c)] / ratio_anchor
    return w


def reweigh(
    probs: Mapping[str, np.ndarray],
    prior: Mapping[str, Sequence[float]] | None,
    rates: Mapping[str, Mapping[str, float]] | None,
) -> dict[str, np.ndarray]:
    """Probabilities per task moved from the sampling ``prior`` to the lesion ``rates`` (per
    task; a task without rates, or a model without a recorded prior, unchanged)."""
    check_rates(rates)
    out = {t: np.asarray(p, np.float64) for t, p in probs.items()}
    if not prior or not rates:
        return out
    for task, task_rates in rates.items():
        if not task_rates or task not in prior or task not in out:
            continue
        w = rate_weights(prior[task], TASKS[task], task_rates)
        p = out[task] * w[None]
        out[task] = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
    return out
