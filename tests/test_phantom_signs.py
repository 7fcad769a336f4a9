"""Phantom v2: every sign at its configured rate (and switchable), relations under randomised contrast,
every ROI centre inside every series."""

from __future__ import annotations

import numpy as np
import pytest

from spinelesion.phantom.anatomy import Anatomy, sample_anatomy
from spinelesion.phantom.config import default_phantom_config
from spinelesion.phantom.findings import FINDINGS, Finding
from spinelesion.phantom.findings import signals as sig
from spinelesion.phantom.study import plan_findings, render_study
from spinelesion.phantom.tissues import TissueTable

T1, T2, STIR, T1C = 0, 1, 2, 3

# sign -> the features key it is drawn from, per finding (what docs/phantom.md lists)
SIGN_RATES: dict[str, dict[str, str]] = {
    "osteoporotic_fracture": {
        "whole_body_oedema": "benign_diffuse_oedema_rate",
        "fracture_line": "fracture_line_rate",
        "fluid_sign": "fluid_sign_rate",
        "retropulsion": "retropulsion_rate",
        "convex_border": "benign_convex_border_rate",
        "concave_endplate": "benign_concave_endplate_rate",
        "multiple": "benign_multiple_rate",
    },
    "pathologic_fracture": {
        "whole_body": "pathologic_whole_body_rate",
        "convex_border": "convex_border_rate",
        "posterior_elements": "pathologic_pedicle_rate",
        "angled_endplate": "pathologic_angled_endplate_rate",
        "fluid_sign": "pathologic_fluid_sign_rate",
        "epidural_mass": "pathologic_epidural_rate",
        "paraspinal_mass": "pathologic_paraspinal_rate",
        "other_metastases": "pathologic_other_metastases_rate",
    },
    "meningioma": {
        "dural_tail": "dural_tail_rate",
        "csf_cap": "csf_cap_rate",
        "cord_displacement": "cord_displacement_rate",
        "calcification": "meningioma_calcification_rate",
    },
    "schwannoma": {
        "target_sign": "target_sign_rate",
        "cystic": "cystic_rate",
        "dumbbell": "dumbbell_rate",
        "csf_cap": "csf_cap_rate",
        "cord_displacement": "cord_displacement_rate",
    },
    "drop_metastases": {
        "visible_without_contrast": "drop_visible_without_contrast_rate",
        "sugar_coating": "sugar_coating_rate",
        "clumped_roots": "clumped_roots_rate",
    },
    "intramedullary_metastasis": {
        "expansion": "im_expansion_rate",
        "oedema": "im_oedema_rate",
        "melanoma": "im_melanoma_rate",
        "haemorrhage": "im_haemorrhage_rate",
    },
    "lytic_metastasis": {
        "posterior_body": "metastasis_posterior_rate",
        "pedicle": "metastasis_pedicle_rate",
        "halo": "halo_rate",
    },
    "schmorl_node": {"oedema": "schmorl_oedema_rate"},
    "discitis": {"phlegmon": "phlegmon_rate"},
    "paraspinal_mass": {"necrotic_centre": "paraspinal_necrosis_rate"},
}


def _planned(finding: str, n: int, cfg: dict) -> list[Finding]:
    """The primary finding of ``n`` planned studies (signs drawn, nothing painted: fast)."""
    out = []
    for seed in range(n):
        rng = np.random.default_rng([seed, 77])
        an = sample_anatomy(rng, cfg["anatomy"])
        out.append(plan_findings(rng, an, cfg, forced=finding)[0])
    return out


@pytest.mark.parametrize("finding", sorted(SIGN_RATES))
def test_each_sign_is_drawn_at_its_configured_rate(finding: str):
    cfg = default_phantom_config(**{"features.benign_chronic_rate": 0.0})  # chronic turns oedema signs off
    n = 600
    found = _planned(finding, n, cfg)
    for sign, key in SIGN_RATES[finding].items():
        rate = float(cfg["features"][key])
        freq = float(np.mean([f.signs[sign] for f in found]))
        tol = 4 * np.sqrt(rate * (1 - rate) / n) + 0.01  # binomial, 4 sigma
        assert abs(freq - rate) <= tol, f"{finding}.{sign}: {freq:.3f} drawn, {rate:.3f} configured"


def test_published_rates_are_the_defaults():
    """The n/N figures of radiology.md (KoreaMed 1067976) are what the generator draws by default."""
    f = default_phantom_config()["features"]
    assert f["pathologic_whole_body_rate"] == pytest.approx(20 / 27, abs=0.01)
    assert f["benign_diffuse_oedema_rate"] == pytest.approx(1 / 14, abs=0.01)
    assert f["pathologic_pedicle_rate"] == pytest.approx(21 / 29, abs=0.01)
    assert f["benign_posterior_element_rate"] == 0.0
    assert f["pathologic_paraspinal_rate"] == pytest.approx(16 / 29, abs=0.01)
    assert f["benign_concave_endplate_rate"] == pytest.approx(20 / 23, abs=0.01)
    assert f["pathologic_angled_endplate_rate"] == pytest.approx(13 / 29, abs=0.01)
    assert f["fluid_sign_rate"] <= 0.40


@pytest.mark.parametrize(
    "finding",
    [
        "osteoporotic_fracture",
        "pathologic_fracture",
        "meningioma",
        "schwannoma",
        "intramedullary_metastasis",
        "drop_metastases",
    ],
)
@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_every_sign_can_be_switched_off_and_forced_on(finding: str, rate: float):
    keys = {k: rate for k in SIGN_RATES[finding].values()}
    if finding == "intramedullary_metastasis" and rate == 1.0:
        keys["im_haemorrhage_rate"] = 0.0  # melanoma and haemorrhage exclude each other
    cfg = default_phantom_config(
        **{f"features.{k}": v for k, v in keys.items()}, **{"features.benign_chronic_rate": 0.0}
    )
    for f in _planned(finding, 40, cfg):
        for sign, key in SIGN_RATES[finding].items():
            assert f.signs[sign] == bool(cfg["features"][key]), (finding, sign)


def test_hard_cases_exist_at_default_rates():
    cfg = default_phantom_config()
    benign = _planned("osteoporotic_fracture", 300, cfg)
    malignant = _planned("pathologic_fracture", 300, cfg)
    assert any(f.signs["convex_border"] for f in benign), "no benign fracture with a convex wall"
    assert any(f.signs["fluid_sign"] for f in malignant), "no pathologic fracture with a fluid cleft"
    assert any(not f.signs["whole_body"] for f in malignant)
    assert any(f.chronic for f in benign), "no chronic benign fracture without oedema"
    assert all(not f.signs["oedema"] for f in benign if f.chronic)


@pytest.mark.slow  # > 20 s on the 2-core CPU
def test_rendered_benign_fracture_with_convex_wall_bulges():
    from helpers_phantom import quiet_config

    cfg = quiet_config()
    cfg["features"].update(benign_convex_border_rate=1.0, benign_chronic_rate=0.0)
    s = render_study([1, 9], cfg, finding="osteoporotic_fracture", keep_canvas=True)
    f = s.findings[0]
    assert f.fracture == "benign" and f.signs["convex_border"]
    assert s.anatomy.vertebrae[f.level_index].posterior_bulge > 2.0


@pytest.mark.parametrize("spread", [0.35, 0.7])
def test_relations_hold_under_randomised_contrast(spread: float):
    """Per study, values vary widely; the relations of radiology.md hold in every draw."""
    t1_marrow = []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        tt = TissueTable(rng, age=float(rng.uniform(25, 88)), contrast_spread=spread)
        m, mu, disc, csf, cord, fat = (
            tt["marrow"],
            tt["muscle"],
            tt["annulus"],
            tt["csf"],
            tt["cord"],
            tt["fat"],
        )
        t1_marrow.append(float(m[T1] / mu[T1]))
        # anatomy table
        assert m[T1] > mu[T1] and m[T1] > disc[T1]
        assert csf[T1] < min(mu[T1], cord[T1], m[T1])
        assert csf[T2] > 1.5 * max(cord[T2], m[T2], mu[T2])
        assert csf[STIR] > m[STIR] and fat[STIR] < mu[STIR]
        assert tt["nucleus"][T2] > disc[T2]
        # recipes: the signs the model should read
        lytic = sig.lytic_values(tt, rng)
        assert lytic[T1] < min(mu[T1], disc[T1]), "lytic deposit darker than disc and muscle on T1"
        assert m[T2] < lytic[T2] < csf[T2] and lytic[T1C] > m[T1C]
        oed = sig.oedema_values(tt, rng)
        assert oed[STIR] > m[STIR] and oed[T1] < m[T1] and oed[T1C] > m[T1C]
        blastic = sig.blastic_values(tt, rng)
        assert blastic[T1] < min(mu[T1], disc[T1]) and blastic[T2] < m[T2] and blastic[STIR] < oed[STIR]
        fluid = sig.fluid_values(tt)
        assert fluid[T2] > oed[T2] and fluid[T1] < oed[T1]
        assert sig.meningioma_values(tt, rng)[T1C] > 1.5 * cord[T1C]
        hem = sig.haemangioma_values(tt, rng)
        assert hem[T1] > m[T1] and hem[T2] > m[T2]
        assert sig.intramedullary_nodule_values(tt, rng, "melanoma")[T1] > cord[T1]
        assert sig.intramedullary_nodule_values(tt, rng, "haemorrhage")[T2] < cord[T2]
    # and the values themselves are not fixed: marrow/muscle on T1 spans a wide range
    assert np.percentile(t1_marrow, 90) / np.percentile(t1_marrow, 10) > 1.3


def test_contrast_off_is_the_v1_table():
    """contrast_spread=0 reproduces the v1 tissue table exactly (same draws, same values)."""
    a = TissueTable(np.random.default_rng(5), age=60.0)
    b = TissueTable(np.random.default_rng(5), age=60.0, contrast_spread=0.0)
    for k in a.values:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.slow  # > 20 s on the 2-core CPU
def test_every_roi_centre_lies_inside_every_series():
    cfg = default_phantom_config()
    n_rois = 0
    for seed in range(10):
        # the findings most often off-centre: lateral masses, dumbbells, paraspinal companions
        finding = ("paraspinal_mass", "schwannoma", "pathologic_fracture", "lytic_metastasis", None)[seed % 5]
        s = render_study([seed, 31], cfg, finding=finding)
        for r in s.rois:
            n_rois += 1
            for seq, vol in s.volumes.items():
                assert vol.contains(r.center), f"seed {seed}: ROI {r.finding} outside {seq}"
        planned = max((r.index for r in s.rois), default=-1) + 1
        assert len(s.rois) == planned, "ROIs were dropped instead of covered"
    assert n_rois >= 15


def test_findings_are_registered_once():
    assert len(FINDINGS) == 15 and all(callable(v) for v in FINDINGS.values())


def test_artefacts_switch_on_and_off_without_changing_the_rest():
    from spinelesion.phantom.acquisition import plan_series

    acq = default_phantom_config()["acquisition"]
    plans = {}
    for rate in (0.0, 1.0):
        cfg = {**acq, "gibbs_rate": rate, "ghost_rate": rate}
        plans[rate] = plan_series(
            np.random.default_rng(4), "t2", np.zeros(3), np.array([150.0, 150.0, 300.0]), cfg, 1.5
        )
    off, on = plans[0.0], plans[1.0]
    assert off.gibbs_keep == 1.0 and off.ghost == 0.0
    assert on.gibbs_keep < 1.0 and on.ghost > 0.0
    np.testing.assert_array_equal(off.affine, on.affine)
    assert (off.shape, off.gain, off.noise) == (on.shape, on.gain, on.noise)


def test_gibbs_rings_next_to_an_edge_and_ghosts_repeat_along_phase():
    from spinelesion.phantom.acquisition import SeriesPlan, artefacts

    step = np.zeros((64, 128, 3), np.float32)
    step[:, 40:90] = 1.0  # a bright band along the readout axis (j)
    plan = SeriesPlan("t2", np.eye(4), step.shape, 3.0, gibbs_keep=0.6)
    ringed = artefacts(step, plan)
    assert ringed[10, 40:48, 1].max() > 1.05, "overshoot inside the edge"
    assert ringed[10, 30:38, 1].max() > 0.02, "ripples outside the edge"
    blob = np.zeros((64, 32, 1), np.float32)
    blob[5:9, 10:14] = 1.0
    ghosted = artefacts(blob, SeriesPlan("t2", np.eye(4), blob.shape, 3.0, ghost=0.05))
    assert ghosted[5 + 32, 11, 0] == pytest.approx(0.05, abs=1e-6)
    assert ghosted[5, 11, 0] == pytest.approx(1.0, abs=1e-6)


def _normal_rois_of(kind: str, studies: int = 6) -> list[tuple[Anatomy, np.ndarray]]:
    """(anatomy, LPS centre) of 3 normal ROIs of one ``kind`` in each of ``studies`` anatomies."""
    from spinelesion.phantom.anatomy import layout
    from spinelesion.phantom.study import normal_rois

    cfg = default_phantom_config(normal_rois=[3, 3], normal_roi_kinds={kind: 1.0})
    out = []
    for seed in range(studies):
        rng = np.random.default_rng(seed)
        an = sample_anatomy(rng, cfg["anatomy"])
        layout(an, rng)
        rois = normal_rois(rng, an, [], {**cfg, "background_rois": [0, 0]})
        assert len(rois) == 3
        assert all(r.compartment == "none" and r.fracture == "none" for r in rois)
        out.extend((an, np.asarray(r.center)) for r in rois)
    return out


def test_dorsal_normal_rois_sit_behind_the_sac_not_in_it():
    """The band just behind the thecal sac (epidural fat, laminae) is labelled normal too: scan
    mode puts windows there, and a model that never saw it normal called it intradural."""
    from spinelesion.phantom.anatomy import sac_distance
    from spinelesion.phantom.study import DORSAL_MM

    gaps = []
    for an, c in _normal_rois_of("dorsal"):
        x, y, z = (np.array([v]) for v in c)
        assert sac_distance(an, x, y, z)[0] > 2.0  # outside the sac (positive = outside)
        gap = float(y[0] - (an.canal_front(z)[0] + an.canal_ap))
        gaps.append(gap)
        assert DORSAL_MM[0] <= gap <= DORSAL_MM[1]
    assert min(gaps) < 8 and max(gaps) > 18  # the whole band, not one depth


def test_ventral_normal_rois_sit_in_front_of_the_sac():
    """The front of the canal (the back of a body or disc, the anterior epidural space) is
    labelled normal too: scan windows visit it between the body and canal ROIs."""
    from spinelesion.phantom.anatomy import sac_distance
    from spinelesion.phantom.study import VENTRAL_MM

    depths = []
    for an, c in _normal_rois_of("ventral"):
        x, y, z = (np.array([v]) for v in c)
        assert sac_distance(an, x, y, z)[0] >= 0.0  # never inside the sac
        yc, b, _ = (float(t[0]) for t in an.sac_geometry(z))
        depth = float(y[0] - an.canal_front(z)[0])
        depths.append(depth)
        assert VENTRAL_MM[0] <= depth and y[0] <= yc - b
    assert min(depths) < -3 and max(depths) > -1  # the body's back wall and the epidural space


def test_default_normal_roi_kinds_include_both_sides_of_the_sac():
    kinds = default_phantom_config()["normal_roi_kinds"]
    assert {"body", "canal", "disc", "dorsal", "ventral"} <= set(kinds)
    assert sum(kinds.values()) == pytest.approx(1.0)
