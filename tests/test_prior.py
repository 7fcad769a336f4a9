"""Class priors: the sampler's shares, and scan mode's move from them to real lesion rates."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from spinelesion.data.datamodule import balanced_weights, sampling_prior
from spinelesion.labels import TASKS
from spinelesion.models.prior import check_rates, rate_weights, reweigh


def _row(compartment: str, fracture: str = "none", source: str = "a") -> SimpleNamespace:
    return SimpleNamespace(labels={"compartment": compartment, "fracture": fracture}, source=source)


def test_sampling_prior_counts_plain_and_balanced_draws():
    rows = [_row("none")] * 6 + [_row("extradural")] * 3 + [_row("intramedullary")] + [_row("", "")]
    plain = sampling_prior(rows)
    assert plain["compartment"] == pytest.approx([0.6, 0.3, 0.0, 0.1])  # unlabelled row left out
    assert plain["fracture"] == pytest.approx([1.0, 0.0, 0.0])
    # balanced sampling: every present class drawn about equally often
    balanced = sampling_prior(rows, balanced_weights(rows))  # type: ignore[arg-type]
    assert balanced["compartment"][0] == pytest.approx(balanced["compartment"][1], rel=0.35)
    assert balanced["compartment"][3] > plain["compartment"][3] * 2
    assert balanced["compartment"][2] == 0.0


def test_rate_weights_scale_the_rarer_classes_to_their_real_odds():
    classes = TASKS["compartment"]
    prior = [0.4, 0.3, 0.15, 0.15]
    rates = {"extradural": 0.9, "intradural_extramedullary": 0.09, "intramedullary": 0.01}
    w = rate_weights(prior, classes, rates)
    assert w[0] == 1.0 and w[1] == 1.0  # none and the commonest class keep their weight
    moved = np.asarray(prior) * w
    assert moved[1:] / moved[1:].sum() == pytest.approx([0.9, 0.09, 0.01])  # lesions at the rates
    # a class the rates leave out keeps its weight; the relative rates alone matter
    w2 = rate_weights(prior, classes, {"extradural": 9.0, "intramedullary": 1.0})
    assert w2 == pytest.approx([1.0, 1.0, 1.0, (1.0 / 9.0) * (0.3 / 0.15)])
    assert rate_weights(prior, classes, {k: 10 * v for k, v in rates.items()}) == pytest.approx(w)
    with pytest.raises(ValueError, match="a prior of 3 classes"):
        rate_weights(prior[:3], classes, rates)
    with pytest.raises(ValueError, match="not lesion classes"):
        check_rates({"compartment": {"none": 0.5}})
    with pytest.raises(ValueError, match="finite and > 0"):
        check_rates({"compartment": {"extradural": -1.0}})


def test_reweigh_lowers_a_rare_class_call_and_keeps_a_common_one():
    prior = {"compartment": [0.4, 0.2, 0.2, 0.2], "fracture": [0.6, 0.2, 0.2]}
    rates = {"compartment": {"extradural": 0.95, "intradural_extramedullary": 0.05, "intramedullary": 0.01}}
    probs = {
        "compartment": np.array([[0.15, 0.0, 0.85, 0.0], [0.15, 0.85, 0.0, 0.0], [0.01, 0.0, 0.99, 0.0]]),
        "fracture": np.array([[1.0, 0.0, 0.0]] * 3),
    }
    out = reweigh(probs, prior, rates)
    p_lesion = 1.0 - out["compartment"][:, 0]
    assert np.allclose(out["compartment"].sum(1), 1.0)
    assert p_lesion[0] < 0.5 and p_lesion[1] == pytest.approx(0.85)  # an ambiguous canal blob falls
    assert p_lesion[2] > 0.7  # a sure intradural finding is still a lesion
    assert np.array_equal(out["fracture"], probs["fracture"])  # a task without rates unchanged
    # without a recorded prior (an older model) or without rates: the classifier's answer
    for same in (reweigh(probs, None, rates), reweigh(probs, prior, None)):
        assert all(np.array_equal(same[t], probs[t]) for t in TASKS)
    with pytest.raises(ValueError, match="task 'stage'"):
        reweigh(probs, prior, {"stage": {"x": 1.0}})


def test_scan_calls_use_given_rates_only_with_a_recorded_prior():
    from test_scan import PROBE_META, OnCentreProbe

    from spinelesion.inference.predictor import Predictor, PredictorConfig
    from spinelesion.inference.scan import ScanConfig

    probs = {
        "compartment": np.array([[0.15, 0.0, 0.85, 0.0], [0.15, 0.85, 0.0, 0.0]]),
        "fracture": np.array([[1.0, 0.0, 0.0]] * 2),
    }
    rates = {
        "compartment": {"extradural": 0.95, "intradural_extramedullary": 0.055, "intramedullary": 0.0075}
    }

    def predictor(meta: dict, lesion_rates: dict | None) -> Predictor:
        scan = ScanConfig(lesion_rates=lesion_rates)
        return Predictor(
            OnCentreProbe(), meta, PredictorConfig(device="cpu", saliency_method="none", scan=scan)
        )

    prior = {"compartment": [0.4, 0.3, 0.15, 0.15], "fracture": [0.6, 0.2, 0.2]}
    with_prior = {**PROBE_META, "sampling_prior": prior}
    assert ScanConfig().lesion_rates is None  # opt-in
    assert predictor(with_prior, None).policy.scan_labels(probs, 0.7)["compartment"].tolist() == [2, 1]
    no_prior = predictor(PROBE_META, rates).policy
    assert no_prior.scan_labels(probs, 0.7)["compartment"].tolist() == [2, 1]  # no prior: as trained
    on = predictor(with_prior, rates)
    assert on.policy.scan_labels(probs, 0.7)["compartment"].tolist() == [0, 1]  # the canal blob is not called
    lesion = on.policy.scan_lesion_probability(probs)
    assert lesion[1] == pytest.approx(0.85)  # the commonest class as trained
    # bad rates are a clear error when the scan is configured, whatever the model
    with pytest.raises(ValueError, match="not lesion classes"):
        ScanConfig(lesion_rates={"compartment": {"spleen": 0.9}})
    with pytest.raises(ValueError, match="task 'stage'"):
        ScanConfig(lesion_rates={"stage": {"x": 1.0}})
    with pytest.raises(ValueError, match="finite and > 0"):
        ScanConfig(lesion_rates={"compartment": {"extradural": "many"}})  # type: ignore[dict-item]
