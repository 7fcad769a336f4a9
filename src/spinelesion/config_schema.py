"""Typed config sections, checked where they are read: a misspelt key is an error, not a default.

The values live in ``configs/`` (YAML is the one source); these dataclasses say which keys a
section has and of what type. :func:`validated` turns a mapping (a ``DictConfig`` section, a
checkpoint's hyper-parameters, a model folder's ``metadata.json`` entry) into one of them and
raises :class:`ConfigError` naming the unknown or missing key and the allowed ones.

Fields without a default must be given (the YAML has them); the few defaults here are for
keys that older checkpoints and model folders lack, not copies of the YAML's values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar, cast

C = TypeVar("C")


class ConfigError(ValueError):
    """A config section with an unknown, missing or malformed key."""


AUTO_FLAG_WORDS: dict[str, bool | str] = {
    "auto": "auto",
    "true": True,
    "on": True,
    "false": False,
    "off": False,
}


def auto_flag(value: Any, name: str) -> bool | str:
    """A setting that is ``auto``, on or off (``amp``, ``tta``, ``output.dicom``) as ``"auto"``,
    ``True`` or ``False``: the one place its spellings (true/on, false/off, any case) are read."""
    if isinstance(value, bool):
        return value
    word = AUTO_FLAG_WORDS.get(str(value).strip().lower()) if isinstance(value, str) else None
    if word is None:
        raise ConfigError(f"{name}: expected auto, true or false, got {value!r}")
    return word


def _plain(values: Any) -> dict[str, Any]:
    if values is None:
        return {}
    if hasattr(values, "_metadata") and hasattr(values, "items"):  # an OmegaConf DictConfig
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(values, resolve=True)
    if not isinstance(values, Mapping):
        raise ConfigError(f"expected a mapping of settings, got {type(values).__name__}: {values!r}")
    return {str(k): v for k, v in values.items()}


def validated(cls: type[C], values: Any, section: str) -> C:
    """``cls(**values)`` after checking the keys: unknown ones and missing required ones are
    a :class:`ConfigError` that names ``section``, the key and the allowed keys."""
    fields = {f.name: f for f in dataclasses.fields(cast(Any, cls))}  # cls is a dataclass type
    given = _plain(values)
    allowed = ", ".join(fields)
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {', '.join(unknown)}; allowed: {allowed}")
    missing = [
        n
        for n, f in fields.items()
        if n not in given and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{section}: missing key(s) {', '.join(missing)}; allowed: {allowed}")
    try:
        return cls(**given)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """``model.optimizer``: AdamW."""

    lr: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)  # torch's AdamW default


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """``model.scheduler``: ``onecycle`` (warm-up then anneal), ``cosine`` or ``none``."""

    name: str
    warmup_fraction: float = 0.0  # read by onecycle only; the YAML sets it

    def __post_init__(self) -> None:
        if self.name not in ("onecycle", "cosine", "none"):
            raise ValueError(f"unknown scheduler '{self.name}'; use onecycle, cosine or none")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """``model.loss``: per-task weights, class weighting, label smoothing."""

    class_weights: str
    label_smoothing: float
    task_weights: Mapping[str, float]

    def __post_init__(self) -> None:
        if self.class_weights not in ("none", "inverse", "sqrt_inverse"):
            raise ValueError(f"class_weights '{self.class_weights}': use none, inverse or sqrt_inverse")


@dataclasses.dataclass(frozen=True)
class SaliencySettings:
    """``saliency`` of ``configs/predict.yaml``."""

    method: str
    target_layer: str | None
    png: bool


@dataclasses.dataclass(frozen=True)
class OutputSettings:
    """``output`` of ``configs/predict.yaml``: what the per-study outputs hold."""

    source_paths: bool
    markups: bool
    dicom: bool | str


@dataclasses.dataclass(frozen=True)
class PredictorSettings:
    """The top-level run settings of ``configs/predict.yaml`` that the predictor reads."""

    device: str
    amp: bool | str
    compile: bool
    threads: int | None
    batch_size: int
    tta: bool | str
