"""Each class's signature from docs/radiology.md is measurable in the rendered volumes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_phantom import (
    T1,
    T2,
    acquired_on_box,
    body_marrow_mask,
    mean_where,
    normal_level,
    quiet_config,
    rendered,
)

from spinelesion.phantom.anatomy import sac_distance
from spinelesion.phantom.canvas import soft
from spinelesion.phantom.study import render_study

# Every test renders whole phantom studies (> 3 s each on the 2-core CPU). The fast tier keeps the
# phantom's plans, tissue tables, acquisition and writer (test_phantom_signs.py, test_phantom_output.py).
pytestmark = pytest.mark.slow


def lesion(study, name: str | None = None):
    f = study.findings[0] if name is None else next(x for x in study.findings if x.name == name)
    return f, f.truth["lesion"]


def marrow_ref(study, seq: str) -> float:
    box, mask = body_marrow_mask(study, normal_level(study))
    return mean_where(acquired_on_box(study, seq, box), mask)


def lesion_mean(study, seq: str, name: str | None = None) -> float:
    _, (box, mask) = lesion(study, name)
    return mean_where(acquired_on_box(study, seq, box), mask, thr=0.9)


@pytest.mark.parametrize("seed", [0, 1])
def test_lytic_metastasis_dark_on_t1_bright_on_stir_and_enhancing(seed):
    s = rendered("lytic_metastasis", seed)
    assert lesion_mean(s, "t1") < 0.6 * marrow_ref(s, "t1")
    assert lesion_mean(s, "stir") > 1.8 * marrow_ref(s, "stir")
    assert lesion_mean(s, "t2") > 1.1 * marrow_ref(s, "t2")
    assert lesion_mean(s, "t1c") > 1.5 * marrow_ref(s, "t1c")


def test_lytic_lesion_does_not_cross_the_disc():
    from spinelesion.phantom.anatomy import disc_distance

    s = rendered("lytic_metastasis", 2)
    f, (box, mask) = lesion(s)
    assert float(mask.max()) > 0.9
    for disc in s.anatomy.discs:
        if f.level_index not in (
            s.anatomy.vertebrae.index(disc.upper),
            s.anatomy.vertebrae.index(disc.lower),
        ):
            continue
        whole, _ = disc_distance(disc, *disc.local(*s.canvas.coords(box)))
        in_disc = soft(whole + 1.5)  # well inside the disc, away from the endplate
        assert float((np.broadcast_to(mask, in_disc.shape) * in_disc).max()) < 0.05


def test_blastic_metastasis_dark_on_every_sequence():
    s = rendered("blastic_metastasis", 0)
    assert lesion_mean(s, "t1") < 0.5 * marrow_ref(s, "t1")
    assert lesion_mean(s, "t2") < 0.6 * marrow_ref(s, "t2")
    assert lesion_mean(s, "stir") < 1.3 * marrow_ref(s, "stir")


def test_epidural_extension_enhances_and_pushes_the_sac_from_outside():
    s = rendered("epidural_extension", 0)
    f, (box, mask) = lesion(s, "epidural_extension")
    assert lesion_mean(s, "t1c", "epidural_extension") > 2.0 * marrow_ref(s, "t1c")
    assert lesion_mean(s, "t1", "epidural_extension") < 0.7 * marrow_ref(s, "t1")
    # the mass lies outside the dural sac (extradural): its voxels are not inside the sac
    x, y, z = s.canvas.coords(box)
    inside_sac = soft(sac_distance(s.anatomy, x, y, z) + 0.5)
    sel = np.broadcast_to(mask, inside_sac.shape) > 0.9
    assert float(inside_sac[sel].mean()) < 0.1


def _axial_canvas(s, z: float, ch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cv = s.canvas
    k = int(round((z - cv.origin[2]) / cv.spacing))
    x = cv.origin[0] + cv.spacing * np.arange(cv.shape[0])
    y = cv.origin[1] + cv.spacing * np.arange(cv.shape[1])
    return cv.img[ch, :, :, k], x, y


def _cord_centroid_and_area(s, z: float) -> tuple[np.ndarray, float]:
    """Cord = voxels inside the sac brighter than the CSF/cord midpoint on T1 (CSF is dark on T1)."""
    img, x, y = _axial_canvas(s, z, T1)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    inside = soft(sac_distance(s.anatomy, xx, yy, np.full_like(xx, z)) + 1.0) > 0.99
    vals = img[inside]
    thr = 0.5 * (np.percentile(vals, 5) + np.percentile(vals, 95))
    cord = inside & (img > thr)
    return np.array([xx[cord].mean(), yy[cord].mean()]), float(cord.sum())


@pytest.mark.parametrize("kind", ["meningioma", "schwannoma"])
def test_idem_mass_displaces_the_cord_with_csf_caps(kind):
    # cap and displacement are signs drawn at their rates: take the first draw that shows both
    s = next(
        s
        for s in (rendered(kind, seed, region="thoracic") for seed in range(3, 20))
        if s.findings[0].signs["csf_cap"] and s.findings[0].signs["cord_displacement"]
    )
    f = s.findings[0]
    z0, phi, rz, cap = (float(f.params[k]) for k in ("z0", "phi", "rz", "cap"))
    direction = np.array([np.cos(phi), np.sin(phi)])
    far = z0 + 60.0 if z0 + 60 < s.anatomy.z_range[1] - 10 else z0 - 60.0
    c_far, _ = _cord_centroid_and_area(s, far)
    if s.anatomy.conus_z is not None and min(z0, far) < s.anatomy.conus_z + s.anatomy.conus_len:
        pytest.skip("below the conus: no cord to displace in this draw")
    c_cap, _ = _cord_centroid_and_area(s, z0 + rz + cap / 2)  # just above the mass: the CSF cap
    shift = float(np.dot(c_cap - c_far, direction))
    assert shift < -1.0, f"cord not displaced away from the mass at the cap level (shift {shift:.2f} mm)"
    # the mass itself: iso to cord on T1, enhancing
    assert lesion_mean(s, "t1c") > 1.8 * marrow_ref(s, "t1c")


def test_lumbar_cord_enlarges_above_the_conus_and_narrows_to_its_tip():
    # Real lumbar T2 (vb2): above the conus the cord fills most of the lower thoracic sac, with a
    # thin CSF rim, and narrows over a few centimetres; a thin cord in a wide bright CSF column
    # there taught the model that a real conus is an intradural mass.
    from spinelesion.phantom.anatomy import CONUS_LENGTH_MM, ENLARGEMENT, ENLARGEMENT_PEAK_MM, cord_geometry

    s = rendered("haemangioma", 1, region="lumbar")
    an = s.anatomy
    assert an.conus_z is not None
    assert CONUS_LENGTH_MM[0] <= an.conus_len <= CONUS_LENGTH_MM[1]
    assert ENLARGEMENT[0] <= an.enlargement <= ENLARGEMENT[1]
    widest = an.conus_z + an.conus_len + ENLARGEMENT_PEAK_MM
    _, _, ra, rb = cord_geometry(an, np.array([widest, widest + 200.0]))
    assert ra[0] * rb[0] > (1 + 0.8 * an.enlargement) * ra[1] * rb[1]
    zs = an.conus_z + np.linspace(0.0, an.conus_len, 6)
    _, _, ra, rb = cord_geometry(an, zs)
    assert ra[0] == 0 and np.all(np.diff(ra * rb) > 0)
    # painted: the cord spans most of the sac's depth just above the conus (a thin CSF rim)
    img, x, y = _axial_canvas(s, widest, T1)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    inside = soft(sac_distance(an, xx, yy, np.full_like(xx, widest)) + 1.0) > 0.99
    vals = img[inside]
    cord = inside & (img > 0.5 * (np.percentile(vals, 5) + np.percentile(vals, 95)))
    sac_depth = np.ptp(yy[inside]) + float(x[1] - x[0])
    cord_depth = np.ptp(yy[cord]) + float(x[1] - x[0])
    assert cord_depth > 0.75 * sac_depth, (cord_depth, sac_depth)


def test_intramedullary_lesion_expands_the_cord_with_long_oedema():
    s = next(
        s
        for s in (rendered("intramedullary_metastasis", seed, region="cervical") for seed in range(12))
        if s.findings[0].signs["expansion"] and s.findings[0].signs["oedema"]
    )
    f = s.findings[0]
    z0 = float(f.params["z0"])
    top = s.anatomy.z_range[1]
    far = z0 + 85 if z0 + 85 < top - 5 else z0 - 85
    _, area_lesion = _cord_centroid_and_area(s, z0)
    _, area_far = _cord_centroid_and_area(s, far)
    assert area_lesion > 1.3 * area_far
    # oedema: cord T2 brighter over several centimetres, not just at the nodule

    def cord_t2(z: float) -> float:
        img, x, y = _axial_canvas(s, z, T2)
        xx, yy = np.meshgrid(x, y, indexing="ij")
        from spinelesion.phantom.anatomy import cord_geometry

        cx, cy, ra, rb = (float(t[0]) for t in cord_geometry(s.anatomy, np.array([z])))
        core = ((xx - cx) / max(ra * 0.5, 0.5)) ** 2 + ((yy - cy) / max(rb * 0.5, 0.5)) ** 2 < 1
        return float(img[core].mean())

    assert cord_t2(z0 + 22) > 1.2 * cord_t2(far)
    assert lesion_mean(s, "t1c") > 2.0 * marrow_ref(s, "t1c")


def test_drop_metastases_enhance():
    s = rendered("drop_metastases", 0)
    assert lesion_mean(s, "t1c") > 2.0 * marrow_ref(s, "t1c")


def _body_height(s, index: int) -> float:
    v = s.anatomy.vertebrae[index]
    u, vv = np.zeros(1), np.zeros(1)
    return float(2 * v.half_height(u, vv)[0])


def test_benign_fracture_height_loss_oedema_and_fluid_sign_only_when_labelled():
    with_fluid, without = None, None
    for seed in range(12):
        s = rendered("osteoporotic_fracture", seed)
        f = s.findings[0]
        if f.chronic:
            continue
        if f.signs.get("fluid_sign") and with_fluid is None:
            with_fluid = s
        if not f.signs.get("fluid_sign") and without is None:
            without = s
        if with_fluid and without:
            break
    assert with_fluid is not None and without is not None
    for s in (with_fluid, without):
        f = s.findings[0]
        assert f.fracture == "benign" and f.compartment == "none"
        assert _body_height(s, f.level_index) < 0.85 * _body_height(s, normal_level(s))
        assert lesion_mean(s, "stir") > 1.5 * marrow_ref(s, "stir")
    # fluid sign: CSF-like T2 signal in a cleft under the endplate, only where the label says so
    box, cleft = with_fluid.findings[0].truth["fluid_sign"]
    assert mean_where(with_fluid.canvas.img[(T2, *box)], cleft, 0.9) > 0.8 * csf_t2(with_fluid)
    f = without.findings[0]
    box, marrow = body_marrow_mask(without, f.level_index)
    body_t2 = without.canvas.img[(T2, *box)][np.broadcast_to(marrow, [s.stop - s.start for s in box]) > 0.9]
    assert float(body_t2.max()) < 0.9 * csf_t2(without)


def csf_t2(s) -> float:
    """T2 of CSF: the bright end of the sac's contents."""
    from spinelesion.phantom.anatomy import canal_box

    box = canal_box(s.canvas, s.anatomy)
    x, y, z = s.canvas.coords(box)
    inside = soft(sac_distance(s.anatomy, x, y, z) + 1.5) > 0.99
    return float(np.percentile(s.canvas.img[(T2, *box)][inside], 90))


def test_pathologic_fracture_diffuse_t1_replacement_and_convex_border():
    for seed in range(10):
        s = rendered("pathologic_fracture", seed)
        f = s.findings[0]
        v = s.anatomy.vertebrae[f.level_index]
        if f.signs["convex_border"] and f.signs["whole_body"]:
            break
    assert f.fracture == "pathologic" and f.compartment == "extradural"
    box, marrow = body_marrow_mask(s, f.level_index)
    t1 = acquired_on_box(s, "t1", box)
    sel = np.broadcast_to(marrow, t1.shape) > 0.9
    dark = float((t1[sel] < 0.7 * marrow_ref(s, "t1")).mean())
    assert dark > 0.6

    # convex posterior border: the back of the body reaches further at mid-height than nearer the
    # endplates, where a normal body's border is straight or concave
    def bulge(vert) -> float:
        u = np.zeros(1)
        hh = float(vert.half_height(u, np.array([vert.depth / 2]))[0])
        vs = np.linspace(0, vert.depth, 800)
        reach = [
            float(vs[(vert.body_distance(u, vs, np.full_like(vs, w)) < 0)].max()) for w in (0.0, 0.7 * hh)
        ]
        return reach[0] - reach[1]

    assert bulge(v) > 0.6
    assert bulge(s.anatomy.vertebrae[normal_level(s)]) < 0.0


def test_haemangioma_bright_on_t1_and_t2():
    s = rendered("haemangioma", 0)
    assert lesion_mean(s, "t1") > 1.02 * marrow_ref(s, "t1")
    assert lesion_mean(s, "t2") > 1.1 * marrow_ref(s, "t2")


def test_modic1_bands_beside_a_degenerated_disc():
    s = rendered("modic1", 0)
    f = s.findings[0]
    disc = s.anatomy.discs[f.level_index]
    assert disc.degeneration > 0.7
    assert lesion_mean(s, "t1") < 0.85 * marrow_ref(s, "t1")
    assert lesion_mean(s, "stir") > 1.5 * marrow_ref(s, "stir")


def test_discitis_crosses_the_disc():
    s = rendered("discitis", 0)
    f = s.findings[0]
    disc = s.anatomy.discs[f.level_index]
    # fluid in the disc: T2 brighter than a normal disc's annulus
    assert lesion_mean(s, "t2") > 1.5 * marrow_ref(s, "t2")
    # oedema on both sides: both adjacent bodies near the disc are STIR-bright
    for index, sign in ((f.level_index, -1.0), (f.level_index + 1, 1.0)):
        v = s.anatomy.vertebrae[index]
        box, marrow = body_marrow_mask(s, index)
        u, vv, w = v.local(*s.canvas.coords(box))
        near = (v.half_height(u, vv) + sign * w) < 5.0
        stir = acquired_on_box(s, "stir", box)
        assert mean_where(stir, np.broadcast_to(marrow, stir.shape) * near, 0.9) > 1.5 * marrow_ref(s, "stir")
    assert disc is not None


def test_labels_follow_the_contract():
    from spinelesion.labels import TASKS

    for name in (
        "lytic_metastasis",
        "meningioma",
        "intramedullary_metastasis",
        "osteoporotic_fracture",
        "haemangioma",
    ):
        s = rendered(name, 0)
        assert s.rois, name
        for r in s.rois:
            assert r.compartment in TASKS["compartment"] and r.fracture in TASKS["fracture"]
            assert r.level[0] in "CTLS"
        first = s.rois[0]
        assert first.finding == name


def test_lesion_texture_is_drawn_from_one_range_for_every_finding():
    """Texture is no sign: every finding's painted texture weight comes from base.TEXTURE (the
    signature takes the generator, so no finding can pass an amount of its own)."""
    from spinelesion.phantom.findings.base import TEXTURE, textured

    rng = np.random.default_rng(0)
    values, noise = np.array([100.0, 50.0, 80.0, 60.0]), np.ones((2, 2, 2))
    amounts = [float(textured(values, noise, rng)[0, 0, 0, 0] / 100.0 - 1.0) for _ in range(200)]
    assert TEXTURE[0] <= min(amounts) < TEXTURE[0] + 0.01 and TEXTURE[1] - 0.01 < max(amounts) <= TEXTURE[1]


def _sac_ap_mm(s, z: float) -> float:
    """The sac's front-to-back extent in the midline at z (the canvas's grid)."""
    cv = s.canvas
    y = cv.origin[1] + cv.spacing * np.arange(cv.shape[1])
    inside = sac_distance(s.anatomy, np.zeros_like(y), y, np.full_like(y, z)) < 0
    return float(inside.sum() * cv.spacing)


def test_degenerative_narrowing_pinches_the_sac_at_disc_levels_with_disc_and_ligament():
    """A disc bulge and a thick ligamentum flavum narrow the sac to an hourglass at the narrowed
    discs (none at the bodies), the space filled by dark tissue on T2, not CSF; without it the
    same seed renders exactly as before the option existed."""
    plain = rendered("meningioma", 3, "lumbar")
    cfg = quiet_config()
    cfg["anatomy"]["stenosis"] = {"rate": 1.0, "front_mm": [5.0, 6.0], "back_mm": [3.0, 4.0]}
    narrow = render_study([3, 4242], cfg, finding="meningioma", region="lumbar", keep_canvas=True)
    assert plain.anatomy.stenosis == []
    assert narrow.anatomy.stenosis, "rate 1 narrows some disc"
    lesion_z = [float(f.center[2]) for f in narrow.findings]
    for zc, front, back, _ in narrow.anatomy.stenosis:
        if any(abs(zc - z) < 30 for z in lesion_z):
            continue  # the meningioma moves the sac there itself
        assert _sac_ap_mm(narrow, zc) <= _sac_ap_mm(plain, zc) - 0.8 * (front + back) + 1.0
        body = min(narrow.anatomy.vertebrae, key=lambda v: abs(v.center[2] - zc))
        assert _sac_ap_mm(narrow, body.center[2]) >= _sac_ap_mm(plain, body.center[2]) - 1.0
        # where the CSF was at the disc's level, the front of the old sac now holds disc tissue (T2 dark)
        img, x, y = _axial_canvas(narrow, zc, T2)
        before, _, _ = _axial_canvas(plain, zc, T2)
        front_y = float(
            narrow.anatomy.sac_geometry(np.array([zc]))[0][0]
            - narrow.anatomy.sac_geometry(np.array([zc]))[1][0]
        )
        j, i = int(np.argmin(np.abs(y - (front_y + 1.5)))), int(np.argmin(np.abs(x)))
        assert img[i, j] < 0.6 * before[i, j]
    cfg = quiet_config()
    cfg["anatomy"].pop("stenosis")
    cfg["normal_roi_kinds"].pop("canal_disc")  # a kind of weight 0 draws as if it were not there
    older = render_study([3, 4242], cfg, finding="meningioma", region="lumbar", keep_canvas=True)
    for seq in plain.volumes:
        np.testing.assert_array_equal(plain.volumes[seq].array, older.volumes[seq].array)


def test_canal_disc_normal_rois_lie_behind_the_discs():
    from spinelesion.phantom.study import normal_rois

    s = rendered("meningioma", 3, "lumbar")
    cfg = quiet_config()
    cfg["normal_rois"], cfg["normal_roi_kinds"], cfg["background_rois"] = [6, 6], {"canal_disc": 1.0}, [0, 0]
    rois = normal_rois(np.random.default_rng(0), s.anatomy, [], cfg)
    assert rois
    disc_z = np.array([d.center[2] for d in s.anatomy.discs])
    for r in rois:
        assert np.min(np.abs(disc_z - r.center[2])) < 1e-6 and r.compartment == "none"
        yc, b, _ = (float(t[0]) for t in s.anatomy.sac_geometry(np.array([r.center[2]])))
        assert abs(r.center[1] - yc) < 1e-6
