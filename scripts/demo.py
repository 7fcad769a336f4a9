#!/usr/bin/env python
"""``make demo``: the main job end to end on the embedded synthetic data, on a CPU.

1. generate a small synthetic multi-sequence spine MRI dataset (DICOM + NIfTI + manifest);
2. train the CPU config briefly on it (shows the training loop, checkpoints, calibration,
   the exported model folder; a few epochs do not make a good model);
3. evaluate the released demo model (``models/spinelesion-demo``) on all of the new data
   (a seed it was never trained on): metrics.json, ROC, reliability and confusion plots;
4. predict on a held-out study straight from its DICOM folder, with saliency NIfTI and PNGs.

Each step calls the installed command-line tool, exactly as a user would.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("demo")
ROOT = Path(__file__).resolve().parents[1]
RELEASED = ROOT / "models" / "spinelesion-demo"


def run(args: list[str]) -> None:
    log.info("$ %s", " ".join(args))
    start = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT)
    log.info("  done in %.0f s", time.perf_counter() - start)


def tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--studies", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = (ROOT / args.output_dir).resolve()
    if out.exists():
        shutil.rmtree(out)
    data, train_dir, eval_dir, pred_dir = out / "data", out / "train", out / "evaluate", out / "predict"

    run([tool("spinelesion-make-data"), f"output_dir={data}", f"studies={args.studies}", f"seed={args.seed}"])
    run(
        [
            tool("spinelesion-train"),
            f"data.manifest={data / 'manifest.csv'}",
            f"hydra.run.dir={train_dir}",
            f"trainer.max_epochs={args.epochs}",
            f"data.cache_dir={out / 'cache'}",
            "logger=csv",
            "model_name=spinelesion-demo-brief",
        ]
    )
    model_dir = RELEASED if (RELEASED / "metadata.json").is_file() else train_dir / "model"
    if model_dir != RELEASED:
        log.warning(
            "no released model in %s: evaluating and predicting with the briefly trained one", RELEASED
        )
    # The released model never saw these studies; the brief model trained on part of them.
    split = [] if model_dir == RELEASED else ["data.split=test"]
    run(
        [
            tool("spinelesion-evaluate"),
            f"model_dir={model_dir}",
            f"data.manifest={data / 'manifest.csv'}",
            *split,
            f"output_dir={eval_dir}",
            f"hydra.run.dir={eval_dir}",
            f"data.cache_dir={out / 'cache'}",
        ]
    )

    # A held-out study: the first test-split study, given as its DICOM folder (the T2 series'
    # parent holds all four series), without ROIs: the model scans the volume itself.
    with open(data / "manifest.csv", newline="") as fh:
        test_rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    study_dir = (data / test_rows[0]["t2"]).parent if test_rows else data
    run(
        [
            tool("spinelesion-predict"),
            f"input={study_dir}",
            f"model_dir={model_dir}",
            f"output_dir={pred_dir}",
            f"hydra.run.dir={pred_dir}",
        ]
    )

    metrics = json.loads((eval_dir / "metrics.json").read_text())
    c, f = metrics["compartment"], metrics["fracture"]
    print("\n" + "=" * 72)
    print("spinelesion demo finished (synthetic data: a demonstration, not a clinical tool)")
    print(f"  data (DICOM, NIfTI, manifest.csv):   {data}")
    print(f"  brief training run (checkpoints, logs, model folder): {train_dir}")
    print(f"  evaluation of {model_dir.name} on these new studies: {eval_dir}/metrics.json and *.png")
    print(
        f"    compartment AUC {c['auc_macro']:.3f}  ECE {c['ece']:.3f} | "
        f"benign vs pathologic AUC {f['auc_benign_vs_pathologic']:.3f}  ECE {f['ece']:.3f}  (n={c['n']})"
    )
    print(f"  predictions with saliency for a held-out study: {pred_dir}")
    print("=" * 72)
    return 0


if __name__ == "__main__":
    sys.exit(main())
