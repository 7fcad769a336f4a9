"""Training augmentation that keeps the labels true, applied to whole batches on the device.

Everything here changes how the anatomy was *imaged* (scanner gain, contrast, noise, coil
bias, resolution, a missing sequence, small differences of position and angle), never what
it *is*. Deliberately absent:

* anterior-posterior flips: the vertebral body is anterior to the canal; a flipped ROI puts
  an epidural mass behind the cord and a bone lesion in the posterior elements, i.e.
  anatomy that does not exist, and "anterior epidural" vs "posterior" matters for reading;
* cranio-caudal flips: the conus, cauda equina and the direction of the cord taper are
  oriented, and a flipped wedge fracture is still a wedge but its retropulsed fragment
  would point the wrong way relative to the levels around it.

Left-right flips are allowed: compartments and fracture types have no side.

Why batched tensor operations rather than MONAI's per-item dictionary transforms: measured
here, the per-item pipeline cost ~16 ms per ROI on the CPU, about the cost of a training
step of the default network, and it would starve a GPU that trains ~6,000 ROIs/s. The data
loader now only indexes the in-memory context crops; one affine resampling, one bias-field
product and a few element-wise operations per batch run where the batch is (GPU or CPU).
Random parameters are drawn from a generator seeded by (seed, step, rank), so a batch is
augmented identically whatever the number of workers, and a resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spinelesion.data.roi import RoiSpec, center_crop


@dataclass
class AugmentConfig:
    """Probabilities and ranges; ``enabled=False`` gives a plain centre crop."""

    enabled: bool = True
    affine_prob: float = 0.8
    rotate_deg: tuple[float, float, float] = (12.0, 5.0, 5.0)  # about the L-R, A-P, S-I axes
    scale: float = 0.12
    translate_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    flip_lr_prob: float = 0.5
    bias_prob: float = 0.4
    bias_coeff: float = 0.35
    gamma_prob: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.5)
    scale_intensity_prob: float = 0.5
    scale_intensity: float = 0.15
    shift_intensity_prob: float = 0.3
    shift_intensity: float = 0.1
    noise_prob: float = 0.3
    noise_std: float = 0.06
    smooth_prob: float = 0.15
    smooth_sigma: tuple[float, float] = (0.3, 1.0)
    lowres_prob: float = 0.15
    lowres_zoom: tuple[float, float] = (0.5, 0.9)
    dropout_prob: float = 0.15  # per available sequence; at least one always stays


def augmentation_from_dict(values: Mapping[str, object] | None) -> AugmentConfig:
    """AugmentConfig from a (Hydra) mapping; lists become tuples, unknown keys are errors."""
    if not values:
        return AugmentConfig()
    fields = AugmentConfig.__dataclass_fields__
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown augmentation option(s): {', '.join(unknown)}")
    kwargs: dict[str, Any] = {
        k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in values.items()
    }
    return AugmentConfig(**kwargs)


def _uniform(
    g: torch.Generator, n: int, lo: float, hi: float, device: torch.device, *shape: int
) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand((n, *shape), generator=g, device=device)


def _coin(g: torch.Generator, n: int, p: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) < p


def _chosen(g: torch.Generator, n: int, p: float, device: torch.device) -> torch.Tensor:
    """Indices of the samples a transform of probability ``p`` applies to."""
    return torch.nonzero(_coin(g, n, p, device)).flatten()


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) radians about array axes 0, 1, 2 -> (B, 3, 3)."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1).view(-1, 3, 3)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1).view(-1, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


class BatchAugment:
    """Augment (B, C, *context) batches into (B, C, *roi) batches, on their own device."""

    def __init__(self, cfg: AugmentConfig, spec: RoiSpec):
        self.cfg = cfg
        self.spec = spec

    def generator(self, device: torch.device, *seed_parts: int) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(int(np.random.SeedSequence([abs(int(p)) for p in seed_parts]).generate_state(1)[0]))
        return g

    def __call__(
        self, image: torch.Tensor, available: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, dev = self.cfg, image.device
        b = image.shape[0]
        x = self._affine(image.float(), g)
        idx = _chosen(g, b, cfg.flip_lr_prob, dev)
        if idx.numel():
            x[idx] = x[idx].flip(2)  # dim 2 = left-right only
        x = self._intensity(x, g)
        flags = self._dropout(available.float(), g)
        return x * flags.view(b, -1, 1, 1, 1), flags

    # -- spatial --------------------------------------------------------------------------------
    def _affine(self, image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Rotation, scaling and shift about the ROI centre for some samples; a centre crop for the rest."""
        cfg, spec, dev = self.cfg, self.spec, image.device
        b = image.shape[0]
        chosen = _coin(g, b, cfg.affine_prob, dev)
        on = chosen.float().view(-1, 1)
        angles = (
            torch.stack([_uniform(g, b, -math.radians(a), math.radians(a), dev) for a in cfg.rotate_deg], 1)
            * on
        )
        scale = 1.0 + _uniform(g, b, -cfg.scale, cfg.scale, dev, 3) * on
        shift_mm = torch.stack([_uniform(g, b, -t, t, dev) for t in cfg.translate_mm], 1) * on
        spacing = torch.tensor(spec.spacing, device=dev, dtype=torch.float32)
        half_out = (torch.tensor(spec.shape, device=dev, dtype=torch.float32) - 1) / 2 * spacing
        half_in = (torch.tensor(image.shape[2:], device=dev, dtype=torch.float32) - 1) / 2 * spacing
        # output normalised coords -> mm (x half_out) -> rotate/scale about the centre, shift ->
        # input normalised coords (/ half_in); all in array-axis order (L-R, A-P, S-I)
        m = (
            torch.diag_embed(1.0 / half_in).expand(b, 3, 3)
            @ _rotation(angles)
            @ torch.diag_embed(scale)
            @ torch.diag_embed(half_out).expand(b, 3, 3)
        )
        t = shift_mm / half_in
        # grid_sample wants (x, y, z) = (last, middle, first) array axes: reverse both sides
        m = m.flip(1).flip(2)
        theta = torch.cat([m, t.flip(1).unsqueeze(2)], 2)
        out = center_crop(image, spec.shape).clone()
        idx = torch.nonzero(chosen).flatten()
        if idx.numel():  # resample only the samples that move (grid_sample is the costly part on CPU)
            grid = F.affine_grid(theta[idx], [idx.numel(), image.shape[1], *spec.shape], align_corners=True)
            out[idx] = F.grid_sample(
                image[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=True
            )
        return out

    # -- intensity ------------------------------------------------------------------------------
    def _intensity(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Each transform touches only the samples it was drawn for (most of the cost on a CPU)."""
        cfg, dev = self.cfg, x.device
        b, c = x.shape[:2]
        if cfg.bias_prob > 0:
            idx = _chosen(g, b, cfg.bias_prob, dev)
            if idx.numel():
                x[idx] = x[idx] * self._bias_field(x.shape[2:], g, idx.numel(), dev).unsqueeze(1)
        if cfg.gamma_prob > 0:  # per channel: ((x - lo) / range) ** gamma * range + lo
            idx = _chosen(g, b, cfg.gamma_prob, dev)
            gamma = _uniform(g, b, cfg.gamma[0], cfg.gamma[1], dev, c).view(b, c, 1, 1, 1)
            if idx.numel():
                sub = x[idx]
                lo = sub.amin(dim=(2, 3, 4), keepdim=True)
                rng = (sub.amax(dim=(2, 3, 4), keepdim=True) - lo).clamp(min=1e-6)
                x[idx] = ((sub - lo) / rng).clamp(0, 1) ** gamma[idx] * rng + lo
        if cfg.scale_intensity_prob > 0:
            on = _coin(g, b, cfg.scale_intensity_prob, dev).float().view(b, 1, 1, 1, 1)
            x = x * (
                1 + on * _uniform(g, b, -cfg.scale_intensity, cfg.scale_intensity, dev, c).view(b, c, 1, 1, 1)
            )
        if cfg.shift_intensity_prob > 0:
            on = _coin(g, b, cfg.shift_intensity_prob, dev).float().view(b, 1, 1, 1, 1)
            x = x + on * _uniform(g, b, -cfg.shift_intensity, cfg.shift_intensity, dev, c).view(b, c, 1, 1, 1)
        if cfg.smooth_prob > 0:
            idx = _chosen(g, b, cfg.smooth_prob, dev)
            sigma = float(_uniform(g, 1, cfg.smooth_sigma[0], cfg.smooth_sigma[1], dev))
            if idx.numel():
                x[idx] = _gaussian_blur(x[idx], sigma)
        if cfg.lowres_prob > 0:
            idx = _chosen(g, b, cfg.lowres_prob, dev)
            zoom = float(_uniform(g, 1, cfg.lowres_zoom[0], cfg.lowres_zoom[1], dev))
            if idx.numel():
                size = [max(int(round(s * zoom)), 2) for s in x.shape[2:]]
                x[idx] = F.interpolate(
                    F.interpolate(x[idx], size=size, mode="trilinear", align_corners=False),
                    size=list(x.shape[2:]),
                    mode="trilinear",
                    align_corners=False,
                )
        if cfg.noise_prob > 0:
            idx = _chosen(g, b, cfg.noise_prob, dev)
            std = _uniform(g, b, 0.0, cfg.noise_std, dev).view(b, 1, 1, 1, 1)
            if idx.numel():
                x[idx] = x[idx] + std[idx] * torch.randn((idx.numel(), *x.shape[1:]), generator=g, device=dev)
        return x

    def _bias_field(self, shape: torch.Size, g: torch.Generator, n: int, dev: torch.device) -> torch.Tensor:
        """exp(random degree-3 polynomial) for ``n`` samples. The field is smooth, so it is
        computed on a 4x coarser grid and interpolated up (a tenth of the cost)."""
        coarse = [max(int(s) // 4, 2) for s in shape]
        axes = [torch.linspace(-1, 1, k, device=dev) for k in coarse]
        gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
        terms = [
            gx**i * gy**j * gz**k
            for i in range(4)
            for j in range(4 - i)
            for k in range(4 - i - j)
            if i + j + k > 0
        ]
        basis = torch.stack(terms)  # (T, x, y, z)
        coeff = _uniform(g, n, -self.cfg.bias_coeff, self.cfg.bias_coeff, dev, len(terms))
        field = torch.einsum("bt,txyz->bxyz", coeff / math.sqrt(len(terms)) * 2, basis).unsqueeze(1)
        field = F.interpolate(field, size=list(shape), mode="trilinear", align_corners=True)[:, 0]
        return torch.exp(field)

    # -- sequences --------------------------------------------------------------------------------
    def _dropout(self, flags: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Drop whole available sequences; one always stays."""
        avail = flags > 0
        drop = (torch.rand(flags.shape, generator=g, device=flags.device) < self.cfg.dropout_prob) & avail
        emptied = avail.any(1) & ~(avail & ~drop).any(1)
        if bool(emptied.any()):
            # keep the first available sequence of a sample that would lose them all
            first = torch.argmax(avail.float(), dim=1)
            keep = F.one_hot(first, flags.shape[1]).bool() & emptied.unsqueeze(1)
            drop = drop & ~keep
        return (avail & ~drop).float()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable 3D Gaussian blur of every channel (sigma in voxels)."""
    radius = max(int(math.ceil(2.5 * sigma)), 1)
    k = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = x
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        weight = k.view(shape).expand(c, 1, *shape[2:]).contiguous()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), weight, groups=c)
    return out
