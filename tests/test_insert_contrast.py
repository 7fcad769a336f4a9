"""A real T2 imaged as T1 or STIR (insert/contrast.py): each tissue takes the target sequence's
relations, the anatomy stays, and an insertion set can write its studies under those looks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers_insert import write_toy_backgrounds

from spinelesion.insert.anatomy import derive_anatomy
from spinelesion.insert.background import discover_backgrounds, load_background
from spinelesion.insert.contrast import synthesise, tissue_regions
from spinelesion.insert.findings import insert_finding

ROOT = Path(__file__).resolve().parents[1]
CFG = yaml.safe_load((ROOT / "configs" / "insert.yaml").read_text())
REAL_NORMALS = ROOT.parent / "shared" / "data" / "real-normals"


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_backgrounds(tmp_path_factory.mktemp("backgrounds"))


@pytest.fixture(scope="module")
def toy(toy_root: Path):
    spec = discover_backgrounds(toy_root, levels=["L1", "L2", "L3"])[0]
    bg = load_background(spec)
    return bg, derive_anatomy(bg, cord_levels={"L1", "L2", "L3"})


def test_each_tissue_takes_the_target_sequences_relations(toy) -> None:
    bg, an = toy
    regions = tissue_regions(bg, an)
    # the toy's canal (CSF, i 20-36, j 52-65) lies in the sac map, its bodies and discs apart
    assert regions["sac"][28, 58, 70] and not regions["sac"][28, 35, 70]
    assert not (regions["sac"] & regions["bodies"]).any() and not (regions["disc"] & regions["sac"]).any()
    t2 = an.tissues["t2"]
    assert t2["csf"] > 1.5 * t2["marrow"]  # the source: fluid bright
    for seed in range(3):
        t1_bg = synthesise(bg, an, "t1", np.random.default_rng(seed))
        stir_bg = synthesise(bg, an, "stir", np.random.default_rng(seed))
        assert list(t1_bg.images) == ["t1"] and list(stir_bg.images) == ["stir"]  # that sequence alone
        t1 = derive_anatomy(t1_bg, {"L1", "L2", "L3"}, canal_from=an)
        stir = derive_anatomy(stir_bg, {"L1", "L2", "L3"}, canal_from=an)
        assert [f.canal for f in t1.bodies] == [f.canal for f in an.bodies]  # the canal as found on T2
        a, b = t1.tissues["t1"], stir.tissues["stir"]
        # T1: fluid dark (the canal sample takes in some of the toy's cord: below 0.35-0.65x muscle)
        assert a["csf"] < 0.85 * a["muscle"] and a["csf"] < 0.7 * a["marrow"] and a["marrow"] > a["muscle"]
        assert a["disc"] < a["marrow"]
        assert b["csf"] > 1.5 * b["marrow"] and b["marrow"] <= 1.15 * b["muscle"]  # STIR: marrow dark
        # the study's own texture: the marrow's fine structure is kept, not flattened
        core = t1_bg.bodies > 0
        assert np.std(t1_bg.images["t1"][core]) > 0.5 * np.std(bg.images["t2"][core]) * (
            a["marrow"] / t2["marrow"]
        )
    with pytest.raises(ValueError, match="target 'pd'"):
        synthesise(bg, an, "pd", np.random.default_rng(0))


def test_a_lesion_inserted_after_the_synthesis_follows_the_target_sequence(toy) -> None:
    """Painted after the synthesis, a lytic deposit is darker than disc on the T1 made from a T2
    and bright on the STIR, relative to the synthesised tissues (docs/radiology.md)."""
    bg, an = toy
    for target in ("t1", "stir"):
        made = synthesise(bg, an, target, np.random.default_rng(1))
        anat = derive_anatomy(made, {"L1", "L2", "L3"}, canal_from=an)
        ctx = insert_finding(
            made, anat, "lytic_metastasis", anat.bodies[1].label, np.random.default_rng(2), CFG["rates"]
        )
        before = float(made.images[target][ctx.lesion].mean())
        after = float(ctx.images[target][ctx.lesion].mean())
        if target == "t1":
            assert after < before and after < anat.tissues["t1"]["disc"]
        else:
            assert after > 1.2 * before


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_an_insertion_set_writes_every_study_under_each_look(toy_root: Path, tmp_path: Path) -> None:
    from spinelesion.data.manifest import read_manifest
    from spinelesion.insert.dataset import generate_inserted

    base = dict(CFG, backgrounds=str(toy_root), workers=1, progress=False, levels=["L1", "L2", "L3"])
    cfg = dict(
        base,
        output_dir=str(tmp_path / "synth"),
        variants_per_subject=4,
        variant_tag="syn_",
        contrast={"targets": ["t1", "stir"]},
        splits={"train": 0.5, "test": 0.5},
    )
    rows = read_manifest(generate_inserted(cfg), geometry=True).rows
    plain = read_manifest(generate_inserted(dict(cfg, output_dir=str(tmp_path / "as"), contrast={}))).rows
    assert {r.patient_id: r.split for r in rows} == {r.patient_id: r.split for r in plain}  # same split
    studies = {r.study_id: r for r in rows}
    for subject in ("toy_01", "toy_02"):
        # the untouched study once per look (written: a new image), never the acquired files
        assert {f"{subject}_syn_t1", f"{subject}_syn_stir"} <= set(studies) and subject not in studies
        assert set(studies[f"{subject}_syn_t1"].sequences) == {"t1"}
        assert set(studies[f"{subject}_syn_stir"].sequences) == {"stir"}
        inserted = sorted(s for s in studies if s.startswith(f"{subject}_syn_ins"))
        looks = [next(iter(studies[s].sequences)) for s in inserted]
        assert looks == ["t1", "stir", "t1", "stir"]  # the looks in turn
    with pytest.raises(ValueError, match=r"contrast.targets: \['flair'\]"):
        generate_inserted(dict(cfg, contrast={"targets": ["flair"]}))


@pytest.mark.slow  # reads a real study
@pytest.mark.skipif(not (REAL_NORMALS / "vb2_02").is_dir(), reason="needs ../shared/data/real-normals")
def test_a_real_t2_imaged_as_t1_reads_as_a_t1_and_as_stir_has_its_fat_suppressed() -> None:
    """Measured as the input check measures a series (inference/contrast.py): the T1 made from a
    real lumbar T2 has fat brighter than all else and dark fluid, as the real T1 exams of
    real-multisite do; the STIR's subcutaneous fat is darker than muscle (real STIR: 0.2x)."""
    from spinelesion.inference.contrast import contrast_profile, contrast_warning
    from spinelesion.insert.contrast import fat_level
    from spinelesion.io.volume import Volume

    spec = next(
        s for s in discover_backgrounds(REAL_NORMALS, native_mm=CFG["native_mm"]) if s.study_id == "vb2_02"
    )
    bg = load_background(spec)
    an = derive_anatomy(bg, set(CFG["cord_levels"]))
    t1 = synthesise(bg, an, "t1", np.random.default_rng(0))
    profile = contrast_profile(Volume(t1.images["t1"], bg.affine))
    assert profile is not None and contrast_warning("t1", profile) is None
    assert profile.fat_ratio > 1.5 and profile.bright_fraction < 0.02
    stir = synthesise(bg, an, "stir", np.random.default_rng(0))
    anat = derive_anatomy(stir, set(CFG["cord_levels"]), canal_from=an)
    fat = fat_level(stir.images["stir"], bg.affine)
    assert fat is not None and fat < 0.8 * anat.tissues["stir"]["muscle"]
    assert fat_level(bg.images["t2"].astype(np.float32), bg.affine) > 1.5 * an.tissues["t2"]["muscle"]
