"""Speed measurements: data reading and loading, training throughput, inference breakdown, scaling."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinelesion.benchmark.timing import measure, peak_memory, ratio
from spinelesion.data.roi import RoiSpec
from spinelesion.labels import SEQUENCES, TASKS

log = logging.getLogger(__name__)


# -- data ---------------------------------------------------------------------------------------


def dicom_vs_simpleitk(series_folder: Path, repeats: int = 5) -> dict[str, Any]:
    """Our series reader against SimpleITK's on the same files (see :mod:`.data_read`)."""
    from spinelesion.benchmark.data_read import bench_dicom_read

    return bench_dicom_read(series_folder, repeats=repeats)


def loader_throughput(
    manifest: Path, batch_size: int = 16, repeats: int = 3, studies: int = 24
) -> dict[str, Any]:
    """Studies per second uncached (read + resample); ROIs per second the loader delivers from
    the in-memory cache (index + collate), and of the batched training augmentation on the
    CPU (on a GPU it runs there), on the first ``studies`` studies of the manifest."""
    from torch.utils.data import default_collate

    from spinelesion.data.cache import prepare_study
    from spinelesion.data.datamodule import SpineDataModule
    from spinelesion.data.dataset import BankIndex
    from spinelesion.data.manifest import read_manifest, subset_manifest

    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        sub = subset_manifest(manifest, tmp / "manifest.csv", studies)
        first: dict[str, Any] = {}
        for r in read_manifest(sub).rows:
            first.setdefault(r.study_id, r)
        some = list(first.values())[:6]
        uncached = measure(
            lambda: [prepare_study(r.study_id, r.sequences) for r in some], repeats=1, warmup=0
        )
        per_study = uncached["median_s"] / len(some)
        dm = SpineDataModule(
            sub,
            cache_dir=tmp / "cache",
            batch_size=batch_size,
            progress=False,
            splits={"train": 1.0},
            check_geometry=False,
        )
        dm.setup("fit")
        ds = dm.dataset("train")
        aug = dm.augmenter()
        n_batches = 8
        n = batch_size * n_batches
        batches = [
            [ds.indices[(b * batch_size + i) % len(ds.indices)] for i in range(batch_size)]
            for b in range(n_batches)
        ]

        def load() -> list[dict[str, torch.Tensor]]:  # what the DataLoader hands over: index, collate
            return [default_collate([ds[BankIndex(k)] for k in keys]) for keys in batches]

        loaded = load()

        def augment() -> None:  # what the training step adds where the batch is (here: the CPU)
            for step, batch in enumerate(loaded):
                aug(batch["image"], batch["available"], aug.generator(batch["image"].device, 0, step, 0))

        cached = measure(load, repeats=repeats)
        augmented = measure(augment, repeats=repeats) if aug is not None else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "studies_per_s_uncached": round(1.0 / per_study, 2),
        "rois_per_s_cached": round(n / cached["median_s"], 1),
        "cached": cached,
        "rois_per_s_augment": round(n / augmented["median_s"], 1) if augmented else None,
        "augment": augmented,
        "rois_timed": n,
    }


# -- training throughput --------------------------------------------------------------------------


def train_step_throughput(
    net_cfg: dict[str, Any],
    spec: RoiSpec,
    batch_size: int = 16,
    repeats: int = 5,
    device: str = "cpu",
    amp: bool = False,
) -> dict[str, Any]:
    """ROIs per second for forward + backward + optimiser step on random inputs."""
    from spinelesion.models.networks import build_network, count_parameters

    dev = torch.device(device)
    net = build_network(net_cfg).to(dev).train()
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.randn(batch_size, len(SEQUENCES), *spec.shape, device=dev)
    if dev.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    a = torch.ones(batch_size, len(SEQUENCES), device=dev)
    ys = [torch.randint(0, len(c), (batch_size,), device=dev) for c in TASKS.values()]

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
            out = net(x, a)
            loss = sum(torch.nn.functional.cross_entropy(o.float(), y) for o, y in zip(out, ys, strict=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = measure(step, repeats=repeats, warmup=2, sync_cuda=dev.type == "cuda")
    return {
        "network": net_cfg,
        "parameters": count_parameters(net),
        "batch_size": batch_size,
        "rois_per_s": round(batch_size / t["median_s"], 1),
        "step": t,
    }


# -- inference ------------------------------------------------------------------------------------


def inference_breakdown(predictor: Any, study_item: Any, out_dir: Path, repeats: int = 3) -> dict[str, Any]:
    """Per-study time split (read, preprocess, network, saliency, write) with given ROIs, and
    ratios: total / read, Grad-CAM / forward, occlusion / forward."""
    from spinelesion.inference.saliency import saliency

    cost = per_study_cost(predictor, study_item, out_dir, repeats)
    timings = cost.pop("_timings")
    keys = [
        "read",
        "preprocess",
        "network",
        "saliency",
        "write",
        "dicom",
    ]  # dicom: SR + Parametric Maps, DICOM inputs only
    split = {k: float(np.median([t.get(k, 0.0) for t in timings])) for k in keys}
    total = sum(split.values())
    study = study_item.load()
    array, affine, available, _ = predictor.prepare(study)
    centers = [r.center_lps for r in study_item.rois]
    images, flags = predictor.crops(array, affine, available, centers)
    fwd = measure(lambda: predictor.classify(images, flags), repeats=5)
    probs = predictor.classify(images, flags)
    classes = {t: probs[t].argmax(1).tolist() for t in TASKS}
    net = predictor.net
    target = predictor.target_layer
    dev = predictor.device
    x, f = images.to(dev), flags.to(dev)
    cam = measure(lambda: saliency(net, x, f, classes, "gradcam", target), repeats=5)
    campp = measure(lambda: saliency(net, x, f, classes, "gradcampp", target), repeats=3)
    occ = measure(
        lambda: saliency(net, x[:1], f[:1], {t: c[:1] for t, c in classes.items()}, "occlusion"),
        repeats=1,
        warmup=0,
    )
    n = len(centers)
    # forward covers both tasks in one pass; CAM is per task: compare CAM for one task to one forward
    return {
        "rois": n,
        "split_s": {k: round(v, 4) for k, v in split.items()},
        "total_s": round(total, 4),
        "per_study": cost,
        "total_over_read": round(total / max(split["read"], 1e-9), 2),
        "forward": fwd,
        "gradcam_both_tasks": cam,
        "gradcampp_both_tasks": campp,
        "occlusion_one_roi_both_tasks": occ,
        "gradcam_over_forward_per_task": round(ratio(cam, fwd) / 2, 2),
        "gradcampp_over_forward_per_task": round(ratio(campp, fwd) / 2, 2),
        "occlusion_over_forward_per_roi_task": round(occ["median_s"] / 2 / (fwd["median_s"] / n), 1),
    }


def per_study_cost(predictor: Any, study_item: Any, out_dir: Path, repeats: int = 3) -> dict[str, Any]:
    """Seconds per study of ``predict_study`` with every default output (JSON, CSV row data,
    saliency NIfTI, PNGs, markups, and DICOM SR + Parametric Maps for DICOM inputs): medians after a
    warm-up, as wall time and as this process's CPU time (``time.process_time``, all its
    threads), with the configured torch threads and again with one.

    On a shared machine wall time counts the waits for the CPU another process holds, and
    with 2+ threads the CPU time also counts OpenMP's spin-waiting for a descheduled thread;
    with one thread the CPU time is the work itself: an upper bound of the wall time the
    same machine needs when idle (where two threads can only shorten the torch parts).
    """
    import time

    def run(n: int) -> tuple[list[float], list[float], list[dict[str, float]]]:
        walls, cpus, timings = [], [], []
        for i in range(n + 1):
            c0, t0 = time.process_time(), time.perf_counter()
            res = predictor.predict_study(study_item, out_dir)
            if i:  # the first is the warm-up
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                timings.append(res.timings)
        return walls, cpus, timings

    threads = torch.get_num_threads()
    walls, cpus, timings = run(repeats)
    torch.set_num_threads(1)
    try:
        walls1, cpus1, _ = run(repeats)
    finally:
        torch.set_num_threads(threads)
    study = study_item.load()
    formats = sorted({str(v.meta.get("format", "?")) for v in study.volumes.values()})
    return {
        "input": "+".join(formats),
        "rois": len(study_item.rois),
        "threads": threads,
        "wall_s": round(float(np.median(walls)), 4),
        "cpu_s": round(float(np.median(cpus)), 4),
        "wall_s_one_thread": round(float(np.median(walls1)), 4),
        "cpu_s_one_thread": round(float(np.median(cpus1)), 4),
        "repeats": repeats,
        "goal_s": 0.8,
        "_timings": timings,
    }


def export_runtimes(
    net: torch.nn.Module, spec: RoiSpec, batch_size: int = 8, repeats: int = 10
) -> dict[str, Any]:
    """Eager vs TorchScript vs ONNX Runtime on CPU, same inputs, same threads."""
    from spinelesion.inference.export import (
        example_inputs,
        export_onnx,
        export_torchscript,
        onnx_session,
        parity,
    )

    net = net.eval().cpu()
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        ts_path = export_torchscript(net, tmp / "m.ts", spec.shape)
        onnx_path = export_onnx(net, tmp / "m.onnx", spec.shape)
        image, available = example_inputs(spec.shape, batch=batch_size, seed=2)
        ts = torch.jit.load(str(ts_path))
        sess = onnx_session(onnx_path, threads=torch.get_num_threads())
        feeds = {"image": image.numpy(), "available": available.numpy()}
        with torch.inference_mode():
            eager = measure(lambda: net(image, available), repeats=repeats, warmup=2)
            script = measure(lambda: ts(image, available), repeats=repeats, warmup=2)
        onnx = measure(lambda: sess.run(None, feeds), repeats=repeats, warmup=2)  # type: ignore[attr-defined]  # onnxruntime's stubs omit InferenceSession.run
        diffs = parity(net, ts_path, onnx_path, spec.shape)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    runs = {"eager": eager, "torchscript": script, "onnxruntime": onnx}
    fastest = min(runs, key=lambda k: runs[k]["median_s"])
    return {
        "batch_size": batch_size,
        **runs,
        "parity_max_abs_logit_diff": diffs,
        "fastest_on_cpu": fastest,
        "rois_per_s": {k: round(batch_size / v["median_s"], 1) for k, v in runs.items()},
    }


def scaling(
    predictor: Any,
    study_item: Any,
    roi_counts: tuple[int, ...] = (1, 8, 32),
    volume_scales: tuple[float, ...] = (0.5, 1.0, 2.0),
) -> dict[str, Any]:
    """Time and peak memory of classify + saliency against ROIs per study and volume size."""
    from spinelesion.io.resample import resample_to
    from spinelesion.io.study import Study

    study = study_item.load()
    array, affine, available, _ = predictor.prepare(study)
    rng = np.random.default_rng(0)
    base = np.asarray(study_item.rois[0].center_lps)
    rows = []
    for n in roi_counts:
        centers = [base + rng.uniform(-20, 20, 3) for _ in range(n)]

        def run(c: list[np.ndarray] = centers) -> None:
            images, flags = predictor.crops(array, affine, available, c)
            probs = predictor.classify(images, flags)
            predictor.saliency(images, flags, probs)

        t = measure(run, repeats=3)
        mem = peak_memory(run)
        rows.append({"rois": n, "time": t, **mem})
    vol_rows = []
    ref_name = next(s for s in ("t2", "t1", "stir", "t1c") if s in study.volumes)
    ref = study.volumes[ref_name]
    for scale in volume_scales:
        shape = tuple(max(int(round(s * scale ** (1 / 3))), 4) for s in ref.shape)
        aff = ref.affine.copy()
        aff[:3, :3] = aff[:3, :3] * (np.asarray(ref.shape) / np.asarray(shape))[None, :]
        scaled = Study(study.study_id, {k: resample_to(v, shape, aff) for k, v in study.volumes.items()})

        def prep(s: Study = scaled) -> None:
            a, af, av, _ = predictor.prepare(s)
            images, flags = predictor.crops(a, af, av, [base])
            predictor.classify(images, flags)

        t = measure(prep, repeats=3)
        mem = peak_memory(prep)
        vol_rows.append({"voxels_per_sequence": int(np.prod(shape)), "scale": scale, "time": t, **mem})
    return {"rois": rows, "volume": vol_rows}
