"""Transfer across renderers: train briefly on phantom v2, evaluate on the v1 renderer too.

A change that only helps its own renderer shows up as a gap between the in-renderer and the
cross-renderer figures (both are written to the test log; the bench can track them). The
assertions are floors a brief CPU training clears; the numbers are the point. One direction only
(the default renderer to the old one): the reverse cost six more minutes of every `make test`,
and the release recipe's renderer probes measure transfer each way on full trainings
(docs/release.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from spinelesion.phantom.config import V1_OVERRIDES

log = logging.getLogger(__name__)
V1 = {f"phantom.{k}": v for k, v in V1_OVERRIDES.items()}
# Where normal ROIs are sampled is not part of a renderer, so it is held fixed here: the
# check compares renderers, and a new kind of normal ROI in the defaults (the hard `ventral`
# ones at the front of the canal, 2026-11-30) took the 48-study v1 training from AUC 0.80 to
# 0.66 in-renderer without any renderer change.
SAMPLING = {
    "phantom.normal_roi_kinds": {"body": 0.35, "canal": 0.3, "disc": 0.15, "dorsal": 0.2, "ventral": 0.0}
}


def _train_and_cross_evaluate(
    tmp_path: Path, train_overrides: dict[str, object], test_sets: dict[str, Path]
) -> dict[str, dict[str, float]]:
    from conftest import generate
    from test_training import brief_train_cfg, compose_cfg

    from spinelesion.evaluate import evaluate
    from spinelesion.train import train

    train_manifest = generate(tmp_path / "train_data", studies=48, seed=601, **SAMPLING, **train_overrides)
    cfg = brief_train_cfg(train_manifest, tmp_path / "run")
    summary = train(cfg)
    out: dict[str, dict[str, float]] = {}
    for name, manifest in test_sets.items():
        ev = compose_cfg(
            "eval",
            [
                f"model_dir={summary['model_dir']}",
                f"data.manifest={manifest}",
                "bootstrap.n=50",
                "plots=false",
                f"data.cache_dir={tmp_path / 'cache'}",
            ],
            tmp_path / f"eval_{name}",
        )
        evaluate(ev)
        m = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())
        out[name] = {
            "compartment_auc": m["compartment"]["auc_macro"],
            "compartment_balanced_accuracy": m["compartment"]["balanced_accuracy"],
            "fracture_auc_benign_vs_pathologic": m["fracture"]["auc_benign_vs_pathologic"],
        }
    return out


@pytest.fixture(scope="module")
def renderer_test_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 16 studies drawn by each renderer, shared by both directions (drawn once)."""
    from conftest import generate

    root = tmp_path_factory.mktemp("transfer_tests")
    return {
        "v2": generate(root / "test_v2", studies=16, seed=602, **SAMPLING),
        "v1": generate(root / "test_v1", studies=16, seed=602, **SAMPLING, **V1),
    }


@pytest.mark.slow
def test_training_transfers_across_renderers(tmp_path: Path, renderer_test_sets: dict[str, Path]):
    result = _train_and_cross_evaluate(tmp_path, {}, renderer_test_sets)
    log.warning("trained on v2: %s", json.dumps(result))
    (tmp_path / "transfer.json").write_text(json.dumps({"train_on": "v2", **result}))
    assert result["v2"]["compartment_auc"] > 0.70, result
    assert result["v1"]["compartment_auc"] > 0.60, f"no transfer from v2 to v1: {result}"
