"""Shared helpers for the phantom tests: render once per finding, measure in boxes."""

from __future__ import annotations

import functools

import numpy as np

from spinelesion.io.resample import sample_grid
from spinelesion.phantom.canvas import Canvas
from spinelesion.phantom.config import default_phantom_config
from spinelesion.phantom.study import RenderedStudy, render_study

T1, T2, STIR, T1C = 0, 1, 2, 3
SEQ = ("t1", "t2", "stir", "t1c")


def quiet_config() -> dict:
    """Low noise and bias, every sequence present: signal tests measure the imaging, not luck."""
    return default_phantom_config(
        **{
            "acquisition.noise_fraction": [0.01, 0.012],
            "acquisition.bias_strength": [0.0, 0.02],
            "acquisition.missing_rate": {"t1": 0.0, "t2": 0.0, "stir": 0.0, "t1c": 0.0},
            "acquisition.oblique_rate": 0.0,
            "incidental_rate": 0.0,
        }
    )


@functools.lru_cache(maxsize=64)
def rendered(finding: str, seed: int = 0, region: str | None = None, **overrides: object) -> RenderedStudy:
    cfg = quiet_config()
    for k, v in overrides.items():
        target = cfg
        parts = k.split("__")
        for p in parts[:-1]:
            target = target[p]
        target[parts[-1]] = v
    return render_study([seed, 4242], cfg, finding=finding, region=region, keep_canvas=True)


def box_affine(cv: Canvas, box: tuple[slice, slice, slice]) -> np.ndarray:
    a = cv.affine.copy()
    a[:3, 3] = cv.origin + cv.spacing * np.array([s.start for s in box])
    return a


def acquired_on_box(study: RenderedStudy, seq: str, box: tuple[slice, slice, slice]) -> np.ndarray:
    """The acquired series resampled onto a canvas box (to compare with ground-truth masks)."""
    vol = study.volumes[seq]
    shape = tuple(s.stop - s.start for s in box)
    return sample_grid(vol.array[None], vol.affine, box_affine(study.canvas, box), shape)[0, 0].numpy()


def mean_where(values: np.ndarray, mask: np.ndarray, thr: float = 0.8) -> float:
    sel = np.broadcast_to(mask, values.shape) > thr
    assert sel.sum() > 5, "mask selects almost nothing"
    return float(values[sel].mean())


def body_marrow_mask(study: RenderedStudy, index: int) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Inner marrow of a vertebral body (3 mm inside the cortex)."""
    from spinelesion.phantom.canvas import soft
    from spinelesion.phantom.findings import body_box

    cv, v = study.canvas, study.anatomy.vertebrae[index]
    box = body_box(cv, v)
    u, vv, w = v.local(*cv.coords(box))
    return box, soft(v.body_distance(u, vv, w) + 3.0)


def normal_level(study: RenderedStudy) -> int:
    busy = set().union(*[f.occupies | {f.level_index} for f in study.findings])
    for i in range(1, len(study.anatomy.vertebrae) - 1):
        if i not in busy and all(abs(i - b) > 1 for b in busy) and study.anatomy.vertebrae[i].state == "none":
            return i
    for i in range(1, len(study.anatomy.vertebrae) - 1):
        if i not in busy and study.anatomy.vertebrae[i].state == "none":
            return i
    raise AssertionError("no normal level")
