"""Per-sequence intensity normalisation for MRI, whose intensities have no physical unit.

MRI values depend on scanner, coil, gain and vendor rescaling, so no fixed window works.
Each sequence channel is mapped with robust percentiles of the ROI's *context* box
(larger than the network input, so a lesion filling the ROI does not set its own scale):
``lo`` -> 0 and ``hi`` -> 1. Voxels outside the scanned volume were sampled as 0 and are
left out of the statistics. Only the ordering and ratios of tissue signal survive, which
is what the radiology relies on (lesion darker than marrow on T1, CSF brighter than cord
on T2...).
"""

from __future__ import annotations

import torch


def robust_unit_range(
    image: torch.Tensor,
    available: torch.Tensor | None = None,
    lower: float = 1.0,
    upper: float = 99.0,
    clip: tuple[float, float] = (-0.5, 2.0),
    min_fraction: float = 0.05,
) -> torch.Tensor:
    """Map each channel's [p_lower, p_upper] (over non-zero voxels) to [0, 1], then clip.

    Args:
        image: (C, X, Y, Z) or (R, C, X, Y, Z).
        available: (C,) or (R, C) flags; unavailable channels come out as exact zeros.
        min_fraction: a channel with fewer non-zero voxels than this fraction (a ROI almost
            entirely outside the scanned volume) is set to zero: its statistics are noise.
    """
    batched = image.ndim == 5
    x = image if batched else image[None]
    flat = x.float().flatten(2)  # (R, C, N)
    valid = flat != 0
    frac = valid.float().mean(-1)
    # torch.nanquantile ignores NaN: mark the out-of-volume zeros as NaN for the statistics.
    stats_src = torch.where(valid, flat, torch.full_like(flat, float("nan")))
    q = torch.tensor([lower / 100.0, upper / 100.0], dtype=flat.dtype, device=flat.device)
    lo, hi = torch.nanquantile(stats_src, q, dim=-1)  # (R, C) each
    lo = torch.nan_to_num(lo, nan=0.0)
    hi = torch.nan_to_num(hi, nan=1.0)
    scale = torch.clamp(hi - lo, min=1e-6)
    out = (x.float() - lo[..., None, None, None]) / scale[..., None, None, None]
    # Out-of-volume voxels go to 0, the level of the darkest tissue, not to -lo/scale.
    out = torch.where(valid.view_as(out), out.clamp(*clip), torch.zeros_like(out))
    keep = frac >= min_fraction
    if available is not None:
        avail = available if batched else available[None]
        keep = keep & (avail > 0)
    out = out * keep[..., None, None, None].to(out.dtype)
    return out if batched else out[0]
