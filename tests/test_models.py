"""Networks, masked losses, model folders and safe checkpoint loading."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelesion.labels import IGNORE_INDEX, TASKS
from spinelesion.models.folder import ModelLoadError, load_checkpoint, load_model_folder, save_model_folder
from spinelesion.models.module import class_weights_from_counts, masked_cross_entropy
from spinelesion.models.networks import BACKBONES, build_network

SMALL = {"backbone": "spinecnn", "widths": [4, 8, 8, 8], "hidden": 8}


@pytest.mark.parametrize(
    "config, shape",
    [
        (SMALL, (32, 48, 48)),
        ({"backbone": "spinecnn", "widths": [4, 8, 8, 8], "hidden": 8}, (16, 24, 24)),
        pytest.param({"backbone": "densenet121", "hidden": 8}, (32, 48, 48), marks=pytest.mark.slow),
        ({"backbone": "resnet", "depth": 10, "widths": [4, 8, 8, 8], "hidden": 8}, (32, 48, 48)),
    ],
)
def test_networks_give_one_logit_vector_per_task(config, shape):
    net = build_network(config).eval()
    x = torch.randn(2, 4, *shape)
    out = net(x, torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]))
    assert [tuple(o.shape) for o in out] == [(2, len(c)) for c in TASKS.values()]
    probs = net.probabilities(x, torch.ones(2, 4))
    for p in probs.values():
        torch.testing.assert_close(p.sum(1), torch.ones(2))


def test_availability_flags_reach_the_heads():
    torch.manual_seed(0)
    net = build_network(SMALL).eval()
    x = torch.randn(1, 4, 32, 48, 48)
    a = net(x, torch.ones(1, 4))[0]
    b = net(x, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))[0]
    assert not torch.allclose(a, b)


def test_unknown_backbone_is_an_error():
    with pytest.raises(ValueError, match="unknown backbone 'vit'"):
        build_network({"backbone": "vit"})
    assert {"spinecnn", "densenet121", "resnet"} <= set(BACKBONES)


def test_former_backbone_name_still_loads(tmp_path: Path):
    """Model folders written before the rename say 'spinenet': they load as the same network."""
    net = build_network(SMALL)
    old = {**SMALL, "backbone": "spinenet"}
    save_model_folder(net, tmp_path / "m", {"name": "t", "version": "0", "network": old, "roi": {}})
    assert '"backbone": "spinenet"' in (tmp_path / "m" / "metadata.json").read_text()
    loaded, _ = load_model_folder(tmp_path / "m")
    x = torch.randn(1, 4, 32, 48, 48)
    torch.testing.assert_close(net.eval()(x, torch.ones(1, 4)), loaded.eval()(x, torch.ones(1, 4)))
    assert type(loaded.backbone).__name__ == "SpineCNN"


def test_released_demo_model_loads():
    demo = Path(__file__).resolve().parents[1] / "models" / "spinelesion-demo"
    if not (demo / "metadata.json").exists():
        pytest.skip("no demo model folder")
    from spinelesion.inference.predictor import Predictor

    predictor = Predictor.from_model_dir(demo)
    assert predictor.target_layer == "backbone.layers.2"  # resolved through the alias when it says 'spinenet'


def test_masked_cross_entropy_skips_unknown_rows_and_never_nans():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    target = torch.tensor([0, IGNORE_INDEX, 2])
    loss, n = masked_cross_entropy(logits, target)
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], target[[0, 2]])
    assert n == 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[1] == 0)  # the unknown row contributes nothing
    none_known, n0 = masked_cross_entropy(logits, torch.full((3,), IGNORE_INDEX))
    assert n0 == 0 and float(none_known.detach()) == 0.0 and none_known.requires_grad


def test_weighted_masked_loss_is_a_weighted_mean():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    target = torch.tensor([0, 0, IGNORE_INDEX])
    w = torch.tensor([2.0, 1.0])
    loss, _ = masked_cross_entropy(logits, target, w)
    per = torch.nn.functional.cross_entropy(logits[:2], target[:2], reduction="none")
    torch.testing.assert_close(loss, (2 * per).sum() / 4.0)


def test_class_weights_from_counts():
    w = class_weights_from_counts(np.array([90, 10, 0]), "inverse")
    assert w is not None
    assert w[2] == 0 and w[1] / w[0] == pytest.approx(9.0)
    assert float(w[:2].mean()) == pytest.approx(1.0)
    assert class_weights_from_counts(np.array([1, 1]), "none") is None


def test_model_folder_round_trip(tmp_path: Path):
    net = build_network(SMALL).eval()
    net.temperature.copy_(torch.tensor([1.5, 0.8]))
    meta = save_model_folder(
        net,
        tmp_path / "m",
        {"name": "t", "version": "0", "network": SMALL, "roi": {"shape": [32, 48, 48], "spacing": [1.5] * 3}},
    )
    assert len(meta["weights_sha256"]) == 64
    loaded, meta2 = load_model_folder(tmp_path / "m")
    x = torch.randn(2, 4, 32, 48, 48)
    for a, b in zip(net(x, torch.ones(2, 4)), loaded(x, torch.ones(2, 4)), strict=True):
        torch.testing.assert_close(a, b)
    assert meta2["temperature"] == {"compartment": 1.5, "fracture": pytest.approx(0.8)}


def test_model_folder_refuses_class_paths_in_network_config(tmp_path: Path):
    net = build_network(SMALL)
    save_model_folder(net, tmp_path / "m", {"name": "t", "version": "0", "network": SMALL, "roi": {}})
    meta_path = tmp_path / "m" / "metadata.json"
    text = meta_path.read_text().replace(
        '"backbone": "spinecnn"', '"_target_": "os.system", "backbone": "spinecnn"'
    )
    meta_path.write_text(text)
    with pytest.raises(ModelLoadError, match="_target_"):
        load_model_folder(tmp_path / "m")


class _Exploit:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path: Path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    state = {"state_dict": {}, "hyper_parameters": {"net": SMALL}, "payload": _Exploit(marker)}
    with open(ckpt, "wb") as fh:
        pickle.dump(state, fh)
    # the payload is live: a plain unpickle of the same bytes runs the command
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_Exploit(live)))
    assert live.exists()
    with pytest.raises(ModelLoadError, match="refused"):
        load_checkpoint(ckpt)
    assert not marker.exists()
    torch.save(state, tmp_path / "evil2.ckpt")
    with pytest.raises(ModelLoadError, match="refused"):
        load_checkpoint(tmp_path / "evil2.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize(
    "config",
    [
        {"backbone": "spinecnn", "widths": [4, 8, 8, 8], "blocks": [2, 1, 2, 1]},
        {"backbone": "resnet", "depth": 10, "widths": [4, 8, 8, 8]},
        {"backbone": "densenet121"},
    ],
)
def test_the_registry_names_every_backbones_stages_and_its_saliency_layer(config):
    """Saliency layers are named by the registry (stage names), never picked by index in inference/."""
    net = build_network(config)
    stages = net.stage_paths()
    assert {"stage1", "stage2", "stage3", "stage4"} <= set(stages)
    for path in stages.values():
        net.get_submodule(path)
    assert net.saliency_layer == stages["stage3"]
    if config["backbone"] == "spinecnn":  # the last block of the third stage, whatever the blocks per stage
        assert net.saliency_layer == "backbone.layers.4"
