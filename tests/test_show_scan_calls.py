"""scripts/show_scan_calls.py: one column per ROI of a predictions file, read from a NIfTI study
(its planes come from :func:`spinelesion.io.resample.sample_plane`, tested in test_io_resample)."""

from __future__ import annotations

import csv
import runpy
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from spinelesion.io.nifti import write_nifti
from spinelesion.io.volume import Volume

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "show_scan_calls.py"
COLUMNS = [
    "study_id",
    "roi_id",
    "x_mm",
    "y_mm",
    "z_mm",
    "compartment_label",
    "fracture_label",
    "compartment_p_none",
]


def _run(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_one_column_per_roi_of_the_chosen_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = write_nifti(
        Volume(np.random.default_rng(0).random((30, 30, 30)).astype(np.float32), np.eye(4)),
        tmp_path / "s.nii.gz",
    )
    rows = [("a", "r1", 10, 10, 10), ("a", "r2", 15, 12, 8), ("b", "r3", 5, 5, 5)]
    table = tmp_path / "predictions.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for study, roi, x, y, z in rows:
            writer.writerow([study, roi, x, y, z, "none", "none", 0.9])
    one, two = tmp_path / "a.png", tmp_path / "all.png"
    _run(monkeypatch, str(image), str(table), str(one), "--study", "a", "--half-mm", "10")
    _run(monkeypatch, str(image), str(table), str(two), "--half-mm", "10")
    # the figure is 2.8 inches a column at 90 dpi: two columns for study a, three for all
    assert matplotlib.image.imread(one).shape[1] == round(2.8 * 2 * 90)
    assert matplotlib.image.imread(two).shape[1] == round(2.8 * 3 * 90)
    with pytest.raises(SystemExit, match="no rows of study c"):
        _run(monkeypatch, str(image), str(table), str(tmp_path / "c.png"), "--study", "c")
