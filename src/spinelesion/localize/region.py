"""Where a study's vertebral bodies are (the locator's answer on its grid), and the region around
them that scan mode searches.

Every compartment the classifier answers lies in or near the spine: bodies and their marrow
(extradural), the epidural space, the dural sac and the cord behind the bodies, the posterior
elements behind those, a paraspinal mass beside them. So the region is the bodies swept
``posterior_mm`` posterior (in LPS, +y), widened by ``reach_mm`` in every direction, and the
column through them (a body the locator missed between two it found still lies on it). What lies
farther (pelvis, bowel, the abdomen in front of the bodies, the body wall) is not asked about.
Measured (docs/results.md, the sixth run): it removed the held-out exams' false calls away from the
spine; most of theirs lay on it (sacrum, a body's edge), the classifier's to fix.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from spinelesion.data.normalize import robust_unit_range
from spinelesion.io.resample import lps_grid, sample_grid
from spinelesion.localize.model import LocatorSettings, SpineLocator


def locator_input(
    array: np.ndarray, affine: np.ndarray, available: np.ndarray, settings: LocatorSettings
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Each available sequence on the locator's grid, normalised as in training: (C', X, Y, Z),
    the grid's affine, and the channels used."""
    used = [int(c) for c in np.flatnonzero(np.asarray(available, bool))]
    if not used:
        raise ValueError("spine locator: the study has no available sequence")
    spacing = (settings.spacing_mm,) * 3
    grid_affine, grid_shape = lps_grid(array.shape[1:], affine, spacing, settings.max_extent_mm)
    volume = sample_grid(np.asarray(array)[used], affine, grid_affine, grid_shape)[0]
    return robust_unit_range(volume).numpy(), grid_affine, used


def predict_bodies(
    locator: SpineLocator, images: np.ndarray, device: torch.device | str = "cpu"
) -> np.ndarray:
    """(X, Y, Z) probability of vertebral body from (C, X, Y, Z) normalised images on the
    locator's grid: the largest over the channels, each read alone (as the locator was trained)."""
    from monai.inferers import sliding_window_inference

    net = locator.net.to(device).eval()
    patch = tuple(int(v) for v in locator.settings.patch)
    with torch.inference_mode():
        x = torch.from_numpy(np.asarray(images, np.float32)[:, None]).to(device)  # a sequence per batch item
        logits = sliding_window_inference(x, patch, 4, net, overlap=0.25, mode="gaussian")
        assert isinstance(logits, torch.Tensor)
        return torch.sigmoid(logits[:, 0]).amax(0).float().cpu().numpy()


def body_probability(
    locator: SpineLocator,
    array: np.ndarray,
    affine: np.ndarray,
    available: np.ndarray,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) probability of vertebral body on the locator's LPS grid, and that grid's affine."""
    images, grid_affine, _ = locator_input(array, affine, available, locator.settings)
    return predict_bodies(locator, images, device), grid_affine


def column_tube(bodies: np.ndarray, spacing: np.ndarray, settings: LocatorSettings) -> np.ndarray:
    """(X, Y, Z) bool: the vertebral column as a whole, from the bodies found. A body the locator
    missed between two it found (a collapsed, infiltrated or unusually imaged one: where lesions
    are) still lies on the column, so the region follows the line through the found bodies' centres,
    slice by slice along LPS z, bridged where slices found none and continued ``extend_mm`` past the
    ends (two bodies and their discs: held-out exams of another site had their lowest two bodies
    unfound), with the bodies' own reach around it: ``half_width_mm`` to each side, ``front_mm`` in front
    of the line and ``posterior_mm`` plus ``reach_mm`` behind it."""
    nz = bodies.shape[2]
    counts = bodies.sum(axis=(0, 1)).astype(float)
    found = np.flatnonzero(counts > 0)
    out = np.zeros(bodies.shape, dtype=bool)
    if len(found) < 2:
        return out
    xs, ys = np.indices(bodies.shape[:2], dtype=float)
    cx = np.array([(xs * bodies[:, :, k]).sum() / counts[k] if counts[k] else np.nan for k in range(nz)])
    cy = np.array([(ys * bodies[:, :, k]).sum() / counts[k] if counts[k] else np.nan for k in range(nz)])
    z = np.arange(nz)
    cx = ndimage.median_filter(np.interp(z, found, cx[found]), size=5, mode="nearest")
    cy = ndimage.median_filter(np.interp(z, found, cy[found]), size=5, mode="nearest")
    ext = int(round(settings.extend_mm / spacing[2]))
    lo, hi = max(int(found[0]) - ext, 0), min(int(found[-1]) + ext, nz - 1)
    half = (settings.half_width_mm + settings.reach_mm) / spacing[0]
    front = (settings.front_mm + settings.reach_mm) / spacing[1]
    back = (settings.front_mm + settings.posterior_mm + settings.reach_mm) / spacing[1]
    for k in range(lo, hi + 1):
        out[:, :, k] = (np.abs(xs - cx[k]) <= half) & (ys >= cy[k] - front) & (ys <= cy[k] + back)
    return out


def on_the_column(bodies: np.ndarray, spacing: np.ndarray, settings: LocatorSettings) -> np.ndarray:
    """The pieces of body found that belong to the vertebral column. Specks (under
    ``min_component_ml``) are dropped, and with three or more pieces, those whose centre lies more
    than ``off_column_mm`` in front of, behind or beside a smooth line through the others (a
    quadratic in z fitted to the pieces' centres, weighted by their volume; the farthest piece
    dropped and the line fitted again until none is that far): a kidney, bowel
    or the liver taken for bone by a locator that never saw the site lies well off the column,
    while the column's own curves (lordosis, a scoliosis within a sagittal slab) follow the line."""
    labels, n = ndimage.label(bodies)
    if not n:
        return bodies
    index = np.arange(1, n + 1)
    volumes = ndimage.sum(bodies, labels, index=index) * float(np.prod(spacing)) / 1000.0
    keep = volumes >= settings.min_component_ml
    centres = np.array(ndimage.center_of_mass(bodies, labels, index)).reshape(-1, 3) * spacing
    while keep.sum() >= 3:  # the worst piece at a time: one far blob must not drag the line off the rest
        z = centres[keep, 2]
        degree = 2 if keep.sum() >= 4 else 1
        off = np.zeros(n)
        for axis in (0, 1):
            coef = np.polyfit(z, centres[keep, axis], degree, w=np.sqrt(volumes[keep]))
            off = np.maximum(off, np.abs(centres[:, axis] - np.polyval(coef, centres[:, 2])))
        worst = int(np.argmax(np.where(keep, off, -1.0)))
        if off[worst] <= settings.off_column_mm:
            break
        keep[worst] = False
    return np.isin(labels, index[keep])


def spine_region(prob: np.ndarray, grid_affine: np.ndarray, settings: LocatorSettings) -> np.ndarray:
    """(X, Y, Z) bool on the locator's grid: the bodies swept posterior, widened by ``reach_mm``,
    and the column through them (:func:`column_tube`)."""
    spacing = np.abs(np.diag(np.asarray(grid_affine)[:3, :3]))
    bodies = prob >= settings.threshold
    bodies = on_the_column(bodies, spacing, settings)
    swept = bodies.copy()
    steps = int(round(settings.posterior_mm / spacing[1]))
    for k in range(1, steps + 1):  # LPS +y is posterior; the grid's axes are LPS's
        swept[:, k:, :] |= bodies[:, :-k, :]
    if not swept.any():
        return swept
    near = ndimage.distance_transform_edt(~swept, sampling=spacing) <= settings.reach_mm
    return near | column_tube(bodies, spacing, settings)


def body_volume_ml(prob: np.ndarray, grid_affine: np.ndarray, threshold: float) -> float:
    voxel_ml = float(abs(np.linalg.det(np.asarray(grid_affine)[:3, :3]))) / 1000.0
    return float((prob >= threshold).sum()) * voxel_ml


def locate(
    locator: SpineLocator,
    array: np.ndarray,
    affine: np.ndarray,
    available: np.ndarray,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray | None, np.ndarray, float]:
    """The scan region of one prepared study (None when the locator found too little body to be
    trusted: the caller searches the whole field of view and says so), its grid's affine, and the
    body volume found (ml)."""
    prob, grid_affine = body_probability(locator, array, affine, available, device)
    found = body_volume_ml(prob, grid_affine, locator.settings.threshold)
    if found < locator.settings.min_body_ml:
        return None, grid_affine, found
    return spine_region(prob, grid_affine, locator.settings), grid_affine, found
