"""Find ROIs when none are given: slide the classifier over the spine, keep the peaks.

The study is resampled onto an LPS-aligned grid at the model's ROI spacing; MONAI's
:class:`~monai.inferers.SlidingWindowInferer` moves a context-sized window over it. Each
window is normalised and classified exactly like a training ROI, and its class
probabilities are spread over the window with MONAI's Gaussian weighting, so the blended
map at a voxel says what the classifier answers for ROIs centred near that voxel. Peaks of
"some lesion or fracture here" (1 - p(none), the larger of the two tasks) become
candidate ROIs, none shallower than ``min_depth_mm`` under the skin (:mod:`.body_outline`: no
compartment lies there) nor nearer the field of view's edges than ``edge_margin_mm`` along the
study's own axes (:func:`field_of_view_margin`). Each candidate is then classified like a given
ROI, but as the mean answer over its centre and six neighbours ``classify_shift_mm`` away
(:func:`neighbour_offsets`): the peak of a map of thousands of windows is the place where the
classifier's noise is highest, so its answer there alone overstates the evidence. A candidate is called a lesion only when some
task's 1 - p(none) (optionally with the lesion classes moved to given rates: ``lesion_rates``,
:mod:`spinelesion.models.prior`) reaches ``call_threshold``, the model's scan operating point unless given
(:meth:`Predictor.scan_labels`, :mod:`spinelesion.evaluation.scan_operating`). What both did on
held-out real and phantom studies: docs/outputs.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from spinelesion.data.normalize import robust_unit_range
from spinelesion.data.roi import RoiSpec, center_crop, sample_grid
from spinelesion.inference.body_outline import depth_under_skin_mm
from spinelesion.io.volume import apply_affine, dominant_axes, spacing_of
from spinelesion.labels import TASKS
from spinelesion.models.batch import autocast_for


@dataclass
class ScanConfig:
    overlap: float = 0.75  # the least window overlap; stride_mm usually asks for more
    stride_mm: float | None = 8.0  # window centres at most this far apart per axis (the classifier's
    # answer fades beyond ~5-8 mm off a lesion's centre: measured)
    sigma_scale: float = 0.05  # Gaussian blending width (fraction of the window): a voxel's value
    # is the answer of the windows centred nearest to it
    sw_batch_size: int = 32
    threshold: float = 0.5  # minimum 1 - p(none) for a candidate
    min_distance_mm: float = 20.0  # peaks closer than this are one finding
    max_rois: int = 8
    max_extent_mm: float = 400.0  # guards against a huge field of view
    edge_margin_mm: float = 12.0  # candidates at least this far inside the scanned volume
    context_inside: bool = False  # ... and, per axis, half a ROI context (at most 40 % of the extent) inside
    classify_shift_mm: float = 4.0  # a candidate's answer: the mean over it and 6 points this far along each
    # axis (training's translation range): a peak of a noisy map is where the answer is biased upward
    min_depth_mm: float = 10.0  # candidates at least this deep under the skin (body_outline.py: every
    # compartment lies deeper; a study without air around the body is not limited); 0: off
    lesion_rates: dict[str, dict[str, float]] | None = None  # opt-in: a candidate's call judged with
    # the lesion classes at these relative rates per task, moved from the sampling prior recorded in the
    # model's metadata (models/prior.py); None, or a model without one: as trained
    call_threshold: float | None = None  # ... called a lesion only when some task's 1 - p(none) reaches
    # this; None: the model's operating point (metadata scan.call_threshold, fitted on validation
    # studies: evaluation/scan_operating.py), 0.5 for a model without one. The decision rule alone
    # may name a rare class below 0.5, right for a place a user points at, not for a scan's peak.

    def __post_init__(self) -> None:
        from spinelesion.models.prior import check_rates

        check_rates(self.lesion_rates)


@dataclass
class ScanResult:
    affine: np.ndarray  # LPS-aligned scan grid
    probabilities: dict[str, np.ndarray]  # task -> (classes, X, Y, Z)
    candidates: list[tuple[np.ndarray, float]]  # (LPS centre, score), best first


def scan_grid(
    shape: tuple[int, ...], affine: np.ndarray, spacing: tuple[float, float, float], max_extent_mm: float
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """LPS-aligned grid at ``spacing`` covering the bounding box of a volume."""
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in shape], indexing="ij")).reshape(3, -1).T
    world = apply_affine(affine, corners)
    lo, hi = world.min(0), world.max(0)
    extent = np.minimum(hi - lo, max_extent_mm)
    centre = (lo + hi) / 2
    size = np.maximum(np.ceil(extent / np.asarray(spacing)).astype(int), 1)
    out = np.eye(4)
    out[:3, :3] = np.diag(spacing)
    out[:3, 3] = centre - np.asarray(spacing) * (size - 1) / 2
    return out, (int(size[0]), int(size[1]), int(size[2]))


def window_overlap(spec: RoiSpec, cfg: ScanConfig) -> list[float]:
    """Per-axis overlap of the context-sized windows: at least ``cfg.overlap``, and enough that
    window centres lie at most ``cfg.stride_mm`` apart. The classifier was trained on ROIs
    centred on their lesion; a window centred 10-15 mm off one mostly answers "none", so a
    coarse stride walks past lesions however they are blended."""
    overlaps = []
    for size, spacing in zip(spec.context_shape, spec.spacing, strict=True):
        o = float(cfg.overlap)
        if cfg.stride_mm:
            step = max(int(cfg.stride_mm / spacing), 1)  # MONAI's interval is int(size * (1 - overlap))
            o = max(o, 1.0 - (step + 0.5) / size)
        overlaps.append(min(o, 1.0 - 1.0 / size))
    return overlaps


def scan_study(
    net: torch.nn.Module,
    array: np.ndarray,
    affine: np.ndarray,
    available: np.ndarray,
    spec: RoiSpec,
    cfg: ScanConfig,
    device: torch.device,
) -> ScanResult:
    """Sliding-window probability maps and candidate ROI centres for one prepared study."""
    from monai.inferers import SlidingWindowInferer

    grid_affine, grid_shape = scan_grid(array.shape[1:], affine, spec.spacing, cfg.max_extent_mm)
    volume = sample_grid(array, affine, grid_affine, grid_shape)  # (1, C, X, Y, Z)
    flags = torch.as_tensor(np.asarray(available, dtype=np.float32))
    temps = net.temperature.detach().float().cpu()
    n_classes = [len(c) for c in TASKS.values()]

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
    probabilities, start = {}, 0
    for task, n in zip(TASKS, n_classes, strict=True):
        probabilities[task] = maps[start : start + n]
        start += n
    score = np.maximum(1.0 - probabilities["compartment"][0], 1.0 - probabilities["fracture"][0])
    # Only voxels well inside the scanned volume may become candidates: the padding is not
    # anatomy, and a ROI half outside the field of view is not one the model was trained on.
    inside = field_of_view_margin(array.shape[1:], affine, grid_affine, grid_shape, spec, cfg)
    if cfg.min_depth_mm > 0:
        inside &= under_skin(array, affine, grid_affine, grid_shape) >= cfg.min_depth_mm
    score = np.where(inside, score, 0.0)
    return ScanResult(grid_affine, probabilities, find_peaks(score, grid_affine, spec.spacing, cfg))


def field_of_view_margin(
    shape: tuple[int, ...],
    affine: np.ndarray,
    grid_affine: np.ndarray,
    grid_shape: tuple[int, int, int],
    spec: RoiSpec,
    cfg: ScanConfig,
) -> np.ndarray:
    """Scan-grid voxels at least ``cfg.edge_margin_mm`` inside the study's field of view.

    Measured along the study's own axes (whose faces are the field of view's edges), then resampled
    to the scan grid: the scan grid is the LPS bounding box, so for an oblique slab it is much
    thicker than the slab, and a margin measured on it erased a tilted 16 mm axial slab entirely
    (no candidate could exist). An axis no longer than twice the margin (a thin slab's) keeps its
    extent: every ROI of such a slab reaches past its faces, the place the classifier was trained for.
    """
    spacing = spacing_of(affine)
    margin_mm = np.full(3, float(cfg.edge_margin_mm))
    if cfg.context_inside:
        # Look where the classifier was trained to look: training ROIs are sampled with their
        # context inside the study (half a context, or 40 % of a thin slab's extent, from its
        # edges); a candidate whose context is mostly padding is a question it never saw.
        context_half_lps = np.asarray(spec.context_shape) * np.asarray(spec.spacing) / 2.0
        context_half = context_half_lps[dominant_axes(affine)]  # per study axis
        extent = np.asarray(shape) * spacing
        margin_mm = np.maximum(margin_mm, np.minimum(context_half, 0.4 * extent))
    box = np.ones(tuple(shape), np.float32)
    for axis, (n, m_mm, s) in enumerate(zip(shape, margin_mm, spacing, strict=True)):
        m = max(int(round(m_mm / s)), 0)
        if m and n > 2 * m + 1:  # a thin slab keeps its axis
            index = [slice(None)] * 3
            index[axis] = np.r_[0:m, n - m : n]
            box[tuple(index)] = 0.0
    return sample_grid(box[None], affine, grid_affine, grid_shape)[0, 0].numpy() > 0.5


def under_skin(
    array: np.ndarray, affine: np.ndarray, grid_affine: np.ndarray, grid_shape: tuple[int, int, int]
) -> np.ndarray:
    """Depth under the skin (mm) of each scan-grid voxel, measured on the study's own grid
    (whose faces are the field of view's edges); +inf everywhere for a study without air."""
    depth = depth_under_skin_mm(array, spacing_of(affine))
    if not np.isfinite(depth).any():
        return np.full(grid_shape, np.inf, dtype=np.float32)
    capped = np.minimum(depth, 1e4)[None]  # finite for interpolation; off the study reads 0 (not a candidate)
    return sample_grid(capped, affine, grid_affine, grid_shape)[0, 0].numpy()


def find_peaks(
    score: np.ndarray, affine: np.ndarray, spacing: tuple[float, float, float], cfg: ScanConfig
) -> list[tuple[np.ndarray, float]]:
    """Local maxima above the threshold, at least ``min_distance_mm`` apart, best first."""
    size = np.maximum(np.round(cfg.min_distance_mm / np.asarray(spacing)).astype(int), 1)
    local_max = (score == ndimage.maximum_filter(score, size=tuple(size), mode="constant")) & (
        score >= cfg.threshold
    )
    idx = np.argwhere(local_max)
    order = np.argsort(-score[tuple(idx.T)], kind="stable")
    kept: list[tuple[np.ndarray, float]] = []
    for i in order:
        p = apply_affine(affine, idx[i].astype(float))
        if all(np.linalg.norm(p - q) >= cfg.min_distance_mm for q, _ in kept):
            kept.append((p, float(score[tuple(idx[i])])))
        if len(kept) >= cfg.max_rois:
            break
    return kept


def neighbour_offsets(shift_mm: float) -> np.ndarray:
    """(6, 3) LPS offsets ``shift_mm`` along -x, +x, -y, +y, -z, +z; none when ``shift_mm <= 0``."""
    if shift_mm <= 0:
        return np.zeros((0, 3))
    return np.array([sign * shift_mm * np.eye(3)[axis] for axis in range(3) for sign in (-1.0, 1.0)])
