"""The generator's default settings come from ``configs/make_data.yaml`` (one source of truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from spinelesion.config_path import CONFIG_DIR

V1_OVERRIDES: dict[str, float] = {
    "contrast_spread": 0.0,
    "features.cord_displacement_rate": 1.0,
    "features.csf_cap_rate": 1.0,
    "features.im_expansion_rate": 1.0,
    "features.im_oedema_rate": 1.0,
    "features.benign_chronic_rate": 0.0,
    "features.benign_diffuse_oedema_rate": 0.2,
    "features.benign_concave_endplate_rate": 0.3,
    "features.benign_convex_border_rate": 0.0,
    "features.pathologic_whole_body_rate": 0.8,
    "features.pathologic_pedicle_rate": 0.7,
    "features.pathologic_angled_endplate_rate": 0.5,
    "features.pathologic_paraspinal_rate": 0.2,
    "acquisition.gibbs_rate": 0.0,
    "acquisition.ghost_rate": 0.0,
    "anatomy.marrow_focus_rate": 0.0,
}
"""Overrides (keys under ``phantom``) that give the v1 renderer's rates and contrast, for transfer checks.

On the command line: ``phantom.<key>=<value>`` for each (docs/phantom.md lists them).
"""


def default_phantom_config(**overrides: Any) -> dict[str, Any]:
    """The ``phantom`` section of make_data.yaml as a plain dict, with top-level keys overridden."""
    cfg = OmegaConf.load(Path(CONFIG_DIR) / "make_data.yaml")
    loaded = OmegaConf.to_container(cfg.phantom, resolve=True)
    assert isinstance(loaded, dict)
    phantom: dict[str, Any] = {str(k): v for k, v in loaded.items()}
    for key, value in overrides.items():
        target = phantom
        parts = key.split(".")
        for p in parts[:-1]:
            target = target[p]
        target[parts[-1]] = value
    return phantom
