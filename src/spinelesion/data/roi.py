"""Regions of interest: a fixed-size grid at fixed physical spacing around an LPS centre.

The ROI grid is axis-aligned in the patient frame (i->Left, j->Posterior, k->Superior)
whatever the orientation of the source series, so the network always sees the anatomy the
same way round: a sagittal, axial or oblique study gives the same ROI for the same patient.
Sampling goes through each grid's affine (:func:`spinelesion.io.resample.sample_grid`),
never through array indices.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spinelesion.config_schema import validated
from spinelesion.io.resample import sample_grid
from spinelesion.io.volume import grid_affine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoiSpec:
    """ROI size in voxels and spacing in mm, both in (L-R, A-P, S-I) order.

    ``margin`` > 1 crops a larger context box first (for augmentation by rotation and
    scaling, and for normalisation statistics); the network input is the central ``shape``.
    """

    # The values of configs/data/default.yaml's ``roi`` (tests/test_config_groups.py keeps them equal).
    shape: tuple[int, int, int] = (32, 48, 48)
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    margin: float = 1.25

    def __post_init__(self) -> None:  # lists from YAML or JSON become tuples; nonsense is refused
        x, y, z = (int(v) for v in self.shape)
        sx, sy, sz = (float(v) for v in self.spacing)
        if min(x, y, z) < 1 or min(sx, sy, sz) <= 0 or float(self.margin) < 1:
            raise ValueError(
                f"ROI shape {self.shape} and spacing {self.spacing} need 3 positive values, margin >= 1"
            )
        object.__setattr__(self, "shape", (x, y, z))
        object.__setattr__(self, "spacing", (sx, sy, sz))
        object.__setattr__(self, "margin", float(self.margin))

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None, section: str = "roi") -> RoiSpec:
        """A ``roi`` section (config, checkpoint hyper-parameters or ``metadata.json``): an unknown
        key is a :class:`~spinelesion.config_schema.ConfigError`; a missing section is the default
        with a warning (an old checkpoint that does not describe its input)."""
        values = {k: v for k, v in dict(values or {}).items() if k != "frame"}  # "frame": descriptive only
        if not values:
            log.warning("%s: no ROI description; assuming the default ROI %s", section, cls())
        return validated(cls, values, section)

    @property
    def context_shape(self) -> tuple[int, int, int]:
        x, y, z = (int(round(s * self.margin / 2.0)) * 2 for s in self.shape)
        return x, y, z

    @property
    def extent_mm(self) -> np.ndarray:
        return np.asarray(self.shape) * np.asarray(self.spacing)

    def affine(self, center_lps: np.ndarray, context: bool = False) -> np.ndarray:
        shape = self.context_shape if context else self.shape
        return grid_affine(center_lps, shape, self.spacing)


def crop_rois(
    array: torch.Tensor | np.ndarray,
    affine: np.ndarray,
    centers_lps: Sequence[np.ndarray],
    spec: RoiSpec,
    context: bool = True,
) -> torch.Tensor:
    """Crop ROIs (with context margin by default) around LPS centres: (R, C, *shape)."""
    affines = np.stack([spec.affine(np.asarray(c, dtype=np.float64), context=context) for c in centers_lps])
    return sample_grid(array, affine, affines, spec.context_shape if context else spec.shape)


def center_crop(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Central ``shape`` of a (..., X, Y, Z) tensor (the network input from a context crop)."""
    slices = []
    for have, want in zip(image.shape[-3:], shape, strict=True):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    index: tuple[Any, ...] = (..., *slices)
    return image[index]
