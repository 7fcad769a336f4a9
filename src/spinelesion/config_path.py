"""Where the Hydra configs live: ``configs/`` at the repository root (editable install),
or a folder named by ``SPINELESION_CONFIG_DIR``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig


def config_dir() -> str:
    env = os.environ.get("SPINELESION_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    repo = Path(__file__).resolve().parents[2] / "configs"
    if repo.is_dir():
        return str(repo)
    raise FileNotFoundError(
        "spinelesion's Hydra configs were not found next to the package; install from a clone "
        "(pip install -e .) or set SPINELESION_CONFIG_DIR to a copy of the repository's configs/ folder"
    )


CONFIG_DIR = config_dir()


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose a config of ``configs/``, also from inside a running ``@hydra.main`` app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: its search path has configs/
        return compose(config_name=name, overrides=overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)
