"""Patient-level splits and the keyed sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from spinelesion.data.manifest import Row
from spinelesion.data.sampler import KeyedSampler
from spinelesion.data.splits import assign_splits, check_no_leakage


def _rows(n_patients: int = 60, rows_per_patient: int = 3, seed: int = 0) -> list[Row]:
    rng = np.random.default_rng(seed)
    comps = ["none", "extradural", "intradural_extramedullary", "intramedullary"]
    rows = []
    for p in range(n_patients):
        rare = comps[3] if p % 10 == 0 else comps[int(rng.integers(0, 3))]
        for k in range(rows_per_patient):
            rows.append(
                Row(
                    case_id=f"p{p}-{k}",
                    study_id=f"s{p}",
                    patient_id=f"p{p}",
                    center_lps=np.zeros(3),
                    sequences={},
                    labels={"compartment": rare if k == 0 else "none", "fracture": "none"},
                )
            )
    return rows


def test_splits_are_by_patient_deterministic_and_in_ratio():
    rows = _rows()
    a = assign_splits(rows, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    b = assign_splits(list(reversed(rows)), {"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    assert a == b  # row order does not matter
    counts = Counter(a.values())
    assert counts == {"train": 42, "val": 9, "test": 9}
    # the rare class (6 patients) reaches every split
    rare = Counter(a[r.patient_id] for r in rows if r.labels["compartment"] == "intramedullary")
    assert set(rare) == {"train", "val", "test"}
    assert assign_splits(rows, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=4) != a


def test_given_splits_are_kept_and_leakage_is_detected():
    rows = _rows(10)
    for r in rows:
        if r.patient_id == "p1":
            r.split = "test"
    out = assign_splits(rows, {"train": 0.8, "val": 0.2}, seed=0)
    assert out["p1"] == "test"
    assert set(out.values()) == {"train", "val", "test"}
    for r in rows:
        r.split = out[r.patient_id]
    check_no_leakage(rows)
    rows[-1].split = "test" if rows[-1].split != "test" else "train"  # one row of a patient moves
    with pytest.raises(AssertionError, match=rows[-1].patient_id):
        check_no_leakage(rows)


def test_sampler_is_reproducible_per_epoch_and_covers_the_set():
    s = KeyedSampler(range(20), seed=5)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0
    assert e0 != e1
    assert sorted(e0) == list(range(20))


def test_weighted_sampler_balances_classes():
    labels = np.array([0] * 90 + [1] * 10)
    weights = np.where(labels == 0, 1 / 90, 1 / 10)
    s = KeyedSampler(range(100), seed=0, weights=weights, num_samples=4000)
    drawn = labels[list(s)]
    assert 0.45 < drawn.mean() < 0.55


def test_source_weights_move_normal_draws_between_sets_without_touching_class_balance():
    """A set added to "none" takes its share of the normal draws from the set named, not from all."""
    from spinelesion.data.datamodule import balanced_weights

    def rows(source: str, n: int, compartment: str) -> list[Row]:
        return [
            Row(
                f"{source}{i}",
                f"{source}{i}",
                f"{source}{i}",
                np.zeros(3),
                {},
                {"compartment": compartment, "fracture": "none"},
                source=source,
            )
            for i in range(n)
        ]

    base = rows("canal", 100, "none") + rows("hardneg", 300, "none") + rows("lesion", 50, "extradural")
    mix = base + rows("mimics", 100, "none")

    def share(weights: np.ndarray, rs: list[Row], source: str) -> float:
        none = np.array([r.labels["compartment"] == "none" for r in rs])
        return float(weights[[r.source == source for r in rs]].sum() / weights[none].sum())

    before = balanced_weights(base)
    assert share(before, base, "canal") == pytest.approx(0.25)
    plain = balanced_weights(mix)
    assert share(plain, mix, "canal") == pytest.approx(0.2)  # diluted by the new set
    kept = balanced_weights(mix, {"hardneg": 200 / 300})
    assert share(kept, mix, "canal") == pytest.approx(0.25)  # the canal keeps its share
    assert share(kept, mix, "mimics") == pytest.approx(0.25)
    # the classes keep their weights: the multipliers move draws only among the sets of a class
    lesion = np.array([r.source == "lesion" for r in mix])
    assert kept[lesion].sum() == pytest.approx(plain[lesion].sum())
    assert kept[~lesion].sum() == pytest.approx(plain[~lesion].sum())
    assert np.array_equal(balanced_weights(mix, {}), plain)
    with pytest.raises(ValueError, match="not a set of this mix"):
        balanced_weights(mix, {"real-mimic": 0.5})
    with pytest.raises(ValueError, match="finite and >= 0"):
        balanced_weights(mix, {"mimics": -1.0})


def test_domain_balance_makes_the_class_drawn_independent_of_the_site():
    """A site whose ROIs are mostly inserted lesions must not teach that its look means lesion."""
    from spinelesion.data.datamodule import balanced_weights
    from spinelesion.data.manifest import source_of

    def rows(patient: str, n: int, compartment: str) -> list[Row]:
        return [
            Row(
                f"{patient}-{compartment}{i}",
                patient,
                patient,
                np.zeros(3),
                {},
                {"compartment": compartment, "fracture": "none"},
            )
            for i in range(n)
        ]

    # vb2: 300 normal ROIs and 100 lesions; vb1: 20 normal, 80 lesions; the phantom: 400 and 400
    mix = (
        rows("vb2_01", 300, "none")
        + rows("vb2_01", 100, "extradural")
        + rows("vb1_p1", 20, "none")
        + rows("vb1_p1", 80, "extradural")
        + rows("P100000001", 400, "none")
        + rows("P100000001", 400, "extradural")
    )
    assert [source_of(r.patient_id) for r in mix[:1] + mix[400:401] + mix[-1:]] == ["vb2", "vb1", "phantom"]
    domains = np.array([source_of(r.patient_id) for r in mix])
    lesion = np.array([r.labels["compartment"] == "extradural" for r in mix])

    def p_lesion(weights: np.ndarray, domain: str) -> float:
        d = domains == domain
        return float(weights[d & lesion].sum() / weights[d].sum())

    plain = balanced_weights(mix)
    assert p_lesion(plain, "vb1") > 0.8  # without it, vb1 draws are 82 % lesions: its look predicts one
    balanced = balanced_weights(mix, domain_balance=True)
    overall = float(balanced[lesion].sum() / balanced.sum())
    for domain in ("vb1", "vb2", "phantom"):  # the class balance of the whole mix, in every domain
        assert p_lesion(balanced, domain) == pytest.approx(overall)
    # each class keeps its total, and each domain gets its share of all ROIs within each class
    assert balanced[lesion].sum() == pytest.approx(plain[lesion].sum())
    assert balanced[~lesion].sum() == pytest.approx(plain[~lesion].sum())
    vb1_share = float((domains == "vb1").mean())
    assert balanced[(domains == "vb1") & ~lesion].sum() / balanced[~lesion].sum() == pytest.approx(vb1_share)
    # a class that only some domains have stays whole, spread over those domains
    mix.append(
        Row("im", "vb2_02", "vb2_02", np.zeros(3), {}, {"compartment": "intramedullary", "fracture": "none"})
    )
    w = balanced_weights(mix, domain_balance=True)
    assert w[-1] == pytest.approx(balanced_weights(mix)[-1])


def test_place_balance_keeps_a_sites_canal_from_predicting_a_canal_lesion():
    """Inserted intramedullary lesions lie only in the real T11-T12 cord: the class balance drew
    that canal as a lesion far more often than as normal, and the model learnt the place."""
    from spinelesion.data.datamodule import balanced_weights

    def rows(patient: str, place: str, n: int, compartment: str, level: str) -> list[Row]:
        return [
            Row(
                f"{patient}_dense_{place}{i:02d}" if compartment == "none" else f"{patient}_ins{i:03d}_r0",
                patient,
                patient,
                np.zeros(3),
                {},
                {"compartment": compartment, "fracture": "none"},
                level=level,
            )
            for i in range(n)
        ]

    mix = (
        rows("vb2_01", "canal", 10, "none", "T11")
        + rows("vb2_01", "canal", 10, "none", "L3")
        + rows("vb2_01", "region", 200, "none", "L3")
        + rows("vb2_01", "", 18, "intramedullary", "T11")
        + rows("vb2_01", "", 6, "intradural_extramedullary", "L3")
        + rows("vb2_01", "", 60, "extradural", "L3")
        + rows("P100000001", "", 300, "none", "T5")
        + rows("P100000001", "", 60, "intramedullary", "C5")
        + rows("P100000001", "", 60, "intradural_extramedullary", "T4")
        + rows("P100000001", "", 200, "extradural", "L2")
    )
    comp = np.array([r.labels["compartment"] for r in mix])
    level = np.array([r.level for r in mix])
    vb2 = np.array([r.patient_id.startswith("vb2") for r in mix])
    canal = np.array(["canal" in r.case_id for r in mix])

    def at(w: np.ndarray, lv: str, what: np.ndarray) -> float:
        return float(w[vb2 & (level == lv) & what].sum())

    before = balanced_weights(mix, domain_balance=True)
    im, normal = comp == "intramedullary", (comp == "none") & canal
    assert at(before, "T11", im) > 5 * at(before, "T11", normal)  # the place predicted the lesion
    after = balanced_weights(mix, domain_balance=True, place_balance=True)
    for lv, lesion in (("T11", im), ("L3", comp == "intradural_extramedullary")):
        assert at(after, lv, normal) >= at(after, lv, lesion) * (1 - 1e-9)
    # every class keeps its total; the phantom's lesions take the draws the real ones gave up
    for c in np.unique(comp):
        assert after[comp == c].sum() == pytest.approx(before[comp == c].sum())
    assert after[~vb2 & im].sum() > before[~vb2 & im].sum()
    # the site's other normals keep at least half their draws, and nothing else moves
    around = vb2 & (comp == "none") & ~canal
    assert before[around].sum() > after[around].sum() >= 0.5 * before[around].sum()
    np.testing.assert_allclose(after[comp == "extradural"], before[comp == "extradural"])
    assert np.array_equal(balanced_weights(mix, domain_balance=True, place_balance=False), before)


def _placed(patient: str, place: str, n: int, compartment: str, fracture: str, level: str) -> list[Row]:
    """``n`` ROIs of an insertion set: normal ones named by their place, lesions not."""
    normal = compartment == "none" and fracture == "none"
    return [
        Row(
            f"{patient}_dense_{place}{i:02d}" if normal else f"{patient}_ins{i:03d}_r0",
            patient,
            patient,
            np.zeros(3),
            {},
            {"compartment": compartment, "fracture": fracture},
            level=level,
        )
        for i in range(n)
    ]


def test_place_balance_keeps_a_sites_bodies_from_predicting_a_fracture():
    """Dense normals of every other place (around the spine, anywhere) joined a real site's
    normal draws, and the class balance then drew its bodies as a fracture or an extradural
    lesion 16 times as often as normal (2026-12-07): the fine-tuning stages called real normal
    bodies benign fractures. The body is weighed as the canal is, to the mix's class prior."""
    from spinelesion.data.datamodule import balanced_weights

    mix = (
        _placed("vb2_01", "body", 12, "none", "none", "L1")
        + _placed("vb2_01", "region", 600, "none", "none", "L1")
        + _placed("vb2_01", "bg", 300, "none", "none", "")
        + _placed("vb2_01", "", 20, "none", "benign", "L1")
        + _placed("vb2_01", "", 20, "extradural", "pathologic", "L1")
        + _placed("vb2_01", "", 10, "extradural", "none", "L1")
        + _placed("P100000001", "", 300, "none", "none", "L2")
        + _placed("P100000001", "", 60, "none", "benign", "L1")
        + _placed("P100000001", "", 60, "extradural", "pathologic", "L3")
        + _placed("P100000001", "", 60, "extradural", "none", "L4")
    )
    comp = np.array([r.labels["compartment"] for r in mix])
    frac = np.array([r.labels["fracture"] for r in mix])
    vb2 = np.array([r.patient_id.startswith("vb2") for r in mix])
    body = np.array(["_body" in r.case_id for r in mix])
    lesion = (comp != "none") | (frac != "none")

    before = balanced_weights(mix, domain_balance=True)
    assert before[vb2 & lesion].sum() > 5 * before[vb2 & body].sum()  # the place predicted the lesion
    after = balanced_weights(mix, domain_balance=True, place_balance=True)
    # a body's class prior is the mix's: its normal draws per lesion draw those of the whole mix
    prior = before[~lesion].sum() / before[lesion].sum()
    assert 0.2 < prior < 1.0
    assert after[vb2 & body].sum() >= prior * after[vb2 & lesion].sum() * (1 - 1e-9)
    # every combination of labels keeps its total; the phantom's lesions take what the site's gave up
    for c in {(a, b) for a, b in zip(comp, frac, strict=True)}:
        cell = (comp == c[0]) & (frac == c[1])
        assert after[cell].sum() == pytest.approx(before[cell].sum())
    assert after[~vb2 & lesion].sum() > before[~vb2 & lesion].sum()
    # the site's other normals fund the bodies, keeping at least half their draws
    others = vb2 & ~lesion & ~body
    assert before[others].sum() > after[others].sum() >= 0.5 * before[others].sum()
    np.testing.assert_allclose(after[~vb2 & ~lesion], before[~vb2 & ~lesion])


def test_place_balance_weighs_each_look_of_a_site_apart():
    """A real T2 site imaged as T1 (real_synth) had few normal canal ROIs beside the lesions painted
    there, while the T2 exams' dense canal normals balanced the level as a whole: a T1-only canal
    was a lesion 3 times as often as normal, and a new site's normal T1 canal was called one."""
    from pathlib import Path

    from spinelesion.data.datamodule import balanced_weights

    def look(rows: list[Row], seq: str) -> list[Row]:
        for r in rows:
            r.sequences = {seq: Path(f"{r.study_id}/{seq}.nii.gz")}
        return rows

    mix = (
        look(_placed("vb2_01", "canal", 200, "none", "none", "L2"), "t2")
        + look(_placed("vb2_01", "region", 400, "none", "none", "L2"), "t2")
        + look(_placed("vb2_01", "", 20, "intradural_extramedullary", "none", "L2"), "t2")
        + look(_placed("vb2_01", "canal", 6, "none", "none", "L2"), "t1")
        + look(_placed("vb2_01", "region", 100, "none", "none", "L2"), "t1")
        + look(_placed("vb2_01", "", 20, "intradural_extramedullary", "none", "L2"), "t1")
        + look(_placed("P100000001", "", 300, "none", "none", "L2"), "t1")
        + look(_placed("P100000001", "", 60, "intradural_extramedullary", "none", "L3"), "t1")
    )
    comp = np.array([r.labels["compartment"] for r in mix])
    t1 = np.array(["t1" in r.sequences and r.patient_id.startswith("vb2") for r in mix])
    canal = np.array(["_canal" in r.case_id for r in mix])
    idem = comp == "intradural_extramedullary"
    before = balanced_weights(mix, domain_balance=True)
    assert before[t1 & idem].sum() > 2 * before[t1 & canal].sum()  # the T1 look's canal was a lesion
    after = balanced_weights(mix, domain_balance=True, place_balance=True)
    assert after[t1 & canal].sum() >= after[t1 & idem].sum() * (1 - 1e-9)
    # the T1 look's canal normals are funded by the T1 look's other normals, not the T2 exams'
    t2_normal = ~t1 & (comp == "none") & np.array([r.patient_id.startswith("vb2") for r in mix])
    assert after[t2_normal].sum() <= before[t2_normal].sum() * (1 + 1e-9)
    assert after[t1 & (comp == "none") & ~canal].sum() < before[t1 & (comp == "none") & ~canal].sum()
    for c in np.unique(comp):
        assert after[comp == c].sum() == pytest.approx(before[comp == c].sum())


def test_draw_shares_show_what_each_sites_places_are_drawn_as():
    """The table a training records (metadata training.draws): per site, normal ROIs by place and
    lesions by where they lie, as shares of all draws."""
    from spinelesion.data.datamodule import balanced_weights, draw_shares

    mix = (
        _placed("vb2_01", "body", 10, "none", "none", "L1")
        + _placed("vb2_01", "region", 90, "none", "none", "L1")
        + _placed("vb2_01", "", 10, "none", "benign", "L1")
        + _placed("vb2_01", "", 5, "intramedullary", "none", "T11")
        + _placed("P100000001", "", 20, "none", "none", "")
    )
    plain = draw_shares(mix)  # uniform draws: shares of rows
    expected = {"lesion:body": 10, "lesion:canal": 5, "normal:body": 10, "normal:region": 90}
    assert plain["vb2"] == {k: round(n / 135, 4) for k, n in expected.items()}
    assert plain["phantom"] == {"normal:other": round(20 / 135, 4)}
    shares = draw_shares(mix, balanced_weights(mix))
    assert sum(v for d in shares.values() for v in d.values()) == pytest.approx(1.0, abs=1e-3)
    assert shares["vb2"]["lesion:body"] > 5 * shares["vb2"]["normal:body"]  # what place balance weighs


def test_a_set_of_sequences_has_one_name_in_channel_order():
    """The place balance (per look) and the site checks (per sequence set) name a set alike."""
    from spinelesion.labels import sequence_set

    assert sequence_set({"stir": 1, "t2": 1}) == sequence_set(["t2", "stir"]) == "t2+stir"
    assert sequence_set(["t1c", "t1", "unknown"]) == "t1+t1c" and sequence_set([]) == ""
