"""``spinelesion-export-bundle``'s job: a model folder as a MONAI bundle (:mod:`spinelesion.export.bundle`)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from spinelesion.tasks.arguments import _bool, get

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
