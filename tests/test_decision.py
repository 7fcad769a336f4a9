"""Decision rule for rare classes: fitted on validation, stored in the model folder, used for labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinelesion.evaluation.report import EvalInputs, compute_metrics
from spinelesion.labels import IGNORE_INDEX, TASKS
from spinelesion.models.decision import DecisionRule, balanced_accuracy_of, decide, fit_offsets, fit_rule
from spinelesion.models.folder import load_model_folder, save_model_folder
from spinelesion.models.networks import build_network
from spinelesion.scoring.calibration import softmax

SMALL = {"backbone": "spinecnn", "widths": [4, 8, 8, 8], "hidden": 8}
PRIORS = np.array([0.80, 0.12, 0.05, 0.03])  # like compartment: none, extradural, IDEM, intramedullary


def _logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A ranker that separates classes but whose scores lean to the majority (as argmax does)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(4, size=n, p=PRIORS)
    z = rng.normal(0.0, 1.0, (n, 4))
    z[np.arange(n), y] += 2.0
    z += np.log(PRIORS)[None] * 1.5  # prior-heavy logits: rare classes rarely win argmax
    return z.astype(np.float32), y


def test_fitted_rule_recovers_rare_classes_on_held_out_data():
    z_val, y_val = _logits(3000, 0)
    z_test, y_test = _logits(3000, 1)
    p_val, p_test = softmax(z_val), softmax(z_test)
    offsets = fit_offsets(p_val, y_val)

    arg, rule = decide(p_test, None), decide(p_test, offsets)
    sens_arg = [float((arg[y_test == c] == c).mean()) for c in range(4)]
    sens_rule = [float((rule[y_test == c] == c).mean()) for c in range(4)]
    assert sens_arg[3] < 0.35, "the synthetic case must be one where argmax misses the rare class"
    assert sens_rule[3] > sens_arg[3] + 0.3
    assert sens_rule[2] > sens_arg[2] + 0.2
    assert balanced_accuracy_of(y_test, rule) > balanced_accuracy_of(y_test, arg) + 0.1
    # the common class is not sacrificed wholesale
    assert sens_rule[0] > 0.6


def test_rule_keeps_argmax_when_nothing_gains_and_skips_unknown_rows():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 600)
    p = np.full((600, 3), 0.05)
    p[np.arange(600), y] = 0.9  # already perfect: no offset can do better
    y_unknown = y.copy()
    y_unknown[:50] = IGNORE_INDEX
    b = fit_offsets(p / p.sum(1, keepdims=True), y_unknown)
    np.testing.assert_allclose(b, 0.0)


def test_rule_round_trips_through_a_model_folder_and_sets_the_label(tmp_path: Path):
    from spinelesion.inference.predictor import Predictor

    z, y = _logits(2000, 2)
    probs = {"compartment": softmax(z), "fracture": softmax(z[:, :3])}
    targets = {"compartment": y, "fracture": np.minimum(y, 2)}
    rule = fit_rule(probs, targets)
    net = build_network(SMALL).eval()
    roi = {"shape": [32, 48, 48], "spacing": [1.5] * 3}
    save_model_folder(
        net,
        tmp_path / "m",
        {"name": "t", "version": "0", "network": SMALL, "roi": roi, "decision": rule.to_json()},
    )
    _, meta = load_model_folder(tmp_path / "m")
    loaded = DecisionRule.from_meta(meta)
    for task in TASKS:
        np.testing.assert_allclose(loaded.offsets[task], rule.offsets[task], atol=1e-4)
        assert all(isinstance(v, float) for v in meta["decision"]["offsets"][task])  # plain JSON numbers
    # a case argmax calls 'none' that the rule names intramedullary
    p = np.array([0.55, 0.05, 0.05, 0.35])
    assert int(np.argmax(p)) == 0
    predictor = Predictor(net, meta)
    assert TASKS["compartment"][predictor.policy.decision.label("compartment", p)] == "intramedullary"


def test_model_folder_without_rule_uses_argmax(tmp_path: Path):
    net = build_network(SMALL).eval()
    save_model_folder(
        net,
        tmp_path / "m",
        {"name": "t", "version": "0", "network": SMALL, "roi": {"shape": [32, 48, 48], "spacing": [1.5] * 3}},
    )
    _, meta = load_model_folder(tmp_path / "m")
    rule = DecisionRule.from_meta(meta)
    assert rule.offsets == {}
    p = np.array([[0.55, 0.05, 0.05, 0.35], [0.1, 0.2, 0.6, 0.1]])
    np.testing.assert_array_equal(rule.labels("compartment", p), [0, 2])
    # malformed offsets are ignored, not trusted
    bad = DecisionRule.from_meta(
        {"decision": {"kind": "log_offsets", "offsets": {"compartment": [1.0, "x"]}}}
    )
    assert bad.offsets == {}


def test_metrics_report_the_rule_and_argmax_side_by_side():
    z, y = _logits(800, 4)
    p = softmax(z)
    yf = np.minimum(y, 2)
    pf = softmax(z[:, :3])
    rule = fit_rule({"compartment": p, "fracture": pf}, {"compartment": y, "fracture": yf})
    n = len(y)
    inputs = EvalInputs(
        [f"c{i}" for i in range(n)],
        [f"p{i % 50}" for i in range(n)],
        ["x"] * n,
        ["T5"] * n,
        {"compartment": y, "fracture": yf},
        {"compartment": p, "fracture": pf},
    )
    m = compute_metrics(inputs, n_boot=10, rule=rule)
    c = m["compartment"]
    assert c["decision"]["rule"] == "log_offsets"
    assert c["balanced_accuracy"] > c["decision"]["balanced_accuracy_argmax"]
    assert (
        c["per_class"]["intramedullary"]["sensitivity"]
        > c["decision"]["sensitivity_argmax"]["intramedullary"]
    )
    plain = compute_metrics(inputs, n_boot=10)
    assert plain["compartment"]["decision"]["rule"] == "argmax"
    assert (
        plain["compartment"]["balanced_accuracy"]
        == plain["compartment"]["decision"]["balanced_accuracy_argmax"]
    )


def test_fitted_rule_keeps_normal_sensitivity_and_still_helps_rare_classes():
    """In a real study most bodies are normal: the rule may not buy rare-class sensitivity
    with false lesion calls on normal ROIs (more than NORMAL_RECALL_DROP below argmax)."""
    from spinelesion.models.decision import NORMAL_RECALL_DROP, recall_of

    z_val, y_val = _logits(3000, 0)
    p_val = softmax(z_val)
    free = fit_offsets(p_val, y_val)
    assert recall_of(y_val, decide(p_val, free), 0) < recall_of(y_val, decide(p_val, None), 0) - 0.05, (
        "the synthetic case must be one where the unconstrained rule sacrifices normals"
    )
    # both tasks from the same ranker (fracture: its first three classes, the rarest merged)
    probs = {t: softmax(z_val[:, : len(TASKS[t])]) for t in TASKS}
    targets = {t: np.minimum(y_val, len(TASKS[t]) - 1) for t in TASKS}
    rule = fit_rule(probs, targets, n_boot=5)
    for t in TASKS:
        arg, kept = decide(probs[t], None), rule.labels(t, probs[t])
        assert recall_of(targets[t], kept, 0) >= recall_of(targets[t], arg, 0) - NORMAL_RECALL_DROP - 1e-9
        assert rule.info["validation_normal_sensitivity_rule"][t] >= (
            rule.info["validation_normal_sensitivity_argmax"][t] - NORMAL_RECALL_DROP - 1e-9
        )
    c = rule.labels("compartment", probs["compartment"])
    a = decide(probs["compartment"], None)
    y = targets["compartment"]
    assert recall_of(y, c, 3) > recall_of(y, a, 3) + 0.1  # the rarest class still gains
    assert balanced_accuracy_of(y, c) > balanced_accuracy_of(y, a) + 0.03


@pytest.mark.slow
def test_bagged_rule_is_steadier_on_small_validation_splits():
    """A rare class with a dozen validation ROIs: one fit follows their noise; the average of
    bootstrap fits varies less from one validation draw to the next, at no cost on average."""
    from spinelesion.models.decision import bagged_offsets

    z_test, y_test = _logits(20000, 99)
    p_test = softmax(z_test)
    single, bagged = [], []
    for seed in range(8):
        z, y = _logits(300, seed)
        p = softmax(z)
        single.append(balanced_accuracy_of(y_test, decide(p_test, fit_offsets(p, y))))
        bagged.append(balanced_accuracy_of(y_test, decide(p_test, bagged_offsets(p, y, 30))))
    assert np.std(bagged) < 0.8 * np.std(single)
    assert min(bagged) > min(single) + 0.02
    assert np.mean(bagged) > np.mean(single) - 0.005
