"""Where the Hydra configs live: ``configs/`` at the repository root (editable install),
or a folder named by ``SPINELESION_CONFIG_DIR``."""

from __future__ import annotations

import os
from pathlib import Path


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
