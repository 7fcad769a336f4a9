"""The DICOM read benchmark runs and both readers agree (no timing is asserted: the machine is shared)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_io import make_volume, write_series

from spinelesion.benchmark.data_read import bench_dicom_read, bench_discovery


def test_bench_dicom_read_agrees_with_simpleitk(tmp_path: Path):
    pytest.importorskip("SimpleITK")
    write_series(make_volume(shape=(32, 24, 6), oblique_deg=6.0), tmp_path / "s")
    out = bench_dicom_read(tmp_path / "s", repeats=2)
    assert out["shape"] == [32, 24, 6] and out["files"] == 6
    for reader in ("spinelesion", "simpleitk"):
        t = out[reader]
        assert t["repeats"] == 2 and 0 < t["min_s"] <= t["median_s"] <= t["max_s"]
    assert out["speedup_vs_simpleitk"] > 0
    # same voxels and the same LPS affine from both readers
    assert out["agreement"]["same_shape"] is True
    assert out["agreement"]["max_abs_diff"] == 0.0
    assert out["agreement"]["affine_max_diff"] < 1e-4
    disc = bench_discovery(tmp_path / "s", repeats=1)
    assert disc["spinelesion"]["repeats"] == 1 and "simpleitk" in disc
