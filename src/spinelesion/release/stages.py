"""What each kind of release stage does, given its folder and its inputs' folders.

Every stage writes only inside its own folder; a stage reading a model or a data set gets the
folder of the stage that made it. Commands run as a user runs them (``spinelesion-make-data``,
``-insert``, ``-train``), so a stage's log is the command's own.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinelesion.release.checks import BIN, CHECKS, CheckContext, run_command
from spinelesion.release.recipe import Stage

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    folder: Path  # this stage's folder
    inputs: dict[str, Path]  # earlier stages' folders by name
    shared: Path  # ../shared/data
    models: Path  # where publish writes models/<name>
    overrides: tuple[str, ...] = ()  # Hydra overrides every training gets (e.g. trainer=ddp)

    @property
    def cache(self) -> Path:
        """The work folder's one study cache, shared by the recipe's trainings and checks."""
        return self.folder.parent / "cache"


def model_of(folder: Path) -> Path:
    """The model folder a stage left: its ``model/`` (train, scan_point, judge)."""
    model = folder / "model"
    if not (model / "metadata.json").is_file():
        raise FileNotFoundError(f"{folder}: no model/metadata.json (did the stage finish?)")
    return model


def resolve_under(root: Path, value: str) -> Path:
    """``value`` as a path: absolute as given, else under ``root`` (shared data, the project)."""
    path = Path(value)
    return path if path.is_absolute() else Path(root) / path


def phantom(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    p = stage.params
    run_command(
        str(BIN / "spinelesion-make-data"),
        f"output_dir={ctx.folder}",
        f"hydra.run.dir={ctx.folder / 'logs'}",
        f"studies={int(p['studies'])}",
        f"seed={int(p['seed'])}",
        "formats=[nifti]",
        *[str(o) for o in p.get("overrides", [])],
    )
    return {"manifest": str(ctx.folder / "manifest.csv")}


def insert(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    p = stage.params
    backgrounds = resolve_under(ctx.shared, str(p["backgrounds"]))
    if not backgrounds.is_dir():
        raise FileNotFoundError(
            f"{backgrounds}: real backgrounds not found (../shared/data beside the project)"
        )
    run_command(
        str(BIN / "spinelesion-insert"),
        f"output_dir={ctx.folder}",
        f"hydra.run.dir={ctx.folder / 'logs'}",
        f"backgrounds={backgrounds}",
        *[str(o) for o in p.get("overrides", [])],
    )
    return {"manifest": str(ctx.folder / "manifest.csv")}


def insert_config() -> dict[str, Any]:
    """``configs/insert.yaml`` as plain data: levels, native resolutions, cord levels (the plain
    renderer and the spine locator read real backgrounds as the insertion does)."""
    import yaml

    from spinelesion.config_path import CONFIG_DIR

    return dict(yaml.safe_load((Path(CONFIG_DIR) / "insert.yaml").read_text()))


def plain(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """The plain renderer's findings in every body of an insertion set's subjects: its held-out
    (test) ones by default, or every subject in its own split (``splits: all``), so that a
    training can read this renderer too and a check its held-out subjects."""
    from spinelesion.data.manifest import read_manifest
    from spinelesion.insert.plain import generate_plain

    insert_cfg = insert_config()
    rows = read_manifest(ctx.inputs[stage.params["subjects_of"]] / "manifest.csv").rows
    which = stage.params.get("splits", "test")
    if which not in ("test", "all"):
        raise ValueError(f"stage {stage.name}: splits must be 'test' or 'all', got {which!r}")
    split_of = {r.patient_id: r.split for r in rows if which == "all" or r.split == "test"}
    backgrounds = resolve_under(ctx.shared, str(stage.params["backgrounds"]))
    manifest = generate_plain(
        backgrounds,
        split_of,
        ctx.folder,
        levels=insert_cfg["levels"],
        bottom_level=insert_cfg.get("bottom_level"),
        cord_levels=insert_cfg["cord_levels"],
        findings=stage.params.get("findings"),
        workers=int(insert_cfg.get("workers", 1)),
    )
    return {"manifest": str(manifest), "subjects": sorted(split_of)}


def train(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """``spinelesion-train`` on the named sets (from ``init``'s model when given); resumes from its
    own last checkpoint when a previous run of this stage was interrupted."""
    p = stage.params
    manifests = [str(ctx.inputs[m] / "manifest.csv") for m in p["manifests"]]
    args = [
        str(BIN / "spinelesion-train"),
        f"hydra.run.dir={ctx.folder}",
        f"data.cache_dir={ctx.cache}",
        "data.manifest=[" + ",".join(manifests) + "]",
        *[str(o) for o in p.get("overrides", [])],
        *ctx.overrides,
    ]
    if not any(str(a).startswith("trainer=") for a in args[2:]) and _cuda():
        args.append("trainer=gpu")  # the same recipe on a GPU machine, unchanged
    if p.get("init"):
        args.append(f"init_from={model_of(ctx.inputs[p['init']])}")
    last = ctx.folder / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("%s: resuming from %s", stage.name, last)
        args.append(f"ckpt_path={last}")
    run_command(*args)
    model = model_of(ctx.folder)
    meta_path = model / "metadata.json"
    training = (json.loads(meta_path.read_text()).get("training") or {}) if meta_path.is_file() else {}
    epochs, planned = training.get("epochs"), (training.get("trainer") or {}).get("max_epochs")
    if isinstance(epochs, int) and isinstance(planned, int) and epochs < planned:
        log.warning("%s: training ended after %d of %d planned epochs", stage.name, epochs, planned)
    return {"model": str(model), "epochs": epochs, "planned_epochs": planned}


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def mine(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    from spinelesion.tasks.hard_negatives import mine_hard_negatives

    p = stage.params
    manifest = mine_hard_negatives(
        ctx.inputs[p["studies_of"]] / "manifest.csv",
        model_of(ctx.inputs[p["model"]]),
        ctx.folder,
        {**dict(p.get("settings") or {}), "progress": True},
    )
    summary = json.loads((ctx.folder / "mining.json").read_text())
    return {"manifest": str(manifest), "rois": summary.get("candidates")}


def import_model(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """A copy of an existing model folder (relative paths: to the folder holding models/)."""
    source = resolve_under(ctx.models.parent, str(stage.params["path"]))
    if not (source / "metadata.json").is_file():
        raise FileNotFoundError(f"{source}: no metadata.json (not a model folder)")
    return {"model": str(copy_model(source, ctx.folder)), "source": str(source)}


def copy_model(source: Path, folder: Path) -> Path:
    dest = folder / "model"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest)
    return dest


def update_metadata(model: Path, path: tuple[str, ...], value: Any, merge: bool = False) -> None:
    """Set ``metadata[path...]`` (merging a mapping into what is there when ``merge``) and rewrite
    the model card."""
    from spinelesion.models.card import write_model_card
    from spinelesion.models.folder import write_metadata

    meta = json.loads((model / "metadata.json").read_text())
    node = meta
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if merge and isinstance(node.get(path[-1]), dict):
        node[path[-1]] = {**node[path[-1]], **value}
    else:
        node[path[-1]] = value
    write_metadata(model, meta)  # re-sealed: the scan point is an inference setting
    write_model_card(model, meta)


def locator(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """The spine locator trained on real body masks (each subject in the split of the set
    ``split_from`` names, dataset by dataset; a dataset in ``measure_only`` only measured) and
    phantom spines (:mod:`spinelesion.tasks.locator`): ``locator.safetensors`` and ``locator.json``."""
    from spinelesion.data.manifest import read_manifest
    from spinelesion.localize.model import LocatorSettings
    from spinelesion.tasks.locator import train_locator

    p = stage.params
    roots, sets = list(p["backgrounds"]), list(p["split_from"])
    if len(roots) != len(sets):
        raise ValueError(f"stage {stage.name}: backgrounds and split_from must name as many entries")
    measure_only = set(p.get("measure_only") or [])
    backgrounds = []
    for root, name in zip(roots, sets, strict=True):
        rows = read_manifest(ctx.inputs[name] / "manifest.csv").rows
        split_of = {r.patient_id: ("test" if root in measure_only else r.split) for r in rows if r.split}
        backgrounds.append((resolve_under(ctx.shared, str(root)), split_of))
    insert_cfg = insert_config()
    entry = train_locator(
        backgrounds,
        insert_cfg,
        ctx.folder,
        settings=LocatorSettings.from_dict(p.get("settings")),
        phantom=p.get("phantom"),
        steps=int(p.get("steps", 800)),
        seed=int(p.get("seed", 0)),
    )
    return {"locator": str(ctx.folder / "locator.json"), "held_out": entry["info"]["held_out"]}


def with_locator(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """A copy of the model with a ``locator`` stage's spine locator in its folder and metadata."""
    p = stage.params
    model = copy_model(model_of(ctx.inputs[p["model"]]), ctx.folder)
    source = ctx.inputs[p["locator"]]
    entry = json.loads((source / "locator.json").read_text())
    shutil.copy2(source / entry["weights"], model / entry["weights"])
    update_metadata(model, ("locator",), entry)
    return {"model": str(model)}


def scan_point(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """A copy of the model with scan mode's call threshold chosen on the validation subjects' real
    studies (untouched and with one inserted finding) of each set ``studies_of`` names: metadata
    ``scan``, with the curve it was chosen on."""
    from spinelesion.evaluation.scan_operating import choose_call_threshold, operating_curve
    from spinelesion.release.checks import recorded_scans
    from spinelesion.tasks.hard_negatives import study_rows

    p = stage.params
    model = copy_model(model_of(ctx.inputs[p["model"]]), ctx.folder)
    sets = [p["studies_of"]] if isinstance(p["studies_of"], str) else list(p["studies_of"])
    records: list[dict[str, Any]] = []
    names: list[str] = []
    for name in sets:
        manifest = ctx.inputs[name] / "manifest.csv"
        groups = study_rows(manifest, ("val",))
        records += recorded_scans(model, manifest, groups)[0]
        names += sorted({r["patient_id"] for rows in groups.values() for r in rows})
    curve = operating_curve(records)
    loss = float(p.get("max_sensitivity_loss", 0.02))
    budget = p.get("max_untouched_false_calls")
    budget = None if budget is None else float(budget)
    untouched = sum(1 for r in records if not r["lesions"])
    result = {
        "call_threshold": choose_call_threshold(curve, loss, budget),
        "max_sensitivity_loss": loss,
        "max_untouched_false_calls": budget,
        "fitted_on": (
            f"{len(records)} real studies ({untouched} untouched) of the validation subjects "
            f"({', '.join(sorted(names))})"
        ),
        "curve": curve,
    }
    update_metadata(model, ("scan",), result)
    return {"model": str(model), "call_threshold": result["call_threshold"]}


def check(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    p = stage.params
    name = str(p["check"])
    if name not in CHECKS:
        raise ValueError(f"release stage {stage.name}: unknown check {name!r} (checks: {', '.join(CHECKS)})")
    data = [p["data"]] if isinstance(p.get("data"), str) else list(p.get("data") or [])
    cctx = CheckContext(ctx.folder, {d: ctx.inputs[d] for d in data}, ctx.shared, ctx.cache)
    args = dict(p.get("args") or {})
    if data:
        args.setdefault("data", data[0])
    result = CHECKS[name].run(model_of(ctx.inputs[p["model"]]), cctx, **args)
    (ctx.folder / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return {"check": name, "label": p.get("label")}


def judge(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """A copy of the model with every check recorded in its metadata and card, and the release
    rule (written before measuring: the recipe's ``rule``) judged on them."""
    from spinelesion.release.rule import judge_rule

    p = stage.params
    model = copy_model(model_of(ctx.inputs[p["model"]]), ctx.folder)
    for name in p["checks"]:
        stage_folder = ctx.inputs[name]
        done = json.loads((stage_folder / "done.json").read_text())
        result = json.loads((stage_folder / "result.json").read_text())
        spec = CHECKS[done["outputs"]["check"]]
        label = done["outputs"].get("label")  # a metrics section's title (the set it was measured on)
        record = (*spec.record[:-1], str(label)) if label else spec.record
        update_metadata(model, record, result, merge=spec.merge)
    meta = json.loads((model / "metadata.json").read_text())
    if meta.get("renderers"):  # a release is judged by its worst held-out renderer (issue 34)
        from spinelesion.scoring.renderers import worst

        update_metadata(model, ("renderers_worst",), worst(meta["renderers"]))
        meta = json.loads((model / "metadata.json").read_text())
    verdict = judge_rule(meta, p["rule"])
    update_metadata(model, ("release_rule",), verdict)
    (ctx.folder / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    log.info("release rule: %s", "passed" if verdict["passed"] else "NOT passed")
    for line in verdict["lines"]:
        log.info(
            "  %s %s %s %s: %s",
            "ok " if line["passed"] else "NO ",
            line["what"],
            line["op"],
            line["target"],
            line["value"],
        )
    return {"model": str(model), "passed": verdict["passed"]}


def publish(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """The judged model into ``models/<name>``, only when it passed the rule (or ``force``)."""
    p = stage.params
    source = ctx.inputs[p["model"]]
    verdict = (
        json.loads((source / "verdict.json").read_text()) if (source / "verdict.json").is_file() else None
    )
    passed = bool(verdict and verdict.get("passed"))
    if not passed and not p.get("force"):
        raise RuntimeError(
            f"{stage.name}: the candidate did not pass the release rule ({source / 'verdict.json'}); "
            "models/ is unchanged (publish.force=true to publish anyway)"
        )
    name = str(p.get("name") or json.loads((model_of(source) / "metadata.json").read_text())["name"])
    dest = ctx.models / name
    staging = ctx.models / f".{name}.incoming"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(model_of(source), staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return {"published": str(dest), "passed": passed}


RUNNERS: Mapping[str, Callable[[Stage, StageContext], dict[str, Any]]] = {
    "phantom": phantom,
    "insert": insert,
    "plain": plain,
    "train": train,
    "mine": mine,
    "locator": locator,
    "with_locator": with_locator,
    "scan_point": scan_point,
    "check": check,
    "judge": judge,
    "publish": publish,
    "import": import_model,
}
