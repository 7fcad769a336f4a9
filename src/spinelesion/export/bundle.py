"""A model folder -> a MONAI bundle that ``python -m monai.bundle run`` executes.

Layout written under ``output_dir``::

    configs/metadata.json   MONAI bundle metadata (schema fields, network_data_format)
    configs/inference.json  load (SpineSeriesReader) -> reference grid -> ROI boxes ->
                            normalisation -> network -> predictions.json per study
    configs/logging.conf    the logging ``python -m monai.bundle run`` applies
    models/model.pt         state dict (torch.load(..., weights_only=True))
    models/model.ts         TorchScript of ``network_def`` (scripted; metadata.json embedded, as
                            ``python -m monai.bundle ckpt_export`` writes it)
    docs/README.md          how to run and check it, and what it is not

``network_def`` is :class:`~spinelesion.export.bundle_runtime.BundleNet` (one tensor in, the
tasks' logits side by side out), so MONAI's ``verify_net_in_out`` and ``ckpt_export`` work on
it; :data:`SCHEMA_FILE` is MONAI's metadata schema, for ``verify_metadata`` offline.

The inference config names ``spinelesion`` classes by ``_target_``: the bundle needs the
package installed. The probabilities equal ``spinelesion-predict``'s for the same ROIs:
both run the same reading, resampling, cropping and normalisation functions.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from spinelesion.atomic import atomic_path, write_json
from spinelesion.export.bundle_runtime import TASK_SIZES, BundleNet
from spinelesion.labels import SEQUENCES, TASKS
from spinelesion.models.card import DISCLAIMER as CARD_INTENDED_USE

log = logging.getLogger(__name__)

SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
SCHEMA_FILE = Path(__file__).with_name("schemas") / "meta_schema_20240725.json"
"""The schema at :data:`SCHEMA`, shipped with the package: ``verify_metadata --filepath`` it offline."""
T = "spinelesion.data.monai_transforms"
CHANNEL_NAMES = {
    "t1": "T1-weighted",
    "t2": "T2-weighted",
    "stir": "STIR",
    "t1c": "T1-weighted after gadolinium",
}
NOT_CLINICAL = (
    "A demonstration of the pipeline on synthetic lesions, NOT a clinical tool: it must not be used "
    "for diagnosis or treatment decisions."
)
# MONAI's model zoo logging setup; `monai.bundle run` applies configs/logging.conf when present
# (and accepts only stdlib handler classes and literal arguments in it).
LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


@dataclass
class BundleExport:
    """What was written, and the TorchScript check."""

    folder: Path
    files: list[str]
    torchscript: str  # "TorchScript, scripted (...)" or the reason it is absent
    torchscript_max_abs_diff: float | None


def _versions() -> dict[str, str]:
    import monai

    import spinelesion

    return {
        "monai": monai.__version__,
        "torch": torch.__version__.split("+")[0],
        "numpy": np.__version__,
        "spinelesion": getattr(spinelesion, "__version__", "0.1.0"),
    }


def intended_use(meta: Mapping[str, Any]) -> str:
    """The model card's intended use (the model folder's ``intended_use``), saying it is not a
    clinical tool even where the folder's own text does not."""
    text = str(meta.get("intended_use") or CARD_INTENDED_USE).strip()
    return text if "NOT a clinical tool" in text else f"{text} {NOT_CLINICAL}".strip()


def _classes_text() -> str:
    return "; ".join(f"{task}: {', '.join(classes)}" for task, classes in TASKS.items())


def _optional_versions() -> dict[str, str]:
    """fire (MONAI's command line, to run the bundle) and the compressed-DICOM decoders, where installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("fire", "pylibjpeg", "pylibjpeg-openjpeg"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def bundle_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``configs/metadata.json`` in MONAI's bundle schema, from a model folder's metadata."""
    import nibabel
    import pydicom

    v = _versions()
    roi = meta["roi"]
    version = str(meta.get("version", "0.1.0"))
    use = intended_use(meta)
    channels = {str(i): CHANNEL_NAMES[s] for i, s in enumerate(SEQUENCES)}
    # network_def (BundleNet) returns the tasks' logits side by side, unbounded (value_range []);
    # softmax(logits / temperature) per task gives the probabilities the inference config writes.
    logit_names = [f"{task}: {c}" for task, classes in TASKS.items() for c in classes]
    logit_channels = {str(i): name for i, name in enumerate(logit_names)}
    post_processed = {
        task: {
            "type": "probabilities",
            "format": "classes",
            "modality": "n/a",
            "num_channels": len(classes),
            "spatial_shape": [],
            "dtype": "float32",
            "value_range": [],
            "is_patch_data": False,
            "channel_def": {str(i): c for i, c in enumerate(classes)},
        }
        for task, classes in TASKS.items()
    }
    return {
        # MONAI's bundle schema (SCHEMA_FILE); no "optional_packages_version": MONAI renames that
        # deprecated key to "required_packages_version" on loading, replacing the real requirements.
        "schema": SCHEMA,
        "version": version,
        "changelog": {
            version: f"exported from model folder '{meta.get('name', 'model')}' by spinelesion-export-bundle"
        },
        "monai_version": v["monai"],
        "pytorch_version": v["torch"],
        "numpy_version": v["numpy"],
        "required_packages_version": {
            "spinelesion": v["spinelesion"],
            "nibabel": nibabel.__version__,
            "pydicom": pydicom.__version__,
        },
        "supported_apps": {},
        "name": str(meta.get("name", "spinelesion")),
        "task": "Spine MRI ROI classification: lesion compartment and vertebral fracture (benign vs pathologic)",
        "description": (
            "Two-task 3D CNN over a multi-sequence (T1, T2, STIR, T1c) region of interest centred on "
            "a given point. Input: one study (DICOM series folders or NIfTI files per sequence) and "
            "ROI centres in LPS mm; output: per-ROI class probabilities per task. " + use
        ),
        "authors": "spinelesion developers",
        "copyright": "Copyright (c) spinelesion developers, Apache-2.0",
        "data_source": "synthetic lesions: spine MRI phantoms from spinelesion-make-data and/or real normal "
        "spines with lesions painted in by spinelesion-insert (the model folder's metadata.json 'training' "
        "lists them); no real patient's lesion",
        "data_type": "dicom, nifti",
        "image_classes": "4 channels (t1, t2, stir, t1c), each normalised to [0, 1] by its 1st-99th percentile; "
        "missing sequences are zero channels",
        "label_classes": _classes_text(),
        "pred_classes": _classes_text(),
        "eval_metrics": {
            k: v for k, v in (meta.get("metrics", {}).get("test") or {}).items() if isinstance(v, int | float)
        },
        "intended_use": use,
        "references": [use, "spinelesion docs/data-contract.md (inputs, ROI frame, outputs)"],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "MR",
                    "num_channels": len(SEQUENCES),
                    "spatial_shape": [int(s) for s in roi["shape"]],
                    "dtype": "float32",
                    "value_range": [-0.5, 2.0],
                    "is_patch_data": True,
                    "channel_def": channels,
                },
            },
            "outputs": {
                "pred": {
                    "type": "logits",
                    "format": "classes",
                    "modality": "n/a",
                    "num_channels": sum(TASK_SIZES),
                    "spatial_shape": [],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": logit_channels,
                },
            },
            "post_processed_outputs": post_processed,
        },
        "spinelesion": {
            "network": "network_def is spinelesion.export.bundle_runtime.BundleNet: forward(image[, available]) "
            f"-> logits (B, {sum(TASK_SIZES)}), the tasks side by side in the order of pred_classes; "
            "available (B, 4) flags the sequences present and, when omitted, a channel counts as present "
            "if any voxel is non-zero; inference.json passes the reader's flags",
            "roi": dict(roi),
            "reference": meta.get("reference", "auto"),
            "roi_frame": "axis-aligned in patient LPS, centred on the ROI centre",
            "source_model": {
                "name": meta.get("name"),
                "version": meta.get("version"),
                "weights_sha256": meta.get("weights_sha256"),
            },
            "temperature": meta.get("temperature"),
            "decision": meta.get("decision"),
            "tta": list(meta.get("tta") or []),
            "outputs": "raw logits per task; probabilities = softmax(mean logits over the ROI and its "
            "mirrors in tta (lr: flip of axis 2, left-right) / temperature[task])",
            "optional_packages": _optional_versions(),
        },
    }


def inference_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``configs/inference.json``: MONAI ConfigParser syntax (``_target_``, ``@ref``, ``$expr``)."""
    roi = {k: meta["roi"][k] for k in ("shape", "spacing", "margin") if k in meta["roi"]}
    info = {
        "name": meta.get("name"),
        "version": meta.get("version"),
        "weights_sha256": meta.get("weights_sha256"),
        "runtime": "monai.bundle",
    }
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "study_id": "study",
        **{s: "" for s in SEQUENCES},
        "rois": [],
        "output_dir": "$@bundle_root + '/eval'",
        "roi": roi,
        "reference": str(meta.get("reference", "auto")),
        "batch_size": 32,
        "network_def": {"_target_": "spinelesion.export.bundle_runtime.BundleNet", **dict(meta["network"])},
        "network": "$@network_def.to(@device)",
        "checkpoint": "$torch.load(@bundle_root + '/models/model.pt', map_location=@device, weights_only=True)",
        "input": "${" + ", ".join([f"'{k}': @{k}" for k in ("study_id", *SEQUENCES, "rois")]) + "}",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": f"{T}.LoadStudyd"},
                {"_target_": f"{T}.ToReferenced", "reference": "@reference"},
                {"_target_": f"{T}.CropRoisd", "spec": "@roi", "context": True},
                {"_target_": f"{T}.RobustUnitRanged"},
                {"_target_": f"{T}.RoiCenterCropd", "shape": "@roi#shape"},
            ],
        },
        "inferer": {
            "_target_": "spinelesion.export.bundle_runtime.RoiClassifier",
            "network": "@network",
            "batch_size": "@batch_size",
            "device": "@device",
            "tta": list(meta.get("tta") or []),  # the mirrors the temperatures were fitted with
        },
        "writer": {
            "_target_": "spinelesion.export.bundle_runtime.PredictionWriter",
            "output_dir": "@output_dir",
            "model_info": info,
            "decision": meta.get("decision"),
        },
        "initialize": ["$@network.load_state_dict(@checkpoint)", "$@network.eval()"],
        "run": ["$@writer(@inferer(@preprocessing(@input)))"],
        "finalize": [],
    }


def readme(meta: Mapping[str, Any], ts_note: str) -> str:
    name = meta.get("name", "spinelesion")
    roi = meta["roi"]
    shape = ", ".join(map(str, roi["shape"]))
    return f"""# {name}: MONAI bundle

**{intended_use(meta)}**

Two-task 3D CNN (lesion compartment: {", ".join(TASKS["compartment"])}; fracture:
{", ".join(TASKS["fracture"])}) over a {"x".join(map(str, roi["shape"]))} voxel ROI at
{"x".join(map(str, roi["spacing"]))} mm, axis-aligned in the patient frame, with the four sequences
{", ".join(SEQUENCES)} as channels (missing ones are zero channels flagged to the network).

## Requirements

The inference config builds `spinelesion` classes by `_target_` (the reader, transforms and network):
install the `spinelesion` package (version {_versions()["spinelesion"]}) in the environment that runs the
bundle, with MONAI {_versions()["monai"]} and PyTorch {_versions()["torch"]} or compatible, `fire` (MONAI's
command line) and, for `verify_metadata`, `jsonschema`.

## Run

From this folder (or pass `--bundle_root <this folder>`), with one path per available sequence (a NIfTI file
or a DICOM series folder) and ROI centres in **LPS millimetres** (the DICOM frame; from a NIfTI/RAS
viewer, negate x and y):

```
python -m monai.bundle run --config_file configs/inference.json \\
    --t2 /data/sub-01/t2.nii.gz --t1 /data/sub-01/t1.nii.gz \\
    --rois "[[0.0, 10.0, -40.0], [0.0, 12.0, -75.0]]" --study_id sub-01 --output_dir ./eval
```

It writes `<output_dir>/<study_id>/predictions.json`: per ROI, a label and the probabilities of each task,
the same numbers as `spinelesion-predict` gives for the same ROIs (no saliency maps; use
`spinelesion-predict` for those, and for ROI proposals when no centre is known). It runs on the GPU when
PyTorch sees one; `--device '$torch.device("cpu")'` (single quotes: the shell must not expand `$torch`)
keeps it on the CPU.

## MONAI's checks

From this folder, offline (the metadata schema ships with `spinelesion`):

```
python -m monai.bundle verify_metadata --meta_file configs/metadata.json \\
    --filepath "$(python -c 'from spinelesion.export.bundle import SCHEMA_FILE; print(SCHEMA_FILE)')"
python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json \\
    --config_file configs/inference.json
python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\
    --meta_file configs/metadata.json --config_file configs/inference.json
```

`ckpt_export` rewrites `models/model.ts` from `models/model.pt` by `torch.jit.script`, as the export did.

## Files

- `configs/metadata.json`: MONAI bundle metadata; `network_data_format` describes the network's input
  `image` (B, 4, {shape}) and its output `pred`: the logits of both tasks side by side (channels 0-3
  compartment, 4-6 fracture), with the per-task probabilities under `post_processed_outputs`;
  `spinelesion` holds the ROI geometry, temperatures, decision rule and test-time mirrors (`tta`).
- `configs/inference.json`: the pipeline (SpineSeriesReader -> reference grid -> ROI boxes -> percentile
  normalisation -> network, its logits averaged with those of the left-right mirrored ROI when `tta`
  names `lr` -> softmax(logits / temperature)). `network_def` is
  `spinelesion.export.bundle_runtime.BundleNet`: `forward(image, available=None)`; without `available`
  (B, 4) a sequence counts as present when its channel has a non-zero voxel. The pipeline passes the
  reader's flags.
- `configs/logging.conf`: the logging `monai.bundle run` applies (INFO to stdout).
- `models/model.pt`: the state dict (temperatures included as a buffer); load with `weights_only=True`
  into `BundleNet` or `spinelesion.models.networks.MultiTaskNet` (the same parameter names).
- `models/model.ts`: {ts_note}. `model(image)` or `model(image, available)` -> logits (B, 7); average them
  over the mirrors in `metadata.json` `tta`, then divide each task's by its temperature before the softmax.

Licence: Apache-2.0.
"""


def _save_torchscript(
    net: torch.nn.Module,
    network: Mapping[str, Any],
    path: Path,
    roi_shape: tuple[int, int, int],
    extra: Mapping[str, bytes],
) -> tuple[str, float]:
    """Script ``network_def`` (:class:`BundleNet` holding ``net``'s weights), as MONAI's ``ckpt_export``
    does, and return the largest logit difference to eager ``net``, with given and derived flags."""
    from monai.data import save_net_with_metadata

    from spinelesion.inference.export import example_inputs

    bundle_net = BundleNet(**network)
    bundle_net.load_state_dict(net.state_dict())  # strict: the same names, or this fails
    scripted = torch.jit.script(bundle_net.eval())
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            save_net_with_metadata(
                scripted,
                fh,
                meta_values=json.loads(extra["metadata.json"]),
                more_extra_files={k: v for k, v in extra.items() if k != "metadata.json"},
            )
    image, available = example_inputs(roi_shape, batch=3, seed=1)
    image[available == 0] = 0.0  # the missing sequence is a zero channel, as the reader gives it
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        want = torch.cat(net(image, available), dim=1)
        diff = max(float((got - want).abs().max()) for got in (loaded(image, available), loaded(image)))
    return "scripted", diff


class BundleDestinationError(FileExistsError):
    """The bundle's destination holds files and overwriting them was not asked for."""


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse a destination that is not a folder, or a non-empty one unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise BundleDestinationError(f"output_dir {out} is a file, not a folder")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise BundleDestinationError(
            f"output_dir {out} is not empty; choose a new or empty folder, or pass overwrite=true "
            "to replace the bundle's files there"
        )


def export_bundle(
    model_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    verify: bool | None = None,
    torchscript: bool = True,
    overwrite: bool = False,
) -> BundleExport:
    """Write the bundle of the model folder ``model_dir`` into ``output_dir``: a new or empty
    folder, or with ``overwrite`` a non-empty one (the bundle's files there are replaced, others kept).
    """
    from spinelesion.models.folder import load_model_folder

    out = Path(output_dir)
    check_destination(out, overwrite)  # before the model loads: nothing of the user's is touched
    net, meta = load_model_folder(model_dir, verify=verify)
    net = net.eval().cpu()
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    metadata, inference = bundle_metadata(meta), inference_config(meta)
    write_json(out / "configs" / "metadata.json", metadata)
    write_json(out / "configs" / "inference.json", inference)
    with atomic_path(out / "configs" / "logging.conf") as tmp:
        tmp.write_text(LOGGING_CONF, encoding="utf-8")
    with atomic_path(out / "models" / "model.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, str(tmp))
    files = ["configs/metadata.json", "configs/inference.json", "configs/logging.conf", "models/model.pt"]
    ts_note, diff = "not written (torchscript=false)", None
    if torchscript:
        extra = {
            "metadata.json": json.dumps(metadata).encode(),
            "inference.json": json.dumps(inference).encode(),
        }
        try:
            how, diff = _save_torchscript(
                net,
                meta["network"],
                out / "models" / "model.ts",
                cast("tuple[int, int, int]", tuple(int(s) for s in meta["roi"]["shape"])),
                extra,
            )
            ts_note = f"TorchScript, {how} (largest logit difference to eager {diff:.2g})"
            files.append("models/model.ts")
        except Exception as exc:  # noqa: BLE001 - the bundle runs from model.pt; say why there is no .ts
            ts_note = f"not written: scripting failed ({type(exc).__name__}: {exc})"
            log.warning("model.ts %s", ts_note)
    with atomic_path(out / "docs" / "README.md") as tmp:
        tmp.write_text(readme(meta, ts_note), encoding="utf-8")
    files.append("docs/README.md")
    log.info(
        "bundle of %s written to %s (%s; %s)", model_dir, out, ", ".join(files), platform.platform(terse=True)
    )
    return BundleExport(out, files, ts_note, diff)
