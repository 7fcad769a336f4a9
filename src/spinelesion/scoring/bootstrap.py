"""Patient-level bootstrap confidence intervals.

Rows of one patient are correlated (several ROIs, sometimes several studies), so the
bootstrap resamples *patients* with replacement and takes all rows of each sampled patient;
resampling rows would give intervals that are too narrow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def patient_bootstrap(
    metric: Callable[[np.ndarray], float | None],
    patient_ids: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, object]:
    """Percentile interval of ``metric(row_indices)`` over patient resamples.

    Returns ``{"ci95": [lo, hi] | None, "n_valid": int, "n_skipped": int}``; resamples where
    the metric is undefined (e.g. a class absent) are skipped and counted.
    """
    pids = np.asarray(patient_ids)
    uniq, inverse = np.unique(pids, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == k) for k in range(len(uniq))]
    rng = np.random.default_rng(seed)
    values = []
    skipped = 0
    draws = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    for draw in draws:
        idx = np.concatenate([rows_of[k] for k in draw])
        v = metric(idx)
        if v is None or not np.isfinite(v):
            skipped += 1
            continue
        values.append(v)
    if not values:
        return {"ci95": None, "n_valid": 0, "n_skipped": skipped}
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"ci95": [float(lo), float(hi)], "n_valid": len(values), "n_skipped": skipped}
