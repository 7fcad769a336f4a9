"""Scan mode's maps as they were computed before 2026-12-06 (commit 2711a30): MONAI's
SlidingWindowInferer over every window, each window's answer spread over a full window-sized output
and blended by MONAI, every sequence channel normalised by the normalisation of that day (kept
below, frozen: today's gives the same values faster), the network in the contiguous layout.

Kept as the reference the lattice scan (:mod:`spinelesion.inference.windows`) is checked against
(the same maps where candidates may lie: tests/test_windows.py) and timed against
(``spinelesion-bench``'s scan section: the same work as before, so the ratio is the whole gain);
not used by prediction.
"""

from __future__ import annotations

import numpy as np
import torch

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
    import copy

    from monai.inferers import SlidingWindowInferer

    net = copy.deepcopy(net).to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    grid_affine, grid_shape = scan_grid(array.shape[1:], affine, spec.spacing, cfg.max_extent_mm)
    volume = sample_grid(array, affine, grid_affine, grid_shape)  # (1, C, X, Y, Z)
    flags = torch.as_tensor(np.asarray(available, dtype=np.float32))
    temps = net.get_buffer("temperature").detach().float().cpu()

    def window_predictor(patches: torch.Tensor) -> torch.Tensor:
        b = patches.shape[0]
        f = flags.to(patches.device).expand(b, -1)
        x = center_crop(_unit_range_2711a30(patches.float(), f), spec.shape).contiguous()
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


def _unit_range_2711a30(image: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """:func:`spinelesion.data.normalize.robust_unit_range` (batched, default settings) as it was on
    2026-12-05: every channel, one row at a time, out of place. The same values (tested)."""
    flat = image.float().flatten(2)
    valid = flat != 0
    frac = valid.float().mean(-1)
    rows, n_vox = flat.shape[0] * flat.shape[1], flat.shape[-1]
    values, mask = flat.reshape(rows, n_vox).numpy(), valid.reshape(rows, n_vox).numpy()
    counts = mask.sum(-1)
    q = torch.tensor([0.01, 0.99], dtype=flat.dtype)
    below, above = np.zeros((rows, 2), np.float32), np.zeros((rows, 2), np.float32)
    weights = torch.zeros(rows, 2, dtype=flat.dtype)
    for i in np.flatnonzero(counts):
        ranks = q * (int(counts[i]) - 1)
        lo_idx, hi_idx = ranks.floor().long().numpy(), ranks.ceil().long().numpy()
        part = np.partition(values[i][mask[i]], np.unique(np.concatenate([lo_idx, hi_idx])))
        below[i], above[i] = part[lo_idx], part[hi_idx]
        weights[i] = ranks - ranks.floor()
    stats = torch.lerp(torch.from_numpy(below), torch.from_numpy(above), weights)
    stats[torch.from_numpy(counts == 0)] = float("nan")
    lo, hi = stats.T.reshape(2, *flat.shape[:2])
    lo, hi = torch.nan_to_num(lo, nan=0.0), torch.nan_to_num(hi, nan=1.0)
    scale = torch.clamp(hi - lo, min=1e-6)
    out = (image.float() - lo[..., None, None, None]) / scale[..., None, None, None]
    out = torch.where(valid.view_as(out), out.clamp(-0.5, 2.0), torch.zeros_like(out))
    keep = (frac >= 0.05) & (available > 0)
    return out * keep[..., None, None, None].to(out.dtype)
