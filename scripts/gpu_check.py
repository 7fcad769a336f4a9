#!/usr/bin/env python
"""GPU figures for the README: training throughput (bf16, channels-last) and per-study inference.

Run on a CUDA machine: python scripts/gpu_check.py OUT_DIR. Writes gpu.json. Never run by tests.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    from omegaconf import OmegaConf

    from spinelesion.benchmark.machine import describe
    from spinelesion.benchmark.speed import inference_breakdown, train_step_throughput
    from spinelesion.config_path import CONFIG_DIR
    from spinelesion.data.roi import RoiSpec
    from spinelesion.inference.inputs import from_manifest
    from spinelesion.inference.predictor import Predictor, PredictorConfig, RoiRequest
    from spinelesion.models.networks import build_network
    from spinelesion.phantom.dataset import generate_dataset

    assert torch.cuda.is_available(), "needs CUDA"
    spec = RoiSpec()
    default = {"backbone": "spinecnn", "widths": [16, 32, 64, 128], "blocks": [1, 1, 1, 1], "hidden": 128}
    dense = {"backbone": "densenet121", "hidden": 128}
    res = {"machine": describe(), "training": {}}
    for name, cfg in (("spinecnn", default), ("densenet121", dense)):
        for amp in (False, True):
            r = train_step_throughput(cfg, spec, batch_size=64, repeats=10, device="cuda", amp=amp)
            res["training"][f"{name}_{'bf16' if amp else 'fp32'}"] = r
    cfg = OmegaConf.load(Path(CONFIG_DIR) / "make_data.yaml")
    tmp = Path(tempfile.mkdtemp())
    cfg.output_dir, cfg.studies, cfg.seed, cfg.workers = str(tmp / "d"), 6, 31, 6
    manifest = generate_dataset(cfg)
    items, _ = from_manifest(manifest)
    item = next(it for it in items if len(it.load().volumes) == 4)
    base = item.rois[0].center_lps
    item.rois = [RoiRequest(f"b{k}", base + k) for k in range(8)]
    net = build_network(default)
    meta = {
        "name": "bench",
        "version": "-",
        "roi": {"shape": list(spec.shape), "spacing": list(spec.spacing)},
        "network": default,
    }
    pred = Predictor(net, meta, PredictorConfig(device="cuda", png=True))
    res["inference"] = inference_breakdown(pred, item, tmp / "o", repeats=3)
    (out / "gpu.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({k: v.get("rois_per_s") for k, v in res["training"].items()}, indent=1))
    r = res["inference"]
    print("inference", r["split_s"], "gradcam/fwd", r["gradcam_over_forward_per_task"])


if __name__ == "__main__":
    main()
