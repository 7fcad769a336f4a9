"""The call policy: how probabilities become labels, in one place.

- A ROI a user gives: the decision rule's label per task (:class:`~spinelesion.models.decision.DecisionRule`,
  fitted offsets that name rare classes when they should be named; argmax without them).
- A scan candidate: the same rule, but none/none unless "some lesion or fracture here", the larger
  task's 1 - p(none), reaches the call threshold: ``scan.call_threshold`` when given, else the
  model's fitted operating point (metadata ``scan.call_threshold``), else 0.5. Optionally judged at
  the scan's ``lesion_rates`` instead of the balanced rates the model was trained at
  (:mod:`spinelesion.models.prior`). The rule favours rare classes for a place a user asks about; a
  scan candidate must be more likely a lesion than not, and a fitted operating point asks more
  (a peak among thousands of windows on mostly normal anatomy).
- Its answer at a candidate is the mean over the candidate and its neighbours
  (``scan.classify_shift_mm``; :meth:`spinelesion.inference.predictor.Predictor.mean_over_neighbours`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from spinelesion.inference.scan import ScanConfig
from spinelesion.labels import TASKS
from spinelesion.models.decision import DecisionRule
from spinelesion.models.prior import reweigh


def fitted_call_threshold(meta: Mapping[str, Any]) -> float | None:
    """A model's fitted scan operating point (metadata ``scan.call_threshold``), None without one."""
    fitted = (meta.get("scan") or {}).get("call_threshold")
    if fitted is None:
        return None
    if isinstance(fitted, bool) or not isinstance(fitted, int | float) or not 0.0 <= fitted <= 1.0:
        raise ValueError(f"model metadata scan.call_threshold must be a number in [0, 1], not {fitted!r}")
    return float(fitted)


def lesion_probability(probs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per ROI, "some lesion or fracture here": the larger task's 1 - p(none)."""
    return np.max([1.0 - np.asarray(probs[t])[:, 0] for t in TASKS], axis=0)


class CallPolicy:
    """A model's labels for given ROIs and for scan candidates (the module's docstring)."""

    def __init__(self, meta: Mapping[str, Any], scan: ScanConfig) -> None:
        self.decision = DecisionRule.from_meta(meta)  # labels: fitted offsets, or argmax without them
        # The fitted scan operating point, read once: a malformed one fails here, not mid-run.
        self.fitted_call_threshold = fitted_call_threshold(meta)
        self.sampling_prior = meta.get("sampling_prior")
        self.scan = scan

    def labels(self, probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Class index per given ROI and task: the decision rule's."""
        return self.decision.labels_per_task(probs)

    def scan_call_threshold(self, scan: ScanConfig | None = None) -> float:
        """The bar a scan candidate's p(lesion) must reach."""
        given = (scan or self.scan).call_threshold
        if given is not None:
            return float(given)
        return self.fitted_call_threshold if self.fitted_call_threshold is not None else 0.5

    def scan_lesion_probability(
        self, probs: Mapping[str, np.ndarray], scan: ScanConfig | None = None
    ) -> np.ndarray:
        """:func:`lesion_probability` with the lesion classes moved from the model's sampling prior
        to the scan's ``lesion_rates``: what a scan candidate's call is judged on."""
        rates = (scan or self.scan).lesion_rates
        return lesion_probability(reweigh(probs, self.sampling_prior, rates))

    def scan_labels(
        self, probs: Mapping[str, np.ndarray], call_threshold: float | None = None
    ) -> dict[str, np.ndarray]:
        """Class index per scan candidate and task: the rule's, none/none below the call threshold."""
        if call_threshold is None:
            call_threshold = self.scan_call_threshold()
        labels = self.labels(probs)
        called = self.scan_lesion_probability(probs) >= call_threshold
        return {t: np.where(called, v, 0) for t, v in labels.items()}
