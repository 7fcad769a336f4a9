"""spinelesion-release: a recipe's stages run in order, each kept under a key of its inputs and
skipped when done; from/until/force; interrupted stages resume; the rule; the real recipe's plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spinelesion.config_schema import ConfigError
from spinelesion.release import run as release_run
from spinelesion.release import stages as release_stages
from spinelesion.release.recipe import Recipe, Stage, recipe_from_config
from spinelesion.release.rule import judge_rule
from spinelesion.release.store import WorkFolder, stage_key

ROOT = Path(__file__).resolve().parents[1]


def _recipe(**params: Any) -> Recipe:
    """data -> model -> mined -> model2 (phantom, train, mine, train), with fake runners below."""
    return recipe_from_config(
        "toy",
        {
            "data": {"kind": "phantom", "studies": params.get("studies", 4), "seed": 1, "estimate_min": 1},
            "model": {"kind": "train", "manifests": ["data"], "estimate_min": 2},
            "mined": {"kind": "mine", "model": "model", "studies_of": "data"},
            "model2": {"kind": "train", "manifests": ["data", "mined"], "init": "model"},
        },
    )


class Calls(list):
    """The stages run, in order; stages named in ``fail`` stop half way (an interrupted run)."""

    fail: set[str]


@pytest.fixture
def fake_runners(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every kind writes a marker naming its inputs."""
    calls = Calls()
    calls.fail = set()

    def runner(stage: Stage, ctx: release_stages.StageContext) -> dict[str, Any]:
        if stage.name in calls.fail:
            (ctx.folder / "partial").write_text("half done")
            raise RuntimeError("interrupted")
        calls.append(stage.name)
        (ctx.folder / "marker.txt").write_text(",".join(sorted(ctx.inputs)))
        return {"inputs": sorted(str(p.name) for p in ctx.inputs.values())}

    monkeypatch.setattr(release_run, "RUNNERS", {k: runner for k in release_stages.RUNNERS})
    return calls


def _run(recipe: Recipe, work: Path, **kwargs: Any) -> dict[str, str]:
    rows = release_run.run_release(recipe, work, work / "shared", work / "models", **kwargs)
    return {r.stage.name: r.status for r in rows}


def test_stages_run_in_order_then_are_skipped_and_readers_of_a_rerun_input_rerun(tmp_path, fake_runners):
    recipe = _recipe()
    _run(recipe, tmp_path)
    assert fake_runners == ["data", "model", "mined", "model2"]
    assert (tmp_path / "model2" / "marker.txt").read_text() == "data,mined,model"
    done = json.loads((tmp_path / "model" / "done.json").read_text())
    data_done = json.loads((tmp_path / "data" / "done.json").read_text())
    assert done["inputs"] == {"data": f"{data_done['key']}@{data_done['at']}"} and "seconds" in done
    assert "| model | train |" in (tmp_path / "plan.md").read_text()

    fake_runners.clear()
    statuses = _run(recipe, tmp_path)
    assert fake_runners == [] and set(statuses.values()) == {"done"}  # a second run does nothing

    _run(recipe, tmp_path, force=["mined"])  # a forced stage reruns, and so does its reader
    assert fake_runners == ["mined", "model2"]

    fake_runners.clear()
    _run(recipe, tmp_path, start="model")  # from: that stage and every later one
    assert fake_runners == ["model", "mined", "model2"]

    fake_runners.clear()
    _run(_recipe(studies=5), tmp_path, until="model")  # new inputs: the changed stage and its readers
    assert fake_runners == ["data", "model"]
    plan = {r.stage.name: r.status for r in release_run.plan(_recipe(studies=5), WorkFolder(tmp_path))}
    assert plan == {"data": "done", "model": "done", "mined": "rerun", "model2": "rerun"}


def test_a_kept_stage_is_used_as_finished_although_its_code_changed(tmp_path, fake_runners, monkeypatch):
    """keep=[...]: the drawn data survive a code change the user knows cannot change them (an edit
    of a DICOM reader the phantom never calls); its readers stay done too, and are keyed by it."""
    recipe = _recipe()
    _run(recipe, tmp_path)
    real_hash = release_run.code_hash
    monkeypatch.setattr(
        release_run, "code_hash", lambda kind: real_hash(kind) + ("x" if kind == "phantom" else "")
    )
    plan = {r.stage.name: r.status for r in release_run.plan(recipe, WorkFolder(tmp_path))}
    assert plan == {"data": "rerun", "model": "rerun", "mined": "rerun", "model2": "rerun"}
    fake_runners.clear()
    statuses = _run(recipe, tmp_path, keep=["data"])
    assert fake_runners == [] and statuses == {
        "data": "kept",
        "model": "done",
        "mined": "done",
        "model2": "done",
    }
    assert "| data | phantom | kept |" in (tmp_path / "plan.md").read_text()
    statuses = _run(recipe, tmp_path, keep=["data"], force=["data"])  # force wins over keep
    assert fake_runners == ["data", "model", "mined", "model2"]
    # an interrupted stage kept across a code change resumes in its folder (not wiped)
    fake_runners.clear()
    fake_runners.fail = {"model2"}
    with pytest.raises(RuntimeError, match="interrupted"):
        _run(recipe, tmp_path, force=["model2"])
    monkeypatch.setattr(release_run, "code_hash", lambda kind: real_hash(kind) + "y")  # every key changes
    fake_runners.fail = set()
    statuses = _run(recipe, tmp_path, keep=["data", "model", "mined", "model2"])
    assert fake_runners == ["model2"] and statuses["model2"] == "done"
    assert (tmp_path / "model2" / "partial").is_file()  # resumed where it stopped
    with pytest.raises(ConfigError, match="no release stage 'nope'"):
        _run(recipe, tmp_path, keep=["nope"])


def test_an_interrupted_stage_resumes_in_its_folder_and_a_missing_input_is_refused(tmp_path, fake_runners):
    recipe = _recipe()
    fake_runners.fail = {"model"}
    with pytest.raises(RuntimeError, match="interrupted"):
        _run(recipe, tmp_path)
    assert (tmp_path / "model" / "partial").is_file() and not (tmp_path / "model" / "done.json").exists()
    statuses = {r.stage.name: r.status for r in release_run.plan(recipe, WorkFolder(tmp_path))}
    assert statuses == {"data": "done", "model": "resume", "mined": "run", "model2": "run"}
    real_hash = release_run.code_hash
    with pytest.MonkeyPatch.context() as mp:  # a code change re-keys it: the folder is started afresh
        mp.setattr(release_run, "code_hash", lambda kind: real_hash(kind) + "z")
        statuses = {r.stage.name: r.status for r in release_run.plan(recipe, WorkFolder(tmp_path))}
        assert statuses["model"] == "rerun"
    fake_runners.fail = set()
    _run(recipe, tmp_path)
    assert (tmp_path / "model" / "partial").is_file()  # resumed in place, not wiped
    assert (tmp_path / "model" / "done.json").is_file()
    with pytest.raises(RuntimeError, match="needs data"):  # from= a stage whose input never ran
        _run(recipe, tmp_path / "fresh", start="model")


def test_the_key_follows_parameters_inputs_and_code():
    stage = Stage("m", "train", {"manifests": ["d"]})
    base = stage_key(stage, {"d": "k1"}, "code1")
    assert stage_key(stage, {"d": "k1"}, "code1") == base
    assert (
        stage_key(Stage("m", "train", {"manifests": ["d"], "overrides": ["x=1"]}), {"d": "k1"}, "code1")
        != base
    )
    assert stage_key(stage, {"d": "k2"}, "code1") != base
    assert stage_key(stage, {"d": "k1"}, "code2") != base


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ({"a": {"kind": "bake"}}, "unknown kind"),
        ({"a": {"kind": "phantom", "seed": 1}}, "missing studies"),
        ({"a": {"kind": "phantom", "studies": 1, "seed": 1, "colour": "red"}}, "unknown parameter"),
        (
            {"a": {"kind": "train", "manifests": ["b"]}, "b": {"kind": "phantom", "studies": 1, "seed": 1}},
            "earlier stage",
        ),
        ({"a": {"studies": 1}}, "no kind"),
    ],
)
def test_a_recipe_is_checked_before_anything_runs(stages, message):
    with pytest.raises(ConfigError, match=message):
        recipe_from_config("bad", stages)


def test_from_and_until_name_known_stages_in_order():
    recipe = _recipe()
    assert [s.name for s in recipe.select("model", "mined")] == ["model", "mined"]
    with pytest.raises(ConfigError, match="no release stage"):
        recipe.select("nope")
    with pytest.raises(ConfigError, match="comes after"):
        recipe.select("mined", "model")


def test_the_rule_passes_only_when_every_line_holds_on_a_recorded_number():
    meta = {"a": {"auc": 0.96, "calls": 1}, "b": {"none": None}}
    rule = [
        {"what": "a.auc", "op": ">=", "target": 0.95},
        {"what": "a.calls", "op": "<=", "target": 1},
    ]
    assert judge_rule(meta, rule)["passed"]
    missing = judge_rule(meta, [*rule, {"what": "b.none", "op": ">=", "target": 0}])
    assert not missing["passed"] and missing["lines"][-1]["value"] is None  # a check that did not run
    failing = judge_rule(meta, [{"what": "a.auc", "op": ">=", "target": 0.97}])
    assert not failing["passed"] and failing["lines"][0]["value"] == 0.96
    with pytest.raises(ConfigError, match="rule line 1"):
        judge_rule(meta, [{"what": "a.auc", "op": "=>", "target": 0.9}])


def test_publish_refuses_a_candidate_that_failed_the_rule(tmp_path):
    judged = tmp_path / "judge"
    (judged / "model").mkdir(parents=True)
    (judged / "model" / "metadata.json").write_text(json.dumps({"name": "demo"}))
    (judged / "verdict.json").write_text(json.dumps({"passed": False, "lines": []}))
    ctx = release_stages.StageContext(tmp_path / "publish", {"judge": judged}, tmp_path, tmp_path / "models")
    stage = Stage("publish", "publish", {"model": "judge"})
    with pytest.raises(RuntimeError, match="did not pass the release rule"):
        release_stages.publish(stage, ctx)
    assert not (tmp_path / "models").exists()
    out = release_stages.publish(Stage("publish", "publish", {"model": "judge", "force": True}), ctx)
    assert out["published"] == str(tmp_path / "models" / "demo") and not out["passed"]
    assert json.loads((tmp_path / "models" / "demo" / "metadata.json").read_text())["name"] == "demo"


def test_a_training_stage_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    commands: list[tuple[str, ...]] = []
    monkeypatch.setattr(release_stages, "run_command", lambda *a: commands.append(a))
    monkeypatch.setattr(release_stages, "model_of", lambda folder: folder / "model")
    (tmp_path / "train" / "checkpoints").mkdir(parents=True)
    (tmp_path / "train" / "checkpoints" / "last.ckpt").write_bytes(b"")
    ctx = release_stages.StageContext(
        tmp_path / "train", {"d": tmp_path / "d", "m0": tmp_path / "m0"}, tmp_path, tmp_path, ("trainer=gpu",)
    )
    release_stages.train(
        Stage("train", "train", {"manifests": ["d"], "init": "m0", "overrides": ["a=1"]}), ctx
    )
    args = commands[0]
    assert f"data.manifest=[{tmp_path / 'd' / 'manifest.csv'}]" in args
    assert "a=1" in args and "trainer=gpu" in args
    assert f"init_from={tmp_path / 'm0' / 'model'}" in args
    assert f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'last.ckpt'}" in args


def test_a_training_stage_that_ended_before_its_epochs_says_so(tmp_path, monkeypatch, caplog):
    """A wall-clock guard cut stage1 at epoch 16 of 40 on a busy CPU (2026-12-06): the stage's
    outputs and log name the epochs run against those planned."""
    import json as json_module

    def fake_train(*args: str) -> None:
        model = tmp_path / "train" / "model"
        model.mkdir(parents=True, exist_ok=True)
        meta = {"training": {"epochs": 16, "trainer": {"max_epochs": 40}}}
        (model / "metadata.json").write_text(json_module.dumps(meta))

    monkeypatch.setattr(release_stages, "run_command", fake_train)
    monkeypatch.setattr(release_stages, "model_of", lambda folder: folder / "model")
    ctx = release_stages.StageContext(tmp_path / "train", {"d": tmp_path / "d"}, tmp_path, tmp_path)
    with caplog.at_level("WARNING"):
        out = release_stages.train(Stage("stage1", "train", {"manifests": ["d"]}), ctx)
    assert out["epochs"] == 16 and out["planned_epochs"] == 40
    assert "stage1: training ended after 16 of 40 planned epochs" in caplog.text


def test_the_release_command_prints_the_real_recipes_plan(tmp_path):
    """The shipped recipe composes, checks and plans (nothing runs): every stage listed."""
    from spinelesion.release.run import hydra_arguments

    assert hydra_arguments(["--from", "stage1", "--until=judge", "--plan", "x=1"]) == [
        "from=stage1",
        "until=judge",
        "plan_only=true",
        "x=1",
    ]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "spinelesion.make_release",
            "--plan",
            f"work_dir={tmp_path / 'work'}",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    plan = (tmp_path / "work" / "plan.md").read_text()
    for stage in (
        "train400",
        "stage1",
        "mine_real1",
        "finetune2",
        "scan_point",
        "check_scan_inserted",
        "judge",
        "publish",
    ):
        assert f"| {stage} |" in plan, stage
    assert "to run" in out.stderr + out.stdout


@pytest.mark.slow  # every stage kind and the real-data checks, on toy data: ~2 min on the 2-core CPU
def test_a_toy_recipe_runs_every_stage_kind_and_a_second_run_does_nothing(tmp_path):
    """Phantom and insertion sets, a training, a mined round, a fine-tuning, the scan operating
    point, the checks (phantom, held-out real subjects, scan on untouched and inserted studies,
    mimics, the plain renderer), the rule and the release, on toy data; then nothing reruns."""
    from helpers_insert import write_toy_backgrounds

    shared = tmp_path / "shared"
    write_toy_backgrounds(shared / "toy-normals", ("toy_01", "toy_02", "toy_03"))
    write_body_manifest(shared / "toy-normals")
    small = [
        "trainer.max_epochs=1",
        "model.net.widths=[8,16,16,16]",
        "model.net.hidden=16",
        "callbacks.progress_bar=null",
        "data.progress=false",
        "logger=csv",
        "evaluate_splits=[]",
        "tta=[]",
    ]
    mining = {
        "threshold": 0.0,
        "max_rois": 2,
        "copies": 1,
        "studies": "all",
        "max_studies": 2,
        "exclude_mm": 25.0,
    }
    stages = {
        "data": {"kind": "phantom", "studies": 8, "seed": 3},
        "test": {"kind": "phantom", "studies": 3, "seed": 4},
        "real": {
            "kind": "insert",
            "backgrounds": "toy-normals",
            "overrides": [
                "levels=[L1,L2,L3]",
                "variants_per_subject=2",
                "workers=1",
                "splits={train: 0.34, val: 0.33, test: 0.33}",
            ],
        },
        "plain": {"kind": "plain", "backgrounds": "toy-normals", "subjects_of": "real"},
        "stable": {
            "kind": "insert",
            "backgrounds": "toy-normals",
            "overrides": [
                "levels=[L1,L2,L3]",
                "variants_per_subject=0",
                "workers=1",
                "appearance.enabled=true",
                "appearance.copies=1",
                "splits={train: 0.34, val: 0.33, test: 0.33}",
                "normal_rois={per_body: 1, discs: false, canal: false, background: 0, region: 0}",
            ],
        },
        "stage1": {"kind": "train", "manifests": ["data", "real"], "overrides": small},
        "mined": {"kind": "mine", "model": "stage1", "studies_of": "data", "settings": mining},
        "tuned": {
            "kind": "train",
            "init": "stage1",
            "manifests": ["data", "real", "mined"],
            "overrides": small,
        },
        "loc": {  # a spine locator of a few steps, split as the insertion set, in the model's folder
            "kind": "locator",
            "backgrounds": ["toy-normals"],
            "split_from": ["real"],
            "phantom": {"studies": 1, "seed": 5, "val_studies": 1},
            "steps": 2,
            "settings": {"channels": [4, 8], "patch": [16, 16, 16]},
        },
        "located": {"kind": "with_locator", "model": "tuned", "locator": "loc"},
        "point": {  # a list of sets, and a budget of false calls per healthy (untouched) study
            "kind": "scan_point",
            "model": "located",
            "studies_of": ["real"],
            "max_untouched_false_calls": 0.5,
        },
        "fresh": {
            "kind": "check",
            "check": "phantom_fresh",
            "model": "point",
            "data": "test",
            "label": "toy test",
        },
        "heldout": {"kind": "check", "check": "real_heldout", "model": "point", "data": "real"},
        "untouched": {
            "kind": "check",
            "check": "scan_untouched",
            "model": "point",
            "data": "real",
            "args": {"backgrounds": "toy-normals"},
        },
        "inserted": {
            "kind": "check",
            "check": "scan_inserted",
            "model": "point",
            "data": "real",
            "args": {"splits": ["test"], "lesion_studies": True},
        },
        "mimics": {"kind": "check", "check": "mimics", "model": "point", "data": "real"},
        "dense": {"kind": "check", "check": "real_dense", "model": "point", "data": "real"},
        "site": {
            "kind": "check",
            "check": "site_left_out",
            "model": "point",
            "data": "real",
            "args": {
                "dataset": "toy",
                "normals": "toy-normals/manifest.csv",
                "splits": ["test"],
                "dense": "real",
            },
        },
        "stability": {"kind": "check", "check": "stability", "model": "point", "data": "stable"},
        "plain_check": {
            "kind": "check",
            "check": "renderer",
            "model": "point",
            "data": "plain",
            "args": {"name": "plain", "paired": True, "sequences": ["t2"]},  # the toy studies have t1 and t2
        },
        "judge": {
            "kind": "judge",
            "model": "point",
            "checks": [
                "fresh",
                "heldout",
                "untouched",
                "inserted",
                "mimics",
                "dense",
                "plain_check",
                "site",
                "stability",
            ],
            "rule": [
                {"what": "metrics.toy test.n", "op": ">=", "target": 1},
                {"what": "real_anatomy.scan_untouched_heldout.studies", "op": ">=", "target": 1},
            ],
        },
        "publish": {"kind": "publish", "model": "judge", "name": "toy-demo"},
    }
    recipe = recipe_from_config("toy", stages)
    work, models = tmp_path / "work", tmp_path / "models"
    rows = release_run.run_release(recipe, work, shared, models)
    assert all(r.status == "done" for r in rows)
    meta = json.loads((models / "toy-demo" / "metadata.json").read_text())
    assert meta["release_rule"]["passed"] and "call_threshold" in meta["scan"]
    assert meta["locator"]["info"]["trained_on"]["toy"]["train"] >= 1  # the locator travelled to models/
    assert (models / "toy-demo" / meta["locator"]["weights"]).is_file()
    assert "## Spine locator" in (models / "toy-demo" / "README.md").read_text()
    scan = meta["scan"]  # the healthy rate on the val subject's whole untouched study beside the crops
    assert scan["max_untouched_false_calls"] == 0.5 and "(1 untouched)" in scan["fitted_on"]
    assert all(p["untouched_studies"] == 1 for p in scan["curve"])
    assert meta["metrics"]["toy test"]["n"] >= 1  # the check stage's label titles its section
    real = meta["real_anatomy"]  # three checks merged into one section, as the card reads it
    assert real["heldout_subjects"] and real["heldout_per_dataset"]["toy"]["subjects"] == 1
    assert real["scan_untouched_heldout"]["studies"] == 1
    assert meta["real_inserted_scan"]["studies"] == 2 and "lesions_found" in meta["real_inserted_scan"]
    assert "called_normal" in meta["real_mimics"]
    places = real["dense_normals_by_place"]  # the test subject's untouched ROIs, per place
    assert places["body"]["n"] == 3 * 3 and {"canal", "disc"} <= set(places) and real["dense_subjects"]
    plain = meta["renderers"]["plain"]  # the held-out renderer: every class, per-class figures
    assert plain["n"] and {"discitis", "schmorl_node", "intradural_mass"} <= set(plain["per_finding"])
    assert set(plain["mimics_called_normal"]) == {"discitis", "schmorl_node", "modic1", "haemangioma"}
    assert "intradural_extramedullary" in plain["sensitivity"] and "toy" in plain["per_dataset"]
    from spinelesion.data.manifest import read_manifest

    asked = read_manifest(work / "plain_check" / "manifest.csv").rows  # T2 only, as the args say
    assert plain["sequences"] == ["t2"] and asked and all(set(r.sequences) == {"t2"} for r in asked)
    assert "## Held-out renderers" in (models / "toy-demo" / "README.md").read_text()
    site = meta["leave_one_dataset_out"]["toy"]  # one test patient: its exam as acquired, per sequence
    assert len(site["patients"]) == 1 and site["scan_untouched"]["studies"] == 1
    assert site["bodies_called_normal"]["t1+t2"]["n"] == 3  # three toy bodies
    assert set(site["inserted_per_sequence"]) == {"t1+t2"}
    dense = site["dense_normals_by_sequence"]["t1+t2"]  # the test subject's canal, per place and level
    assert {k: v["n"] for k, v in dense.items()} == {
        k: v["n"] for k, v in places.items()
    }  # the dense check's ROIs
    assert dense["canal"]["n"] >= 3 and any(k.startswith("canal@") for k in dense)
    stable = real["appearance_stability"]  # each test body beside its drawn copy
    assert stable["pairs"] == 3 and stable["studies"] == 1 and 0.0 <= stable["call_changed"] <= 1.0
    assert (models / "toy-demo" / "README.md").is_file()  # the card, rewritten with the checks
    # the checks read their studies through the recipe's one cache, not each into its own folder
    assert not list((work / "heldout").rglob("cache")) and list((work / "cache" / "monai").glob("*.pt"))
    mined = (work / "mined" / "manifest.csv").read_text().splitlines()
    assert len(mined) > 1  # hard negatives were written
    assert "| publish | publish | done |" in (work / "plan.md").read_text()

    again = release_run.run_release(recipe, work, shared, models)
    assert [r.status for r in again] == ["done"] * len(stages)
    first = {r.stage.name: r.measured_min for r in rows}
    assert all(abs((r.measured_min or 0) - (first[r.stage.name] or 0)) < 0.01 for r in again)  # as measured


def write_body_manifest(root: Path) -> Path:
    """``root/manifest.csv``: one none/none row per labelled body of each study (as ../shared's)."""
    import csv

    import numpy as np
    from scipy import ndimage

    from spinelesion.io.nifti import read_nifti
    from spinelesion.io.volume import apply_affine

    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        bodies = read_nifti(folder / "vertebral_bodies.nii.gz", dtype=np.int16)
        labels = [int(k) for k in np.unique(bodies.array) if k > 0]
        centres = apply_affine(
            bodies.affine, np.asarray(ndimage.center_of_mass(bodies.array > 0, bodies.array, labels))
        )
        for k, c in zip(labels, centres, strict=True):
            rows.append(
                dict(case_id=f"{folder.name}_vb{k}", study_id=folder.name, patient_id=folder.name, split="",
                     t1=f"{folder.name}/t1.nii.gz", t2=f"{folder.name}/t2.nii.gz", stir="", t1c="",
                     x_mm=round(float(c[0]), 2), y_mm=round(float(c[1]), 2), z_mm=round(float(c[2]), 2),
                     compartment="none", fracture="none", level="", finding="normal")
            )  # fmt: skip
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def test_held_out_dataset_scan_takes_unused_studies_named_by_sequence(tmp_path: Path) -> None:
    from spinelesion.release.checks import unused_real_studies

    normals, real = tmp_path / "real-normals", tmp_path / "real"
    for folder, files in {
        normals / "vb2_01": ["t2.nii.gz", "t2_bodies.nii.gz"],  # a training subject
        normals / "other_t1t2": ["t1.nii.gz", "t2.nii.gz", "t2star.nii.gz", "cord_t2.nii.gz"],
        real / "cervical": ["t2.nii.gz", "t2_seg-manual.nii.gz"],
        real / "abdomen": ["example_mr_sm.nii.gz"],  # sequence not stated: never guessed
        real / "ct": ["dicom"],
    }.items():
        folder.mkdir(parents=True)
        for name in files:
            (folder / name).write_bytes(b"")
    found = unused_real_studies([normals, real, tmp_path / "absent"], {"vb2_01"})
    assert list(found) == ["cervical", "other_t1t2"]
    assert found["other_t1t2"] == {
        "t1": normals / "other_t1t2" / "t1.nii.gz",
        "t2": normals / "other_t1t2" / "t2.nii.gz",
    }


def test_checks_only_runs_the_recipes_checks_on_a_given_model():
    """make real-check: the shipped recipe's checks and rule on the released folder, with only the
    data sets they read (no training, no mining), published back whatever the verdict."""
    import yaml

    from spinelesion.release.recipe import checks_only

    cfg = yaml.safe_load((ROOT / "configs" / "release" / "default.yaml").read_text())
    full = recipe_from_config(cfg["name"], cfg["stages"])
    recipe = checks_only(full, "models/spinelesion-demo")
    kinds = {s.kind for s in recipe.stages}
    assert not kinds & {"train", "mine", "scan_point"}
    assert recipe.stage("released").params == {"path": "models/spinelesion-demo"}
    checks = [s for s in recipe.stages if s.kind == "check"]
    judged = full.stage("judge").params["checks"]
    assert sorted(s.name for s in checks) == sorted(f"{c}_released" for c in judged)
    # the recipe's traces of its own trainings are checks too, but no judge reads them
    assert {"trace_stage1", "trace_finetune1"} <= {s.name for s in full.stages if s.kind == "check"}
    assert all(s.params["model"] == "released" and s.name.endswith("_released") for s in checks)
    judge = recipe.stage("judge_released")
    assert judge.params["model"] == "released" and all(
        c.endswith("_released") for c in judge.params["checks"]
    )
    assert judge.params["rule"] == full.stage("judge").params["rule"]  # the same rule
    publish = recipe.stage("publish_released")
    assert publish.params["model"] == "judge_released" and publish.params["force"] is True
    data = {s.name for s in recipe.stages if s.kind in ("phantom", "insert", "plain")}
    assert data == {
        "test150",
        "shift100",
        "real_insert",
        "real_dense",
        "real_mimics",
        "real_plain",
        "site_eval",
        "site_insert",
        "site_dense",  # the site checks read it per sequence and place
        "real_stability",
        "real_chronic",  # its held-out subjects' healed fractures
        "real_stenosis",  # ... and degenerative narrowings
    }


def test_on_a_gpu_machine_the_trainings_use_the_gpu_trainer_unless_told(tmp_path, monkeypatch):
    commands: list[tuple[str, ...]] = []
    monkeypatch.setattr(release_stages, "run_command", lambda *a: commands.append(a))
    monkeypatch.setattr(release_stages, "model_of", lambda folder: folder / "model")
    monkeypatch.setattr(release_stages, "_cuda", lambda: True)
    ctx = release_stages.StageContext(tmp_path / "t", {"d": tmp_path / "d"}, tmp_path, tmp_path)
    release_stages.train(Stage("t", "train", {"manifests": ["d"]}), ctx)
    assert commands[-1].count("trainer=gpu") == 1
    told = release_stages.StageContext(
        tmp_path / "t", {"d": tmp_path / "d"}, tmp_path, tmp_path, ("trainer=ddp",)
    )
    release_stages.train(Stage("t", "train", {"manifests": ["d"]}), told)
    assert "trainer=gpu" not in commands[-1] and "trainer=ddp" in commands[-1]


def test_the_code_part_of_a_key_is_the_source_and_configs_the_kind_reads(tmp_path):
    from spinelesion.release.store import code_hash

    package, configs = tmp_path / "spinelesion", tmp_path / "configs"
    (package / "phantom").mkdir(parents=True)
    (package / "models").mkdir()
    configs.mkdir()
    (package / "phantom" / "draw.py").write_text("A = 1\n")
    (package / "models" / "net.py").write_text("B = 1\n")
    (configs / "make_data.yaml").write_text("studies: 1\n")
    (configs / "bench.yaml").write_text("repeats: 1\n")
    before = code_hash("phantom", package, configs)
    (package / "models" / "net.py").write_text("B = 2\n")  # not what a phantom stage runs
    (configs / "bench.yaml").write_text("repeats: 2\n")
    assert code_hash("phantom", package, configs) == before
    (configs / "make_data.yaml").write_text("studies: 2\n")
    assert code_hash("phantom", package, configs) != before
    after_config = code_hash("phantom", package, configs)
    (package / "phantom" / "draw.py").write_text("A = 2\n")
    assert code_hash("phantom", package, configs) != after_config


def test_kinds_that_run_models_or_evaluation_also_hash_scoring():
    """Both import spinelesion.scoring: an edit to a metric must redo their stages."""
    from spinelesion.release.recipe import KINDS

    lax = [name for name, kind in KINDS.items() if {"models", "evaluation"} & set(kind.code)]
    assert lax and all("scoring" in KINDS[name].code for name in lax), lax


def test_a_stage_is_not_started_on_a_nearly_full_disk(tmp_path, fake_runners, monkeypatch):
    """A stage that fills the disk fails midway (a check, 2026-12-07): under min_free_gb the run
    stops before starting the next stage, naming the study cache and how to thin it; the stages
    finished stay finished."""
    import shutil
    from collections import namedtuple

    from spinelesion.io.limits import ResourceLimitError

    recipe = _recipe()
    _run(recipe, tmp_path, until="data", min_free_gb=1.0)  # plenty free
    (tmp_path / "cache" / "monai").mkdir(parents=True)
    (tmp_path / "cache" / "monai" / "study.pt").write_bytes(b"x" * 2048)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100 * 2**30, 99.5 * 2**30, 2**29))
    with pytest.raises(ResourceLimitError, match=r"release stage model: 512\.0 MiB free.*holds 2\.0 KiB"):
        _run(recipe, tmp_path, min_free_gb=1.0)
    assert fake_runners == ["data"] and not (tmp_path / "model").exists()
    assert _run(recipe, tmp_path, min_free_gb=0.0)["model2"] == "done"  # 0: no guard


def test_the_study_cache_is_cut_to_its_cap_before_each_stage(tmp_path, fake_runners):
    """cache_max_gb: the shared study cache is pruned, least recently used first, before a stage
    starts; 0 leaves it alone."""
    import os

    cache = tmp_path / "cache" / "monai"
    cache.mkdir(parents=True)
    for k in range(4):
        (cache / f"s{k}.pt").write_bytes(b"x" * 1024)
        os.utime(cache / f"s{k}.pt", (1_000_000 + k, 1_000_000 + k))
    _run(_recipe(), tmp_path, until="data", cache_max_gb=0.0)
    assert len(list(cache.iterdir())) == 4
    _run(_recipe(), tmp_path, until="model", cache_max_gb=2048 / 2**30)
    assert sorted(p.name for p in cache.iterdir()) == ["s2.pt", "s3.pt"]
