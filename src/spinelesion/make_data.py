"""``spinelesion-make-data``: render a synthetic multi-sequence spine MRI dataset with labels."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from spinelesion.config_path import CONFIG_DIR
from spinelesion.tasks.help import help_or_run

log = logging.getLogger("spinelesion.make_data")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="make_data")
def _app(cfg: DictConfig) -> None:
    from spinelesion.phantom.dataset import generate_dataset

    manifest = generate_dataset(cfg)
    log.info("manifest: %s", manifest)


def main() -> None:
    """``spinelesion-make-data``; ``--help`` lists its settings (:mod:`spinelesion.tasks.help`)."""
    help_or_run("spinelesion-make-data", "make_data", __doc__, _app)


if __name__ == "__main__":
    main()
