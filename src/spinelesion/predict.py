"""``spinelesion-predict``: predictions and saliency for new studies, straight from a DICOM export.

Exit code 0 when every study succeeded, 1 when any failed (after running all the others),
2 when nothing could run at all (no model, unverified weights, a bad argument, an output
folder in use by another run). The work is :func:`spinelesion.tasks.predict.predict`.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from spinelesion.config_path import CONFIG_DIR
from spinelesion.tasks.arguments import run_main
from spinelesion.tasks.help import help_or_run
from spinelesion.tasks.predict import predict

__all__ = ["main", "predict"]
log = logging.getLogger("spinelesion.predict")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def _app(cfg: DictConfig) -> None:
    summary = run_main(predict, cfg, log)
    if summary["failed"]:
        raise SystemExit(1)


def main() -> None:
    """``spinelesion-predict``; ``--help`` lists its settings (:mod:`spinelesion.tasks.help`)."""
    help_or_run("spinelesion-predict", "predict", __doc__, _app)


if __name__ == "__main__":
    main()
