"""Fine-tuning from a model folder: the network starts from the folder's weights, not a fresh init."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spinelesion.config_path import compose_config
from spinelesion.labels import TASKS
from spinelesion.models.folder import load_model_folder, save_model_folder
from spinelesion.models.init_from import apply_to_config, init_module_from
from spinelesion.models.networks import build_network

NET = {"backbone": "spinenet", "widths": [4, 8, 8, 8], "blocks": [1, 1, 1, 1], "hidden": 8, "dropout": 0.0}
ROI = {"shape": [32, 48, 48], "spacing": [1.5, 1.5, 1.5], "margin": 1.25}


@pytest.fixture()
def released(tmp_path: Path) -> Path:
    """A model folder with weights no fresh init would give (older 'spinenet' name on purpose)."""
    torch.manual_seed(1)
    net = build_network(NET)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    folder = tmp_path / "released"
    save_model_folder(net, folder, {"name": "released", "version": "1", "network": NET, "roi": ROI})
    return folder


def module_for(folder: Path | None, mode: str = "all"):  # noqa: ANN201 - a SpineLesionModule
    import hydra

    # no dropout: the first step is then deterministic (fine-tuning keeps the config's dropout)
    overrides = ["model.net.dropout=0.0"] + (
        [f"init_from={folder}", f"init_from_mode={mode}"] if folder else []
    )
    cfg = compose_config("train", overrides)
    if folder:
        apply_to_config(cfg)
    torch.manual_seed(2)
    module = hydra.utils.instantiate(cfg.model)
    if folder:
        init_module_from(module, str(folder), mode, roi=dict(ROI))
    return module, cfg


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    out = {"image": torch.randn(4, 4, 32, 48, 48, generator=g), "available": torch.ones(4, 4)}
    for task, classes in TASKS.items():
        out[task] = torch.randint(0, len(classes), (4,), generator=g)
    return out


def first_step_loss(module, b: dict[str, torch.Tensor]) -> float:  # noqa: ANN001
    module.train()
    with torch.no_grad():
        return float(module._losses(module(b["image"], b["available"]), b)["total"])


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_fine_tuning_starts_from_the_loaded_weights(released: Path):
    module, cfg = module_for(released)
    assert cfg.model.net.backbone == "spinecnn" and list(cfg.model.net.widths) == NET["widths"]
    loaded, _ = load_model_folder(released)
    b = batch()
    reference = module_for(None)[0]  # only for its loss function
    reference.net = loaded
    fresh = module_for(None)[0]
    fresh.net = build_network(NET)
    loss = first_step_loss(module, b)
    assert loss == pytest.approx(first_step_loss(reference, b), rel=1e-6)
    assert loss != pytest.approx(first_step_loss(fresh, b), rel=1e-3)
    for (name, p), q in zip(module.net.state_dict().items(), loaded.state_dict().values(), strict=True):
        if name != "temperature":
            torch.testing.assert_close(p, q)


def test_backbone_mode_keeps_the_features_and_starts_new_heads(released: Path):
    module, _ = module_for(released, "backbone")
    loaded, _ = load_model_folder(released)
    for name, p in module.net.backbone.state_dict().items():
        torch.testing.assert_close(p, loaded.backbone.state_dict()[name])
    head, loaded_head = module.net.heads[0][0].weight, loaded.heads[0][0].weight
    assert head.shape == loaded_head.shape and not torch.allclose(head, loaded_head)


def test_a_different_roi_geometry_is_refused(released: Path):
    module, _ = module_for(None)
    module.net = build_network(NET)
    with pytest.raises(ValueError, match="spacing"):
        init_module_from(
            module, str(released), "all", roi={"shape": ROI["shape"], "spacing": [1.0, 1.0, 1.0]}
        )


def test_unknown_mode_is_refused_before_any_data_is_read(released: Path):
    cfg = compose_config("train", [f"init_from={released}", "init_from_mode=heads"])
    with pytest.raises(ValueError, match="init_from_mode"):
        apply_to_config(cfg)
