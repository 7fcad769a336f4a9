"""Benchmark: accuracy and speed side by side, against baselines, in one report.

``quick=true`` generates a tiny dataset and finishes in a few minutes (a smoke check);
the full run uses the datasets named in ``configs/bench.yaml`` (see the README for its
duration). Nothing here is a test: it measures and reports, it never asserts a speed.
:func:`run_bench` is what ``spinelesion-bench`` runs.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf, open_dict

from spinelesion.config_path import CONFIG_DIR, compose_config

log = logging.getLogger("spinelesion.bench")


def apply_quick(cfg: DictConfig) -> DictConfig:
    """``quick=true``: the settings of ``quick_overrides`` replace the full run's."""
    if cfg.quick:
        for key, value in cfg.quick_overrides.items():
            OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def _ensure_data(cfg: DictConfig, work: Path) -> tuple[Path, Path]:
    """Train/test manifests: the configured ones, generated into ``work`` when absent."""
    from spinelesion.phantom.dataset import generate_dataset

    out = []
    for key in ("train", "test"):
        manifest = Path(cfg.data[key].manifest) if cfg.data[key].manifest else None
        if manifest is None or not manifest.is_file():
            gen = OmegaConf.load(Path(CONFIG_DIR) / "make_data.yaml")
            gen.output_dir = str(work / key)
            gen.studies = int(cfg.data[key].studies)
            gen.seed = int(cfg.data[key].seed)
            gen.workers = int(cfg.workers)
            if key == "train":
                gen.splits = {"train": 0.8, "val": 0.2}
            log.info("generating %d %s studies (seed %d) into %s", gen.studies, key, gen.seed, gen.output_dir)
            manifest = generate_dataset(gen)
        out.append(manifest)
    return out[0], out[1]


def train_and_evaluate(
    model: str,
    train_manifest: Path,
    test_manifest: Path,
    out: Path,
    budget_s: float,
    cache_dir: Path,
    seed: int = 0,
    n_boot: int = 500,
) -> dict[str, Any]:
    """Train ``model`` for ``budget_s`` seconds, then evaluate it on the test manifest
    (see :mod:`spinelesion.benchmark.accuracy` for the protocol)."""
    from spinelesion.benchmark.accuracy import budget_string, learning_curve
    from spinelesion.tasks.evaluate import evaluate
    from spinelesion.tasks.train import train

    cfg = compose_config(
        "train",
        [
            f"model={model}",
            f"data.manifest={train_manifest}",
            f"data.cache_dir={cache_dir}",
            "logger=csv",
            f"trainer.max_time={budget_string(budget_s)}",
            "trainer.max_epochs=100000",
            "model.scheduler.name=none",
            "evaluate_splits=[]",
            "data.progress=false",
            "callbacks.progress_bar=null",
            f"seed={seed}",
        ],
    )
    ev = compose_config(
        "eval",
        [
            f"data.manifest={test_manifest}",
            f"data.cache_dir={cache_dir}",
            f"bootstrap.n={n_boot}",
            "plots=false",
        ],
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "train")
        cfg.model_dir = str(out / "train" / "model")
    summary = train(cfg)
    with open_dict(ev):
        ev.model_dir = summary["model_dir"]
        ev.output_dir = str(out / "eval")
        ev.paths.output_dir = str(out / "eval")
    metrics = evaluate(ev)
    c, f = metrics["compartment"], metrics["fracture"]
    return {
        "model": model,
        "budget_s": budget_s,
        "epochs": summary["epochs"],
        "fit_seconds": summary["fit_seconds"],
        "compartment_auc_macro": c["auc_macro"],
        "compartment_auc_macro_ci95": c["auc_macro_ci95"],
        "compartment_balanced_accuracy": c["balanced_accuracy"],
        "compartment_ece": c["ece"],
        "fracture_auc_benign_vs_pathologic": f["auc_benign_vs_pathologic"],
        "fracture_auc_benign_vs_pathologic_ci95": f["auc_benign_vs_pathologic_ci95"],
        "fracture_balanced_accuracy": f["balanced_accuracy"],
        "fracture_ece": f["ece"],
        "curve": learning_curve(out / "train" / "csv" / "metrics.csv"),
        "metrics_json": str(out / "eval" / "metrics.json"),
    }


def _nifti_twin(manifest: Path, item: Any) -> Any:
    """``item`` read from the generator's NIfTI copy (``manifest_nifti.csv`` beside the
    DICOM manifest), with the same ROIs; None when there is none."""
    from spinelesion.inference.inputs import from_manifest

    nifti = manifest.with_name("manifest_nifti.csv")
    if not nifti.is_file():
        return None
    twin = next((it for it in from_manifest(nifti)[0] if it.study_id == item.study_id), None)
    if twin is not None:
        twin.rois = list(item.rois)
    return twin


def run_bench(cfg: DictConfig) -> dict[str, Any]:
    import torch

    from spinelesion.benchmark import accuracy as acc_mod
    from spinelesion.benchmark import speed
    from spinelesion.benchmark.machine import describe
    from spinelesion.benchmark.report import plot_learning_curves, plot_scaling, write_report
    from spinelesion.data.manifest import read_manifest
    from spinelesion.data.roi import RoiSpec
    from spinelesion.inference.inputs import from_manifest
    from spinelesion.inference.predictor import Predictor, PredictorConfig
    from spinelesion.models.folder import ModelLoadError, load_model_folder, resolve_model

    start = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="spinelesion-bench-"))
    train_manifest, test_manifest = _ensure_data(cfg, work)
    spec = RoiSpec()
    results: dict[str, Any] = {
        "quick": bool(cfg.quick),
        "machine": describe(),
        "train_manifest": str(train_manifest),
        "test_manifest": str(test_manifest),
    }
    reps = int(cfg.repeats)

    # -- training throughput: default vs baselines, same ROI size and batch ----------------------
    log.info("training throughput")
    default_net = cast(dict[str, Any], OmegaConf.to_container(cfg.networks.default, resolve=True))
    dense = cast(dict[str, Any], OmegaConf.to_container(cfg.networks.densenet121, resolve=True))
    tr_default = speed.train_step_throughput(default_net, spec, int(cfg.batch_size), reps)
    tr_dense = speed.train_step_throughput(dense, spec, int(cfg.batch_size), max(reps // 2, 2))
    training = {
        "default": tr_default,
        "densenet121": tr_dense,
        "ratio_default_over_densenet": round(tr_default["rois_per_s"] / tr_dense["rois_per_s"], 2),
    }
    results["speed"] = {"training": training}

    # -- data --------------------------------------------------------------------------------------
    log.info("data reading and loading")
    rows = read_manifest(test_manifest).rows
    seq_folder = next(p for r in rows for s, p in r.sequences.items() if s == "t2" and p.is_dir())
    data = {
        "dicom": speed.dicom_vs_simpleitk(seq_folder, repeats=reps),
        "loader": speed.loader_throughput(train_manifest, int(cfg.batch_size)),
    }
    loader = data["loader"]
    data["loader_over_train_step"] = round(loader["rois_per_s_cached"] / tr_default["rois_per_s"], 2)
    if loader["rois_per_s_augment"]:  # the step then also pays for augmentation (CPU training)
        data["augment_share_of_cpu_step"] = round(
            (1 / loader["rois_per_s_augment"])
            / (1 / loader["rois_per_s_augment"] + 1 / tr_default["rois_per_s"]),
            2,
        )
    results["speed"]["data"] = data
    if cfg.monai_path.enabled:  # the data path's first and cached setup, both augmentations (issue 14)
        from spinelesion.benchmark.monai_path import data_path

        log.info("data path: first setup against a setup from its cache")
        data["monai_path"] = data_path(
            train_manifest, studies=int(cfg.monai_path.studies), batch_size=int(cfg.batch_size), spec=spec
        )

    # -- inference on one generated four-sequence study with eight ROIs -----------------------------
    log.info("inference breakdown")
    try:
        model_dir: Path | None = resolve_model(str(cfg.model_dir))
    except ModelLoadError:
        model_dir = None
    locator = None
    if model_dir is not None:
        from spinelesion.localize.model import load_locator

        net, meta = load_model_folder(model_dir)
        locator = load_locator(model_dir, meta)
    else:  # no released model: a randomly initialised default network times the same
        from spinelesion.models.networks import build_network

        net, meta = (
            build_network(default_net),
            {
                "name": "untrained",
                "version": "-",
                "network": default_net,
                "roi": {"shape": list(spec.shape), "spacing": list(spec.spacing)},
            },
        )
    # The per-study figure is labelled Grad-CAM (report.py): measure that, not the default occlusion.
    predictor = Predictor(
        net, meta, PredictorConfig(device=str(cfg.device), png=True, saliency_method="gradcam")
    )
    items, _ = from_manifest(test_manifest)
    full = [it for it in items if len(it.load().volumes) == 4] or items
    item = full[0]
    base = item.rois[0].center_lps
    import numpy as np

    from spinelesion.inference.predictor import RoiRequest

    rng = np.random.default_rng(0)
    item.rois = [RoiRequest(f"b{k}", base + rng.uniform(-25, 25, 3)) for k in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        results["speed"]["inference"] = speed.inference_breakdown(predictor, item, Path(tmp), repeats=reps)
        twin = _nifti_twin(test_manifest, item)  # the same study and ROIs read from NIfTI: no DICOM outputs
        if twin is not None:
            results["speed"]["inference_nifti"] = speed.per_study_cost(
                predictor, twin, Path(tmp) / "nifti", reps
            )
            results["speed"]["inference_nifti"].pop("_timings")
    results["speed"]["export"] = speed.export_runtimes(net, spec)
    results["speed"]["scaling"] = speed.scaling(
        predictor, item, tuple(cfg.scaling.rois), tuple(cfg.scaling.volume)
    )
    plot_scaling(results["speed"]["scaling"]["rois"], "rois", "ROIs per study", out / "scaling_rois.png")
    plot_scaling(
        results["speed"]["scaling"]["volume"],
        "voxels_per_sequence",
        "voxels per sequence",
        out / "scaling_volume.png",
    )

    # -- scan mode: the lattice scan against the MONAI scan it replaced ----------------------------------
    if cfg.scan.enabled:
        from spinelesion.benchmark.scan_speed import compare_scan

        folders = [Path(str(f)) for f in cfg.scan.studies if Path(str(f)).is_dir()]
        nifti = test_manifest.with_name("manifest_nifti.csv")
        if not folders and nifti.is_file():  # no real study beside the project: a generated one
            first = read_manifest(nifti).rows[0]
            folders = [next(iter(first.sequences.values())).parent]
        log.info("scan mode on %d study(ies)", len(folders))
        scan_predictor = Predictor(
            net, meta, PredictorConfig(device=str(cfg.device), saliency_method="none"), locator
        )
        results["speed"]["scan"] = compare_scan(
            scan_predictor, folders, int(cfg.scan.repeats), bool(cfg.scan.reference)
        )

    # -- GPU ------------------------------------------------------------------------------------------
    if torch.cuda.is_available():
        log.info("GPU")
        results["gpu"] = {
            "training_default_bf16": speed.train_step_throughput(
                default_net, spec, int(cfg.gpu_batch_size), reps, device="cuda", amp=True
            ),
            "training_densenet121_bf16": speed.train_step_throughput(
                dense, spec, int(cfg.gpu_batch_size), reps, device="cuda", amp=True
            ),
        }
        results["gpu_note"] = f"measured on {torch.cuda.get_device_name(0)}: see report.json 'gpu'"
    else:
        results["gpu_note"] = "not measured: no CUDA device on this machine"

    # -- accuracy under an equal budget --------------------------------------------------------------
    if cfg.accuracy.enabled:
        runs, curves = [], {}
        for model in cfg.accuracy.models:
            log.info("equal-budget training: %s (%s s)", model, cfg.accuracy.budget_s)
            r = train_and_evaluate(
                str(model),
                train_manifest,
                test_manifest,
                out / "accuracy" / str(model),
                float(cfg.accuracy.budget_s),
                work / "cache",
                n_boot=int(cfg.accuracy.n_boot),
            )
            runs.append(r)
            curves[str(model)] = r["curve"]
        plot_learning_curves(curves, out / "learning_curve.png")
        results["accuracy"] = {
            "budget_s": float(cfg.accuracy.budget_s),
            "runs": runs,
            "default_beats_densenet_everywhere": acc_mod.default_beats_baseline_everywhere(
                curves, "spinecnn", "densenet121"
            ),
        }
    results["seconds"] = round(time.perf_counter() - start, 1)
    md, _ = write_report(results, out)
    log.info("report: %s", md)
    return results
