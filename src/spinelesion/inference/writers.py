"""Run outputs of ``predict``: per-study JSON, the run-level CSV and the list of failures.

File and folder names come only from sanitised study identifiers, never from patient names
or IDs, and every path is checked to stay inside the output folder.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spinelesion.atomic import atomic_path, write_json
from spinelesion.labels import TASKS

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 64) -> str:
    """A file-system-safe name for an identifier: [A-Za-z0-9._-], no leading dots, bounded,
    with a short hash when anything was changed so two different ids never collide."""
    cleaned = _SAFE.sub("_", text).strip("._") or "study"
    if cleaned != text or len(cleaned) > max_len:
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
        cleaned = f"{cleaned[: max_len - 9]}-{digest}"
    return cleaned


def inside(root: Path, *parts: str) -> Path:
    """``root / parts`` after checking the result cannot escape ``root``."""
    root = root.resolve()
    path = root.joinpath(*parts).resolve()
    if root != path and root not in path.parents:
        raise ValueError(f"refusing to write outside the output folder: {path}")
    return path


def input_root(input_path: str | os.PathLike[str]) -> Path:
    """What outputs show input paths relative to: the input folder, or the folder of an input file
    (a NIfTI file, a manifest, whose own paths are relative to its folder)."""
    path = Path(input_path)
    return path if path.is_dir() else path.parent


def _root_forms(root: str | os.PathLike[str]) -> list[str]:
    """``root`` as paths built from it may spell it: as given, absolute, resolved; longest first."""
    forms = {str(Path(root)), os.path.abspath(root), os.path.realpath(root)}
    # a bare relative name ("in") could be any word of the text; "/" would be every separator
    kept = {f.rstrip(os.sep) for f in forms if os.sep in f.strip(os.sep) or os.path.isabs(f)}
    return sorted((f for f in kept if f), key=len, reverse=True)


def relative_to_root(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
    """``path`` relative to ``root`` (the root itself: its name); a path elsewhere: its file name."""
    target = os.path.abspath(path)
    for form in (os.path.abspath(root), os.path.realpath(root)):
        if target == form:
            return Path(form).name
        if target.startswith(form.rstrip(os.sep) + os.sep):
            return Path(os.path.relpath(target, form)).as_posix()
    return Path(str(path)).name


def hide_root(text: str, root: str | os.PathLike[str]) -> str:
    """``text`` (a failure reason, a warning) with every path below ``root`` made relative to it,
    and ``root`` itself shown by its name: input paths may hold patient names."""
    name = Path(os.path.abspath(root)).name
    for form in _root_forms(root):
        head = rf"(?<![\w.\-{re.escape(os.sep)}]){re.escape(form)}"
        text = re.sub(head + re.escape(os.sep) + r"+", "", text)  # below the root: relative
        text = re.sub(head + r"(?![\w.\-])", lambda _m: name, text)  # the root itself: its name
    return text


def write_predictions_json(
    path: Path,
    study_id: str,
    model: Mapping[str, Any],
    inputs: Mapping[str, str | None],
    rois: Sequence[Mapping[str, Any]],
    warnings: Sequence[str],
) -> Path:
    """``predictions.json`` exactly as the data contract's schema."""
    return write_json(
        path,
        {
            "study_id": study_id,
            "model": {
                "name": str(model.get("name")),
                "version": str(model.get("version")),
                "weights_sha256": str(model.get("weights_sha256")),
            },
            "inputs": dict(inputs),
            "rois": list(rois),
            "warnings": list(warnings),
        },
    )


UNIT_SCALE = 255
"""Maps in [0, 1] are stored as uint8 with scl_slope 1/255: readers get floats back, 1/4 of the bytes."""


def to_unit_uint8(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 steps of 1/255 (what :func:`write_unit_maps` stores)."""
    return np.rint(np.clip(values, 0.0, 1.0) * UNIT_SCALE).astype(np.uint8)


def write_unit_maps(path: Path, maps: np.ndarray, affine_lps: np.ndarray) -> Path:
    """Maps in [0, 1] (uint8 from :func:`to_unit_uint8`, 3D, or 4D with one volume per map on
    the last axis) as one NIfTI on the grid of ``affine_lps``; readers that apply the header's
    scaling (nibabel ``get_fdata``, ITK, Slicer) see values in [0, 1]."""
    import nibabel as nib

    from spinelesion.io.volume import LPS_TO_RAS

    ras = LPS_TO_RAS @ np.asarray(affine_lps, np.float64)
    img = nib.Nifti1Image(np.asarray(maps, np.uint8), ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    img.header.set_xyzt_units("mm", "sec")
    # float32 1/255 rounds up (255 steps would read back as 1.00000006): one ulp below keeps [0, 1]
    img.header.set_slope_inter(float(np.nextafter(np.float32(1.0 / UNIT_SCALE), np.float32(0.0))), 0.0)
    if maps.ndim == 4:
        img.header.set_intent("vector", (), name="saliency per ROI")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


CSV_HEADER = [
    "study_id",
    "roi_id",
    "source",
    "x_mm",
    "y_mm",
    "z_mm",
    *[f"{t}_{k}" for t, classes in TASKS.items() for k in ("label", *[f"p_{c}" for c in classes])],
    "saliency_compartment",
    "saliency_fracture",
    "warnings",
]
WARNING_SEPARATOR = " | "


def roi_csv_rows(
    study_id: str, rois: Iterable[Mapping[str, Any]], study_dir: str, warnings: Sequence[str] = ()
) -> list[list[object]]:
    """One CSV line per ROI; ``warnings`` (the study's, joined by :data:`WARNING_SEPARATOR`) on each."""
    out = []
    for roi in rois:
        line: list[object] = [
            study_id,
            roi["roi_id"],
            roi["source"],
            *[f"{v:.2f}" for v in roi["center_lps_mm"]],
        ]
        for task, classes in TASKS.items():
            line.append(roi[task]["label"])
            line.extend(f"{roi[task]['probabilities'][c]:.6f}" for c in classes)
        sal = roi.get("saliency") or {}
        line.extend(f"{study_dir}/{sal[t]}" if sal.get(t) else "" for t in TASKS)
        line.append(WARNING_SEPARATOR.join(warnings))
        out.append(line)
    return out


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path
