"""``spinelesion-insert``: insert lesions into real normal spines and write a contract manifest."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from spinelesion.config_path import CONFIG_DIR
from spinelesion.tasks.help import help_or_run

log = logging.getLogger("spinelesion.insert")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="insert")
def _app(cfg: DictConfig) -> None:
    from spinelesion.insert.dataset import generate_inserted

    settings = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(settings, dict)  # a DictConfig becomes a dict
    manifest = generate_inserted({str(k): v for k, v in settings.items()})
    log.info("manifest: %s", manifest)


def main() -> None:
    """``spinelesion-insert``; ``--help`` lists its settings (:mod:`spinelesion.tasks.help`)."""
    help_or_run("spinelesion-insert", "insert", __doc__, _app)


if __name__ == "__main__":
    main()
