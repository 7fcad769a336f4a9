"""What the tasks and their command-line entry points share: argument checks that name the argument, the
value and what is expected, and one way to fail (a one-line message, exit code 2).

A traceback is for developers: it is printed only with ``HYDRA_FULL_ERROR=1``.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from spinelesion.config_schema import auto_flag
from spinelesion.labels import SEQUENCES

T = TypeVar("T")
EXIT_NOTHING_RAN = 2
ROIS_EXPECTED = "a list of [x, y, z] points in LPS mm, e.g. rois='[[0,10,-40],[0,12,-75]]'"


class ArgumentError(ValueError):
    """A command-line argument with an unusable value."""

    def __init__(self, name: str, value: Any, expected: str):
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"argument {name}={_show(value)}: expected {expected}")


def _show(value: Any) -> str:
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value)
    return repr(value) if isinstance(value, str) else str(value)


def parse_rois(value: Any, name: str = "rois") -> list[list[float]] | None:
    """``rois`` as given on the command line -> a list of [x, y, z] (one flat point is accepted)."""
    if value is None:
        return None
    raw = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
    from spinelesion.inference.markups import MarkupsError, is_markups_path, read_markups

    if is_markups_path(raw):  # a 3D Slicer point list (.mrk.json), LPS or RAS
        try:
            return read_markups(str(raw))[0]
        except MarkupsError as exc:
            raise ArgumentError(
                name, value, f"{ROIS_EXPECTED}, or a 3D Slicer .mrk.json point list ({exc})"
            ) from None
    if isinstance(raw, str) and raw.lstrip().startswith("["):  # quoted twice on the command line
        import yaml

        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ArgumentError(name, value, ROIS_EXPECTED) from None
    if not isinstance(raw, list) or not raw:
        raise ArgumentError(name, value, ROIS_EXPECTED)
    points = [raw] if all(not isinstance(v, list) for v in raw) else raw
    out = []
    for k, point in enumerate(points):
        try:
            xyz = [float(v) for v in point]
        except (TypeError, ValueError):
            raise ArgumentError(
                name, value, f"{ROIS_EXPECTED}; point {k + 1} ({point}) is not numeric"
            ) from None
        if len(xyz) != 3 or not all(v == v and abs(v) != float("inf") for v in xyz):
            raise ArgumentError(
                name, value, f"{ROIS_EXPECTED}; point {k + 1} ({point}) needs 3 finite numbers"
            )
        out.append(xyz)
    return out


def get(
    cfg: DictConfig,
    key: str,
    convert: Callable[[Any], T],
    expected: str,
    check: Callable[[T], bool] = lambda _v: True,
) -> T:
    """``cfg[key]`` converted and checked, or :class:`ArgumentError` naming ``key``."""
    value = OmegaConf.select(cfg, key)
    try:
        out = convert(value)
    except (TypeError, ValueError):
        raise ArgumentError(key, value, expected) from None
    if not check(out):
        raise ArgumentError(key, value, expected)
    return out


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise ValueError(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _device(value: Any) -> str:
    text = str(value)
    if text in ("auto", "cpu", "cuda", "mps") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ValueError(value)


def _choice(choices: Sequence[str]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if str(value) not in choices:
            raise ValueError(value)
        return str(value)

    return convert


def check_common(cfg: DictConfig) -> None:
    """Arguments shared by predict and evaluate."""
    get(cfg, "batch_size", _int, "a whole number >= 1", lambda v: v >= 1)
    get(cfg, "device", _device, "auto, cpu, cuda or cuda:<index>")
    if OmegaConf.select(cfg, "verify_weights") is not None:
        get(cfg, "verify_weights", _bool, "true or false")
    for key in ("limits.max_study_gb", "limits.header_mb"):
        if OmegaConf.select(cfg, key) is not None:
            get(cfg, key, float, "a number > 0", lambda v: v > 0)


def check_predict_args(cfg: DictConfig) -> None:
    """Every predict argument, before anything is read or loaded."""
    check_common(cfg)
    parse_rois(cfg.rois)
    if cfg.get("threads") is not None:
        get(cfg, "threads", _int, "null or a whole number >= 1", lambda v: v >= 1)
    get(cfg, "amp", lambda v: auto_flag(v, "amp"), "auto, true (on) or false (off)")
    get(cfg, "compile", _bool, "true or false")
    if OmegaConf.select(cfg, "tta") is not None:
        get(cfg, "tta", lambda v: auto_flag(v, "tta"), "auto, true or false")
    get(cfg, "nifti_sequence", _choice(SEQUENCES), f"one of {', '.join(SEQUENCES)}")
    get(
        cfg,
        "saliency.method",
        _choice(["gradcam", "gradcampp", "occlusion", "none"]),
        "gradcam, gradcampp, occlusion or none",
    )
    get(cfg, "saliency.png", _bool, "true or false")
    scan_settings(cfg)  # ranges: ScanConfig's own, the one place they are said
    if cfg.get("num_parts") is not None:
        parts = get(cfg, "num_parts", _int, "a whole number >= 1", lambda v: v >= 1)
        get(cfg, "part_id", _int, f"a whole number in [0, num_parts={parts})", lambda v: 0 <= v < parts)
    for flag in ("resume", "progress", "output.source_paths", "output.markups"):
        if OmegaConf.select(cfg, flag) is not None:
            get(cfg, flag, _bool, "true or false")
    if OmegaConf.select(cfg, "output.dicom") is not None:
        get(cfg, "output.dicom", lambda v: auto_flag(v, "output.dicom"), "auto, true or false")
    seqs = cfg.get("sequences")
    if seqs is not None and not isinstance(seqs, DictConfig):
        raise ArgumentError(
            "sequences",
            seqs,
            "a mapping {<SeriesInstanceUID | SeriesNumber | description regex>: t1|t2|stir|t1c|ignore}",
        )
    # Last, so that every other argument is named first: a missing input is an unusable
    # argument (one line, exit 2, nothing written), not a failed study.
    if not os.path.lexists(str(cfg.input)):
        raise ArgumentError(
            "input", str(cfg.input), "an existing file or folder (a DICOM export, NIfTI files, a manifest)"
        )


def scan_settings(cfg: DictConfig) -> tuple[Any, bool]:
    """``cfg.scan`` as the scan's :class:`~spinelesion.inference.scan.ScanConfig` and the
    predictor's ``write_maps``; a value out of range is an :class:`ArgumentError` naming it."""
    from spinelesion.config_schema import ConfigError, validated
    from spinelesion.inference.scan import ScanConfig, SettingRangeError

    values = {str(k): v for k, v in (cfg.get("scan") or {}).items()}
    write_maps = values.pop("write_maps", True)
    if write_maps not in (True, False):
        raise ArgumentError("scan.write_maps", write_maps, "true or false")
    try:
        return validated(ScanConfig, values, "scan"), bool(write_maps)
    except ConfigError as exc:
        if isinstance(exc.__cause__, SettingRangeError):
            cause = exc.__cause__
            raise ArgumentError(cause.name, cause.value, cause.expected) from exc
        raise


EVALUATE_DATA = ("manifest", "split", "cache_dir", "cache_workers")
"""evaluate's ``data`` settings (configs/eval.yaml)."""


def check_evaluate_args(cfg: DictConfig) -> None:
    check_common(cfg)
    # a key added with ``+data.KEY=...`` would be ignored without a word (the retired data.pipeline)
    unknown = sorted(set(map(str, cfg.get("data") or {})) - set(EVALUATE_DATA))
    if unknown:
        raise ValueError(
            f"data: unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(EVALUATE_DATA)}"
        )
    get(cfg, "bootstrap.n", _int, "a whole number >= 0", lambda v: v >= 0)
    get(cfg, "bootstrap.seed", _int, "a whole number")
    get(cfg, "plots", _bool, "true or false")


def run_main(fn: Callable[[DictConfig], T], cfg: DictConfig, log: logging.Logger) -> T:
    """``fn(cfg)``; on any error, a one-line message and exit code 2 (the traceback only
    with ``HYDRA_FULL_ERROR=1``, and at debug level)."""
    try:
        return fn(cfg)
    except Exception as exc:  # noqa: BLE001 - nothing could run: say why, exit 2
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.debug("%s", traceback.format_exc())
        log.error("%s", exc)
        sys.exit(EXIT_NOTHING_RAN)
