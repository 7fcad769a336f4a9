"""Acquire each sequence of a painted phantom on its own sagittal grid, like a scanner would.

Each series gets its own field of view, matrix, slice thickness and gap, sometimes a slight
obliquity; the slice profile and in-plane point-spread blur the object (partial volume),
then a smooth coil bias field, Rician noise and an arbitrary gain (sometimes a DICOM
rescale slope) are applied. Nothing here depends on the labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from spinelesion.io.volume import Volume, grid_affine, voxel_centres
from spinelesion.phantom.canvas import Canvas

SEQ_NAMES = ("t1", "t2", "stir", "t1c")

DESCRIPTIONS = {
    "t1": ["T1 TSE SAG", "Sag T1 FSE", "T1W_TSE_SAG", "SAG T1", "t1_tse_sag"],
    "t2": ["T2 TSE SAG", "Sag T2 FRFSE", "T2W_TSE_SAG", "SAG T2", "t2_tse_sag"],
    "stir": ["STIR SAG", "T2 TIRM SAG", "Sag STIR", "SAG STIR FSE", "t2_tirm_sag"],
    "t1c": [
        "T1 TSE SAG FS +C",
        "Sag T1 FS POST GAD",
        "T1W_TSE_SAG_FS_GD",
        "SAG T1 FS C+",
        "t1_tse_fs_sag_post",
    ],
}


@dataclass
class SeriesPlan:
    sequence: str
    affine: np.ndarray
    shape: tuple[int, int, int]
    thickness: float
    tags: dict[str, object] = field(default_factory=dict)
    gain: float = 1000.0
    slope: float = 1.0
    noise: float = 0.03
    bias: float = 0.2
    gibbs_keep: float = 1.0  # fraction of k-space kept along the readout (S-I) axis; < 1 rings at edges
    ghost: float = 0.0  # amplitude of motion ghosts along the phase-encode (A-P) axis


def cover_points(
    shape: tuple[int, int, int],
    centre: np.ndarray,
    axes: np.ndarray,
    spacing: np.ndarray,
    points: np.ndarray,
    max_matrix: int,
    margin_mm: float = 4.0,
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Grow the grid (then shift its centre if the matrix is capped) so every point lies inside.

    An operator plans the slab and field of view over the anatomy of interest; a ROI centre
    outside one series would leave that channel blank exactly where the label is.
    """
    n = np.array(shape, dtype=int)
    c = np.asarray(centre, dtype=float).copy()
    if len(points) == 0:
        return shape, c
    local = (np.asarray(points, float) - c) @ axes  # mm along each grid axis (axes are unit columns)
    for a in range(3):
        lo, hi = float(local[:, a].min()) - margin_mm, float(local[:, a].max()) + margin_mm
        half = (n[a] - 1) / 2 * spacing[a]
        if -half <= lo and hi <= half:
            continue
        need = int(np.ceil(2 * max(-lo, hi) / spacing[a])) + 1
        cap = max_matrix if a < 2 else max(need, n[a])
        n[a] = max(n[a], min(need, cap))
        half = (n[a] - 1) / 2 * spacing[a]
        shift = max(hi - half, 0.0) - max(-half - lo, 0.0)  # move toward the points when still short
        c = c + axes[:, a] * shift
    return (int(n[0]), int(n[1]), int(n[2])), c


def plan_series(
    rng: np.random.Generator,
    seq: str,
    centre: np.ndarray,
    extent_mm: np.ndarray,
    cfg: dict,
    field_strength: float,
    cover: np.ndarray | None = None,
) -> SeriesPlan:
    """Geometry and acquisition parameters of one series (independent of the anatomy's labels).

    ``cover``: points (ROI centres) the slab and field of view must include.
    """
    pixel = float(rng.uniform(*cfg["pixel_mm"]))
    thickness = float(rng.uniform(*cfg["slice_thickness_mm"]))
    gap = float(rng.uniform(0.0, cfg["slice_gap_max_mm"])) if rng.random() < cfg["slice_gap_rate"] else 0.0
    fov_si = float(extent_mm[2] * rng.uniform(*cfg["fov_fraction"]))
    fov_ap = float(min(extent_mm[1], fov_si * rng.uniform(0.75, 1.0)))  # rectangular FOV is common
    n_si = int(np.clip(round(fov_si / pixel), 64, cfg["max_matrix"]))
    n_ap = int(np.clip(round(fov_ap / pixel), 64, cfg["max_matrix"]))
    half_slab = float(rng.uniform(*cfg["slab_half_width_mm"]))
    n_slices = max(int(round(2 * half_slab / (thickness + gap))), 5)
    # sagittal: rows run posterior (i), columns run inferior (j), slices across the patient
    axes = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]]).T
    if rng.random() < 0.5:
        axes[:, 2] *= -1  # slices ordered left-to-right on some scanners
    if rng.random() < cfg["oblique_rate"]:
        angles = rng.uniform(-1, 1, 3) * np.asarray(cfg["oblique_max_deg"])
        axes = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ axes
    c = np.asarray(centre) + rng.uniform(-1, 1, 3) * np.asarray(cfg["centre_jitter_mm"])
    shape = (n_ap, n_si, n_slices)
    if cover is not None:
        shape, c = cover_points(
            shape, c, axes, np.array([pixel, pixel, thickness + gap]), cover, int(cfg["max_matrix"])
        )
    affine = grid_affine(c, shape, (pixel, pixel, thickness + gap), axes)
    tags = series_tags(rng, seq, field_strength, cfg)
    plan = SeriesPlan(
        seq,
        affine,
        shape,
        thickness,
        tags,
        gain=float(np.exp(rng.uniform(np.log(cfg["gain"][0]), np.log(cfg["gain"][1])))),
        slope=float(rng.uniform(0.4, 3.0)) if rng.random() < cfg["rescale_slope_rate"] else 1.0,
        noise=float(rng.uniform(*cfg["noise_fraction"])),
        bias=float(rng.uniform(*cfg["bias_strength"])),
    )
    # Artefacts a real series has (v2; rates 0 switch them off). Always the same four draws,
    # so a rate changes only its own artefact, never the rest of the study.
    u_gibbs, keep = rng.random(), float(rng.uniform(*cfg.get("gibbs_keep", [0.55, 0.8])))
    u_ghost, amp = rng.random(), float(rng.uniform(*cfg.get("ghost_amplitude", [0.02, 0.08])))
    plan.gibbs_keep = keep if u_gibbs < cfg.get("gibbs_rate", 0.0) else 1.0
    plan.ghost = amp if u_ghost < cfg.get("ghost_rate", 0.0) else 0.0
    return plan


def series_tags(rng: np.random.Generator, seq: str, field_strength: float, cfg: dict) -> dict[str, object]:
    desc = str(rng.choice(DESCRIPTIONS[seq]))
    tags: dict[str, object] = {"SeriesDescription": desc, "ProtocolName": desc, "MRAcquisitionType": "2D"}
    if seq in ("t1", "t1c"):
        tags.update(
            ScanningSequence="SE",
            SequenceVariant="SK",
            RepetitionTime=round(float(rng.uniform(400, 750)), 1),
            EchoTime=round(float(rng.uniform(8, 16)), 1),
        )
        if seq == "t1c":
            tags["ScanOptions"] = "FS"
            if rng.random() < cfg["contrast_agent_tag_rate"]:
                tags["ContrastBolusAgent"] = str(rng.choice(["Gadoterate", "Gadobutrol", "Gd-DTPA"]))
    elif seq == "t2":
        tags.update(
            ScanningSequence="SE",
            SequenceVariant="SK",
            RepetitionTime=round(float(rng.uniform(2500, 4500)), 1),
            EchoTime=round(float(rng.uniform(85, 120)), 1),
        )
    else:
        ti = rng.uniform(140, 170) if field_strength < 2 else rng.uniform(200, 230)
        tags.update(
            ScanningSequence="IR",
            SequenceVariant="SK",
            RepetitionTime=round(float(rng.uniform(3000, 5000)), 1),
            EchoTime=round(float(rng.uniform(30, 70)), 1),
            InversionTime=round(float(ti), 1),
        )
    return tags


def bias_field(
    rng: np.random.Generator, points: np.ndarray, centre: np.ndarray, strength: float
) -> np.ndarray:
    """Smooth multiplicative coil sensitivity: a random quadratic plus a posterior (coil) gradient.

    ``points``: LPS mm, (..., 3); the field has their leading shape.
    """
    p = (np.asarray(points) - centre) / 100.0
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    c = rng.normal(0, 1, 9)
    # The quadratic's nine terms summed in place (no (N, 9) design matrix: it was a third of
    # the acquisition's time).
    quad = c[0] * x + c[1] * y + c[2] * z
    quad += c[3] * x**2 + c[4] * y**2 + c[5] * z**2
    quad += c[6] * x * y + c[7] * y * z + c[8] * x * z
    quad /= max(float(np.abs(quad).max()), 1e-6)
    quad += np.clip(y, -1, 1) * 0.8  # spine coil under the back: brighter posteriorly
    return np.exp(strength * quad).astype(np.float32)


def artefacts(signal: np.ndarray, plan: SeriesPlan) -> np.ndarray:
    """Gibbs ringing (k-space truncated along the readout axis, j) and motion ghosts (shifted,
    faint copies along the phase-encode axis, i), on the noiseless (rows, columns, slices) signal."""
    if plan.gibbs_keep < 1.0:
        n = signal.shape[1]
        k = np.fft.fft(signal, axis=1)
        freq = np.abs(np.fft.fftfreq(n))
        k[:, freq > 0.5 * plan.gibbs_keep, :] = 0  # a sharp cut (no window): ringing next to edges
        signal = np.abs(np.fft.ifft(k, axis=1)).astype(np.float32)
    if plan.ghost > 0:
        shift = signal.shape[0] // 2  # periodic motion puts ghosts at FOV/2 in the phase direction
        signal = signal + plan.ghost * (
            np.roll(signal, shift, axis=0) + np.roll(signal, -shift // 2, axis=0) * 0.5
        )
    return signal.astype(np.float32)


def acquire(canvas: Canvas, channel: int, plan: SeriesPlan, rng: np.random.Generator) -> Volume:
    """Sample one sequence: slice-profile + in-plane blur, resampling, bias, Rician noise, gain."""
    sp = canvas.spacing
    # Blur the object along the (approximate) slice normal and in plane before sampling.
    normal = plan.affine[:3, 2] / np.linalg.norm(plan.affine[:3, 2])
    pixel = float(np.linalg.norm(plan.affine[:3, 0]))
    sigma_slice = plan.thickness / 2.355 / sp
    sigma_inplane = 0.45 * pixel / sp
    sigmas = [sigma_inplane + (sigma_slice - sigma_inplane) * abs(float(normal[a])) for a in range(3)]
    obj = ndimage.gaussian_filter(canvas.img[channel], sigmas, mode="nearest", truncate=2.5)
    ni, nj, nk = plan.shape
    world = voxel_centres(plan.affine, [slice(0, int(n)) for n in plan.shape])
    idx = ((world - canvas.origin) / sp).reshape(-1, 3)
    signal = ndimage.map_coordinates(obj, idx.T, order=1, mode="constant", cval=0.0).astype(np.float32)
    centre = plan.affine[:3, :3] @ ((np.asarray(plan.shape) - 1) / 2) + plan.affine[:3, 3]
    signal *= bias_field(rng, world, centre, plan.bias).reshape(-1)
    signal = artefacts(signal.reshape(ni, nj, nk), plan).reshape(-1)
    sigma = plan.noise * 0.5  # relative to a typical tissue level (~0.5)
    n1 = rng.normal(0, sigma, signal.shape).astype(np.float32)
    n2 = rng.normal(0, sigma, signal.shape).astype(np.float32)
    mag = np.sqrt((signal + n1) ** 2 + n2**2)
    real = (mag * plan.gain).reshape(ni, nj, nk)
    # Quantise as the scanner stores it: uint16 stored values times the rescale slope.
    stored = np.clip(np.rint(real / plan.slope), 0, 65535)
    return Volume(
        (stored * plan.slope).astype(np.float32),
        plan.affine,
        {"slice_thickness": plan.thickness, "sequence": plan.sequence, "slope": plan.slope},
    )
