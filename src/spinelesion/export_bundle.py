"""``spinelesion-export-bundle``: a model folder as a MONAI bundle (logic in :mod:`spinelesion.export.bundle`)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from spinelesion.config_path import CONFIG_DIR
from spinelesion.tasks.arguments import run_main
from spinelesion.tasks.export import export
from spinelesion.tasks.help import help_or_run

__all__ = ["export", "main"]
log = logging.getLogger("spinelesion.export_bundle")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export_bundle")
def _app(cfg: DictConfig) -> None:
    run_main(export, cfg, log)


def main() -> None:
    """``spinelesion-export-bundle``; ``--help`` lists its settings (:mod:`spinelesion.tasks.help`)."""
    help_or_run("spinelesion-export-bundle", "export_bundle", __doc__, _app)


if __name__ == "__main__":
    main()
