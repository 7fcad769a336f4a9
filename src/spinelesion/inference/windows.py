"""Scan mode's sliding windows: where they lie, which ones to classify, and their answers blended.

Windows are placed exactly as MONAI's :func:`~monai.inferers.sliding_window_inference` places them
(the volume padded to at least one window, starts every ``int(size * (1 - overlap))`` voxels, the
last window flush with the end): a lattice, the Cartesian product of per-axis starts. Our classifier
answers one probability vector per window, and MONAI blends a window's output with its Gaussian
importance map floored at ``c`` (:func:`~monai.data.utils.compute_importance_map`), so the blended
map is

    map(x) = sum_w p_w k(x - s_w) / sum_w k(x - s_w),   k = c * box + (G - c)+.

The box part is separable over the lattice (a product of per-axis indicator matrices) and the rest
is a small local kernel (the Gaussian's core), so :func:`blend` gives MONAI's maps (tested to 1e-5)
without building each window's full-size output: that was most of the old scan's time, and all of
its memory churn.

Which windows are classified (:func:`classify_lattice`): only windows whose box reaches a voxel
that may hold a candidate matter there (:func:`touching`). Of those, a coarse lattice (every
``step``-th window per axis, and the last: :func:`coarse_indices`) is classified first; then the
coarse cells around each coarse window whose answer reaches ``refine_threshold`` (p of some
lesion, either task), then the neighbours of every hot window, until no new window is hot. The rest take their answer by linear interpolation from the coarse
lattice: they lie where every classified neighbour answered "none" with at least
``1 - refine_threshold``. ``refine_threshold=0`` classifies every window that matters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Lattice:
    """Window starts per axis on the padded grid, and how the grid was padded."""

    starts: tuple[np.ndarray, np.ndarray, np.ndarray]
    roi: tuple[int, int, int]
    pad_before: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    grid_shape: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Windows per axis."""
        return len(self.starts[0]), len(self.starts[1]), len(self.starts[2])

    def window_starts(self, index: np.ndarray) -> np.ndarray:
        """(M, 3) lattice indices -> (M, 3) window starts on the padded grid."""
        index = np.asarray(index, dtype=int).reshape(-1, 3)
        return np.stack([self.starts[a][index[:, a]] for a in range(3)], axis=1)


def lattice(grid_shape: tuple[int, ...], roi: tuple[int, ...], overlap: list[float]) -> Lattice:
    """MONAI's sliding-window placement: padding for a grid smaller than a window, the scan
    interval ``int(roi * (1 - overlap))`` (the whole window on an axis exactly one window long),
    and starts whose last window ends flush with the (padded) grid."""
    padded, before, starts = [], [], []
    for n, r, o in zip(grid_shape, roi, overlap, strict=True):
        size = max(int(n), int(r))
        diff = size - int(n)
        before.append(diff // 2)
        padded.append(size)
        interval = int(r) if int(r) == size else max(int(r * (1 - o)), 1)
        count = next(d for d in range(int(np.ceil(size / interval))) if d * interval + r >= size) + 1
        starts.append(np.array([min(d * interval, size - int(r)) for d in range(count)], dtype=int))
    return Lattice(
        (starts[0], starts[1], starts[2]),
        (int(roi[0]), int(roi[1]), int(roi[2])),
        (before[0], before[1], before[2]),
        (padded[0], padded[1], padded[2]),
        (int(grid_shape[0]), int(grid_shape[1]), int(grid_shape[2])),
    )


def touching(lat: Lattice, mask: np.ndarray) -> np.ndarray:
    """(nx, ny, nz) windows whose box holds at least one voxel of ``mask`` (on the unpadded grid)."""
    padded = np.zeros(lat.padded_shape, dtype=np.int64)
    b = lat.pad_before
    padded[b[0] : b[0] + mask.shape[0], b[1] : b[1] + mask.shape[1], b[2] : b[2] + mask.shape[2]] = mask
    total = np.pad(padded.cumsum(0).cumsum(1).cumsum(2), ((1, 0), (1, 0), (1, 0)))  # summed-area table
    lo = np.meshgrid(*lat.starts, indexing="ij")
    hi = [s + r for s, r in zip(lo, lat.roi, strict=True)]
    count = (
        total[hi[0], hi[1], hi[2]]
        - total[lo[0], hi[1], hi[2]]
        - total[hi[0], lo[1], hi[2]]
        - total[hi[0], hi[1], lo[2]]
        + total[lo[0], lo[1], hi[2]]
        + total[lo[0], hi[1], lo[2]]
        + total[hi[0], lo[1], lo[2]]
        - total[lo[0], lo[1], lo[2]]
    )
    return count > 0


def importance_kernel(roi: tuple[int, int, int], sigma_scale: float) -> np.ndarray:
    """MONAI's Gaussian importance map for one window (float64 copy of its float32 values)."""
    from monai.data.utils import compute_importance_map

    return compute_importance_map(roi, mode="gaussian", sigma_scale=sigma_scale).double().numpy()


def blend(lat: Lattice, answers: np.ndarray, sigma_scale: float) -> np.ndarray:
    """(K, nx, ny, nz) window answers -> (K, X, Y, Z) maps on the unpadded grid, MONAI's blend."""
    import torch

    kernel = importance_kernel(lat.roi, sigma_scale)
    floor = float(kernel.min())
    core = kernel - floor
    nonzero = np.nonzero(core)
    lo = [int(v.min()) if len(v) else 0 for v in nonzero]
    hi = [int(v.max()) + 1 if len(v) else 0 for v in nonzero]
    core = core[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    k = answers.shape[0]
    # numerator and denominator together: the last channel's "answer" is 1
    values = torch.ones((k + 1, *lat.shape), dtype=torch.float32)  # MONAI blends in float32 too
    values[:k] = torch.as_tensor(np.asarray(answers, dtype=np.float32))
    # the box part: floor * sum over the windows covering each voxel, separable over the lattice
    boxes = []
    for a in range(3):
        ind = torch.zeros((len(lat.starts[a]), lat.padded_shape[a]), dtype=torch.float32)
        for i, s in enumerate(lat.starts[a]):
            ind[i, int(s) : int(s) + lat.roi[a]] = 1.0
        boxes.append(ind)
    acc = torch.einsum("kijl,lz->kijz", values, boxes[2])
    acc = torch.einsum("kijz,jy->kiyz", acc, boxes[1])
    acc = floor * torch.einsum("kiyz,ix->kxyz", acc, boxes[0])
    # the Gaussian's core, window by window (a few thousand small in-place adds)
    if core.size:
        core_t = torch.from_numpy(core).float()[None]
        for i, sx in enumerate(lat.starts[0]):
            xs = slice(int(sx) + lo[0], int(sx) + hi[0])
            for j, sy in enumerate(lat.starts[1]):
                ys = slice(int(sy) + lo[1], int(sy) + hi[1])
                column = values[:, i, j]
                for n, sz in enumerate(lat.starts[2]):
                    acc[:, xs, ys, int(sz) + lo[2] : int(sz) + hi[2]].addcmul_(
                        column[:, n, None, None, None], core_t
                    )
    b, g = lat.pad_before, lat.grid_shape
    acc = acc[:, b[0] : b[0] + g[0], b[1] : b[1] + g[1], b[2] : b[2] + g[2]]
    return (acc[:k] / acc[k:]).float().numpy()


def coarse_indices(starts: np.ndarray, step: int) -> np.ndarray:
    """Every ``step``-th window along an axis, and the last; a ``step``-th window that lies less than
    half a coarse step before the last (which MONAI pushes back flush with the end) gives way to it:
    the two would be near duplicates (on a 51-voxel slab of 40-voxel windows 5 apart, windows 2 and
    3 start 1 voxel apart)."""
    n = len(starts)
    step = max(int(step), 1)
    if n <= 2:
        return np.arange(n)
    interval = int(starts[1] - starts[0])
    knots = [i for i in range(0, n - 1, step) if i == 0 or starts[-1] - starts[i] >= step * interval / 2]
    return np.array([*knots, n - 1])


def interpolation_matrix(n: int, knots: np.ndarray) -> np.ndarray:
    """(n, len(knots)) weights of linear interpolation along one axis from values at ``knots``."""
    w = np.zeros((n, len(knots)))
    for i in range(n):
        k = int(np.searchsorted(knots, i, side="right")) - 1
        if k >= len(knots) - 1:
            w[i, -1] = 1.0
            continue
        t = (i - knots[k]) / (knots[k + 1] - knots[k])
        w[i, k], w[i, k + 1] = 1.0 - t, t
    return w


@dataclass
class LatticeAnswers:
    answers: np.ndarray  # (K, nx, ny, nz): classified, or interpolated from the coarse lattice
    classified: np.ndarray  # (nx, ny, nz) bool
    relevant: np.ndarray  # (nx, ny, nz) bool: windows that reach a voxel that may hold a candidate


def classify_lattice(
    classify: Callable[[np.ndarray], np.ndarray],
    lat: Lattice,
    relevant: np.ndarray,
    score: Callable[[np.ndarray], np.ndarray],
    default: np.ndarray,
    refine_threshold: float,
    step: int,
    progress: Callable[[int, int], None] | None = None,
    batch: int = 32,
) -> LatticeAnswers:
    """Classify the windows that matter, coarse to fine (module docstring).

    Args:
        classify: (M, 3) lattice indices -> (M, K) answers.
        relevant: windows whose answers can reach a candidate.
        score: (M, K) answers -> (M,) p(lesion), what ``refine_threshold`` is compared with.
        default: (K,) the answer given to windows that neither were classified nor lie between
            classified ones (outside every relevant window's reach): "none" for each task.
        progress: called with (windows classified, windows planned so far).
        batch: windows per call of ``classify``.
    """
    shape = lat.shape
    k = len(default)
    answers = np.zeros((k, *shape))
    classified = np.zeros(shape, dtype=bool)
    knots = [coarse_indices(lat.starts[a], step) for a in range(3)]
    planned = 0

    def run(mask: np.ndarray) -> None:
        nonlocal planned
        index = np.argwhere(mask)
        planned += len(index)
        if len(index):
            out = classify_in_parts(classify, index, progress, planned, int(classified.sum()), batch)
            answers[:, index[:, 0], index[:, 1], index[:, 2]] = out.T
            classified[tuple(index.T)] = True

    # the coarse lattice points each relevant window is interpolated from (nonzero weights)
    weights = [interpolation_matrix(n, kn) for n, kn in zip(shape, knots, strict=True)]
    reach_of = [(w > 0).astype(float) for w in weights]
    needed = np.einsum("ijl,ia,jb,lc->abc", relevant.astype(float), *reach_of, optimize=True) > 0
    coarse = np.zeros(shape, dtype=bool)
    coarse[np.ix_(*knots)] = needed
    run(coarse)
    # Refine: first the coarse cells around each hot coarse window, then the neighbours of every
    # hot window, until no classified window that is hot has an unclassified relevant neighbour.
    reach = np.ones((2 * max(step - 1, 1) + 1,) * 3, dtype=bool)
    while True:
        hot = classified & (score(answers.reshape(k, -1).T).reshape(shape) >= refine_threshold)
        todo = ndimage.binary_dilation(hot, structure=reach) & relevant & ~classified
        if not todo.any():
            break
        run(todo)
        reach = np.ones((3, 3, 3), dtype=bool)
    # the rest: linear interpolation over the coarse lattice (unclassified coarse points: default)
    grid = np.ix_(*knots)
    coarse_answers = answers[:, grid[0], grid[1], grid[2]]
    values = np.where(classified[grid][None], coarse_answers, default[:, None, None, None])
    filled = np.einsum("kabc,ia,jb,lc->kijl", values, *weights, optimize=True)
    answers = np.where(classified[None], answers, filled)
    return LatticeAnswers(answers, classified, relevant)


def classify_in_parts(
    classify: Callable[[np.ndarray], np.ndarray],
    index: np.ndarray,
    progress: Callable[[int, int], None] | None,
    planned: int,
    done: int,
    part: int,
) -> np.ndarray:
    """``classify`` over ``index`` in parts, reporting progress after each."""
    out = []
    part = max(int(part), 1)
    for s in range(0, len(index), part):
        out.append(classify(index[s : s + part]))
        done += len(index[s : s + part])
        if progress is not None:
            progress(done, planned)
    return np.concatenate(out) if out else np.zeros((0, 0))
