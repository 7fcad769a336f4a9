"""The spine locator's network, settings, and files: safetensors weights beside the classifier's,
described (and sealed with it) in the model folder's ``metadata.json`` under ``locator``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

log = logging.getLogger(__name__)

LOCATOR_WEIGHTS = "locator.safetensors"


@dataclass(frozen=True)
class LocatorSettings:
    """How the locator reads a study and how its answer becomes the scan's region."""

    spacing_mm: float = 4.0  # its grid: bodies are 25-50 mm, the region a margin around them
    channels: tuple[int, ...] = (16, 32, 64, 128)  # MONAI UNet's levels (strided convolutions: 0.2 s a
    # training step of two crops on a 2-core CPU, where a BasicUNet of as many parameters took 1.1 s)
    res_units: int = 1
    patch: tuple[int, int, int] = (32, 48, 48)  # training crops and inference windows (voxels along LPS
    # x, y, z: 128 x 192 x 192 mm, a sagittal slab's width and a few levels); multiples of 8
    threshold: float = 0.5  # body probability taken as body
    reach_mm: float = 20.0  # the region: within this of a body or of the band behind it ...
    posterior_mm: float = 50.0  # ... the band: each body swept this far posterior (canal, cord, arches)
    half_width_mm: float = 25.0  # the column: this far to each side of the bodies' centre line ...
    front_mm: float = 20.0  # ... from this far in front of it (an adult lumbar body is ~45 x 35 mm) ...
    extend_mm: float = 80.0  # ... and this far past the highest and lowest body found (two more levels)
    off_column_mm: float = (
        30.0  # a piece of body this far off the line through the others is not on the column
    )
    min_component_ml: float = 1.0  # a found piece of body smaller than this is a speck, not a body
    min_body_ml: float = 8.0  # less body than this found: the locator is not trusted (whole field of view)
    max_extent_mm: float = 600.0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> LocatorSettings:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"locator settings: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        for key in ("channels", "patch"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        return cls(**values)


def build_locator_net(settings: LocatorSettings) -> torch.nn.Module:
    from monai.networks.nets import UNet

    depth = len(settings.channels)
    if depth < 2 or len(settings.patch) != 3 or any(p % 2 ** (depth - 1) for p in settings.patch):
        raise ValueError(
            f"locator: {depth} levels need a patch of three multiples of {2 ** (depth - 1)}, got {list(settings.patch)}"
        )
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=settings.channels,
        strides=(2,) * (depth - 1),
        num_res_units=int(settings.res_units),
    )


@dataclass
class SpineLocator:
    net: torch.nn.Module
    settings: LocatorSettings
    info: dict[str, Any]  # what it was trained on, and measured


def save_locator(folder: str | os.PathLike[str], locator: SpineLocator) -> dict[str, Any]:
    """Write ``locator.safetensors`` into a model folder; return the ``locator`` metadata entry."""
    from spinelesion.models.folder import write_weights

    sha256 = write_weights(locator.net, Path(folder) / LOCATOR_WEIGHTS)
    entry = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(locator.settings).items()}
    return {**entry, "weights": LOCATOR_WEIGHTS, "weights_sha256": sha256, "info": locator.info}


def load_locator(
    folder: str | os.PathLike[str], meta: Mapping[str, Any], verify: bool | None = None
) -> SpineLocator | None:
    """The locator a model folder's metadata describes, or None when it has none. Its weights are
    tensors only and must match their recorded sha256 (``verify`` as for the classifier's)."""
    from spinelesion.models.folder import ModelLoadError, inside_folder, sha256_of, verify_default

    entry = meta.get("locator")
    if not entry:
        return None
    folder = Path(folder)
    where = f"{folder / 'metadata.json'}: 'locator'"
    if not isinstance(entry, Mapping):
        raise ModelLoadError(f"{where}: expected an object")
    weights = inside_folder(folder, entry.get("weights", LOCATOR_WEIGHTS), f"{where}.weights")
    if weights.suffix != ".safetensors" or not weights.is_file():
        raise ModelLoadError(f"{folder}: locator weights '{weights.name}' missing or not .safetensors")
    actual = sha256_of(weights)
    if actual != entry.get("weights_sha256"):
        message = (
            f"{weights}: sha256 {actual} does not match locator.weights_sha256 {entry.get('weights_sha256')}"
        )
        if verify_default() if verify is None else verify:
            raise ModelLoadError(message + "; refusing an unverified locator")
        log.warning("%s; loading anyway because verification is off", message)
    try:
        settings = LocatorSettings.from_dict(
            {k: v for k, v in entry.items() if k not in ("weights", "weights_sha256", "info")}
        )
        net = build_locator_net(settings)
        net.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    except Exception as exc:
        raise ModelLoadError(f"{where}: cannot build or load the locator ({exc})") from exc
    net.eval()
    return SpineLocator(net, settings, dict(entry.get("info") or {}))
