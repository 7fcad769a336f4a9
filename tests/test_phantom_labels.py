"""Labels the images can support: a finding the study's sequences cannot show is written with
an unknown compartment (radiology.md: drop metastases can be invisible without contrast)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from spinelesion.data.manifest import write_manifest
from spinelesion.phantom.config import default_phantom_config
from spinelesion.phantom.findings import DropMetastases
from spinelesion.phantom.findings.signals import drop_values
from spinelesion.phantom.relabel import relabel_unseen, unseen_case_ids
from spinelesion.phantom.study import plan_study, render_study
from spinelesion.phantom.tissues import TissueTable
from spinelesion.phantom.writer import manifest_records

T1, T2, STIR, T1C = 0, 1, 2, 3
SEED = 5


def test_drop_metastases_shown_only_with_contrast_unless_visible() -> None:
    f = DropMetastases()
    f.signs["visible_without_contrast"] = False
    assert not f.shown_by({"t1", "t2", "stir"})
    assert f.shown_by({"t2", "t1c"})
    f.signs["visible_without_contrast"] = True
    assert f.shown_by({"t2"})


def test_invisible_drop_nodules_are_near_csf_on_every_sequence_but_contrast() -> None:
    tt = TissueTable(np.random.default_rng(0), spread=0.0, age=60.0)
    csf, cord = tt["csf"], tt["cord"]
    for seed in range(5):
        hidden = drop_values(tt, np.random.default_rng(seed), visible=False)
        shown = drop_values(tt, np.random.default_rng(seed), visible=True)
        for ch in (T1, T2, STIR):
            gap = abs(cord[ch] - csf[ch])
            assert abs(hidden[ch] - csf[ch]) <= 0.25 * gap + 1e-6
            assert abs(shown[ch] - csf[ch]) >= 0.3 * gap - 1e-6
        assert hidden[T1C] > cord[T1C]  # enhances either way


def _drop_study(cfg: dict, want_visible: bool) -> int:
    """The first study index of seed ``SEED`` whose plan is a drop metastasis with (or
    without) the visible-without-contrast sign."""
    for k in range(2000):
        _, _, _, findings = plan_study([SEED, k], cfg, patient_seed=[SEED, 100000 + k])
        drop = [f for f in findings if isinstance(f, DropMetastases)]
        if drop and bool(drop[0].signs.get("visible_without_contrast")) == want_visible:
            return k
    raise AssertionError("no such study in 2000")


def _rows(k: int, t1c: str) -> list[dict[str, str]]:
    sid, pid = f"S{SEED:04d}{k:05d}", f"P{SEED:04d}{k:05d}"
    base = {"study_id": sid, "patient_id": pid, "split": "train", "t1": "", "t2": "t2.nii.gz", "stir": ""}
    return [
        {**base, "case_id": f"{sid}_r00", "t1c": t1c, "compartment": "intradural_extramedullary",
         "fracture": "none", "finding": "drop_metastases", "level": "L2", "x_mm": "0", "y_mm": "0", "z_mm": "0"},
        {**base, "case_id": f"{sid}_r01", "t1c": t1c, "compartment": "none",
         "fracture": "none", "finding": "normal", "level": "L4", "x_mm": "0", "y_mm": "0", "z_mm": "40"},
    ]  # fmt: skip


def test_unseen_rows_found_by_planning_the_study_again(tmp_path: Path) -> None:
    cfg = default_phantom_config()
    hidden, visible = _drop_study(cfg, False), _drop_study(cfg, True)
    rows = _rows(hidden, "") + _rows(visible, "")
    assert unseen_case_ids(rows, SEED, cfg) == {f"S{SEED:04d}{hidden:05d}_r00"}
    assert unseen_case_ids(_rows(hidden, "t1c.nii.gz"), SEED, cfg) == set()  # contrast shows it

    write_manifest(tmp_path / "manifest.csv", rows)
    (tmp_path / "dataset.json").write_text(json.dumps({"seed": SEED, "config": cfg}))
    assert relabel_unseen(tmp_path) == 1
    with open(tmp_path / "manifest.csv", newline="") as fh:
        after = {r["case_id"]: r["compartment"] for r in csv.DictReader(fh)}
    assert after == {
        f"S{SEED:04d}{hidden:05d}_r00": "",
        f"S{SEED:04d}{hidden:05d}_r01": "none",
        f"S{SEED:04d}{visible:05d}_r00": "intradural_extramedullary",
        f"S{SEED:04d}{visible:05d}_r01": "none",
    }
    assert relabel_unseen(tmp_path) == 0  # idempotent


@pytest.mark.slow  # renders two whole studies (~20 s on the 2-core CPU)
def test_generator_writes_unknown_compartment_when_the_sequences_cannot_show_it() -> None:
    cfg = default_phantom_config(
        **{"acquisition.missing_rate": {"t1": 0.0, "t2": 0.0, "stir": 0.0, "t1c": 1.0}}
    )
    k = _drop_study(cfg, False)
    study = render_study([SEED, k], cfg, patient_seed=[SEED, 100000 + k])
    assert "t1c" not in study.volumes
    rows = manifest_records(study, {s: f"{s}.nii.gz" for s in study.volumes})
    drop = [r for r in rows if r["finding"] == "drop_metastases"]
    assert drop and all(r["compartment"] == "" for r in drop)
    assert all(r["drawn_compartment"] == "intradural_extramedullary" for r in drop)  # splits stratify by it
    assert all(r["compartment"] == r["drawn_compartment"] for r in rows if r["finding"] != "drop_metastases")

    with_contrast = dict(
        cfg,
        acquisition=dict(cfg["acquisition"], missing_rate={"t1": 0.0, "t2": 0.0, "stir": 0.0, "t1c": 0.0}),
    )
    study = render_study([SEED, k], with_contrast, patient_seed=[SEED, 100000 + k])
    rows = manifest_records(study, {s: f"{s}.nii.gz" for s in study.volumes})
    assert [r["compartment"] for r in rows if r["finding"] == "drop_metastases"] == [
        "intradural_extramedullary"
    ] * len(drop)
