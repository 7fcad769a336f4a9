"""``spinelesion-evaluate``: a model folder (or checkpoint) on any contract manifest -> metrics.json + plots.

Entry point only: the work is :func:`spinelesion.tasks.evaluate.evaluate` (re-exported here).
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from spinelesion.config_path import CONFIG_DIR
from spinelesion.tasks.arguments import run_main
from spinelesion.tasks.evaluate import evaluate
from spinelesion.tasks.help import help_or_run

__all__ = ["evaluate", "main"]
log = logging.getLogger("spinelesion.evaluate")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def _app(cfg: DictConfig) -> None:
    """Exit code 2 with a one-line message when nothing could be scored (bad manifest or
    argument, no readable study, unverified model); the traceback only with HYDRA_FULL_ERROR=1."""
    run_main(evaluate, cfg, log)


def main() -> None:
    """``spinelesion-evaluate``; ``--help`` lists its settings (:mod:`spinelesion.tasks.help`)."""
    help_or_run("spinelesion-evaluate", "eval", __doc__, _app)


if __name__ == "__main__":
    main()
