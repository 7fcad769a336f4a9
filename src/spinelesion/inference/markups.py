"""ROIs to and from 3D Slicer markups (``.mrk.json``, point lists).

Slicer stores a point list's control points in LPS (its default since 4.11) or RAS, said by
``coordinateSystem``; spinelesion works in LPS, so RAS points have x and y negated. Each
study's ROIs (given or proposed by the scan) are written as one point list whose labels
carry the predicted classes, so they open beside the source series in Slicer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spinelesion.atomic import write_json
from spinelesion.labels import TASKS

SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
_FLIP = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS
POINT_LIST_TYPES = ("Fiducial", "PointList")
"""Markup types whose control points are ROI centres (Slicer saves a point list as ``Fiducial``)."""


class MarkupsError(ValueError):
    """A markups file that cannot be read as points, with the file and the reason."""


def is_markups_path(value: object) -> bool:
    return isinstance(value, str | os.PathLike) and str(value).lower().endswith((".mrk.json", ".json"))


def read_markups(path: str | os.PathLike[str]) -> tuple[list[list[float]], list[str]]:
    """Control points of every markups node in ``path`` as LPS mm, and their labels.

    Only point lists are read: a node of another ``type`` (ROI, Plane, Line, ...) is refused.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MarkupsError(f"{path}: not a readable markups JSON file ({exc})") from exc
    nodes = data.get("markups") if isinstance(data, dict) else None
    if not isinstance(nodes, list) or not nodes:
        raise MarkupsError(f"{path}: no 'markups' list (expected a 3D Slicer .mrk.json file)")
    points: list[list[float]] = []
    labels: list[str] = []
    for n, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise MarkupsError(f"{path}: markups {n + 1}: not a JSON object")
        kind = node.get("type")  # absent in hand-written files: read as a point list
        if kind is not None and kind not in POINT_LIST_TYPES:
            # an ROI box, plane, line or curve also has control points, but none is a centre
            raise MarkupsError(
                f"{path}: markups {n + 1}: markup type {kind!r}; only point lists (Fiducial) give ROI centres"
            )
        system = str(node.get("coordinateSystem", "LPS")).upper()
        if system not in ("LPS", "RAS", "0", "1"):  # 0/1: numeric codes of early files (RAS, LPS)
            raise MarkupsError(f"{path}: markups {n + 1}: unknown coordinateSystem {system!r}")
        units = str(node.get("coordinateUnits", "mm")).lower()
        if units != "mm":
            raise MarkupsError(f"{path}: markups {n + 1}: coordinates in {units!r}, expected mm")
        flip = _FLIP if system in ("RAS", "0") else np.ones(3)
        for k, cp in enumerate(node.get("controlPoints") or []):
            pos = np.asarray(cp.get("position", []), dtype=np.float64)
            if pos.shape != (3,) or not np.all(np.isfinite(pos)):
                raise MarkupsError(
                    f"{path}: markups {n + 1}, point {k + 1}: position {cp.get('position')} "
                    "is not 3 finite numbers"
                )
            if cp.get("positionStatus", "defined") != "defined":
                continue  # placed-by-user-later points have no position yet
            points.append((pos * flip).tolist())
            labels.append(str(cp.get("label") or f"roi{len(points):02d}"))
    if not points:
        raise MarkupsError(f"{path}: no defined control point")
    return points, labels


def roi_label(record: Mapping[str, Any]) -> str:
    return f"{record['roi_id']}: " + " / ".join(str(record[t]["label"]) for t in TASKS if t in record)


def write_markups(path: Path, records: Sequence[Mapping[str, Any]], name: str = "spinelesion ROIs") -> Path:
    """Each ROI as a control point (LPS) labelled ``<roi_id>: <compartment> / <fracture>``; the
    description has the probabilities and whether the ROI was given or found by the scan."""
    points = []
    for k, rec in enumerate(records):
        desc = "; ".join(
            f"{t} " + ", ".join(f"{c} {p:.2f}" for c, p in rec[t]["probabilities"].items())
            for t in TASKS
            if t in rec
        )
        points.append(
            {
                "id": str(k + 1),
                "label": roi_label(rec),
                "description": f"{rec.get('source', '')}: {desc}",
                "associatedNodeID": "",
                "position": [float(v) for v in rec["center_lps_mm"]],
                "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
                "selected": True,
                "locked": True,
                "visibility": True,
                "positionStatus": "defined",
            }
        )
    doc = {
        "@schema": SCHEMA,
        "markups": [
            {
                "type": "Fiducial",
                "name": name,
                "coordinateSystem": "LPS",
                "coordinateUnits": "mm",
                "locked": True,
                "labelFormat": "%N-%d",
                "controlPoints": points,
                "measurements": [],
                "display": {
                    "visibility": True,
                    "opacity": 1.0,
                    "color": [1.0, 1.0, 0.0],
                    "selectedColor": [1.0, 0.5, 0.5],
                    "textScale": 3.0,
                    "glyphType": "Sphere3D",
                    "glyphScale": 3.0,
                    "pointLabelsVisibility": True,
                },
            }
        ],
    }
    return write_json(path, doc)
