"""``spinelesion-export-bundle``: a model folder as a MONAI bundle (logic in :mod:`spinelesion.export.bundle`)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from spinelesion.config_path import CONFIG_DIR
from spinelesion.tasks.arguments import _bool, get, run_main
from spinelesion.tasks.help import help_or_run

log = logging.getLogger("spinelesion.export_bundle")


def export(cfg: DictConfig) -> object:
    from spinelesion.export.bundle import export_bundle

    result = export_bundle(
        cfg.model_dir,
        cfg.output_dir,
        verify=get(cfg, "verify_weights", _bool, "true or false"),
        torchscript=get(cfg, "torchscript", _bool, "true or false"),
        overwrite=get(cfg, "overwrite", _bool, "true or false"),
    )
    log.info("bundle written to %s; model.ts: %s", result.folder, result.torchscript)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export_bundle")
def _app(cfg: DictConfig) -> None:
    run_main(export, cfg, log)


def main() -> None:
    """``spinelesion-export-bundle``; ``--help`` lists its settings (:mod:`spinelesion.tasks.help`)."""
    help_or_run("spinelesion-export-bundle", "export_bundle", __doc__, _app)


if __name__ == "__main__":
    main()
