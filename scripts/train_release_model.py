#!/usr/bin/env python
"""``make model``: regenerate the training data and retrain the released demo model.

1. phantom sets: ``data/train400`` (seed 1000), a fresh test set ``data/test150`` (seed 9001)
   and a shifted one ``data/shift100`` (seed 7777, ``SHIFT`` below); skipped when present
2. ``spinelesion-insert output_dir=data/real-insert``: lesions inserted into the real normal
   spines of ``../shared/data/real-normals`` (needed: the model must be right on real anatomy)
3. ``spinelesion-train experiment=release`` (phantom + real mix, CPU, ~40 min on 2 cores), then
   three hard-negative rounds for scan mode: the scan candidates of a model on the untouched
   train/val real spines become normal ROIs (``data/real-hardneg``: of the first stage;
   ``data/real-hardneg2``: of a fine-tuning on the first round; ``data/real-hardneg3``: of a
   fine-tuning on both, mined with the scan's 8 mm walk), and ``experiment=release_finetune``
   fine-tunes the first stage on everything plus many more normal ROIs around the untouched
   spines (``data/real-normals-dense``), on their canals (``data/real-canal-dense``) and
   the three rounds
4. copy the last fine-tuning's model folder to ``models/spinelesion-demo``
5. evaluate: the fresh and shifted phantom sets; the held-out real subjects (inserted lesions,
   per dataset, paired with the same vertebrae untouched); every real normal body of the
   shared manifest; scan mode on the held-out untouched real studies. All recorded in the
   model folder's metadata.json and model card.

``--data-only`` stops after 1-2; ``--eval-only`` redoes 5 with the model in place.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REAL_NORMALS = ROOT.parent / "shared" / "data" / "real-normals"
MODEL = ROOT / "models" / "spinelesion-demo"

# The distribution shift of the second test set: acquisition and anatomy outside the training mix.
SHIFT = (
    "phantom.acquisition.noise_fraction=[0.04,0.14]",  # about twice the training noise
    "phantom.acquisition.bias_strength=[0.3,0.6]",  # a strong coil bias field
    "phantom.acquisition.pixel_mm=[1.2,1.6]",
    "phantom.acquisition.slice_thickness_mm=[4.0,6.0]",
    "phantom.acquisition.oblique_rate=0.5",
    "phantom.acquisition.missing_rate={t1:0.05,t2:0.03,stir:0.15,t1c:0.4}",
    "phantom.anatomy.size_scale=[0.8,1.2]",
)
PHANTOM_SETS = (("train400", 400, 1000, ()), ("test150", 150, 9001, ()), ("shift100", 100, 7777, SHIFT))
LABELS = (
    ("test150", "fresh phantom test set, seed 9001 (150 studies)"),
    ("shift100", "shifted phantom acquisition and anatomy, seed 7777 (100 studies)"),
)


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run(list(args), check=True, cwd=ROOT)


def make_data() -> None:
    for folder, studies, seed, extra in PHANTOM_SETS:
        if not (ROOT / "data" / folder / "manifest.csv").is_file():
            run(
                str(BIN / "spinelesion-make-data"),
                f"output_dir=data/{folder}",
                f"studies={studies}",
                f"seed={seed}",
                "formats=[nifti]",
                *extra,
            )
    if not (ROOT / "data" / "real-insert" / "manifest.csv").is_file():
        if not REAL_NORMALS.is_dir():
            sys.exit(f"{REAL_NORMALS} not found: the release model is trained on real normal spines too")
        run(str(BIN / "spinelesion-insert"), "output_dir=data/real-insert", f"backgrounds={REAL_NORMALS}")
    if not (ROOT / "data" / "real-normals-dense" / "manifest.csv").is_file():
        run(
            str(BIN / "spinelesion-insert"),
            "output_dir=data/real-normals-dense",
            f"backgrounds={REAL_NORMALS}",
            "variants_per_subject=0",
            "normal_rois={per_body: 0, discs: false, canal: false, background: 0, region: 40}",
        )
    if not (ROOT / "data" / "real-canal-dense" / "manifest.csv").is_file():
        run(
            str(BIN / "spinelesion-insert"),
            "output_dir=data/real-canal-dense",
            f"backgrounds={REAL_NORMALS}",
            "variants_per_subject=0",
            "normal_rois={per_body: 0, discs: false, canal: true, per_canal: 6, background: 0, region: 0, tag: dense_}",
        )


# Hard-negative mining: looser than prediction's scan, so that near misses are mined too.
MINING = {"threshold": 0.3, "max_rois": 16, "min_distance_mm": 15, "copies": 2, "jitter_mm": 3.0, "seed": 0}
COARSE = {"stride_mm": None, "sigma_scale": 0.125}  # the scan before 2026-11-30: windows 15-22 mm apart
FINE: dict[str, Any] = {}  # today's scan (8 mm walk)


def manifests(rounds: int) -> str:
    """The fine-tuning mix with the first ``rounds`` hard-negative rounds."""
    names = ["train400", "real-insert", "real-normals-dense", "real-hardneg"] + [
        f"real-hardneg{k}" for k in range(2, rounds + 1)
    ]
    return "[" + ",".join(f"data/{m}/manifest.csv" for m in names) + "]"


def mine(model_dir: Path, folder: str, scan: dict[str, Any]) -> None:
    """Scan candidates of ``model_dir`` on the untouched train/val real spines -> data/<folder>."""
    from spinelesion.tasks.hard_negatives import mine_hard_negatives

    print(f"$ mine hard negatives with {model_dir} -> data/{folder}", flush=True)
    settings = {**MINING, **scan, "max_rois": 24 if not scan else 16}
    mine_hard_negatives(
        ROOT / "data" / "real-insert" / "manifest.csv", model_dir, ROOT / "data" / folder, settings
    )


def finetune(init: Path, folder: Path, *overrides: str) -> Path:
    """``experiment=release_finetune`` from the model folder ``init`` into ``folder``; its model folder."""
    run(
        str(BIN / "spinelesion-train"),
        "experiment=release_finetune",
        f"init_from={init}",
        f"hydra.run.dir={folder}",
        *overrides,
    )
    return folder / "model"


def evaluate(manifest: Path, out: Path, *extra: str) -> dict[str, Any]:
    run(
        str(BIN / "spinelesion-evaluate"),
        f"model_dir={MODEL}",
        f"data.manifest={manifest}",
        f"output_dir={out}",
        f"hydra.run.dir={out}",
        *extra,
    )
    return json.loads((out / "metrics.json").read_text())


def real_checks() -> dict[str, Any]:
    """Held-out real subjects: per dataset, paired, every shared normal body, and scan mode."""
    from spinelesion.evaluation.real import paired, per_dataset, read_rows, scan_false_calls

    out = ROOT / "outputs" / "eval_real"
    evaluate(ROOT / "data" / "real-insert" / "manifest.csv", out / "heldout", "data.split=test")
    rows = read_rows(out / "heldout" / "predictions.csv")
    result: dict[str, Any] = {"heldout_per_dataset": per_dataset(rows), "heldout_paired": paired(rows)}
    evaluate(REAL_NORMALS / "manifest.csv", out / "all_normals")
    all_rows = read_rows(out / "all_normals" / "predictions.csv")
    called = [r["compartment_pred"] == "none" and r["fracture_pred"] == "none" for r in all_rows]
    # The same bodies through the user's command (spinelesion-predict reads the manifest's ROIs).
    dest = out / "all_normals_predict"
    run(
        str(BIN / "spinelesion-predict"),
        f"model_dir={MODEL}",
        f"input={REAL_NORMALS / 'manifest.csv'}",
        f"output_dir={dest}",
        f"hydra.run.dir={dest}",
        "saliency.method=none",
    )
    predicted = [
        r["compartment_label"] == "none" and r["fracture_label"] == "none"
        for r in read_rows(dest / "predictions.csv")
    ]
    result["shared_real_normals_called_normal"] = {
        "n": len(called),
        "fraction": round(sum(called) / len(called), 4),
        "predict_fraction": round(sum(predicted) / len(predicted), 4),
    }
    with open(ROOT / "data" / "real-insert" / "manifest.csv", newline="") as fh:
        test_subjects = sorted({r["patient_id"] for r in csv.DictReader(fh) if r["split"] == "test"})
    scans, scanned = [], []
    for subject in test_subjects:
        t2 = REAL_NORMALS / subject / "t2.nii.gz"
        if not t2.is_file():
            continue
        dest = out / "scan" / subject
        run(
            str(BIN / "spinelesion-predict"),
            f"model_dir={MODEL}",
            f"input={t2}",
            f"output_dir={dest}",
            f"hydra.run.dir={dest}",
            "saliency.method=none",
        )
        # One study per run, named after its file ("t2"): name it after the subject here.
        scans.extend(dict(r, study_id=subject) for r in read_rows(dest / "predictions.csv"))
        scanned.append(subject)
    result["scan_untouched_heldout"] = scan_false_calls(scans, scanned)
    result["heldout_subjects"] = test_subjects
    (out / "real_checks.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def record_metrics(label: str, metrics: dict[str, Any]) -> None:
    """Add an evaluation to the model folder's metadata.json and rewrite its model card."""
    from spinelesion.evaluation.report import headline_metrics
    from spinelesion.models.card import write_model_card

    meta = json.loads((MODEL / "metadata.json").read_text())
    meta.setdefault("metrics", {})[label] = headline_metrics(metrics)
    (MODEL / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_model_card(MODEL, meta)


def record_real(result: dict[str, Any]) -> None:
    from spinelesion.models.card import write_model_card

    meta = json.loads((MODEL / "metadata.json").read_text())
    meta["real_anatomy"] = result
    (MODEL / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_model_card(MODEL, meta)


def main() -> None:
    make_data()
    if "--data-only" in sys.argv:
        return
    if "--eval-only" not in sys.argv:
        first = ROOT / "outputs" / "release"
        run(str(BIN / "spinelesion-train"), "experiment=release", f"hydra.run.dir={first}")
        # Hard-negative rounds: mine what a model still calls a lesion in the untouched train/val
        # spines, fine-tune the first stage on every round so far. Rounds 1-2 ran the scan's
        # former coarse walk (COARSE), round 3 today's 8 mm walk, which sees many more places.
        outputs = ROOT / "outputs"
        stage1 = first / "model"
        mine(stage1, "real-hardneg", COARSE)
        round1 = finetune(
            stage1, outputs / "release_ft_round1", f"data.manifest={manifests(1)}", "trainer.max_epochs=10"
        )
        mine(round1, "real-hardneg2", COARSE)
        round2 = finetune(stage1, outputs / "release_ft", f"data.manifest={manifests(2)}")
        mine(round2, "real-hardneg3", FINE)
        last = finetune(stage1, outputs / "release_ft3")  # every round and the dense canal normals
        shutil.rmtree(MODEL, ignore_errors=True)
        shutil.copytree(last, MODEL)
    for folder, label in LABELS:
        out = ROOT / "outputs" / f"eval_{folder}"
        record_metrics(label, evaluate(ROOT / "data" / folder / "manifest.csv", out))
    record_real(real_checks())


if __name__ == "__main__":
    main()
