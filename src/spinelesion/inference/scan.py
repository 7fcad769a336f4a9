"""Find ROIs when none are given: slide the classifier over the spine, keep the peaks.

The study is resampled onto an LPS-aligned grid at the model's ROI spacing; context-sized
windows lie on it as MONAI's sliding-window inferer places them (:mod:`.windows`). Each window
that reaches a place a candidate may lie is normalised and classified exactly like a training
ROI, coarse to fine (the rest interpolated where every classified neighbour says "none"), and
the class probabilities are blended with MONAI's Gaussian weighting, so the blended map at a
voxel says what the classifier answers for ROIs centred near that voxel. Peaks of
"some lesion or fracture here" (1 - p(none), the larger of the two tasks) become
candidate ROIs, none shallower than ``min_depth_mm`` under the skin (:mod:`spinelesion.io.body_outline`: no
compartment lies there) nor nearer the field of view's edges than ``edge_margin_mm`` along the
study's own axes (:func:`field_of_view_margin`). Each candidate is then classified like a given
ROI, but as the mean answer over its centre and six neighbours ``classify_shift_mm`` away
(:func:`neighbour_offsets`): the peak of a map of thousands of windows is the place where the
classifier's noise is highest, so its answer there alone overstates the evidence. A candidate is called a lesion only when some
task's 1 - p(none) (optionally with the lesion classes moved to given rates: ``lesion_rates``,
:mod:`spinelesion.models.prior`) reaches ``call_threshold``, the model's scan operating point unless given
(:meth:`spinelesion.inference.policy.CallPolicy.scan_labels`, :mod:`spinelesion.evaluation.scan_operating`). What both did on
held-out real and phantom studies: docs/outputs.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from spinelesion.data.normalize import robust_unit_range
from spinelesion.data.roi import RoiSpec, sample_grid
from spinelesion.inference.windows import blend, classify_lattice, lattice, touching
from spinelesion.io.body_outline import depth_under_skin_mm
from spinelesion.io.resample import block_mean
from spinelesion.io.resample import lps_grid as scan_grid
from spinelesion.io.volume import apply_affine, dominant_axes, spacing_of
from spinelesion.labels import TASKS
from spinelesion.models.batch import autocast_for, channels_last_helps
from spinelesion.models.networks import tempered_softmax


@dataclass
class ScanConfig:
    overlap: float = 0.75  # the least window overlap; stride_mm usually asks for more
    stride_mm: float | None = 8.0  # window centres at most this far apart per axis (the classifier's
    # answer fades beyond ~5-8 mm off a lesion's centre: measured)
    sigma_scale: float = 0.05  # Gaussian blending width (fraction of the window): a voxel's value
    # is the answer of the windows centred nearest to it
    sw_batch_size: int = 32
    coarse_step: int = 2  # windows classified first: every coarse_step-th per axis (inference/windows.py)
    refine_threshold: float = 0.2  # ... then the windows around each one whose p(lesion) reaches
    # this, until none is new; the rest interpolated (they lie where every classified
    # neighbour said "none" with >= 1 - refine_threshold). 0: classify every window that matters
    threshold: float = 0.5  # minimum 1 - p(none) for a candidate
    min_distance_mm: float = 20.0  # peaks closer than this are one finding
    max_rois: int = 8
    max_extent_mm: float = 400.0  # guards against a huge field of view
    edge_margin_mm: float = 12.0  # candidates at least this far inside the scanned volume
    context_inside: bool = False  # ... and, per axis, half a ROI context (at most 40 % of the extent) inside
    classify_shift_mm: float = 4.0  # a candidate's answer: the mean over it and 6 points this far along each
    # axis (training's translation range): a peak of a noisy map is where the answer is biased upward
    min_depth_mm: float = 10.0  # candidates at least this deep under the skin (io/body_outline.py: every
    # compartment lies deeper; a study without air around the body is not limited); 0: off
    lesion_rates: dict[str, dict[str, float]] | None = None  # opt-in: a candidate's call judged with
    # the lesion classes at these relative rates per task, moved from the sampling prior recorded in the
    # model's metadata (models/prior.py); None, or a model without one: as trained
    call_threshold: float | None = None  # ... called a lesion only when some task's 1 - p(none) reaches
    # this; None: the model's operating point (metadata scan.call_threshold, fitted on validation
    # studies: evaluation/scan_operating.py), 0.5 for a model without one. The decision rule alone
    # may name a rare class below 0.5, right for a place a user points at, not for a scan's peak.

    spine_locator: bool = True  # candidates only in the region the model's spine locator finds (the bodies,
    # the canal and arches behind them, a margin: localize/region.py), when the model has one; false:
    # the whole field of view (a study where it finds too little body is searched whole, with a warning)

    max_windows: int = 50_000  # a cost bound: a study needing more windows fails by name (the default
    # walk needs ~1,000-1,500 on a 1 mm lumbar study; 50,000 is ~1 hour on a 2-core CPU)

    def __post_init__(self) -> None:
        from spinelesion.models.prior import check_rates

        check_rates(self.lesion_rates)
        # Every number in range, or one clear error: a negative or tiny stride became a 1-voxel
        # walk (100x the windows, a silent hang), an overlap of 0.999999 the same.
        _in_range("scan.overlap", self.overlap, 0.0, 0.95)
        if self.stride_mm is not None:
            _in_range("scan.stride_mm", self.stride_mm, 2.0, 200.0)
        _in_range("scan.sigma_scale", self.sigma_scale, 0.01, 1.0)
        _in_range("scan.sw_batch_size", self.sw_batch_size, 1, 4096)
        _in_range("scan.coarse_step", self.coarse_step, 1, 8)
        _in_range("scan.refine_threshold", self.refine_threshold, 0.0, 1.0)
        _in_range("scan.threshold", self.threshold, 0.0, 1.0)
        _in_range("scan.min_distance_mm", self.min_distance_mm, 0.0, 500.0)
        _in_range("scan.max_rois", self.max_rois, 1, 1000)
        _in_range("scan.max_extent_mm", self.max_extent_mm, 10.0, 2000.0)
        _in_range("scan.edge_margin_mm", self.edge_margin_mm, 0.0, 200.0)
        _in_range("scan.classify_shift_mm", self.classify_shift_mm, 0.0, 20.0)
        _in_range("scan.min_depth_mm", self.min_depth_mm, 0.0, 200.0)
        _in_range("scan.max_windows", self.max_windows, 1, 10_000_000)
        if self.call_threshold is not None:
            _in_range("scan.call_threshold", self.call_threshold, 0.0, 1.0)


class SettingRangeError(ValueError):
    """A scan setting outside its range: the one place its range is said (``spinelesion-predict``
    reports it as an unusable argument before anything is read)."""

    def __init__(self, name: str, value: Any, lo: float, hi: float) -> None:
        self.name, self.value, self.expected = name, value, f"a number in [{lo:g}, {hi:g}]"
        super().__init__(f"{name}={value!r}: must lie in [{lo:g}, {hi:g}]")


def _in_range(name: str, value: float, lo: float, hi: float) -> None:
    """A setting's value within [lo, hi], else a ValueError naming it (NaN is out of range)."""
    try:
        ok = lo <= float(value) <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SettingRangeError(name, value, lo, hi)


@dataclass
class ScanResult:
    affine: np.ndarray  # LPS-aligned scan grid
    probabilities: dict[str, np.ndarray]  # task -> (classes, X, Y, Z)
    candidates: list[tuple[np.ndarray, float]]  # (LPS centre, score), best first
    windows: dict[str, int] = field(default_factory=dict)  # total, relevant, classified
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


class _Clock:
    """Seconds between laps, by name."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._t
        self._t = now


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
    progress: Callable[[int, int], None] | None = None,
    region: tuple[np.ndarray, np.ndarray] | None = None,
) -> ScanResult:
    """Sliding-window probability maps and candidate ROI centres for one prepared study.

    ``progress`` is called with (windows classified, windows planned so far) as the scan goes.
    ``region``: (mask, its LPS affine), where candidates may lie besides the field of view's and
    the skin's limits (the spine locator's region, :mod:`spinelesion.localize.region`); windows
    that reach no voxel of it are not classified.
    """
    clock = _Clock()
    # Unavailable sequences are exact zeros in the network input (robust_unit_range would zero
    # them anyway) and air_mask ignores an all-zero channel: only the others are resampled,
    # gathered and normalised.
    used = np.flatnonzero(np.asarray(available, bool))
    if not len(used):
        raise ValueError("scan: the study has no available sequence")
    present = np.asarray(array)[used]
    grid_affine, grid_shape = scan_grid(array.shape[1:], affine, spec.spacing, cfg.max_extent_mm)
    inside = candidate_region(present, affine, grid_affine, grid_shape, spec, cfg)
    if region is not None:
        mask, mask_affine = region
        on_grid = sample_grid(np.asarray(mask, np.float32)[None], mask_affine, grid_affine, grid_shape)
        inside &= on_grid[0, 0].numpy() > 0.5
    clock.lap("region")
    volume = sample_grid(present, affine, grid_affine, grid_shape)[0].numpy()  # (C', X, Y, Z)
    lat = lattice(grid_shape, spec.context_shape, window_overlap(spec, cfg))
    padded = np.zeros((volume.shape[0], *lat.padded_shape), np.float32)
    b = lat.pad_before
    padded[:, b[0] : b[0] + grid_shape[0], b[1] : b[1] + grid_shape[1], b[2] : b[2] + grid_shape[2]] = volume
    source = torch.from_numpy(padded).to(device)  # on a GPU: gathered and normalised there
    flags = torch.as_tensor(np.asarray(available, dtype=np.float32))
    temps = net.temperature.detach().float().cpu()
    n_classes = [len(c) for c in TASKS.values()]
    none_at = np.cumsum([0, *n_classes[:-1]])  # "none" is each task's first class
    rx, ry, rz = lat.roi
    channels_last = channels_last_helps(device)

    def classify(index: np.ndarray) -> np.ndarray:
        starts = lat.window_starts(index)
        patches = torch.stack([source[:, x : x + rx, y : y + ry, z : z + rz] for x, y, z in starts])
        x = torch.zeros((len(starts), len(flags), *spec.shape), device=device)
        if channels_last:  # the network's layout from the start: no copy before the first convolution
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x[:, used] = robust_unit_range(patches, crop=spec.shape)
        f = flags.expand(len(starts), -1).to(device)
        with torch.inference_mode(), autocast_for(device):
            logits = net(x, f)
        probs = tempered_softmax(logits, temps)
        return torch.cat(probs, 1).cpu().numpy()

    def lesion_score(answers: np.ndarray) -> np.ndarray:
        return (1.0 - answers[:, none_at]).max(1)

    default = np.zeros(sum(n_classes))
    default[none_at] = 1.0
    relevant = touching(lat, inside)
    if int(relevant.sum()) > cfg.max_windows:
        raise ValueError(
            f"scan would classify up to {int(relevant.sum())} windows (scan.max_windows={cfg.max_windows}): "
            "raise scan.stride_mm or scan.max_windows"
        )
    found = classify_lattice(
        classify,
        lat,
        relevant,
        lesion_score,
        default,
        cfg.refine_threshold,
        cfg.coarse_step,
        progress,
        batch=cfg.sw_batch_size,
    )
    clock.lap("windows")
    maps = blend(lat, found.answers, cfg.sigma_scale)
    probabilities, start = {}, 0
    for task, n in zip(TASKS, n_classes, strict=True):
        probabilities[task] = maps[start : start + n]
        start += n
    score = np.maximum(1.0 - probabilities["compartment"][0], 1.0 - probabilities["fracture"][0])
    score = np.where(inside, score, 0.0)
    windows = {"total": int(np.prod(lat.shape)), "relevant": int(found.relevant.sum())}
    windows["classified"] = int(found.classified.sum())
    peaks = find_peaks(score, grid_affine, spec.spacing, cfg)
    clock.lap("blend")
    return ScanResult(grid_affine, probabilities, peaks, windows, clock.laps)


def candidate_region(
    array: np.ndarray,
    affine: np.ndarray,
    grid_affine: np.ndarray,
    grid_shape: tuple[int, int, int],
    spec: RoiSpec,
    cfg: ScanConfig,
) -> np.ndarray:
    """Scan-grid voxels that may become candidates: well inside the scanned volume (the padding
    is not anatomy, and a ROI half outside the field of view is not one the model was trained
    on) and deep enough under the skin."""
    inside = field_of_view_margin(array.shape[1:], affine, grid_affine, grid_shape, spec, cfg)
    if cfg.min_depth_mm > 0:
        inside &= under_skin(array, affine, grid_affine, grid_shape, min(spec.spacing)) >= cfg.min_depth_mm
    return inside


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
    array: np.ndarray,
    affine: np.ndarray,
    grid_affine: np.ndarray,
    grid_shape: tuple[int, int, int],
    spacing_mm: float = 0.0,
) -> np.ndarray:
    """Depth under the skin (mm) of each scan-grid voxel, measured on the study's own grid (whose
    faces are the field of view's edges), averaged in blocks of about ``spacing_mm`` (the scan
    grid's: a finer depth map is sampled away, and on a 1 mm lumbar study it cost 8 s, a fifth of
    the scan); +inf everywhere for a study without air."""
    small, small_affine = block_mean(array, affine, spacing_mm) if spacing_mm > 0 else (array, affine)
    depth = depth_under_skin_mm(small, spacing_of(small_affine))
    if not np.isfinite(depth).any():
        return np.full(grid_shape, np.inf, dtype=np.float32)
    capped = np.minimum(depth, 1e4)[None]  # finite for interpolation; off the study reads 0 (not a candidate)
    return sample_grid(capped, small_affine, grid_affine, grid_shape)[0, 0].numpy()


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
