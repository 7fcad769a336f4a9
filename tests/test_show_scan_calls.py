"""scripts/show_scan_calls.py: its planes are sampled in LPS millimetres, whatever the storage."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from spinelesion.io.volume import Volume

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "show_scan_calls.py"


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("show_scan_calls", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_planes_put_anterior_left_and_superior_up_for_ras_and_oblique_storage() -> None:
    plane = _script().plane
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # an oblique rotation
    for rotation in (np.diag([-1.0, -1.0, 1.0]), q):  # RAS-stored, then oblique
        affine = np.eye(4)
        affine[:3, :3] = rotation  # 1 mm voxels
        affine[:3, 3] = -rotation @ np.full(3, 20.0)  # voxel (20, 20, 20) at the LPS origin
        index = np.indices((41, 41, 41)).reshape(3, -1).T.astype(float)
        world = index @ rotation.T + affine[:3, 3]
        # the image is the LPS y (posterior) coordinate plus 10 x the z (superior) one
        array = (world[:, 1] + 10.0 * world[:, 2]).reshape(41, 41, 41)
        volume = Volume(array, affine)
        sag = plane(volume, np.zeros(3), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0]), 5.0)
        assert sag.shape == (11, 11)
        assert abs(sag[5, 5]) < 1e-6  # the centre is the point
        assert sag[5, 6] > sag[5, 5]  # posterior to the right (anterior left)
        assert sag[4, 5] > sag[5, 5] + 5.0  # superior up
