#!/usr/bin/env python
"""Does each saliency method point at the lesion? -> a table (Markdown) on stdout.

    python scripts/saliency_pointing.py [model_dir] [manifest] [splits] [max ROIs]

For every ROI of ``manifest`` (its ``splits``, comma-separated) with a lesion label, each
method's map for the true class (ROI grid), scored by ``spinelesion.evaluation.pointing``:
the peak's distance from the ROI centre, which lies on the lesion. Defaults: the released
model on the held-out real subjects with inserted lesions (``data/real-insert``, test).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import torch

from spinelesion.config_path import CONFIG_DIR
from spinelesion.evaluation.pointing import pointing
from spinelesion.inference.saliency import saliency
from spinelesion.labels import TASKS
from spinelesion.models.folder import load_model_folder

ROOT = Path(__file__).resolve().parents[1]
METHODS = (("gradcam", "stage3"), ("gradcam", "stage4"), ("gradcampp", "stage3"), ("occlusion", None))


def main() -> None:
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models" / "spinelesion-demo"
    manifest = sys.argv[2] if len(sys.argv) > 2 else str(ROOT / "data" / "real-insert" / "manifest.csv")
    splits = sys.argv[3].split(",") if len(sys.argv) > 3 else ["test"]
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else 60
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = hydra.compose("train", overrides=[f"data.manifest={manifest}", "data.progress=false"])
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("test")
    net, meta = load_model_folder(model_dir)
    net.eval()
    items = []
    for split in splits:
        if dm.split_indices.get(split):
            ds = dm.dataset(split, augment=False)
            items += [ds[i] for i in range(len(ds)) if any(int(ds[i][t]) > 0 for t in TASKS)]
    items = items[:limit]
    images = torch.stack([it["image"] for it in items])
    available = torch.stack([it["available"] for it in items])
    target = {t: torch.stack([it[t] for it in items]) for t in TASKS}
    stages = net.stage_paths()
    print(f"{len(items)} lesion ROIs of {manifest} ({','.join(splits)}), model {model_dir.name}\n")
    print(
        "| method | layer | task | ROIs | median peak distance (mm) | peak within 15 mm | map share within 15 mm (uniform) | s per ROI |"
    )
    print("|---|---|---|---|---|---|---|---|")
    classes = {t: [max(int(c), 0) for c in target[t].tolist()] for t in TASKS}  # unknown (-1) -> none
    for method, stage in METHODS:
        layer = stages[stage] if stage else None
        start = time.perf_counter()
        maps: dict[str, list[torch.Tensor]] = {t: [] for t in TASKS}
        for s in range(0, len(items), 16):
            part = saliency(
                net,
                images[s : s + 16],
                available[s : s + 16],
                {t: classes[t][s : s + 16] for t in TASKS},
                method=method,
                target_layer=layer,
            )
            for t in TASKS:
                maps[t].append(part[t])
        seconds = (time.perf_counter() - start) / len(items)
        for t in TASKS:
            keep = (target[t] > 0).numpy()
            m = torch.cat(maps[t]).numpy()[keep]
            p = pointing(m, meta["roi"]["spacing"])
            print(
                f"| {method} | {layer or '-'} | {t} | {p['n']} | {p['median_peak_mm']} | {p['peak_within']} "
                f"| {p['share_within']} ({p['uniform']}) | {seconds:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
