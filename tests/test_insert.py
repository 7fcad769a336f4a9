"""Lesion insertion into real backgrounds: anatomy derived from masks, signal relations per
sequence, deformations that stay on the grid, ROI labels and centres where the lesion is.

Most tests use a small toy background written on the fly (three box-shaped bodies, discs,
a CSF-filled canal with a cord); the last ones run on the real normals in ``../shared``
when present.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers_insert import write_toy_backgrounds
from scipy import ndimage

from spinelesion.insert import deform
from spinelesion.insert.anatomy import derive_anatomy
from spinelesion.insert.background import discover_backgrounds, load_background
from spinelesion.insert.findings import FINDINGS, eligible, insert_finding
from spinelesion.io.nifti import read_nifti
from spinelesion.io.volume import apply_affine

ROOT = Path(__file__).resolve().parents[1]
CFG = yaml.safe_load((ROOT / "configs" / "insert.yaml").read_text())
REAL_NORMALS = ROOT.parent / "shared" / "data" / "real-normals"


def toy_cfg(toy_root: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    """The insertion config on the toy backgrounds (three levels, one worker, quiet)."""
    base = dict(CFG, backgrounds=str(toy_root), workers=1, progress=False, levels=["L1", "L2", "L3"])
    return dict(base, output_dir=str(out), **overrides)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_backgrounds(tmp_path_factory.mktemp("backgrounds"))


@pytest.fixture(scope="module")
def toy(toy_root: Path):
    spec = discover_backgrounds(toy_root, levels=["L1", "L2", "L3"])[0]
    bg = load_background(spec)
    return bg, derive_anatomy(bg, cord_levels={"L1", "L2", "L3"})


def test_anatomy_from_masks(toy) -> None:
    bg, an = toy
    assert [b.level for b in an.bodies] == ["L1", "L2", "L3"]
    f = an.bodies[1]
    np.testing.assert_allclose(f.axes[2], [0, 0, 1], atol=1e-6)  # spine axis superior
    np.testing.assert_allclose(f.axes[1], [0, 1, 0], atol=1e-6)  # posterior
    assert 24 <= f.superior - f.inferior <= 27 and 27 <= f.depth <= 31
    # CSF run behind the posterior wall (toy canal: j = 52..65 -> 2..16 mm behind the wall at j = 49).
    assert f.posterior + 0.5 <= f.canal[0] <= f.posterior + 4.0
    assert f.posterior + 12.0 <= f.canal[1] <= f.posterior + 19.0
    t2 = an.tissues["t2"]
    assert t2["csf"] > t2["disc"] > t2["marrow"] > t2["muscle"]
    assert an.tissues["t1"]["marrow"] > an.tissues["t1"]["disc"]
    assert 5.0 < an.noise["t2"] < 12.0


def test_region_points_reach_the_unlabelled_levels(toy) -> None:
    """Normal ROIs around the spine reach past the labelled bodies (the sacrum, the thoracic
    levels above a lumbar mask: where held-out scans made their false calls) and stay inside
    the field of view's ROI margin."""
    import dataclasses

    from spinelesion.insert.dataset import region_points

    bg, an = toy
    # the toy's field of view, 150 mm longer at each end (the same bodies, unlabelled levels beyond)
    affine = bg.affine.copy()
    affine[2, 3] -= 150.0
    tall = dataclasses.replace(
        bg, images={"t2": np.zeros((*bg.shape[:2], bg.shape[2] + 300), np.float32)}, affine=affine
    )
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in tall.shape], indexing="ij")).reshape(3, -1).T
    world = apply_affine(tall.affine, corners.astype(float))
    lo, hi = world.min(0), world.max(0)
    top = max(float(b.to_world(np.array([0.0, 0.0, b.superior]))[2]) for b in an.bodies)
    bottom = min(float(b.to_world(np.array([0.0, 0.0, b.inferior]))[2]) for b in an.bodies)
    near = np.array(region_points(tall, an, 400, np.random.default_rng(0)))
    far = np.array(region_points(tall, an, 400, np.random.default_rng(0), reach_mm=400.0))
    # the default: 25 mm past the first and last endplates along the (vertical) toy spine
    assert bottom - 25.5 <= near[:, 2].min() < bottom - 15 and top + 15 < near[:, 2].max() <= top + 25.5
    # a long reach: the whole field of view along the spine, clipped to its 45 mm ROI margin
    assert far[:, 2].min() < lo[2] + 60 and far[:, 2].max() > hi[2] - 60
    margin = np.minimum([30.0, 45.0, 45.0], 0.4 * (hi - lo))
    assert np.all(far >= lo + margin - 1e-6) and np.all(far <= hi - margin + 1e-6)
    np.testing.assert_allclose(far[:, :2].min(0), near[:, :2].min(0), atol=8.0)  # the same cross-section


def _mean(img: np.ndarray, mask: np.ndarray) -> float:
    return float(img[mask].mean())


@pytest.mark.parametrize("name", sorted(FINDINGS))
def test_every_finding_labels_centre_and_grid(toy, name: str) -> None:
    bg, an = toy
    rng = np.random.default_rng(1)
    body = next(b for b in an.bodies[1:] if eligible(name, an, b))
    ctx = insert_finding(bg, an, name, body.label, rng, CFG["rates"])
    for s, img in ctx.images.items():
        assert img.shape == bg.images[s].shape and np.isfinite(img).all()
    # a degenerative narrowing only moves the study's own tissue (its own test below)
    assert ctx.lesion.any() or name == "degenerative_stenosis", "nothing painted"
    changed = np.abs(ctx.images["t2"] - bg.images["t2"]) > 1.0
    assert changed.any()
    roi = ctx.rois[0]
    assert roi.finding == name
    expected = {
        "lytic_metastasis": ("extradural", "none"),
        "pathologic_fracture": ("extradural", "pathologic"),
        "osteoporotic_fracture": ("none", "benign"),
        "meningioma": ("intradural_extramedullary", "none"),
        "intramedullary_metastasis": ("intramedullary", "none"),
        "haemangioma": ("none", "none"),
        "focal_fat": ("none", "none"),
    }
    if name in expected:
        assert (roi.compartment, roi.fracture) == expected[name]
    ijk = np.round(apply_affine(np.linalg.inv(bg.affine), roi.centre)).astype(int)
    assert np.all(ijk >= 0) and np.all(ijk < bg.shape)
    structure = ctx.lesion | (ctx.bodies > 0) | changed
    near = structure[tuple(slice(max(c - 2, 0), c + 3) for c in ijk)]
    assert near.any(), f"ROI centre of {name} is neither in the lesion, in a body nor where it changed"


def test_signal_relations_per_sequence(toy) -> None:
    """radiology.md: lytic T1 darker than disc and muscle, T2 brighter than marrow; blastic dark;
    the benign fracture's oedema band bright on T2; intramedullary oedema brighter than cord."""
    bg, an = toy
    rates = dict(CFG["rates"], halo=0.0, metastasis_pedicle=0.0, second_deposit=0.0)
    lytic = insert_finding(bg, an, "lytic_metastasis", 2, np.random.default_rng(3), rates)
    m = lytic.lesion & (bg.bodies == 2)
    assert m.sum() > 50
    assert _mean(lytic.images["t1"], m) < min(an.tissues["t1"]["disc"], an.tissues["t1"]["muscle"])
    assert _mean(lytic.images["t2"], m) > an.tissues["t2"]["marrow"] * 1.1
    blastic = insert_finding(bg, an, "blastic_metastasis", 2, np.random.default_rng(3), rates)
    mb = blastic.lesion & (bg.bodies == 2)
    assert _mean(blastic.images["t2"], mb) < an.tissues["t2"]["marrow"] * 0.85
    assert _mean(blastic.images["t1"], mb) < an.tissues["t1"]["marrow"] * 0.7
    im = insert_finding(bg, an, "intramedullary_metastasis", 2, np.random.default_rng(4), rates)
    assert _mean(im.images["t2"], im.lesion) > an.tissues["t2"]["cord"]
    acute = dict(
        rates,
        chronic=0.0,
        fluid_sign=0.0,
        fracture_line=0.0,
        benign_diffuse_oedema=0.0,
        retropulsion=0.0,
        benign_multiple=0.0,
        convex_wall_benign=0.0,
    )
    frac = insert_finding(bg, an, "osteoporotic_fracture", 2, np.random.default_rng(5), acute)
    band = frac.lesion & (frac.bodies == 2)
    rest = (frac.bodies == 2) & ~frac.lesion
    assert _mean(frac.images["t2"], band) > _mean(frac.images["t2"], rest) * 1.1
    assert _mean(frac.images["t1"], band) < _mean(frac.images["t1"], rest) * 0.9


def test_a_chronic_fracture_is_its_shape_alone(toy) -> None:
    """Issue 33: a healed osteoporotic fracture has lost height with no signal change; it is
    labelled a benign fracture and reported apart (osteoporotic_fracture_chronic)."""
    bg, an = toy
    rates = dict(
        CFG["rates"],
        chronic=1.0,
        fluid_sign=1.0,
        retropulsion=0.0,
        benign_multiple=0.0,
        convex_wall_benign=0.0,
    )
    ctx = insert_finding(bg, an, "osteoporotic_fracture", 2, np.random.default_rng(5), rates)
    assert [(r.compartment, r.fracture, r.finding) for r in ctx.rois] == [
        ("none", "benign", "osteoporotic_fracture_chronic")
    ]
    assert (ctx.bodies == 2).sum() < 0.9 * (bg.bodies == 2).sum()  # height lost
    assert not ctx.lesion.any()  # nothing painted: no oedema, band or fluid cleft
    core = ndimage.binary_erosion(ctx.bodies == 2, iterations=2)
    for seq in ("t1", "t2"):  # the marrow keeps its signal
        assert _mean(ctx.images[seq], core) == pytest.approx(an.tissues[seq]["marrow"], rel=0.1)


def test_degenerative_stenosis_pinches_the_sac_at_a_disc_with_the_studys_own_tissue(toy) -> None:
    """A normal variant (none/none): at a disc the sac narrows from the front (the disc's back) and
    from behind (the ligamenta flava), by tissue moved in, nothing painted; the canal behind the
    bodies keeps its width; ROIs on the narrowing and the canal above and below."""
    bg, an = toy
    ctx = insert_finding(bg, an, "degenerative_stenosis", 2, np.random.default_rng(3), CFG["rates"])
    assert [(r.compartment, r.fracture, r.finding) for r in ctx.rois] == [
        ("none", "none", "degenerative_stenosis")
    ] * 3
    assert not ctx.lesion.any()  # moved, not painted
    inverse = np.linalg.inv(bg.affine)
    narrowed, *beside = (np.round(apply_affine(inverse, r.centre)).astype(int) for r in ctx.rois)

    def sac_depth(images: dict[str, np.ndarray], k: int) -> float:
        """The sac front to back (mm: first to last CSF voxel) at slice k, over its middle columns."""
        spans = []
        for i in range(22, 35):
            csf = np.flatnonzero(images["t2"][i, 45:75, k] > 450.0)
            spans.append(csf[-1] - csf[0] + 1 if len(csf) else 0)
        return float(np.mean(spans))

    assert sac_depth(bg.images, narrowed[2]) == 14.0  # the toy's sac
    for k in (narrowed[2] - 1, narrowed[2], narrowed[2] + 1):  # the disc level: pinched
        assert sac_depth(ctx.images, k) <= 14.0 - 2.5
    for centre in beside:  # behind the bodies: the hourglass's wide ends
        assert sac_depth(ctx.images, centre[2]) >= 14.0 - 2.5
    assert 93 <= narrowed[2] <= 102 or 57 <= narrowed[2] <= 66  # a disc's level (toy: k 93-102, 57-66)
    far = np.zeros(bg.shape, dtype=bool)
    far[:, :, : max(narrowed[2] - 45, 0)] = far[:, :, narrowed[2] + 45 :] = True
    assert far.any()
    np.testing.assert_allclose(
        ctx.images["t2"][far], bg.images["t2"][far], atol=0.5
    )  # as it was (noise sd 8)


def _collapsed(ctx, ratios, shapes) -> tuple[str, float, float]:
    """Collapse ``ctx``'s body; (shape, its Genant ratio before, the same measured on the grid after)."""
    from spinelesion.insert import findings as insert_findings
    from spinelesion.insert.anatomy import column_heights

    before = column_heights(ctx.loc, ctx.body_mask() > 0.5, ctx.frame)
    shape = insert_findings._collapse(ctx, ratios, shapes)
    measured, reference = insert_findings.SHAPES[shape]
    after = column_heights(ctx.loc, ctx.body_mask() > 0.5, ctx.frame)
    if reference is None:  # the crush: the body's height against its neighbours' (toy: all alike)
        return shape, 1.0, after[measured] / before[measured]
    return shape, before[measured] / before[reference], after[measured] / after[reference]


@pytest.mark.parametrize("shape", ["wedge", "biconcave", "crush"])
def test_a_fracture_ends_at_a_genant_ratio_whatever_the_body_was(toy, shape: str) -> None:
    """Genant: a fracture is called from its shape, a fifth of the height gone. Drawn at the mildest
    end of both ranges, every shape ends at the more compressed of GENANT_RATIO (below any normal
    body) and 0.8 of the body's own ratio, measured on the grid (the toy's 1 mm voxels: a step is
    2 mm of 25); a body that wedged by nature before (as T11-T12 do) ends lower than a straight one."""
    from spinelesion.insert import findings as insert_findings

    bg, an = toy
    ends = []
    for pre_wedge in (0.0, 0.16):
        ctx = insert_findings.Insert(bg, an, an.body(2), np.random.default_rng(0), CFG["rates"])
        if pre_wedge:  # a naturally wedged body (anterior/posterior 0.84 on the toy's grid)
            ctx.warp(deform.collapse(ctx.frame, pre_wedge, 0.0))
        ctx.u = lambda lo, hi: float(hi)  # type: ignore[method-assign]  # the mildest fracture
        _, start, end = _collapsed(ctx, insert_findings.OSTEOPOROTIC_RATIO, {shape: 1.0})
        expected = min(insert_findings.GENANT_RATIO, insert_findings.OWN_KEPT[1] * start)
        assert end == pytest.approx(expected, abs=0.05), (pre_wedge, start, end)
        ends.append(end)
    if shape == "wedge":  # 0.8 of the wedged body's own 0.84: below the straight body's 0.75
        assert ends[1] < ends[0] - 0.04, ends


def test_every_fracture_drawn_is_below_the_genant_line(toy) -> None:
    """Every draw of either fracture, whatever shape its rng picks, ends compressed to at most 0.8
    (grade 1) of its reference: none is left inside a normal body's variation."""
    from spinelesion.insert import findings as insert_findings

    bg, an = toy
    shapes = {"wedge": 0.4, "biconcave": 0.3, "crush": 0.3}
    seen = set()
    for ratios in (insert_findings.OSTEOPOROTIC_RATIO, insert_findings.PATHOLOGIC_RATIO):
        for seed in range(6):
            ctx = insert_findings.Insert(bg, an, an.body(2), np.random.default_rng(seed), CFG["rates"])
            shape, _, end = _collapsed(ctx, ratios, shapes)
            seen.add(shape)
            assert ratios[0] - 0.08 <= end <= 0.8, (ratios, seed, shape, end)
    assert seen == set(shapes)


def test_intramedullary_variants_follow_the_cord(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 34: cord oedema over 1-6 segments along the cord (longer oedema reaches further,
    never beyond the cord's run), an eccentric nodule off the cord's centre, a cyst as fluid."""
    import spinelesion.insert.findings as findings

    bg, an = toy
    rates = dict(CFG["rates"], im_eccentric=1.0, im_cyst=1.0, im_haemorrhage=0.0, cord_expansion=1.0)
    z = np.arange(bg.shape[2])[None, None, :] * bg.spacing[2]

    def extent(segments: float, seed: int) -> tuple[float, findings.Insert]:
        monkeypatch.setattr(findings, "IM_OEDEMA_SEGMENTS", (segments, segments))
        ctx = insert_finding(bg, an, "intramedullary_metastasis", 2, np.random.default_rng(seed), rates)
        zs = np.broadcast_to(z, bg.shape)[ctx.lesion]
        return float(zs.max() - zs.min()), ctx

    short, _ = extent(1.0, 3)
    long, ctx = extent(5.0, 3)
    assert long > 1.8 * short
    frame = an.body(2)
    run = [b for b in an.bodies if b.has_cord]
    t = frame.to_local(np.stack(np.nonzero(ctx.lesion), -1) @ bg.affine[:3, :3].T + bg.affine[:3, 3])[:, 2]
    ends = [frame.to_local(b.centre)[2] for b in run]
    assert t.min() >= min(ends) - frame.half_height - 4.0 and t.max() <= max(ends) + frame.half_height + 4.0
    roi = ctx.rois[0]
    axis = findings._cord_axis(ctx)
    off = frame.to_local(roi.centre)[:2] - axis
    assert np.linalg.norm(off) > 0.3  # eccentric
    # the cyst, against the same draw without one: CSF-bright voxels inside the cord's run
    monkeypatch.setattr(findings, "IM_OEDEMA_SEGMENTS", (2.0, 2.0))
    pair = [
        insert_finding(
            bg, an, "intramedullary_metastasis", 2, np.random.default_rng(5), dict(rates, im_cyst=c)
        )
        for c in (0.0, 1.0)
    ]
    cyst = pair[1].images["t2"] - pair[0].images["t2"] > 20.0
    assert cyst.sum() > 5
    assert pair[1].images["t2"][cyst].max() > 0.9 * an.tissues["t2"]["csf"]  # a small cyst: its core


def test_discitis_fluid_varies_in_width(toy) -> None:
    """Issue 34: the fluid crossing the disc is the sign, not one ellipse's size: over draws it fills
    from about half the disc's width to all of it."""
    bg, an = toy
    rates = dict(CFG["rates"], discitis_phlegmon=0.0)
    f = an.body(2)
    widths = []
    for seed in range(8):
        ctx = insert_finding(bg, an, "discitis", 2, np.random.default_rng(seed), rates)
        fluid = ctx.lesion & (ctx.bodies == 0)  # painted outside the bodies: the disc's fluid
        widths.append(float(np.abs(_local(bg, f, fluid)[:, 0]).max()) / f.half_width)
    assert min(widths) < 0.7 and max(widths) > 0.9, widths


def test_discitis_phlegmon_lies_outside_the_bodies(toy) -> None:
    bg, an = toy
    rates = dict(CFG["rates"], discitis_phlegmon=1.0)
    without = insert_finding(
        bg, an, "discitis", 2, np.random.default_rng(8), dict(rates, discitis_phlegmon=0.0)
    )
    with_ = insert_finding(bg, an, "discitis", 2, np.random.default_rng(8), rates)
    extra = with_.lesion & ~without.lesion
    assert extra.sum() > 30 and not (extra & (bg.bodies > 0)).any()
    assert [(r.compartment, r.fracture, r.finding) for r in with_.rois] == [("none", "none", "discitis")]


def test_a_sets_extents_widen_a_signs_reach_and_the_defaults_draw_as_before(toy) -> None:
    """configs/insert.yaml ``extents``: discitis's marrow oedema reaches as far as the set asks
    (the sign is the disc crossed, not the oedema's depth); the defaults are the former ranges,
    so a seed draws the same study; a name the insertion does not know is refused."""
    bg, an = toy
    rates = dict(CFG["rates"], discitis_phlegmon=0.0)
    short = {"discitis_oedema_mm": (3.0, 3.0)}
    deep = {"discitis_oedema_mm": (20.0, 20.0)}
    a = insert_finding(bg, an, "discitis", 2, np.random.default_rng(8), rates, short)
    b = insert_finding(bg, an, "discitis", 2, np.random.default_rng(8), rates, deep)
    in_bodies = [(ctx.lesion & (bg.bodies > 0)).sum() for ctx in (a, b)]
    assert in_bodies[1] > 2 * in_bodies[0]
    default = insert_finding(bg, an, "discitis", 2, np.random.default_rng(8), rates)
    same = insert_finding(bg, an, "discitis", 2, np.random.default_rng(8), rates, CFG["extents"])
    np.testing.assert_array_equal(default.images["t2"], same.images["t2"])
    with pytest.raises(ValueError, match="unknown extents discitis_depth_mm; known: discitis_oedema_mm"):
        insert_finding(bg, an, "discitis", 2, np.random.default_rng(8), rates, {"discitis_depth_mm": (1, 2)})


def test_focal_fat_is_fat_signal_and_normal(toy) -> None:
    """A fat island (normal variant): brighter than the marrow around it on T1 and T2, inside
    the body, labelled none/none at the body centre."""
    bg, an = toy
    ctx = insert_finding(bg, an, "focal_fat", 2, np.random.default_rng(6), CFG["rates"])
    m = ctx.lesion & (bg.bodies == 2)
    assert m.sum() > 20 and not (ctx.lesion & (bg.bodies != 2)).any()
    rest = (bg.bodies == 2) & ~ctx.lesion
    assert _mean(ctx.images["t1"], m) > _mean(ctx.images["t1"], rest) * 1.05
    assert _mean(ctx.images["t2"], m) > _mean(ctx.images["t2"], rest) * 1.03
    assert [(r.compartment, r.fracture, r.finding) for r in ctx.rois] == [("none", "none", "focal_fat")]


def test_collapse_and_bulge_change_shape_on_the_grid(toy) -> None:
    bg, an = toy
    f = an.bodies[1]
    from spinelesion.insert.findings import Insert

    ctx = Insert(bg, an, f, np.random.default_rng(0), CFG["rates"])
    before = int((ctx.bodies == f.label).sum())
    ctx.warp(deform.collapse(f, 0.4, 0.1))
    after = ctx.bodies == f.label
    assert 0.6 * before < after.sum() < 0.9 * before
    # Wedge: the anterior column lost more height than the posterior one.
    j_front, j_back = 23, 46
    h_front = after[28, j_front].sum()
    h_back = after[28, j_back].sum()
    assert h_front < h_back
    # Neighbours untouched far away, grid unchanged.
    assert (ctx.bodies[..., :20] == bg.bodies[..., :20]).all()
    ctx2 = Insert(bg, an, f, np.random.default_rng(0), CFG["rates"])
    ctx2.warp(deform.bulge_posterior(f, 4.0))
    wall_before = np.flatnonzero(bg.bodies[28, :, 79] == f.label).max()
    wall_after = np.flatnonzero(ctx2.bodies[28, :, 79] == f.label).max()
    assert wall_after >= wall_before + 2  # posterior wall bulges into the canal


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_dataset_manifest_splits_and_crops(toy_root: Path, tmp_path: Path) -> None:
    from spinelesion.data.manifest import read_manifest
    from spinelesion.insert.dataset import generate_inserted

    cfg = toy_cfg(
        toy_root,
        tmp_path / "out",
        variants_per_subject=3,
        splits={"train": 0.5, "test": 0.5},
    )
    path = generate_inserted(cfg)
    manifest = read_manifest(path, geometry=True)  # every ROI inside its study
    rows = manifest.rows
    assert {r.patient_id for r in rows} == {"toy_01", "toy_02"}
    for subject in ("toy_01", "toy_02"):
        assert len({r.split for r in rows if r.patient_id == subject}) == 1
    untouched = [r for r in rows if r.study_id == "toy_01"]
    assert untouched and all(r.finding == "normal" for r in untouched)
    assert untouched[0].sequences["t2"].resolve() == (toy_root / "toy_01" / "t2.nii.gz").resolve()
    inserted = [r for r in rows if r.study_id.startswith("toy_01_ins")]
    assert len({r.study_id for r in inserted}) == 3 and all(r.finding != "normal" for r in inserted)
    crop = read_nifti(inserted[0].sequences["t2"])
    full = read_nifti(toy_root / "toy_01" / "t2.nii.gz")
    assert crop.array.dtype == np.float32 and np.all(np.asarray(crop.shape) <= np.asarray(full.shape))
    # The crop keeps the study's geometry: a voxel far from the lesion is unchanged at the same LPS point.
    corner = crop.voxel_to_world(np.zeros(3))
    ijk = np.round(full.world_to_voxel(corner)).astype(int)
    assert crop.array[0, 0, 0] == full.array[tuple(ijk)]
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    assert header[:4] == ["case_id", "study_id", "patient_id", "split"]


def test_appearance_draws_fall_alike_on_normals_and_lesions_of_the_drawn_splits(
    toy_root: Path, tmp_path: Path
) -> None:
    """Appearance on: a train subject's untouched and inserted studies are drawn (prob 1 here),
    a test subject's stay as acquired, and ``copies`` randomised copies of every untouched study
    join it with the same kinds of normal ROIs."""
    from spinelesion.data.manifest import read_manifest
    from spinelesion.insert.dataset import generate_inserted

    base = toy_cfg(
        toy_root, tmp_path / "plain", variants_per_subject=2, seed=4, splits={"train": 0.5, "test": 0.5}
    )
    drawn = dict(
        base,
        output_dir=str(tmp_path / "drawn"),
        appearance={"enabled": True, "prob": 1.0, "splits": ["train"], "copies": 1},
    )
    plain_rows = read_manifest(generate_inserted(base)).rows
    rows = read_manifest(generate_inserted(drawn), geometry=True).rows
    split = {r.patient_id: r.split for r in rows}
    train, test = (next(p for p, s in split.items() if s == k) for k in ("train", "test"))
    studies = {r.study_id for r in rows}
    # train: the untouched study itself is a drawn copy; test: the original, referenced in place
    assert f"{train}_app" in studies and train not in studies
    assert test in studies and f"{test}_app" not in studies
    assert {f"{train}_app00", f"{test}_app00"} <= studies  # the stability copies, every split
    original = [r for r in rows if r.study_id == test]
    copy = [r for r in rows if r.study_id == f"{test}_app00"]
    assert len(copy) == len(original) and all(r.finding == "normal" for r in copy)
    assert original[0].sequences["t2"].resolve() == (toy_root / test / "t2.nii.gz").resolve()
    # Same lesions (the finding draws do not move), other grey levels on the train subject only.
    a = {r.study_id: r for r in plain_rows if "_ins" in r.study_id}
    b = {r.study_id: r for r in rows if "_ins" in r.study_id}
    assert a.keys() == b.keys() and all(a[k].finding == b[k].finding for k in a)
    for sid in a:
        before = read_nifti(a[sid].sequences["t2"]).array
        after = read_nifti(b[sid].sequences["t2"]).array
        assert before.shape == after.shape
        assert np.allclose(before, after) == sid.startswith(test)


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_twins_are_the_same_crop_and_look_without_the_finding(toy_root: Path, tmp_path: Path) -> None:
    """twins: each inserted study of the twin splits has a twin, the same crop of the untouched
    study under the same appearance draw, with a normal ROI at each inserted ROI's centre named by
    its place; the pair differs only where the finding is. Off (the default): no twin, and the
    inserted studies are those of the stream as it always was."""
    from spinelesion.data.manifest import place_of, read_manifest
    from spinelesion.insert.dataset import generate_inserted

    look = {"enabled": True, "prob": 1.0, "splits": ["train"]}
    common = dict(variants_per_subject=3, seed=4, splits={"train": 1.0}, appearance=look)
    plain = read_manifest(generate_inserted(toy_cfg(toy_root, tmp_path / "off", **common))).rows
    cfg = toy_cfg(toy_root, tmp_path / "on", twins=True, **common)
    rows = read_manifest(generate_inserted(cfg), geometry=True).rows
    assert not [r for r in plain if "_twin" in r.study_id]
    inserted = [r for r in rows if "_ins" in r.study_id and not r.study_id.endswith("_twin")]
    twins = {r.case_id: r for r in rows if r.study_id.endswith("_twin")}
    assert inserted and len(twins) == len(inserted)
    # with twins off the inserted studies are the same draws (the seed of a twin's look is extra)
    before = {r.case_id: r for r in plain if "_ins" in r.study_id}
    assert {r.case_id: r.finding for r in inserted} == {k: r.finding for k, r in before.items()}
    lesion_seen = 0
    for r in inserted:
        k = r.case_id.rsplit("_r", 1)[1]
        place = (
            "canal" if r.labels["compartment"] in ("intradural_extramedullary", "intramedullary") else "body"
        )
        t = twins[f"{r.study_id}_twin_{place}{int(k):02d}"]
        assert place_of(t.case_id) == place and t.finding == "normal"
        assert (t.labels["compartment"], t.labels["fracture"]) == ("none", "none")
        np.testing.assert_allclose(t.center_lps, r.center_lps)
        a, b = read_nifti(r.sequences["t2"]), read_nifti(t.sequences["t2"])
        np.testing.assert_allclose(a.affine, b.affine)  # the same crop
        same = np.isclose(a.array, b.array, atol=1.0)
        assert same.mean() > 0.6  # the same look: most of the crop equal, voxel for voxel
        lesion_seen += int(not same.all())
    assert lesion_seen == len(inserted)  # every pair differs somewhere: the finding
    # training pairs only: mining and the scan operating point read the untouched whole studies
    from spinelesion.tasks.hard_negatives import study_rows, untouched_studies

    manifest = Path(cfg["output_dir"]) / "manifest.csv"
    mined = {u.study_id for u in untouched_studies(manifest)}
    assert mined and not any(sid.endswith("_twin") for sid in mined)
    assert not any(sid.endswith("_twin") for sid in study_rows(manifest, ("train", "val", "test")))


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_two_drawn_sets_of_the_same_subjects_mix(toy_root: Path, tmp_path: Path) -> None:
    """The release's real_insert and its dense normals both draw looks for the train subjects:
    the drawn studies' ids carry each set's tags, so one training reads both (a clash of
    ``<study>_app`` stopped the release's finetune1 on 2026-12-06)."""
    from spinelesion.data.datamodule import read_manifests
    from spinelesion.insert.dataset import generate_inserted

    look = {"enabled": True, "prob": 1.0, "splits": ["train", "val", "test"], "copies": 0}
    first = generate_inserted(toy_cfg(toy_root, tmp_path / "a", variants_per_subject=0, appearance=look))
    dense = dict(CFG["normal_rois"], tag="dense_", per_body=1)
    second = generate_inserted(
        toy_cfg(toy_root, tmp_path / "b", variants_per_subject=0, appearance=look, normal_rois=dense)
    )
    rows = read_manifests([first, second]).rows  # raised "also appears ... with other files" before
    studies = {r.study_id for r in rows}
    assert {"toy_01_app", "toy_01_dense_app"} <= studies


def test_levels_named_up_from_the_lowest_body() -> None:
    from spinelesion.insert.background import levels_from_bottom

    assert levels_from_bottom([3, 1, 2], "L5", "s") == {1: "L3", 2: "L4", 3: "L5"}
    with pytest.raises(ValueError, match="s: 3 labelled bodies cannot end at C2"):
        levels_from_bottom([1, 2, 3], "C2", "s")
    with pytest.raises(ValueError, match="unknown bottom level 'S1'"):
        levels_from_bottom([1], "S1", "s")


MULTISITE = ROOT.parent / "shared" / "data" / "real-multisite"


@pytest.mark.slow  # reads three real exams
@pytest.mark.skipif(not (MULTISITE / "vb1_02").is_dir(), reason="needs ../shared/data/real-multisite")
def test_multisite_exams_are_backgrounds_in_their_own_sequence() -> None:
    """VB1: one patient's exams share a subject, bodies are named up from L5, and each
    sequence's CSF and inserted lesions follow that sequence's radiology."""
    specs = {
        s.study_id: s
        for s in discover_backgrounds(MULTISITE, CFG["levels"], CFG["native_mm"], CFG["bottom_level"])
    }
    assert {k for k in specs if k.startswith("vb1_")} == {p.name for p in MULTISITE.glob("vb1_*")}
    assert specs["vb1_02"].subject == specs["vb1_03"].subject == "vb1_p1"  # T1 and STIR of one patient
    for sid, seq in (("vb1_02", "t1"), ("vb1_03", "stir"), ("vb1_11", "t2")):
        bg = load_background(specs[sid])
        assert list(bg.images) == [seq] and bg.slice_axis() == 2  # sagittal slices along R-L
        an = derive_anatomy(bg, set(CFG["cord_levels"]))
        assert an.bodies[-1].level == "L5" and an.bodies[0].level == "T9"
        t = an.tissues[seq]
        if seq == "t1":
            assert t["csf"] < t["marrow"]  # fluid dark on T1
        else:
            assert t["csf"] > 1.5 * t["marrow"]  # fluid bright on T2 and STIR
        ctx = insert_finding(
            bg, an, "lytic_metastasis", an.bodies[5].label, np.random.default_rng(1), CFG["rates"]
        )
        inside = ctx.lesion
        before, after = float(bg.images[seq][inside].mean()), float(ctx.images[seq][inside].mean())
        if seq == "t1":
            assert after < before and after < t["disc"]  # darker than disc on T1
        else:
            assert after > 1.2 * before  # bright on T2 and STIR


@pytest.mark.slow  # > 3 s on the 2-core CPU
@pytest.mark.skipif(not (REAL_NORMALS / "vb2_02").is_dir(), reason="needs ../shared/data/real-normals")
def test_real_background_anatomy_and_insertion() -> None:
    specs = discover_backgrounds(REAL_NORMALS, native_mm=CFG["native_mm"])
    spec = next(s for s in specs if s.study_id == "vb2_02")
    bg = load_background(spec)
    an = derive_anatomy(bg, set(CFG["cord_levels"]))
    assert [b.level for b in an.bodies] == ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    t2 = an.tissues["t2"]
    assert t2["csf"] > 1.3 * t2["marrow"]  # CSF very bright on T2
    for f in an.bodies:
        assert 5.0 < f.canal[1] - f.canal[0] < 25.0
        assert 20.0 < f.depth < 45.0
    assert [f.has_cord for f in an.bodies] == [True, True, False, False, False, False, False]
    # Blurred along L-R like the 3.8 mm sagittal acquisition it was resampled from.
    sigma = bg.native_sigma_vox()
    assert sigma[2] > 1.4 and sigma[0] < 0.6
    ctx = insert_finding(bg, an, "pathologic_fracture", 4, np.random.default_rng(0), CFG["rates"])
    body = ctx.bodies == 4
    assert body.sum() < (bg.bodies == 4).sum()  # collapsed
    assert ctx.images["t2"].dtype == np.float32 and bg.dtypes["t2"] == np.uint8


def test_training_mix_reads_several_manifests(toy_root: Path, tmp_path: Path) -> None:
    """data.manifest may list several manifests (phantom + real-insert); ids must not clash."""
    from spinelesion.data.datamodule import SpineDataModule, read_manifests
    from spinelesion.data.manifest import read_manifest, write_manifest
    from spinelesion.insert.dataset import generate_inserted

    cfg = toy_cfg(
        toy_root,
        tmp_path / "a",
        variants_per_subject=1,
        normal_rois={"per_body": 1},
    )
    first = generate_inserted(cfg)
    with open(first, newline="") as fh:
        records = list(csv.DictReader(fh))
    for r in records:  # the same studies under other ids, paths made absolute for the other folder
        for key in ("case_id", "study_id", "patient_id"):
            r[key] = r[key].replace("toy_0", "other_0")
        for seq in ("t1", "t2"):
            r[seq] = str((first.parent / r[seq]).resolve()) if r[seq] else ""
    second = write_manifest(tmp_path / "b" / "manifest.csv", records)
    mix = read_manifests([first, second], check_files=True)
    n = len(read_manifests([first]).rows)
    assert len(mix.rows) == 2 * n
    assert {r.source for r in mix.rows} == {"a", "b"}  # each row knows its set (data.source_weights)
    assert {r.patient_id for r in mix.rows} == {"toy_01", "toy_02", "other_01", "other_02"}
    with pytest.raises(ValueError, match="unique across the manifests"):
        read_manifests([first, first])
    # More normal ROIs on the same untouched studies (another manifest) join the mix ...
    dense_cfg = dict(
        cfg,
        output_dir=str(tmp_path / "dense"),
        variants_per_subject=0,
        normal_rois={"per_body": 0, "discs": False, "canal": False, "background": 0, "region": 4},
    )
    dense = generate_inserted(dense_cfg)
    dense_rows = read_manifest(dense, geometry=True).rows
    assert len(dense_rows) == 8 and all("_region" in r.case_id for r in dense_rows)
    assert len(read_manifests([first, dense]).rows) == n + 8
    # ... but a study id naming other files does not.
    with open(dense, newline="") as fh:
        recs = list(csv.DictReader(fh))
    for r in recs:
        r["case_id"] = r["case_id"] + "_x"
        r["t2"] = str((toy_root / "toy_02" / "t2.nii.gz").resolve()) if r["study_id"] == "toy_01" else r["t2"]
        r["t1"] = ""
    clash = write_manifest(tmp_path / "clash" / "manifest.csv", recs)
    with pytest.raises(ValueError, match="with other files"):
        read_manifests([first, clash])
    dm = SpineDataModule([first, second], cache_dir=None, progress=False, check_geometry=False)
    assert len(dm.load_manifest().rows) == 2 * n


def test_dense_canal_normals_sit_in_each_levels_canal(toy_root: Path, tmp_path: Path) -> None:
    """normal_rois.per_canal: the canal centre of every level and jittered copies of it, all
    normal (the real cord and roots seen as they are, where intradural lesions get painted)."""
    from spinelesion.data.manifest import read_manifest
    from spinelesion.insert.dataset import generate_inserted

    cfg = toy_cfg(
        toy_root,
        tmp_path / "canal",
        variants_per_subject=0,
        normal_rois={"per_body": 0, "discs": False, "per_canal": 4, "tag": "dense_"},
    )
    rows = read_manifest(generate_inserted(cfg), geometry=True).rows
    assert {r.finding for r in rows} == {"normal"} and all("_dense_canal" in r.case_id for r in rows)
    by_level: dict[tuple[str, str], list[np.ndarray]] = {}
    for r in rows:
        by_level.setdefault((r.study_id, r.level), []).append(np.asarray(r.center_lps))
    assert len(by_level) == 2 * 3 and all(len(v) == 4 for v in by_level.values())
    for points in by_level.values():
        centre, copies = points[0], np.array(points[1:])
        offsets = np.abs(copies - centre)
        assert offsets.max() <= 3.0 + 1e-6 and offsets.max() > 0.1  # jittered, within the jitter


def test_canal_normals_between_bodies_sit_behind_each_disc(toy_root: Path, tmp_path: Path) -> None:
    """normal_rois.per_canal_between: the canal between two bodies (where the conus often ends),
    halfway between the two levels' canal centres, and jittered copies, all normal."""
    from spinelesion.data.manifest import read_manifest
    from spinelesion.insert.dataset import generate_inserted

    def rows_with(**normal_rois: object) -> list:
        cfg = toy_cfg(
            toy_root, tmp_path / str(len(normal_rois)), variants_per_subject=0, normal_rois=normal_rois
        )
        return read_manifest(generate_inserted(cfg), geometry=True).rows

    base = {"per_body": 0, "discs": False, "background": 0, "region": 0}
    canal = rows_with(**base, canal=True, per_canal=1, tag="c_")
    between = rows_with(**base, canal=False, per_canal_between=3, tag="b_")
    assert {r.finding for r in between} == {"normal"} and all(
        "_b_canal_between" in r.case_id for r in between
    )
    for study in {r.study_id for r in canal}:
        centres = {r.level: np.asarray(r.center_lps) for r in canal if r.study_id == study}
        levels = sorted(centres, key=lambda lv: -centres[lv][2])  # superior first
        mine = [r for r in between if r.study_id == study]
        assert len(mine) == 3 * (len(levels) - 1)  # one gap per pair of neighbouring bodies
        for upper, lower in zip(levels, levels[1:], strict=False):
            points = np.array([r.center_lps for r in mine if r.level == upper])
            expected = 0.5 * (centres[upper] + centres[lower])
            # the first halfway between the canal centres (along the canal's own axis), copies jittered
            assert np.linalg.norm(points[0] - expected) < 3.0
            assert (
                min(centres[upper][2], centres[lower][2])
                < points[0][2]
                < max(centres[upper][2], centres[lower][2])
            )
            assert np.abs(points[1:] - points[0]).max() <= 3.0 + 1e-6


def test_canal_wall_normals_ring_each_levels_sac(toy_root: Path, tmp_path: Path) -> None:
    """normal_rois.per_canal_wall: points on the dural sac's wall behind each body, all normal, at
    every angle around the sac (dorsal and ventral, both sides), off the canal centre by about the
    sac's own radius and within the body's height."""
    from spinelesion.data.manifest import place_of, read_manifest
    from spinelesion.insert.dataset import canal_wall_point, generate_inserted

    cfg = toy_cfg(
        toy_root,
        tmp_path / "wall",
        variants_per_subject=0,
        normal_rois={"per_body": 0, "discs": False, "canal": False, "per_canal_wall": 5, "tag": "w_"},
    )
    rows = read_manifest(generate_inserted(cfg), geometry=True).rows
    assert len(rows) == 2 * 3 * 5 and {r.finding for r in rows} == {"normal"}
    assert {place_of(r.case_id) for r in rows} == {"canal_wall"}
    assert {(r.labels["compartment"], r.labels["fracture"]) for r in rows} == {("none", "none")}

    # the local geometry of a drawn point, on a frame whose sac is 12 mm deep
    from spinelesion.insert.anatomy import BodyFrame

    frame = BodyFrame(
        label=1,
        level="L3",
        centre=np.zeros(3),
        axes=np.eye(3),
        half_width=20.0,
        anterior=-16.0,
        posterior=16.0,
        inferior=-12.0,
        superior=12.0,
        canal=(18.0, 30.0),
    )
    rng = np.random.default_rng(0)
    points = np.array([canal_wall_point(frame, rng) for _ in range(400)])
    lat, p, t = points.T
    half_depth, half_width = 6.0, 8.4  # 1.4 x the depth, inside 6-12 mm
    radius = np.hypot(lat / half_width, (p - 24.0) / half_depth)  # 1 on the ellipse
    assert radius.min() >= 0.85 - 1e-9 and radius.max() <= 1.15 + 1e-9
    assert p.min() < 18.0 + 1.0 and p.max() > 30.0 - 1.0  # the ventral and the dorsal wall both
    assert lat.min() < -7.0 and lat.max() > 7.0  # and both sides
    assert np.abs(t).max() <= 0.8 * 12.0 + 1e-9 and np.ptp(t) > 12.0


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_a_second_insertion_set_of_the_same_subjects_mixes(toy_root: Path, tmp_path: Path) -> None:
    """variant_tag: inserted study ids of a second set (e.g. more intradural lesions) stay
    unique beside the first set's, so both join one training mix."""
    from spinelesion.data.datamodule import read_manifests
    from spinelesion.insert.dataset import generate_inserted

    first = generate_inserted(toy_cfg(toy_root, tmp_path / "a", variants_per_subject=1))
    weights = {k: (1.0 if k == "meningioma" else 0.0) for k in CFG["finding_weights"]}
    second = generate_inserted(
        toy_cfg(
            toy_root,
            tmp_path / "b",
            variants_per_subject=1,
            variant_tag="idem_",
            seed=1,
            finding_weights=weights,
            normal_rois={"per_body": 0, "discs": False, "canal": False, "background": 0, "region": 0},
        )
    )
    rows = read_manifests([second]).rows
    assert rows and all("_idem_ins" in r.study_id for r in rows)
    assert {r.finding for r in rows} == {"meningioma"}
    mix = read_manifests([first, second]).rows
    assert len(mix) == len(read_manifests([first]).rows) + len(rows)


# -- the plain renderer (spinelesion.insert.plain): every class, drawn apart from the insertion
def _heights(body: np.ndarray, bg, frame) -> tuple[float, float, float]:
    """(anterior, middle, posterior) height in mm of a body mask along the spine axis."""
    ijk = np.argwhere(body)
    loc = frame.to_local(apply_affine(bg.affine, ijk.astype(float)))
    heights = []
    for p in (frame.anterior + 4.0, 0.5 * (frame.anterior + frame.posterior), frame.posterior - 4.0):
        near = (np.abs(loc[:, 1] - p) < 1.0) & (np.abs(loc[:, 0]) < 4.0)
        heights.append(float(np.ptp(loc[near, 2])) + 1.0)
    return heights[0], heights[1], heights[2]


def _local(bg, frame, mask: np.ndarray) -> np.ndarray:
    return frame.to_local(apply_affine(bg.affine, np.argwhere(mask).astype(float)))


@pytest.mark.parametrize("seed", [0, 1])
def test_plain_findings_follow_the_radiology_and_stay_on_the_grid(toy, seed: int) -> None:
    from spinelesion.insert.plain import PLAIN_FINDINGS, render_plain

    bg, an = toy
    f = an.bodies[1]
    marrow = {s: float(np.median(img[bg.bodies == f.label])) for s, img in bg.images.items()}
    csf = an.tissues["t2"]["csf"]
    ant0, mid0, post0 = _heights(bg.bodies == f.label, bg, f)
    far = np.ones(bg.shape, dtype=bool)
    far[:, :, 20:120] = False  # well above and below the middle body and its discs
    for name in PLAIN_FINDINGS:
        st = render_plain(bg, f, name, np.random.default_rng(seed), an)
        for s, img in st.images.items():
            assert img.shape == bg.shape and np.isfinite(img).all()
            if name != "intramedullary_metastasis":  # its oedema may run the cord's length
                np.testing.assert_array_equal(img[far], bg.images[s][far].astype(np.float32))
        assert st.lesion.any() == (name != "osteoporotic_fracture_chronic"), name
        ijk = tuple(np.round(apply_affine(np.linalg.inv(bg.affine), st.centre)).astype(int))
        ant, mid, post = _heights(st.body, bg, f)
        core = st.lesion & st.body
        loc = _local(bg, f, st.lesion)
        if name == "lytic_metastasis":
            assert st.body[ijk] and not (st.lesion & ~(bg.bodies == f.label)).any()  # in the body
            assert (ant, mid, post) == (ant0, mid0, post0)
            assert _mean(st.images["t2"], core) > 1.4 * marrow["t2"]  # T2 bright
            assert _mean(st.images["t1"], core) < 0.7 * marrow["t1"]  # T1 dark
        elif name.startswith("osteoporotic_fracture"):
            # a wedge (the anterior height goes) or a concave endplate (the middle goes); the
            # posterior wall keeps its height
            assert st.body[ijk] and min(ant / ant0, mid / mid0) < 0.85 and post > 0.88 * post0
            if name == "osteoporotic_fracture":
                assert _mean(st.images["t1"], st.lesion) < 0.75 * marrow["t1"]  # oedema and band: T1 dark
            else:  # chronic: the shape alone, the marrow keeps its signal
                still = ndimage.binary_erosion(st.body, iterations=2)
                assert _mean(st.images["t2"], still) == pytest.approx(marrow["t2"], rel=0.1)
        elif name == "pathologic_fracture":
            assert st.body[ijk] and ant < 0.85 * ant0 and post < 0.85 * post0  # the whole body collapses
            assert _mean(st.images["t2"], core) > 1.25 * marrow["t2"]  # replaced: T2 bright
            behind = _local(bg, f, st.lesion & ~st.body)
            assert len(behind) and behind[:, 1].max() > f.posterior + 1.5  # the convex posterior wall
        elif name in ("intradural_mass", "intramedullary_metastasis"):
            assert st.lesion[ijk] and not (st.lesion & (bg.bodies > 0)).any()  # in the sac, off the bone
            assert loc[:, 1].min() > f.canal[0] - 1.5 and loc[:, 1].max() < f.canal[1] + 1.5
            assert _mean(st.images["t2"], st.lesion) < 0.85 * csf  # darker than the CSF it displaces
            if name == "intramedullary_metastasis":  # oedema along the cord, beyond the nodule
                assert np.ptp(loc[:, 2]) > 12.0
        elif name == "discitis":  # crosses the disc: both bodies and the disc between them
            above = an.neighbours(f)[0]
            assert (st.lesion & (bg.bodies == f.label)).any() and (
                st.lesion & (bg.bodies == above.label)
            ).any()
            assert f.superior - 1.0 < f.to_local(st.centre)[2] and not st.body[ijk]
            assert _mean(st.images["t2"], st.lesion & (bg.bodies == 0)) > 1.4 * marrow["t2"]
        elif name == "haemangioma":  # T1 and T2 bright, inside the body
            assert st.body[ijk] and not (st.lesion & ~(bg.bodies == f.label)).any()
            # bright but for thin dark trabeculae: the median, not the mean
            assert np.median(st.images["t1"][st.lesion]) > 1.05 * marrow["t1"]
            assert np.median(st.images["t2"][st.lesion]) > 1.1 * marrow["t2"]
        elif name == "modic1":  # a darker disc, oedema along both endplates, the disc not crossed by fluid
            above = an.neighbours(f)[0]
            assert (st.lesion & (bg.bodies == f.label)).any() and (
                st.lesion & (bg.bodies == above.label)
            ).any()
            disc = st.lesion & (bg.bodies == 0)
            assert disc.any() and _mean(st.images["t2"], disc) < 0.9 * _mean(
                bg.images["t2"].astype(np.float32), disc
            )
        else:  # schmorl_node: disc material in an endplate, inside the body
            assert name == "schmorl_node"
            assert not (st.lesion & ~(bg.bodies == f.label)).any()
            assert np.abs(loc[:, 2]).max() > 0.8 * f.half_height  # at an endplate


def test_plain_manifest_pairs_every_body_with_its_findings(toy_root: Path, tmp_path: Path) -> None:
    from spinelesion.data.manifest import read_manifest
    from spinelesion.insert.anatomy import derive_anatomy
    from spinelesion.insert.plain import PLAIN_FINDINGS, eligible_bodies, eligible_for, generate_plain

    levels = ["L1", "L2", "L3"]
    path = generate_plain(
        toy_root, {"toy_01": "train"}, tmp_path / "plain", levels=levels, cord_levels=levels
    )
    rows = list(csv.DictReader(open(path, newline="")))
    assert {r["split"] for r in rows} == {"train"}
    untouched = [r for r in rows if r["finding"] == "normal"]
    inserted = [r for r in rows if r["finding"] != "normal"]
    assert sorted(r["level"] for r in untouched) == levels
    bg = load_background(discover_backgrounds(toy_root, levels=levels)[0])
    an = derive_anatomy(bg, set(levels))
    expected = sorted(
        (n, f.level) for f in eligible_bodies(bg, an) for n in PLAIN_FINDINGS if eligible_for(n, an, f)
    )
    assert expected and sorted((r["finding"], r["level"]) for r in inserted) == expected
    assert {n for n, _ in expected} == set(PLAIN_FINDINGS)  # every class on the toy spine
    for r in inserted:
        assert (r["compartment"], r["fracture"]) == PLAIN_FINDINGS[r["finding"]]
    for row in read_manifest(path).rows:  # contract-valid; every ROI centre lies inside its images
        assert read_nifti(row.sequences["t2"]).contains(row.center_lps)
    with pytest.raises(ValueError, match="unknown plain finding"):
        generate_plain(toy_root, ["toy_01"], tmp_path / "bad", levels=levels, findings=["osteoma"])


def test_plain_renderer_draws_the_same_studies_whatever_the_number_of_workers(
    toy_root: Path, tmp_path: Path
) -> None:
    """The release draws the plain set over two processes (one subject each): the same manifest
    and the same images as one process, in the same order."""
    from spinelesion.insert.plain import generate_plain

    levels = ["L1", "L2", "L3"]
    kwargs = dict(
        levels=levels, cord_levels=levels, findings=["intramedullary_metastasis", "lytic_metastasis"]
    )
    subjects = {"toy_01": "train", "toy_02": "test"}
    one = generate_plain(toy_root, subjects, tmp_path / "one", workers=1, progress=False, **kwargs)
    two = generate_plain(toy_root, subjects, tmp_path / "two", workers=2, progress=False, **kwargs)
    assert one.read_text() == two.read_text()
    rows = list(csv.DictReader(open(one, newline="")))
    assert {r["patient_id"] for r in rows} == set(subjects)
    written = sorted(
        p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "studies").rglob("*.nii.gz")
    )
    assert written and written == sorted(
        p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "studies").rglob("*.nii.gz")
    )
    for rel in written:
        a, b = read_nifti(tmp_path / "one" / rel), read_nifti(tmp_path / "two" / rel)
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_array_equal(a.affine, b.affine)


def test_painted_texture_is_drawn_alike_for_every_finding(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Texture is no sign: a per-kind amount (pathologic 0.18, benign oedema 0.1) let the released
    model tell the fractures apart by texture alone (plain renderer check, docs/results.md)."""
    import spinelesion.insert.findings as findings_module

    bg, an = toy
    drawn: list[float] = []
    real_texture = findings_module.texture

    def recording(
        rng: np.random.Generator, shape: tuple[int, ...], scale: float, amount: float
    ) -> np.ndarray:
        drawn.append(amount)
        return real_texture(rng, shape, scale, amount)

    monkeypatch.setattr(findings_module, "texture", recording)
    amounts = {}
    for name in ("osteoporotic_fracture", "pathologic_fracture"):
        drawn.clear()
        for seed in range(8):
            insert_finding(bg, an, name, an.bodies[1].label, np.random.default_rng(seed), CFG["rates"])
        amounts[name] = sorted(set(drawn))
    lo, hi = findings_module.HETEROGENEITY
    for name, values in amounts.items():
        assert all(lo <= v <= hi for v in values), name
        assert min(values) < 0.08 and max(values) > 0.14, f"{name}: texture amounts {values} look fixed"


# -- a real T2 imaged as T1 or STIR (insert/contrast.py): each tissue takes the target sequence's
# relations, the anatomy stays, and an insertion set can write its studies under those looks -----


def test_each_tissue_takes_the_target_sequences_relations(toy) -> None:
    from spinelesion.insert.contrast import synthesise, tissue_regions

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
    from spinelesion.insert.contrast import synthesise

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

    cfg = toy_cfg(
        toy_root,
        tmp_path / "synth",
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
    # a study without a T2 to make the looks from is written as acquired
    from spinelesion.insert.dataset import imaged_as

    t1_only = replace(load_background(discover_backgrounds(toy_root, levels=["L1", "L2", "L3"])[0]))
    t1_only.images = {"t1": t1_only.images["t1"]}
    assert imaged_as(t1_only, derive_anatomy(t1_only), cfg, [0]) == {}
    with pytest.raises(ValueError, match=r"contrast.targets: \['flair'\]"):
        generate_inserted(dict(cfg, contrast={"targets": ["flair"]}))


@pytest.mark.slow  # reads a real study
@pytest.mark.skipif(not (REAL_NORMALS / "vb2_02").is_dir(), reason="needs ../shared/data/real-normals")
def test_a_real_t2_imaged_as_t1_reads_as_a_t1_and_as_stir_has_its_fat_suppressed() -> None:
    """Measured as the input check measures a series (inference/contrast.py): the T1 made from a
    real lumbar T2 has fat brighter than all else and dark fluid, as the real T1 exams of
    real-multisite do; the STIR's subcutaneous fat is darker than muscle (real STIR: 0.2x)."""
    from spinelesion.inference.contrast import contrast_profile, contrast_warning
    from spinelesion.insert.contrast import fat_level, synthesise
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
