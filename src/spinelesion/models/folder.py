"""Model folders and checkpoints that load without executing code.

A model folder describes itself (MONAI bundle / nnU-Net habit): ``metadata.json`` says which
network (by registry name), which sequences, classes, ROI size and spacing, normalisation and
calibration it expects; ``weights.safetensors`` holds tensors only. Lightning ``.ckpt``
files are read with ``torch.load(weights_only=True)``, which refuses any pickled object
that is not plain data, so a crafted checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from spinelesion.atomic import atomic_path, write_json
from spinelesion.labels import SEQUENCES, TASKS
from spinelesion.models.networks import MultiTaskNet, build_network
from spinelesion.portable import redact_paths

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
METADATA = "metadata.json"
_PLAIN = (str, int, float, bool, type(None))


class ModelLoadError(ValueError):
    """A model folder or checkpoint that cannot be used, with the path and the reason."""


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_plain(value: Any, where: str) -> None:
    """Network configs must be plain JSON data: no class paths to import, nothing to call."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if str(k).startswith("_"):
                raise ModelLoadError(f"{where}: key '{k}' is not allowed in a network config")
            _check_plain(v, where)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_plain(v, where)
    elif not isinstance(value, _PLAIN):
        raise ModelLoadError(f"{where}: value of type {type(value).__name__} is not plain data")


INFERENCE_KEYS = (
    "network",
    "roi",
    "sequences",
    "tasks",
    "temperature",
    "decision",
    "tta",
    "scan",
    "sampling_prior",
    "saliency_layer",
    "weights",
    "weights_sha256",
)
"""The metadata an answer depends on: sealed with the weights' hash (``inference_sha256``), so
that an edited temperature, decision offset or call threshold is caught like edited weights."""


SEALED_WHEN_PRESENT = ("locator",)
"""Inference metadata sealed when a model has it: a folder written before it existed keeps its seal."""


def seal(meta: Mapping[str, Any]) -> str:
    """sha256 of the inference metadata (:data:`INFERENCE_KEYS`, the weights' hash among them, and
    :data:`SEALED_WHEN_PRESENT`: the spine locator's weights and settings)."""
    values = {k: meta.get(k) for k in INFERENCE_KEYS}
    values.update({k: meta[k] for k in SEALED_WHEN_PRESENT if k in meta})
    body = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def write_metadata(folder: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """``metadata.json`` of a model folder, sealed: every writer of a model's metadata goes
    through here (training's export, the release's scan point and recorded checks)."""
    meta["inference_sha256"] = seal(meta)
    write_json(Path(folder) / METADATA, meta)


def write_weights(net: torch.nn.Module, path: Path) -> str:
    """A network's tensors as safetensors at ``path`` (written atomically); their sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return sha256_of(path)


def save_model_folder(
    net: MultiTaskNet, folder: str | os.PathLike[str], metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``weights.safetensors`` and ``metadata.json`` (with the weights' sha256); return the metadata written."""
    folder = Path(folder)
    sha256 = write_weights(net, folder / WEIGHTS)
    meta = redact_paths(dict(metadata))  # no machine paths (e.g. trainer.default_root_dir) in a shared folder
    meta["weights"] = WEIGHTS
    meta["weights_sha256"] = sha256
    meta.setdefault("sequences", list(SEQUENCES))
    meta.setdefault("tasks", {t: list(c) for t, c in TASKS.items()})
    meta["temperature"] = {t: float(net.temperature[i]) for i, t in enumerate(TASKS)}
    _check_plain(meta.get("network", {}), str(folder / METADATA))
    write_metadata(folder, meta)
    return meta


VERIFY_ENV = "SPINELESION_VERIFY_WEIGHTS"
"""``0``/``false``: load weights whose sha256 differs from metadata.json (development only)."""
_PATH_KEYS = ("weights", "card", "model_card", "onnx", "torchscript")


def verify_default() -> bool:
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def inside_folder(folder: Path, value: Any, where: str) -> Path:
    """``folder / value`` after checking it is a relative path that stays inside the folder."""
    if not isinstance(value, str) or not value:
        raise ModelLoadError(f"{where}: expected a file name inside the model folder, got {value!r}")
    root = folder.resolve()
    path = (folder / value).resolve()
    if Path(value).is_absolute() or root not in path.parents:
        raise ModelLoadError(
            f"{where}: '{value}' points outside the model folder {folder}; "
            "every path in metadata.json must stay inside it"
        )
    return path


def _metadata_paths(meta: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(key, value) of every entry of metadata.json that names a file."""
    out = [(k, meta[k]) for k in meta if k in _PATH_KEYS or k.endswith(("_path", "_file"))]
    for group in ("files", "exports"):
        if isinstance(meta.get(group), Mapping):
            out.extend((f"{group}.{k}", v) for k, v in meta[group].items())
    return out


MODELS_ENV = "SPINELESION_MODELS"


def model_locations() -> list[Path]:
    """Where a model is looked up by name, in order: each folder of ``$SPINELESION_MODELS``
    (separated as PATH is), the project's ``models/`` (a source checkout or editable install),
    and ``~/.cache/spinelesion/models``."""
    places = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    project = Path(__file__).resolve().parents[3] / "models"  # src/spinelesion/models/folder.py
    places.append(project)
    places.append(Path.home() / ".cache" / "spinelesion" / "models")
    return list(dict.fromkeys(places))


def resolve_model(value: str | os.PathLike[str]) -> Path:
    """A model folder from a path (absolute, or relative to the working directory) or a name
    (``spinelesion-demo``) found in :func:`model_locations`, from any working directory, as
    TotalSegmentator and nnU-Net find theirs. The error lists where it looked and what is there."""
    given = Path(value)
    if (given / METADATA).is_file():
        return given
    places = model_locations()
    if not given.is_absolute():  # a name, or models/<name> given from another working directory
        for place in places:
            if (place / given.name / METADATA).is_file():
                return place / given.name
    available = sorted(
        {p.name for place in places if place.is_dir() for p in place.iterdir() if (p / METADATA).is_file()}
    )
    raise ModelLoadError(
        f"model {os.fspath(value)!r}: not a model folder (no {METADATA}; a relative path is taken from the "
        f"working directory {Path.cwd()}) and no model of that name in {', '.join(map(str, places))} "
        f"(set {MODELS_ENV} to add folders); available: {', '.join(available) or 'none'}"
    )


def load_model_folder(
    folder: str | os.PathLike[str], map_location: str = "cpu", verify: bool | None = None
) -> tuple[MultiTaskNet, dict[str, Any]]:
    """Build the network named in ``metadata.json`` and load its safetensors weights.

    The weights' sha256 must equal ``weights_sha256`` in ``metadata.json`` (a mismatch names
    both); ``verify=False`` (or ``SPINELESION_VERIFY_WEIGHTS=0``; default from it) loads them
    anyway with a warning, for development. The returned ``weights_sha256`` is always the
    hash of the file actually loaded, and ``weights_verified`` says whether it matched.
    """
    folder = resolve_model(folder)
    verify = verify_default() if verify is None else verify
    meta_path = folder / METADATA
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{meta_path}: expected a JSON object")
    for key in ("network", "roi"):
        if key not in meta:
            raise ModelLoadError(f"{meta_path}: missing '{key}'")
    if list(meta.get("sequences", SEQUENCES)) != list(SEQUENCES):
        raise ModelLoadError(f"{meta_path}: sequences {meta.get('sequences')} differ from {list(SEQUENCES)}")
    if {t: list(c) for t, c in meta.get("tasks", TASKS).items()} != {t: list(c) for t, c in TASKS.items()}:
        raise ModelLoadError(f"{meta_path}: task classes differ from this version's {dict(TASKS)}")
    _check_plain(meta["network"], str(meta_path))
    for key, value in _metadata_paths(meta):
        inside_folder(folder, value, f"{meta_path}: '{key}'")
    weights = inside_folder(folder, meta.get("weights", WEIGHTS), f"{meta_path}: 'weights'")
    if weights.suffix != ".safetensors" or not weights.is_file():
        raise ModelLoadError(f"{folder}: weights file '{weights.name}' missing or not .safetensors")
    actual, recorded = sha256_of(weights), meta.get("weights_sha256")
    problems = []
    if actual != recorded:
        problems.append(
            f"{weights}: sha256 {actual} does not match weights_sha256 {recorded} in {METADATA}"
            if recorded
            else f"{meta_path}: records no weights_sha256 (weights file sha256 {actual})"
        )
    sealed = meta.get("inference_sha256")
    if sealed != seal(meta):
        problems.append(
            f"{meta_path}: the inference settings ({', '.join(k for k in INFERENCE_KEYS if k in meta)}) "
            + (
                "were edited since the model was written (inference_sha256 differs)"
                if sealed
                else "are not sealed (no inference_sha256)"
            )
        )
    if problems:
        what = "; ".join(problems)
        if verify:
            raise ModelLoadError(
                f"{what}; refusing an unverified model (for development only: "
                f"verify_weights=false or {VERIFY_ENV}=0)"
            )
        log.warning("%s; loading anyway because verification is off", what)
    net = build_network(meta["network"])
    try:
        state = load_file(str(weights), device=map_location)
        net.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelLoadError(f"{weights}: cannot load weights into {meta['network']} ({exc})") from exc
    meta["weights_sha256"] = actual  # what actually runs, whatever was recorded
    meta["weights_verified"] = not problems  # the weights and the settings they run with
    net.eval()
    return net, meta


def check_resume_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint to resume training from, checked before Lightning loads it: a local regular
    file (a URL is refused: Lightning would download it and unpickle it with code allowed) that
    loads as plain data (``weights_only=True``, Lightning's ``AttributeDict`` allowed)."""
    from pytorch_lightning.utilities.parsing import AttributeDict

    text = os.fspath(path)
    if "://" in text:
        raise ModelLoadError(f"ckpt_path={text}: a URL; only a local checkpoint file is resumed from")
    file = Path(text)
    if not file.is_file():
        raise ModelLoadError(f"ckpt_path={text}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals([AttributeDict]):
            torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"ckpt_path={text}: refused to resume (only tensors and plain data are accepted): {exc}"
        ) from exc
    return file


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str = "cpu"
) -> tuple[MultiTaskNet, dict[str, Any]]:
    """Network and hyper-parameters from a Lightning checkpoint, without unpickling code.

    ``weights_only=True`` admits tensors and plain containers only; Lightning's
    ``AttributeDict`` (a plain dict subclass) is the one class allowed besides.
    """
    from pytorch_lightning.utilities.parsing import AttributeDict

    path = Path(path)
    try:
        with torch.serialization.safe_globals([AttributeDict]):
            ckpt = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for anything that is not plain data
        raise ModelLoadError(
            f"{path}: refused to load (only tensors and plain data are accepted): {exc}"
        ) from exc
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ModelLoadError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if "net" not in hparams:
        raise ModelLoadError(f"{path}: no network config in its hyper-parameters")
    _check_plain(dict(hparams["net"]), str(path))
    net = build_network(dict(hparams["net"]))
    state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: weights do not fit {hparams['net']} ({exc})") from exc
    net.eval()
    return net, {
        "network": dict(hparams["net"]),
        "checkpoint": str(path),
        "hyper_parameters": hparams,
        "weights_sha256": sha256_of(path),
    }


def load_model(
    model_dir: str | None, ckpt_path: str | None, verify: bool | None = None
) -> tuple[MultiTaskNet, dict[str, Any]]:
    """(network, metadata) from a model folder, or from a Lightning checkpoint when given."""
    if ckpt_path:
        net, meta = load_checkpoint(ckpt_path)
        hp = meta["hyper_parameters"]
        meta.update(
            {
                "name": Path(ckpt_path).stem,
                "version": "checkpoint",
                "roi": hp.get("roi") or {},
                "reference": hp.get("reference", "auto"),
            }
        )
        return net, meta
    if not model_dir:
        raise ValueError("give model_dir=<model folder> or ckpt_path=<checkpoint>")
    return load_model_folder(model_dir, verify=verify)
