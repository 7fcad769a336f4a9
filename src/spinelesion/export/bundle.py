"""A model folder -> a MONAI bundle that ``python -m monai.bundle run`` executes.

Layout written under ``output_dir``::

    configs/metadata.json   MONAI bundle metadata (schema fields, network_data_format)
    configs/inference.json  load (SpineSeriesReader) -> reference grid -> ROI boxes ->
                            normalisation -> network -> predictions.json per study
    models/model.pt         state dict (torch.load(..., weights_only=True))
    models/model.ts         TorchScript (traced; metadata.json embedded, MONAI's convention)
    docs/README.md          how to run it, and what it is not

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
from spinelesion.labels import SEQUENCES, TASKS

log = logging.getLogger(__name__)

SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
T = "spinelesion.data.monai_transforms"
CHANNEL_NAMES = {
    "t1": "T1-weighted",
    "t2": "T2-weighted",
    "stir": "STIR",
    "t1c": "T1-weighted after gadolinium",
}
DISCLAIMER = (
    "Trained on synthetic spine MRI rendered by spinelesion's own generator: a demonstration of the "
    "pipeline, NOT a clinical tool. It has never seen a real patient's lesion and must not be used "
    "for diagnosis or treatment decisions."
)


@dataclass
class BundleExport:
    """What was written, and the TorchScript check."""

    folder: Path
    files: list[str]
    torchscript: str  # "traced" or the reason it is absent
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
    channels = {str(i): CHANNEL_NAMES[s] for i, s in enumerate(SEQUENCES)}
    # The network returns logits (value_range unbounded); softmax(logits / temperature) gives the
    # probabilities the inference config writes (temperatures under "spinelesion").
    outputs = {
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
        "optional_packages_version": _optional_versions(),
        "supported_apps": {},
        "name": str(meta.get("name", "spinelesion")),
        "task": "Spine MRI ROI classification: lesion compartment and vertebral fracture (benign vs pathologic)",
        "description": (
            "Two-task 3D CNN over a multi-sequence (T1, T2, STIR, T1c) region of interest centred on "
            "a given point. Input: one study (DICOM series folders or NIfTI files per sequence) and "
            "ROI centres in LPS mm; output: per-ROI class probabilities per task. " + DISCLAIMER
        ),
        "authors": "spinelesion developers",
        "copyright": "Copyright (c) spinelesion developers, Apache-2.0",
        "data_source": "synthetic spine MRI from spinelesion's generator (spinelesion-make-data)",
        "data_type": "dicom, nifti",
        "image_classes": "4 channels (t1, t2, stir, t1c), each normalised to [0, 1] by its 1st-99th percentile; "
        "missing sequences are zero channels flagged in 'available'",
        "label_classes": {t: list(c) for t, c in TASKS.items()},
        "pred_classes": {t: list(c) for t, c in TASKS.items()},
        "eval_metrics": {
            k: v for k, v in (meta.get("metrics", {}).get("test") or {}).items() if isinstance(v, int | float)
        },
        "intended_use": str(meta.get("intended_use", DISCLAIMER)),
        "references": [DISCLAIMER, "spinelesion docs/data-contract.md (inputs, ROI frame, outputs)"],
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
                "available": {
                    "type": "tuples",
                    "format": "flags",
                    "modality": "MR",
                    "num_channels": len(SEQUENCES),
                    "spatial_shape": [],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": channels,
                },
            },
            "outputs": outputs,
        },
        "spinelesion": {
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
        "device": "$torch.device('cpu')",
        "study_id": "study",
        **{s: "" for s in SEQUENCES},
        "rois": [],
        "output_dir": "$@bundle_root + '/eval'",
        "roi": roi,
        "reference": str(meta.get("reference", "auto")),
        "batch_size": 32,
        "network_def": {"_target_": "spinelesion.models.networks.MultiTaskNet", **dict(meta["network"])},
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
    return f"""# {name}: MONAI bundle

**{DISCLAIMER}**

Two-task 3D CNN (lesion compartment: {", ".join(TASKS["compartment"])}; fracture:
{", ".join(TASKS["fracture"])}) over a {"x".join(map(str, roi["shape"]))} voxel ROI at
{"x".join(map(str, roi["spacing"]))} mm, axis-aligned in the patient frame, with the four sequences
{", ".join(SEQUENCES)} as channels (missing ones are zero channels flagged to the network).

## Requirements

The inference config builds `spinelesion` classes by `_target_` (the reader, transforms and network):
install the `spinelesion` package (version {_versions()["spinelesion"]}) in the environment that runs the
bundle, with MONAI {_versions()["monai"]} and PyTorch {_versions()["torch"]} or compatible.

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
`spinelesion-predict` for those, and for ROI proposals when no centre is known). `--device "$torch.device('cuda')"`
runs on a GPU.

## Files

- `configs/metadata.json`: MONAI bundle metadata; `network_data_format` describes the network's inputs
  (`image`, `available`) and outputs; `spinelesion` holds the ROI geometry, temperatures, decision rule
  and test-time mirrors (`tta`).
- `configs/inference.json`: the pipeline (SpineSeriesReader -> reference grid -> ROI boxes -> percentile
  normalisation -> network, its logits averaged with those of the left-right mirrored ROI when `tta`
  names `lr` -> softmax(logits / temperature)).
- `models/model.pt`: the state dict (temperatures included as a buffer); load with `weights_only=True`.
- `models/model.ts`: {ts_note}. Inputs `(image (B, 4, {", ".join(map(str, roi["shape"]))}), available (B, 4))`,
  outputs raw logits per task; average them over the mirrors in `metadata.json` `tta`, then divide by
  the temperatures before the softmax.

Licence: Apache-2.0.
"""


def _save_torchscript(
    net: torch.nn.Module, path: Path, roi_shape: tuple[int, int, int], extra: Mapping[str, bytes]
) -> tuple[str, float | None]:
    """Trace (the network does not script: its forward returns ``tuple[Tensor, ...]`` built
    from a generator over the heads, which TorchScript's compiler rejects) and check parity."""
    from monai.data import save_net_with_metadata

    from spinelesion.inference.export import example_inputs

    image, available = example_inputs(roi_shape)
    with torch.no_grad():
        traced = torch.jit.trace(net, (image, available), check_trace=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            save_net_with_metadata(
                traced,
                fh,
                meta_values=json.loads(extra["metadata.json"]),
                more_extra_files={k: v for k, v in extra.items() if k != "metadata.json"},
            )
    check_img, check_av = example_inputs(roi_shape, batch=3, seed=1)
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        diff = max(
            float((a - b).abs().max())
            for a, b in zip(net(check_img, check_av), loaded(check_img, check_av), strict=True)
        )
    return "traced", diff


def export_bundle(
    model_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    verify: bool | None = None,
    torchscript: bool = True,
) -> BundleExport:
    """Write the bundle of the model folder ``model_dir`` into ``output_dir``."""
    from spinelesion.models.folder import load_model_folder

    net, meta = load_model_folder(model_dir, verify=verify)
    net = net.eval().cpu()
    out = Path(output_dir)
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    metadata, inference = bundle_metadata(meta), inference_config(meta)
    write_json(out / "configs" / "metadata.json", metadata)
    write_json(out / "configs" / "inference.json", inference)
    with atomic_path(out / "models" / "model.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, str(tmp))
    files = ["configs/metadata.json", "configs/inference.json", "models/model.pt"]
    ts_note, diff = "not written (torchscript=false)", None
    if torchscript:
        extra = {
            "metadata.json": json.dumps(metadata).encode(),
            "inference.json": json.dumps(inference).encode(),
        }
        try:
            how, diff = _save_torchscript(
                net,
                out / "models" / "model.ts",
                cast("tuple[int, int, int]", tuple(int(s) for s in meta["roi"]["shape"])),
                extra,
            )
            ts_note = f"TorchScript, {how} (largest logit difference to eager {diff:.2g})"
            files.append("models/model.ts")
        except Exception as exc:  # noqa: BLE001 - the bundle runs from model.pt; say why there is no .ts
            ts_note = f"not written: tracing failed ({type(exc).__name__}: {exc})"
            log.warning("model.ts %s", ts_note)
    with atomic_path(out / "docs" / "README.md") as tmp:
        tmp.write_text(readme(meta, ts_note), encoding="utf-8")
    files.append("docs/README.md")
    log.info(
        "bundle of %s written to %s (%s; %s)", model_dir, out, ", ".join(files), platform.platform(terse=True)
    )
    return BundleExport(out, files, ts_note, diff)
