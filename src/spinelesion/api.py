"""The Python API: the commands as functions, as TotalSegmentator's ``totalsegmentator(input, output)``.

    from spinelesion import predict
    run = predict("exam/", "out/", model="spinelesion-demo", rois=[[0, 12, -40]])
    for study in run["studies"]:
        ...
    run["results"]["<study id>"]["rois"][0]["compartment"]["label"]

Each function composes the command's own Hydra config (``configs/<command>.yaml``) with the
arguments given as overrides, runs the same code as the command line and returns what it wrote:
the same validation (a bad argument raises :class:`ValueError` naming it), the same outputs on
disk, no ``sys.exit``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _value(value: Any) -> str:
    """A Python value as a Hydra override value (lists and mappings as JSON-like literals)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return value if value and all(c not in value for c in " ,[]{}=:'\"") else json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return str(value)


def compose(command: str, overrides: Mapping[str, Any]) -> Any:
    """``configs/<command>.yaml`` with ``key=value`` overrides (nested keys dotted: ``scan.threshold``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from spinelesion.config_path import CONFIG_DIR

    with initialize_config_dir(config_dir=str(Path(CONFIG_DIR).resolve()), version_base="1.3"):
        return hydra_compose(
            config_name=command, overrides=[f"{k}={_value(v)}" for k, v in overrides.items()]
        )


def predict(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    model: str | os.PathLike[str] = "spinelesion-demo",
    rois: Sequence[Sequence[float]] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """``spinelesion-predict``: every study of ``input`` (a DICOM export, NIfTI files or a
    manifest) into ``output``; ``model`` by name or folder; ``rois`` LPS mm points (None: scan).

    Other settings as keyword arguments with dots as double underscores, e.g.
    ``saliency__method="none"``, ``scan__threshold=0.6``, ``device="cuda"``.

    Returns ``run.json``'s content plus ``results``: each predicted study's ``predictions.json``
    by study id.
    """
    from spinelesion.tasks.predict import predict as run_predict

    overrides: dict[str, Any] = {"input": input, "output_dir": output, "model_dir": model, "progress": False}
    if rois is not None:
        overrides["rois"] = [[float(v) for v in point] for point in rois]
    overrides.update({k.replace("__", "."): v for k, v in settings.items()})
    summary = dict(run_predict(compose("predict", overrides)))
    out = Path(output)
    results = {}
    for study in summary.get("studies", []):
        path = out / str(study.get("folder", "")) / "predictions.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            results[str(data["study_id"])] = data
    summary["results"] = results
    return summary
