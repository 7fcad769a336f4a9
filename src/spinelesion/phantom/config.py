"""The generator's default settings come from ``configs/make_data.yaml`` (one source of truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from spinelesion.config_path import CONFIG_DIR


def default_phantom_config(**overrides: Any) -> dict[str, Any]:
    """The ``phantom`` section of make_data.yaml as a plain dict, with top-level keys overridden."""
    cfg = OmegaConf.load(Path(CONFIG_DIR) / "make_data.yaml")
    phantom = OmegaConf.to_container(cfg.phantom, resolve=True)
    assert isinstance(phantom, dict)
    for key, value in overrides.items():
        target = phantom
        parts = key.split(".")
        for p in parts[:-1]:
            target = target[p]
        target[parts[-1]] = value
    return phantom
