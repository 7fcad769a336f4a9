"""Metrics against hand-computed values, bootstrap, calibration, metrics.json and plots."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from spinelesion.evaluation.plots import write_plots
from spinelesion.evaluation.report import EvalInputs, compute_metrics, level_region, write_metrics
from spinelesion.labels import IGNORE_INDEX as U
from spinelesion.scoring.bootstrap import patient_bootstrap
from spinelesion.scoring.calibration import ece, fit_temperature, nll, softmax
from spinelesion.scoring.metrics import (
    auc_benign_vs_pathologic,
    auc_macro,
    balanced_accuracy,
    binary_auc,
    confusion,
    per_class_auc,
    sensitivity_specificity,
)


def test_binary_auc_with_ties_by_hand():
    # positives 0.8, 0.4 ; negatives 0.4, 0.1: pairs (0.8>0.4)=1, (0.8>0.1)=1, (0.4=0.4)=0.5, (0.4>0.1)=1 -> 3.5/4
    assert binary_auc(np.array([1, 1, 0, 0], bool), np.array([0.8, 0.4, 0.4, 0.1])) == pytest.approx(0.875)
    assert binary_auc(np.array([1, 1], bool), np.array([0.1, 0.2])) is None


def test_multiclass_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2, U])
    p = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.4, 0.5, 0.1],  # wrong: predicted 1
            [0.1, 0.8, 0.1],
            [0.2, 0.6, 0.2],
            [0.1, 0.1, 0.8],
            [0.9, 0.05, 0.05],
        ]
    )  # unknown label: skipped everywhere
    cm = confusion(y, p)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    ss = sensitivity_specificity(cm)
    assert ss[0] == (0.5, 1.0)
    assert ss[1] == (1.0, pytest.approx(2 / 3))
    assert balanced_accuracy(y, p) == pytest.approx((0.5 + 1 + 1) / 3)
    aucs = per_class_auc(y, p)
    # class 0: positives 0.7, 0.4 vs negatives 0.1, 0.2, 0.1 -> all 6 pairs ordered -> 1.0
    assert aucs[0] == pytest.approx(1.0)
    # class 2: positive 0.8 vs negatives 0.1, 0.1, 0.1, 0.2 -> 1.0
    assert aucs[2] == pytest.approx(1.0)
    # class 1: positives 0.8, 0.6 vs negatives 0.2, 0.5, 0.1 -> 6/6
    assert aucs[1] == pytest.approx(1.0)
    assert auc_macro(y, p) == pytest.approx(1.0)


def test_benign_vs_pathologic_uses_the_ratio_score():
    y = np.array([1, 1, 2, 2, 0])
    # ratio p2/(p1+p2): 0.2/(0.6+0.2)=0.25 ; 0.1/(0.1+0.1)=0.5 ; 0.3/(0.3+0.3)=0.5 ; 0.6/0.7 ~ 0.857
    p = np.array([[0.2, 0.6, 0.2], [0.8, 0.1, 0.1], [0.4, 0.3, 0.3], [0.3, 0.1, 0.6], [0.1, 0.1, 0.8]])
    # positives (pathologic) 0.5, 0.857 vs negatives 0.25, 0.5 -> (1 + 0.5 + 1 + 1) / 4 = 0.875
    assert auc_benign_vs_pathologic(y, p) == pytest.approx(0.875)
    # the raw p(pathologic) would rank differently: the 'none' row must not matter either
    assert auc_benign_vs_pathologic(np.array([0, 0]), p[:2]) is None


def test_ece_by_hand_and_temperature_scaling():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.2, 0.8]])
    # bins: 0.9 bin: 3 rows, accuracy 2/3, confidence 0.9 ; 0.8 bin: 1 row, acc 1, conf 0.8
    assert ece(y, p) == pytest.approx((3 * abs(2 / 3 - 0.9) + 1 * abs(1 - 0.8)) / 4)
    rng = np.random.default_rng(0)
    n, true_t = 4000, 3.0
    logits = rng.normal(0, 2.5, size=(n, 3))
    y = np.array([rng.choice(3, p=pp) for pp in softmax(logits / true_t)])
    over_confident = logits  # scored as if T = 1: far too sure
    t = fit_temperature(over_confident, y)
    assert t == pytest.approx(true_t, rel=0.15)
    assert ece(y, softmax(over_confident, t)) < 0.5 * ece(y, softmax(over_confident))
    assert nll(over_confident, y, t) < nll(over_confident, y)
    assert fit_temperature(logits[:3], np.full(3, U)) == 1.0


def test_bootstrap_resamples_patients_and_contains_the_estimate():
    rng = np.random.default_rng(1)
    n = 120
    y = rng.integers(0, 2, n)
    score = y * 0.6 + rng.normal(0, 0.5, n)
    patients = [f"p{i // 3}" for i in range(n)]
    metric = lambda idx: binary_auc(y[idx] == 1, score[idx])  # noqa: E731
    point = metric(np.arange(n))
    a = patient_bootstrap(metric, patients, n_boot=300, seed=7)
    b = patient_bootstrap(metric, patients, n_boot=300, seed=7)
    assert a == b
    lo, hi = a["ci95"]
    assert lo < point < hi
    # duplicating every row inside its patient changes nothing for a patient bootstrap
    # (a row bootstrap would see twice the data and narrow the interval)
    dup = np.repeat(np.arange(n), 2)
    metric2 = lambda idx: binary_auc(y[dup][idx] == 1, score[dup][idx])  # noqa: E731
    c = patient_bootstrap(metric2, [patients[i] for i in dup], n_boot=300, seed=7)
    assert c["ci95"][1] - c["ci95"][0] == pytest.approx(hi - lo, rel=0.25)


def _inputs(n: int = 60, seed: int = 0) -> EvalInputs:
    rng = np.random.default_rng(seed)
    yc = rng.integers(0, 4, n)
    yf = rng.integers(0, 3, n)
    yf[:5] = U
    pc = softmax(np.eye(4)[yc] * 2 + rng.normal(0, 1, (n, 4)))
    pf = softmax(np.eye(3)[np.clip(yf, 0, 2)] * 2 + rng.normal(0, 1, (n, 3)))
    return EvalInputs(
        [f"c{i}" for i in range(n)],
        [f"p{i // 2}" for i in range(n)],
        ["normal", "meningioma"] * (n // 2),
        ["T12", "L3", "C5"] * (n // 3),
        {"compartment": yc, "fracture": yf},
        {"compartment": pc, "fracture": pf},
    )


def test_metrics_json_has_every_contract_key(tmp_path: Path):
    m = compute_metrics(_inputs(), n_boot=100)
    path = write_metrics(m, tmp_path)
    data = json.loads(path.read_text())
    for task, n_cls in (("compartment", 4), ("fracture", 3)):
        t = data[task]
        assert isinstance(t["n"], int) and isinstance(t["auc_macro"], float)
        assert isinstance(t["balanced_accuracy"], float) and isinstance(t["ece"], float)
        assert len(t["confusion"]) == n_cls and all(len(r) == n_cls for r in t["confusion"])
        assert set(t["per_class"]) == set(
            ("none", "extradural", "intradural_extramedullary", "intramedullary")
            if task == "compartment"
            else ("none", "benign", "pathologic")
        )
        for v in t["per_class"].values():
            assert {"sensitivity", "specificity", "auc"} <= set(v)
    assert len(data["compartment"]["auc_macro_ci95"]) == 2
    assert isinstance(data["fracture"]["auc_benign_vs_pathologic"], float)
    assert len(data["fracture"]["auc_benign_vs_pathologic_ci95"]) == 2
    assert data["fracture"]["n"] == 55 and data["fracture"]["n_unknown"] == 5
    assert set(data["subgroups"]["level_region"]) == {"thoracic", "lumbar", "cervical"}
    assert "meningioma" in data["subgroups"]["finding"]


def test_undefined_metrics_are_null_not_nan(tmp_path: Path):
    inp = _inputs()
    inp.y_true["fracture"][:] = 0  # only 'none': no AUC is defined
    m = compute_metrics(inp, n_boot=20)
    text = write_metrics(m, tmp_path).read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["fracture"]["auc_benign_vs_pathologic"] is None and data["fracture"]["notes"]


def test_level_region():
    assert [level_region(v) for v in ("C5", "T12", "L3", "S1", "", "x")] == [
        "cervical",
        "thoracic",
        "lumbar",
        "sacral",
        "unknown",
        "unknown",
    ]


def test_plots_are_written(tmp_path: Path):
    inp = _inputs()
    m = compute_metrics(inp, n_boot=20)
    paths = write_plots(inp, m, tmp_path)
    names = {p.name for p in paths}
    assert {"roc_compartment.png", "reliability_fracture.png", "confusion_compartment.png"} <= names
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_plots_of_normals_only_warn_about_nothing(tmp_path: Path):
    # A set of normal ROIs only (the shared real normals): no ROC curve can be drawn, and the
    # ROC plot must not ask matplotlib for a legend it has nothing to put in.
    inp = _inputs()
    inp.y_true["compartment"][:] = 0
    inp.y_true["fracture"][:] = 0
    m = compute_metrics(inp, n_boot=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = write_plots(inp, m, tmp_path)
    assert {"roc_compartment.png", "roc_fracture.png"} <= {p.name for p in paths}
