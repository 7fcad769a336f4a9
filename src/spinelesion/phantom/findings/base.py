"""What every finding shares: the four steps, its ROI records, drawn signs, helpers on bodies.

A finding works in up to four steps: ``modify`` (before layout: collapse a body, narrow a
disc), ``canal`` (after layout: push the dural sac, displace or expand the cord), ``paint``
(on top of the anatomy) and ``rois`` (the labelled regions it contributes). Before any of
them, :meth:`Finding.draw_signs` decides which imaging signs this instance shows, each on
its own at its configured rate (``features`` of the phantom config), so hard cases exist.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinelesion.labels import finding_labels
from spinelesion.phantom.anatomy import Anatomy, Vertebra, posterior_element_distance
from spinelesion.phantom.canvas import Canvas, ellipsoid_distance, smooth_noise, soft
from spinelesion.phantom.tissues import TissueTable

Features = Mapping[str, Any]
"""The ``phantom.features`` section of the config: sign rates and size ranges."""
Box = tuple[slice, slice, slice]


def chance(rng: np.random.Generator, rate: float) -> bool:
    """One independent draw of a sign present at ``rate``."""
    return bool(rng.random() < float(rate))


def plateau(z: np.ndarray, z0: float, half: float, ramp: float) -> np.ndarray:
    """1 within ``half`` of z0, cosine ramp to 0 over ``ramp`` mm beyond."""
    d = np.clip((np.abs(np.asarray(z) - z0) - half) / max(ramp, 1e-3), 0, 1)
    return (0.5 + 0.5 * np.cos(np.pi * d)).astype(np.float32)


@dataclass
class RoiRecord:
    center: np.ndarray
    compartment: str
    fracture: str
    finding: str
    level: str
    index: int = -1  # position among the study's ROIs before any is dropped: keeps case ids stable
    # The study's sequences cannot show this finding (Finding.shown_by): its compartment is
    # written unknown, so no model is asked to name what the images do not hold.
    unseen: bool = False


@dataclass
class Finding:
    """Base class; ``name`` is the manifest's ``finding``.

    ``params`` holds the numbers a finding drew (tests and previews read them), ``signs``
    which imaging signs it shows (``True``/``False`` per sign name, see ``docs/phantom.md``).
    """

    name: str = ""
    compartment: str = "none"
    fracture: str = "none"
    level_index: int = 0
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    truth: dict[str, tuple[Box, np.ndarray]] = field(default_factory=dict)
    extra: list[RoiRecord] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)
    signs: dict[str, bool] = field(default_factory=dict)
    # which vertebrae/discs it occupies, so others avoid them
    occupies: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.name:  # the labels are the registry's (spinelesion.labels.FINDINGS), not the class's
            labels = finding_labels(self.name)
            self.compartment, self.fracture = labels.compartment, labels.fracture

    def draw_signs(self, rng: np.random.Generator, feat: Features) -> None:
        """Decide which signs this instance shows (each independently, at its rate)."""

    def modify(self, an: Anatomy, rng: np.random.Generator, feat: Features) -> None:  # before layout
        pass

    def canal(self, an: Anatomy, rng: np.random.Generator, feat: Features) -> None:  # after layout
        pass

    def paint(
        self, cv: Canvas, an: Anatomy, tt: TissueTable, rng: np.random.Generator, feat: Features
    ) -> None:
        pass

    def shown_by(self, sequences: Collection[str]) -> bool:
        """Whether a study with these sequences shows this finding at all (most findings: yes)."""
        return True

    def rois(self, an: Anatomy) -> list[RoiRecord]:
        return [
            RoiRecord(
                self.center,
                self.compartment,
                self.fracture,
                self.name,
                an.level_at(float(self.center[2])).name,
            ),
            *self.extra,
        ]

    def record(self, key: str, box: Box, mask: np.ndarray) -> None:
        self.truth[key] = (box, np.asarray(mask, dtype=np.float32))

    def draw(self, rng: np.random.Generator, feat: Features, **rates: str) -> None:
        """``self.draw(rng, feat, fluid_sign="fluid_sign_rate")``: one draw per sign, in order."""
        for sign, key in rates.items():
            self.signs[sign] = chance(rng, feat[key])


# Heterogeneity of a painted lesion (the smooth noise field's weight), drawn per lesion from one range
# whatever the finding: texture is no sign in radiology.md, and per-finding amounts (a pathologic
# fracture 0.1, benign oedema 0.05) let a network tell classes apart by texture (docs/results.md, "A second,
# plain renderer").
TEXTURE = (0.03, 0.1)


def textured(values: np.ndarray, noise: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    amount = float(rng.uniform(*TEXTURE))
    return values[:, None, None, None] * (1 + amount * noise[None])


def uvw_to_lps(v: Vertebra, uvw: np.ndarray) -> np.ndarray:
    """A body-local offset (u across, v back, w up the body) as an LPS offset."""
    c, s = np.cos(v.tilt), np.sin(v.tilt)
    u, vv, w = uvw
    return np.array([u, vv * c + w * s, -vv * s + w * c])


def body_box(cv: Canvas, v: Vertebra, extra: float = 4.0, posterior: float = 0.0) -> Box | None:
    lo = v.center - np.array([v.width / 2 + extra, v.depth / 2 + extra, v.height / 2 + extra])
    hi = v.center + np.array([v.width / 2 + extra, v.depth / 2 + extra + posterior, v.height / 2 + extra])
    return cv.box(lo, hi)


def blob_in_body(
    cv: Canvas,
    an: Anatomy,
    v: Vertebra,
    rng: np.random.Generator,
    centre_uvw: np.ndarray,
    radii: np.ndarray,
    irregular: float = 1.5,
    pedicle: bool = False,
) -> tuple[Box, np.ndarray, np.ndarray, tuple[np.ndarray, ...]] | None:
    """Soft mask of an irregular blob clipped to the body (and its pedicles when asked)."""
    box = body_box(cv, v, posterior=an.canal_ap + 8 if pedicle else 0.0)
    if box is None:
        return None
    u, vv, w = v.local(*cv.coords(box))
    shape = np.broadcast_shapes(u.shape, vv.shape, w.shape)
    noise = smooth_noise(rng, shape, 3.0 / cv.spacing)
    d = (
        ellipsoid_distance(u - centre_uvw[0], vv - centre_uvw[1], w - centre_uvw[2], radii)
        + irregular * noise
    )
    inside = soft(v.body_distance(u, vv, w) + 1.2)
    if pedicle:
        side = float(np.sign(centre_uvw[0]) or 1.0)
        ped = (
            ellipsoid_distance(
                u - side * (an.canal_w / 2 + 3.5),
                vv - (v.depth / 2 + an.canal_ap / 2),
                w - 0.1 * v.height,
                (4.0, an.canal_ap / 2 + 2, 0.3 * v.height),
            )
            + irregular * noise
        )
        d = np.minimum(d, ped)
        inside = np.maximum(inside, soft(posterior_element_distance(v, an, u, vv, w) + 1.0))
    return box, soft(d, 1.2) * inside, noise, (u, vv, w)
