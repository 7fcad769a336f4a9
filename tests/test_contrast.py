"""Does a series look like the sequence it was passed as (spinelesion.inference.contrast)?"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinelesion.inference.contrast import (
    ContrastProfile,
    contrast_profile,
    contrast_warning,
    contrast_warnings,
)
from spinelesion.io.nifti import read_nifti
from spinelesion.io.volume import Volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MULTISITE = SHARED / "real-multisite"
NORMALS = SHARED / "real-normals"


def test_rules_name_the_series_and_what_it_looks_like() -> None:
    suppressed = contrast_warning("t2", ContrastProfile(fat_ratio=0.5, bright_fraction=0.6))
    assert (
        suppressed
        and suppressed.startswith("t2:")
        and "fat-suppressed" in suppressed
        and "stir" in suppressed
    )
    assert contrast_warning("t2", ContrastProfile(1.2, 0.3)) is None
    t2_as_t1 = contrast_warning("t1", ContrastProfile(1.2, 0.02))
    assert t2_as_t1 and t2_as_t1.startswith("t1:") and "T2" in t2_as_t1
    assert contrast_warning("t1", ContrastProfile(2.5, 0.2))  # fluid brighter than fat
    assert contrast_warning("t1", ContrastProfile(2.5, 0.01)) is None
    assert contrast_warning("stir", ContrastProfile(0.3, 0.9)) is None  # only t1 and t2 are judged


def _body(fat: float, deep: float, fluid: float, size: int = 160) -> Volume:
    """A cylinder of 'deep tissue' with a 15 mm fat layer and a fluid tube, in air."""
    img = np.zeros((size, size, 40), np.float32)
    y, x = np.ogrid[:size, :size]
    r = np.hypot(y - size / 2, x - size / 2)
    img[r < 70] = fat
    img[r < 55] = deep
    img[(r < 8)] = fluid
    img += np.random.default_rng(0).normal(0, 1.0, img.shape).astype(np.float32) ** 2
    return Volume(img, np.diag([1.0, 1.0, 1.0, 1.0]))


def test_profile_reads_fat_and_fluid_of_a_toy_body() -> None:
    t1 = contrast_profile(_body(fat=300, deep=100, fluid=40))
    t2 = contrast_profile(_body(fat=250, deep=100, fluid=600))
    stir = contrast_profile(_body(fat=30, deep=100, fluid=600))
    assert t1 and t2 and stir
    assert t1.fat_ratio > 2.5 and t1.bright_fraction < 0.01
    assert t2.bright_fraction > 0.01  # the fluid tube is brighter than fat
    assert stir.fat_ratio < 0.5
    assert contrast_warnings({"t2": _body(fat=30, deep=100, fluid=600)})[0].startswith("t2:")
    assert contrast_warnings({"t1": _body(fat=300, deep=100, fluid=40)}) == []
    # a tight crop (under 140 mm across) is not judged
    assert contrast_profile(Volume(np.ones((60, 60, 60), np.float32), np.eye(4))) is None


@pytest.mark.slow  # reads 26 real exams (~25 s)
@pytest.mark.skipif(not (MULTISITE / "vb1_03").is_dir(), reason="needs ../shared/data/real-multisite")
def test_real_series_of_each_contrast() -> None:
    """Real exams from seven hospitals: STIR passed as t2 and as t1 is flagged; every real T1
    passed as t1 and every real T2 passed as t2 is not."""

    def vol(folder: Path, seq: str) -> Volume:
        return read_nifti(folder / f"{seq}.nii.gz")

    for exam in ("vb1_03", "vb1_07"):  # TIRM (STIR)
        stir = vol(MULTISITE / exam, "stir")
        assert any("fat-suppressed" in w for w in contrast_warnings({"t2": stir})), exam
        assert any(w.startswith("t1:") for w in contrast_warnings({"t1": stir})), exam
    for exam in ("vb1_02", "vb1_06", "vb1_08", "vb1_10"):
        assert contrast_warnings({"t1": vol(MULTISITE / exam, "t1")}) == [], exam
    t2_exams = [MULTISITE / e for e in ("vb1_11", "vb1_15", "vb1_17")]
    if NORMALS.is_dir():
        t2_exams += sorted(NORMALS.glob("vb2_*"))
    for folder in t2_exams:
        assert contrast_warnings({"t2": vol(folder, "t2")}) == [], folder.name
