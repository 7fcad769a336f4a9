"""``spinelesion-bench``: accuracy and speed side by side, against baselines, in one report.

Entry point only: the work is :func:`spinelesion.tasks.bench.run_bench` (re-exported here).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from spinelesion.config_path import CONFIG_DIR
from spinelesion.tasks.bench import apply_quick, run_bench

__all__ = ["main", "run_bench"]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    run_bench(apply_quick(cfg))


if __name__ == "__main__":
    main()
