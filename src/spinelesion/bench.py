"""``spinelesion-bench``: accuracy and speed side by side, against baselines, in one report.

Entry point only: the work is :func:`spinelesion.tasks.bench.run_bench` (re-exported here).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from spinelesion.config_path import CONFIG_DIR
from spinelesion.tasks.bench import apply_quick, run_bench
from spinelesion.tasks.help import help_or_run

__all__ = ["main", "run_bench"]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
def _app(cfg: DictConfig) -> None:
    run_bench(apply_quick(cfg))


def main() -> None:
    """``spinelesion-bench``; ``--help`` lists its settings (:mod:`spinelesion.tasks.help`)."""
    help_or_run("spinelesion-bench", "bench", __doc__, _app)


if __name__ == "__main__":
    main()
