"""Scan mode's maps as they were computed before 2026-12-06: MONAI's SlidingWindowInferer over every
window, each window's answer spread over a full window-sized output and blended by MONAI.

Kept as the reference the lattice scan (:mod:`spinelesion.inference.windows`) is checked against
(the same maps where candidates may lie: tests/test_windows.py) and timed against
(``spinelesion-bench``'s scan section); not used by prediction.
"""

from __future__ import annotations

import numpy as np
import torch

from spinelesion.data.normalize import robust_unit_range
from spinelesion.data.roi import RoiSpec, center_crop, sample_grid
from spinelesion.inference.scan import ScanConfig, scan_grid, window_overlap
from spinelesion.labels import TASKS
from spinelesion.models.batch import autocast_for


def monai_scan_maps(
    net: torch.nn.Module,
    array: np.ndarray,
    affine: np.ndarray,
    available: np.ndarray,
    spec: RoiSpec,
    cfg: ScanConfig,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """task -> (classes, X, Y, Z) blended probabilities on the scan grid, every window classified."""
    from monai.inferers import SlidingWindowInferer

    grid_affine, grid_shape = scan_grid(array.shape[1:], affine, spec.spacing, cfg.max_extent_mm)
    volume = sample_grid(array, affine, grid_affine, grid_shape)  # (1, C, X, Y, Z)
    flags = torch.as_tensor(np.asarray(available, dtype=np.float32))
    temps = net.get_buffer("temperature").detach().float().cpu()

    def window_predictor(patches: torch.Tensor) -> torch.Tensor:
        b = patches.shape[0]
        f = flags.to(patches.device).expand(b, -1)
        x = center_crop(robust_unit_range(patches.float(), f), spec.shape).contiguous()
        with autocast_for(patches.device):
            logits = net(x, f)
        probs = [torch.softmax(lg.float() / temps[i].to(lg.device), 1) for i, lg in enumerate(logits)]
        p = torch.cat(probs, 1)
        # a real tensor, not an expanded view: MONAI weights the window output in place
        return p.view(b, -1, 1, 1, 1).expand(b, p.shape[1], *patches.shape[2:]).contiguous()

    inferer = SlidingWindowInferer(
        roi_size=spec.context_shape,
        sw_batch_size=cfg.sw_batch_size,
        overlap=window_overlap(spec, cfg),
        mode="gaussian",
        sigma_scale=cfg.sigma_scale,
        padding_mode="constant",
        cval=0.0,
    )
    with torch.inference_mode():
        maps = inferer(volume.to(device), window_predictor)[0].float().cpu().numpy()
    out, start = {}, 0
    for task, classes in TASKS.items():
        out[task] = maps[start : start + len(classes)]
        start += len(classes)
    return out
