"""Shared fixtures. Area-specific fixtures live in their own test modules or tests/helpers_*.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests are small; more threads than cores only thrashes on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real scans beside the project (``../shared/data``); tests using it skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def generate(out: Path, studies: int, seed: int, **overrides: object) -> Path:
    """A small synthetic dataset through the real generator (both DICOM and NIfTI)."""
    from omegaconf import OmegaConf

    from spinelesion.config_path import CONFIG_DIR
    from spinelesion.phantom.dataset import generate_dataset

    cfg = OmegaConf.load(Path(CONFIG_DIR) / "make_data.yaml")
    cfg.output_dir = str(out)
    cfg.studies = studies
    cfg.seed = seed
    cfg.workers = 2
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return generate_dataset(cfg)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 generated studies with every class; shared by the data, training and predict tests."""
    return generate(tmp_path_factory.mktemp("tiny"), studies=24, seed=77)
