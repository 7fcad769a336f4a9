"""Fine-tuning: start training from a released model folder instead of a random network.

``init_from=models/<name>`` loads every weight (``init_from_mode=all``: the usual choice
for a few hundred labelled studies of one's own), or only the backbone with freshly
initialised heads (``init_from_mode=backbone``: when one's labels are defined differently).
The folder's network config replaces ``model.net`` so that the weights fit; its ROI
geometry must match the data's, since the backbone learnt features at that scale.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from spinelesion.models.networks import canonical_backbone

log = logging.getLogger(__name__)

MODES = ("all", "backbone")


def network_config(meta: Mapping[str, Any], dropout: float | None = None) -> dict[str, Any]:
    """The folder's network config with the current registry name (and optionally a new dropout)."""
    cfg = dict(meta["network"])
    cfg["backbone"] = canonical_backbone(str(cfg.get("backbone", "spinecnn")))
    if dropout is not None:
        cfg["dropout"] = float(dropout)
    return cfg


def check_roi(meta: Mapping[str, Any], roi: Mapping[str, Any] | None) -> None:
    """Refuse a data ROI geometry that differs from the one the model was trained with."""
    if not roi:
        return
    trained = meta.get("roi", {})
    for key in ("shape", "spacing"):
        if key in roi and key in trained and [float(v) for v in roi[key]] != [float(v) for v in trained[key]]:
            raise ValueError(
                f"init_from: the model was trained on ROIs with {key} {list(trained[key])}, the data "
                f"gives {list(roi[key])}; set data.roi.{key} to the model's"
            )


def load_into(net: nn.Module, source: nn.Module, mode: str = "all") -> dict[str, Any]:
    """Copy ``source``'s weights into ``net`` (all, or the backbone only); returns what was copied."""
    if mode not in MODES:
        raise ValueError(f"init_from_mode must be one of {', '.join(MODES)}, got {mode!r}")
    state = source.state_dict()
    if mode == "backbone":
        state = {k: v for k, v in state.items() if k.startswith("backbone.")}
    missing, unexpected = net.load_state_dict(state, strict=(mode == "all"))
    if unexpected:
        raise ValueError(f"init_from: weights not in the network: {unexpected[:5]}")
    if mode == "all":
        with torch.no_grad():  # calibration is refitted after fine-tuning; training never uses it
            net.get_buffer("temperature").fill_(1.0)
    fresh = sorted({".".join(k.split(".")[:2]) for k in missing if k != "temperature"})
    return {"mode": mode, "tensors": len(state), "fresh": fresh}


def init_module_from(
    module: Any, model_dir: str, mode: str = "all", roi: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Load a model folder's weights into a :class:`SpineLesionModule`'s network."""
    from spinelesion.models.folder import load_model_folder

    source, meta = load_model_folder(model_dir)
    check_roi(meta, roi)
    info = load_into(module.net, source, mode)
    info.update(
        {
            "model": str(meta.get("name")),
            "version": str(meta.get("version")),
            "weights_sha256": str(meta.get("weights_sha256")),
        }
    )
    log.info(
        "initialised from %s (%s %s): %s weights, %d tensors%s",
        model_dir,
        info["model"],
        info["version"],
        mode,
        info["tensors"],
        f"; fresh: {', '.join(info['fresh'])}" if info["fresh"] else "",
    )
    return info


def apply_to_config(cfg: Any) -> None:
    """Put the folder's network config into ``cfg.model.net`` (read from metadata.json, no weights)."""
    import json
    from pathlib import Path

    from omegaconf import OmegaConf, open_dict

    mode = str(cfg.get("init_from_mode", "all"))
    if mode not in MODES:  # before any data is read
        raise ValueError(f"init_from_mode must be one of {', '.join(MODES)}, got {mode!r}")
    meta_path = Path(str(cfg.init_from)) / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"init_from={cfg.init_from}: no metadata.json (expected a model folder)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    dropout = OmegaConf.select(cfg, "model.net.dropout")
    with open_dict(cfg):
        cfg.model.net = network_config(meta, dropout=dropout)
