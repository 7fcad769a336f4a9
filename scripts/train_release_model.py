#!/usr/bin/env python
"""``make model``: regenerate the training data and retrain the released demo model.

1. ``spinelesion-make-data output_dir=data/train600 studies=600 seed=1000`` (skipped when present)
2. ``spinelesion-train experiment=release`` (CPU, ~25 min on 2 cores)
3. copy the run's model folder to ``models/spinelesion-demo``
4. ``spinelesion-evaluate`` on a fresh test set (``data/test150``, seed 9001) and on a shifted
   one (``data/shift100``, seed 7777: twice the noise, a strong bias field, coarser pixels,
   thicker slices, more oblique series, more studies without contrast, a wider size range;
   ``SHIFT`` below)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# The distribution shift of the second test set: acquisition and anatomy outside the training mix.
SHIFT = (
    "phantom.acquisition.noise_fraction=[0.04,0.14]",     # about twice the training noise
    "phantom.acquisition.bias_strength=[0.3,0.6]",        # a strong coil bias field
    "phantom.acquisition.pixel_mm=[1.2,1.6]",
    "phantom.acquisition.slice_thickness_mm=[4.0,6.0]",
    "phantom.acquisition.oblique_rate=0.5",
    "phantom.acquisition.missing_rate={t1:0.05,t2:0.03,stir:0.15,t1c:0.4}",
    "phantom.anatomy.size_scale=[0.8,1.2]",
)

LABELS = (("test150", "fresh test set, seed 9001 (150 studies)"),
          ("shift100", "shifted acquisition and anatomy, seed 7777 (100 studies)"))


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run(list(args), check=True, cwd=ROOT)


def main() -> None:
    sets = (("train600", 600, 1000, ()), ("test150", 150, 9001, ()), ("shift100", 100, 7777, SHIFT))
    for folder, studies, seed, extra in sets:
        if not (ROOT / "data" / folder / "manifest.csv").is_file():
            run(str(BIN / "spinelesion-make-data"), f"output_dir=data/{folder}", f"studies={studies}", f"seed={seed}",
                *extra)
    if "--data-only" in sys.argv:
        return
    if "--record" in sys.argv:  # only add existing evaluations to the model card
        for folder, label in LABELS:
            record_metrics(ROOT / "models" / "spinelesion-demo", label, ROOT / "outputs" / f"eval_{folder}" / "metrics.json")
        return
    run_dir = ROOT / "outputs" / "release"
    run(str(BIN / "spinelesion-train"), "experiment=release", f"hydra.run.dir={run_dir}")
    target = ROOT / "models" / "spinelesion-demo"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run_dir / "model", target)
    for folder, label in LABELS:
        out = ROOT / "outputs" / f"eval_{folder}"
        run(str(BIN / "spinelesion-evaluate"), f"model_dir={target}", f"data.manifest=data/{folder}/manifest.csv",
            f"output_dir={out}", f"hydra.run.dir={out}")
        record_metrics(target, label, out / "metrics.json")


def record_metrics(model_dir: Path, label: str, metrics_json: Path) -> None:
    """Add an evaluation to the model folder's metadata.json and rewrite its model card."""
    from spinelesion.models.card import write_model_card
    from spinelesion.train import headline_metrics

    meta = json.loads((model_dir / "metadata.json").read_text())
    meta.setdefault("metrics", {})[label] = headline_metrics(json.loads(metrics_json.read_text()))
    (model_dir / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_model_card(model_dir, meta)


if __name__ == "__main__":
    main()
