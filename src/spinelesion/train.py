"""``spinelesion-train``: fit the two-task network, calibrate it, export a model folder.

Entry point only: the work is :func:`spinelesion.tasks.train.train` (re-exported here).
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from spinelesion.config_path import CONFIG_DIR
from spinelesion.tasks.arguments import run_main
from spinelesion.tasks.help import help_or_run
from spinelesion.tasks.train import train

__all__ = ["main", "train"]
log = logging.getLogger("spinelesion.train")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _app(cfg: DictConfig) -> float | None:
    """Exit code 2 with a one-line message on a bad manifest or argument (as predict and
    evaluate); the traceback only with HYDRA_FULL_ERROR=1."""
    summary = run_main(train, cfg, log)
    return (summary.get("optimized_metric") or {}).get("best")  # cfg.optimized_metric, for Hydra sweepers


def main() -> None:
    """``spinelesion-train``; ``--help`` lists its settings (:mod:`spinelesion.tasks.help`)."""
    help_or_run("spinelesion-train", "train", __doc__, _app)


if __name__ == "__main__":
    main()
