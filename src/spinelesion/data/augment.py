"""Training augmentation that keeps the labels true.

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

Random parameters are drawn from the transform's own ``RandomState``; the dataset reseeds
the whole pipeline per item from (seed, epoch, index), so the same seed gives the same
batches whatever the number of workers (TorchIO's "draw, then apply" habit).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
)

from spinelesion.data.roi import RoiSpec


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


class SequenceDropoutd(Randomizable, MapTransform):
    """Drop whole sequences (zero channel, flag 0), keeping at least one; zero every
    unavailable channel, so no augmentation leaves signal in a missing sequence."""

    def __init__(self, image_key: str = "image", flag_key: str = "available", prob: float = 0.15):
        MapTransform.__init__(self, [image_key])
        self.image_key, self.flag_key, self.prob = image_key, flag_key, prob
        self._drop: np.ndarray = np.zeros(0, dtype=bool)

    def randomize(self, data: object = None) -> None:
        flags = np.asarray(data, dtype=bool)
        drop = (self.R.random_sample(flags.shape) < self.prob) & flags
        if flags.any() and not (flags & ~drop).any():
            keep = self.R.choice(np.flatnonzero(flags))
            drop[keep] = False
        self._drop = drop

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        flags = torch.as_tensor(d[self.flag_key]).clone().float()
        self.randomize(flags.numpy() > 0)
        flags[torch.from_numpy(self._drop)] = 0.0
        d[self.flag_key] = flags
        d[self.image_key] = d[self.image_key] * flags.view(-1, *([1] * (d[self.image_key].ndim - 1)))
        return d


def build_augmentation(cfg: AugmentConfig, spec: RoiSpec) -> Compose:
    """The training pipeline on {"image": (C, *context_shape), "available": (C,)}."""
    keys = ["image"]
    radians = tuple(float(np.deg2rad(a)) for a in cfg.rotate_deg)
    translate_vox = tuple(float(t) / s for t, s in zip(cfg.translate_mm, spec.spacing, strict=True))
    transforms: list[object] = [
        # Always resamples to the network's ROI shape (a centre crop when not triggered).
        RandAffined(
            keys, prob=cfg.affine_prob, spatial_size=spec.shape, rotate_range=radians,
            scale_range=(cfg.scale,) * 3, translate_range=translate_vox, padding_mode="zeros",
            mode="bilinear", cache_grid=True,
        ),
        RandFlipd(keys, prob=cfg.flip_lr_prob, spatial_axis=0),  # axis 0 = left-right only
        RandBiasFieldd(keys, prob=cfg.bias_prob, coeff_range=(0.0, cfg.bias_coeff), degree=3),
        RandAdjustContrastd(keys, prob=cfg.gamma_prob, gamma=cfg.gamma),
        RandScaleIntensityd(keys, prob=cfg.scale_intensity_prob, factors=cfg.scale_intensity, channel_wise=True),
        RandShiftIntensityd(keys, prob=cfg.shift_intensity_prob, offsets=cfg.shift_intensity, channel_wise=True),
        RandGaussianSmoothd(keys, prob=cfg.smooth_prob, sigma_x=cfg.smooth_sigma, sigma_y=cfg.smooth_sigma,
                            sigma_z=cfg.smooth_sigma),
        RandSimulateLowResolutiond(keys, prob=cfg.lowres_prob, zoom_range=cfg.lowres_zoom),
        RandGaussianNoised(keys, prob=cfg.noise_prob, std=cfg.noise_std),
        SequenceDropoutd(prob=cfg.dropout_prob),
    ]
    return Compose(transforms)


def augmentation_from_dict(values: Mapping[str, object] | None) -> AugmentConfig:
    """AugmentConfig from a (Hydra) mapping; lists become tuples, unknown keys are errors."""
    if not values:
        return AugmentConfig()
    fields = AugmentConfig.__dataclass_fields__
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown augmentation option(s): {', '.join(unknown)}")
    return AugmentConfig(**{k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
                            for k, v in values.items()})
