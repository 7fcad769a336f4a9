"""``spinelesion-release``: the release recipe (configs/release/) as resumable stages.

Entry point only: the work is :func:`spinelesion.release.run.release_from_config`. ``--from STAGE``,
``--until STAGE`` and ``--plan`` are accepted as well as Hydra's ``from=``, ``until=``, ``plan_only=``.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from spinelesion.config_path import CONFIG_DIR
from spinelesion.release.run import hydra_arguments, release_from_config
from spinelesion.tasks.help import help_or_run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="release")
def _main(cfg: DictConfig) -> None:
    release_from_config(cfg)


def main() -> None:
    """``spinelesion-release``; ``--help`` lists its settings (:mod:`spinelesion.tasks.help`)."""
    sys.argv = [sys.argv[0], *hydra_arguments(sys.argv[1:])]
    help_or_run("spinelesion-release", "release", __doc__, _main)


if __name__ == "__main__":
    main()
