#!/usr/bin/env python
"""``make model``: regenerate the training data and retrain the released demo model.

1. ``spinelesion-make-data output_dir=data/train600 studies=600 seed=1000`` (skipped when present)
2. ``spinelesion-train experiment=release`` (CPU, ~25 min on 2 cores)
3. copy the run's model folder to ``models/spinelesion-demo``
4. ``spinelesion-evaluate`` on a fresh test set (``data/test150``, seed 9001)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run(list(args), check=True, cwd=ROOT)


def main() -> None:
    for folder, studies, seed in (("train600", 600, 1000), ("test150", 150, 9001)):
        if not (ROOT / "data" / folder / "manifest.csv").is_file():
            run(str(BIN / "spinelesion-make-data"), f"output_dir=data/{folder}", f"studies={studies}", f"seed={seed}")
    run_dir = ROOT / "outputs" / "release"
    run(str(BIN / "spinelesion-train"), "experiment=release", f"hydra.run.dir={run_dir}")
    target = ROOT / "models" / "spinelesion-demo"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run_dir / "model", target)
    run(str(BIN / "spinelesion-evaluate"), f"model_dir={target}", "data.manifest=data/test150/manifest.csv",
        "output_dir=outputs/eval_test150", "hydra.run.dir=outputs/eval_test150")


if __name__ == "__main__":
    main()
