"""Does a series look like the sequence it was passed as? Measured from the study's own tissues.

The model reads T2 with bright fat and fluid, T1 with bright fat and dark fluid, STIR with fat
suppressed. A fat-suppressed, fluid-bright series passed as ``t2`` (a common DICOM-export mix-up:
a T2 SPAIR/Dixon water image or a STIR labelled T2) puts oedema-bright marrow and dark fat where
the model expects neither, and on a real site of that kind a third to a half of normal bodies
were called diseased (issue 33). The prediction still runs; the outputs say what the series
looks like.

Two numbers need no segmentation, only the body outline (:mod:`spinelesion.io.body_outline`), measured on
~1.5 mm blocks (under a second per study):

* ``fat_ratio``: the 75th percentile of the subcutaneous layer (3-12 mm under the skin: fat,
  clear of the skin's partial volume with air) over the median of deep tissue (over 25 mm:
  muscle, viscera, bone, canal). Measured on the real exams in ``../shared``: T1 2.5-3.4, fast
  spin-echo T2 0.97-3.0 (17 + 3 lumbar, 2 cervical), 3D T2 1.2-1.3, T2* 1.1-1.4; fat-suppressed
  STIR 0.51 and 0.56.
* ``bright_fraction``: the fraction of deep tissue brighter than 1.2x that subcutaneous level,
  i.e. fluid brighter than fat: T1 0-0.037; T2 0-0.32.

So a ``t2`` with ``fat_ratio`` < 0.8 looks fat-suppressed, and a ``t1`` whose fat is not clearly
the brightest tissue (``fat_ratio`` < 1.5) or whose deep tissue is often brighter than fat
(``bright_fraction`` > 0.08) does not look like a T1. The second test catches STIR,
gradient-echo, 3D T2 and about a third of the fast spin-echo T2 exams passed as ``t1`` (a T2
whose fat is as bright as its CSF cannot be told from a T1 this way). A study without air around
the body, or smaller than 140 mm across (a tight crop, whose dark edge muscle would pass for
air), is not judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from spinelesion.io.body_outline import under_skin_layers
from spinelesion.io.volume import Volume, spacing_of

DEEP_MM = 25.0
MIN_EXTENT_MM = 140.0  # a tight crop (no air, or dark muscle at its edges) is not judged
T2_FAT_SUPPRESSED_BELOW = 0.8
T1_FAT_NOT_BRIGHTEST_BELOW = 1.5
T1_FLUID_BRIGHT_ABOVE = 0.08


@dataclass(frozen=True)
class ContrastProfile:
    fat_ratio: float  # subcutaneous (fat) level over the deep-tissue median
    bright_fraction: float  # deep tissue brighter than 1.2x the subcutaneous level


def contrast_profile(vol: Volume) -> ContrastProfile | None:
    """The two numbers of a series, or None when it has no air around the body to measure from."""
    extent = np.sort(np.asarray(vol.shape) * spacing_of(vol.affine))
    if extent[-2] < MIN_EXTENT_MM:
        return None
    layers = under_skin_layers(vol.array, vol.affine, DEEP_MM)
    if layers is None:
        return None
    ring, deep = layers
    if ring.size < 100 or deep.size < 100:
        return None
    fat = float(np.percentile(ring, 75))
    centre = float(np.median(deep))
    if centre <= 0 or fat <= 0:
        return None
    return ContrastProfile(fat / centre, float(np.mean(deep > 1.2 * fat)))


def contrast_warning(name: str, profile: ContrastProfile) -> str | None:
    """A warning when series ``name`` does not look like that sequence, else None."""
    if name == "t2" and profile.fat_ratio < T2_FAT_SUPPRESSED_BELOW:
        return (
            f"t2: looks fat-suppressed (subcutaneous fat {profile.fat_ratio:.2f}x the deep tissue, "
            "darker than it; a T2 fast spin echo has bright fat): if it is a STIR or a fat-saturated T2, "
            "pass it as stir"
        )
    if name == "t1" and (
        profile.fat_ratio < T1_FAT_NOT_BRIGHTEST_BELOW or profile.bright_fraction > T1_FLUID_BRIGHT_ABOVE
    ):
        return (
            f"t1: does not look like a T1 (subcutaneous fat {profile.fat_ratio:.2f}x the deep tissue, "
            f"{100 * profile.bright_fraction:.0f} % of deep tissue brighter than fat: fluid looks bright); "
            "check that it is not a T2, STIR or gradient-echo series"
        )
    return None


def contrast_warnings(volumes: Mapping[str, Volume]) -> list[str]:
    """Warnings for the series of a study that do not look like the sequence they were passed as."""
    out = []
    for name in ("t2", "t1"):
        if name in volumes:
            profile = contrast_profile(volumes[name])
            warning = contrast_warning(name, profile) if profile is not None else None
            if warning:
                out.append(warning)
    return out
