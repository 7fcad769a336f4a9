"""Run a release recipe stage by stage, skipping what is done, with a plan and a timing table.

``from`` reruns a stage and every later one; ``until`` stops after a stage; ``force`` reruns the
named stages. The plan (``plan.md`` in the work folder, and the log) lists every stage with its
estimate, its measured time when done, and whether it will run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinelesion.atomic import write_text
from spinelesion.release.recipe import Recipe, Stage
from spinelesion.release.stages import RUNNERS, StageContext, resolve_under
from spinelesion.release.store import WorkFolder, code_hash, folder_hash, stage_key

log = logging.getLogger(__name__)


@dataclass
class PlanRow:
    stage: Stage
    key: str
    status: str  # "done" | "kept" (done under an older key, kept as asked) | "run" | "rerun" (done under
    # other inputs, or forced) | "resume" | "skip" (not selected)
    estimate_min: float | None
    measured_min: float | None
    done: bool = False  # finished under the current inputs (whether or not it runs again now)


def stage_keys(recipe: Recipe, root: Path, kept: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every stage's key; an imported folder (relative to ``root``) is keyed by its contents. A
    ``kept`` stage keeps the key it finished under, so the stages reading it are keyed by that run."""
    codes: dict[str, str] = {}
    keys: dict[str, str] = {}
    for stage in recipe.stages:
        if kept and stage.name in kept:
            keys[stage.name] = kept[stage.name]
            continue
        if stage.kind not in codes:
            codes[stage.kind] = code_hash(stage.kind)
        code = codes[stage.kind]
        if stage.kind == "import":
            code += folder_hash(resolve_under(root, str(stage.params["path"])))
        keys[stage.name] = stage_key(stage, keys, code)
    return keys


def plan(
    recipe: Recipe,
    work: WorkFolder,
    start: str | None = None,
    until: str | None = None,
    force: Sequence[str] = (),
    root: Path = Path("."),
    keep: Sequence[str] = (),
) -> list[PlanRow]:
    for name in (*force, *keep):
        recipe.stage(name)  # an unknown name is an error
    # keep: a finished stage used as it is although its key changed (a code change that cannot
    # change its output, e.g. in a reader it never calls): the user's call, shown as "kept". An
    # interrupted one resumes under the key it started with (a training from its last checkpoint).
    records = {n: work.record(recipe.stage(n)) for n in keep}
    kept = {n: str(r["key"]) for n, r in records.items() if r is not None and n not in force}
    resumed = {
        n: k for n in keep if n not in kept and n not in force and (k := work.started_key(recipe.stage(n)))
    }
    keys = stage_keys(recipe, root, {**kept, **resumed})
    selected = {s.name for s in recipe.select(start, until)}
    redo = set(force) | ({s.name for s in recipe.select(start, None)} if start else set())
    rows: list[PlanRow] = []
    will_run: set[str] = set()
    for stage in recipe.stages:
        rec = work.record(stage)
        seconds = rec.get("seconds") if rec else None
        measured = float(seconds) / 60.0 if isinstance(seconds, int | float) else None
        inputs = {n: work.stamp(recipe.stage(n)) for n in stage.needs}
        done = work.is_done(stage, keys[stage.name], inputs) and not will_run & set(stage.needs)
        if stage.name in kept:  # as finished, whatever its inputs' runs since
            done = stage.name not in redo
        if stage.name not in selected:
            status = "skip"
        elif done and stage.name not in redo:
            status = "kept" if stage.name in kept else "done"
        elif rec is not None:
            status = "rerun"
        elif work.folder(stage).exists():
            # an interrupted run resumes only under the key it started with (WorkFolder.start
            # clears a folder started under another key)
            status = "resume" if work.started_key(stage) == keys[stage.name] else "rerun"
        else:
            status = "run"
        if status in ("run", "rerun", "resume"):
            will_run.add(stage.name)
        rows.append(
            PlanRow(stage, keys[stage.name], status, stage.estimate_min, measured if done else None, done)
        )
    return rows


def plan_table(rows: Sequence[PlanRow]) -> str:
    lines = [
        "| stage | kind | status | estimate (min) | measured (min) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        est = f"{r.estimate_min:.0f}" if r.estimate_min is not None else "-"
        got = f"{r.measured_min:.1f}" if r.measured_min is not None else "-"
        lines.append(f"| {r.stage.name} | {r.stage.kind} | {r.status} | {est} | {got} |")
    todo = [r for r in rows if r.status in ("run", "rerun", "resume")]
    left = sum(r.estimate_min or 0.0 for r in todo)
    measured = sum(r.measured_min or 0.0 for r in rows)
    lines += [
        "",
        f"{len(todo)} stage(s) to run, about {left:.0f} min by the estimates; done so far: {measured:.0f} min measured.",
    ]
    return "\n".join(lines) + "\n"


def write_plan(recipe: Recipe, work: WorkFolder, rows: Sequence[PlanRow]) -> str:
    """``plan.md`` in the work folder; returns the table."""
    table = plan_table(rows)
    write_text(work.root / "plan.md", f"# Release plan: {recipe.name}\n\nwork folder: {work.root}\n\n{table}")
    return table


def run_release(
    recipe: Recipe,
    work_dir: Path,
    shared: Path,
    models: Path,
    start: str | None = None,
    until: str | None = None,
    force: Sequence[str] = (),
    overrides: Sequence[str] = (),
    plan_only: bool = False,
    keep: Sequence[str] = (),
    min_free_gb: float = 0.0,
    cache_max_gb: float = 0.0,
) -> list[PlanRow]:
    """Run the recipe's stages that are not done (see :func:`plan`). Before each stage, the shared
    study cache is cut to ``cache_max_gb`` (:func:`prune_study_cache`; 0: never), then a stage is
    refused with less than ``min_free_gb`` free on the work folder's disk (a stage that fills the
    disk fails midway: 2026-12-07, a check, "No space left on device")."""
    work = WorkFolder(Path(work_dir))
    work.root.mkdir(parents=True, exist_ok=True)
    rows = plan(recipe, work, start, until, force, Path(models).parent, keep)
    log.info("release %s, work folder %s\n%s", recipe.name, work.root, write_plan(recipe, work, rows))
    if plan_only:
        return rows
    by_name = {r.stage.name: r for r in rows}
    for row in rows:
        if row.status in ("skip", "done", "kept"):
            if row.status != "skip":
                log.info("%s: %s (%.1f min), skipped", row.stage.name, row.status, row.measured_min or 0.0)
            continue
        stage = row.stage
        missing = [n for n in stage.needs if not by_name[n].done]
        if missing:
            raise RuntimeError(
                f"release stage {stage.name} needs {', '.join(missing)}, not done under the current inputs: "
                "run without from=/until= first"
            )
        prune_study_cache(work.root, cache_max_gb)
        check_free_disk(work.root, min_free_gb, stage.name)
        row.done = False
        folder = work.start(stage, row.key)
        log.info("%s (%s): %s", stage.name, stage.kind, "resuming" if row.status == "resume" else "running")
        started = time.perf_counter()
        ctx = StageContext(
            folder,
            {n: work.folder(recipe.stage(n)) for n in stage.needs},
            Path(shared),
            Path(models),
            tuple(overrides),
        )
        outputs: dict[str, Any] = RUNNERS[stage.kind](stage, ctx)
        seconds = time.perf_counter() - started
        work.finish(stage, row.key, seconds, outputs, {n: work.stamp(recipe.stage(n)) for n in stage.needs})
        row.status, row.measured_min, row.done = "done", seconds / 60.0, True
        log.info("%s: done in %.1f min", stage.name, seconds / 60.0)
        write_plan(recipe, work, rows)
    log.info("release %s\n%s", recipe.name, plan_table(rows))
    return rows


def prune_study_cache(root: Path, cache_max_gb: float) -> None:
    """Cut the work folder's shared study cache (``cache/monai``, the prepared studies every stage
    reads) to ``cache_max_gb``, the least recently used files first: it grew by every new set and
    reached 70 GB after seven runs. A training marks each study it reads, so the sets of the stages
    still to come stay unless the cap is below one stage's own; a missing file is recomputed."""
    if cache_max_gb <= 0:
        return
    from spinelesion.data.cache import prune_cache
    from spinelesion.io.limits import human

    cache = root / "cache" / "monai"
    deleted, freed = prune_cache(cache, int(cache_max_gb * 2**30))
    if deleted:
        log.info(
            "study cache %s: %d least recently used file(s) deleted, %s freed (cache_max_gb=%g)",
            cache,
            deleted,
            human(freed),
            cache_max_gb,
        )


def check_free_disk(root: Path, min_free_gb: float, stage: str) -> None:
    """Refuse to start ``stage`` when ``root``'s disk has less than ``min_free_gb`` free, naming the
    shared study cache (the work folder's largest part) and how to thin it: a file it misses is
    recomputed, so files no stage read for a while can go."""
    if min_free_gb <= 0:
        return
    import shutil

    from spinelesion.io.limits import ResourceLimitError, human

    free = shutil.disk_usage(root).free
    if free >= min_free_gb * 2**30:
        return
    cache = root / "cache" / "monai"
    held = sum(f.stat().st_size for f in cache.iterdir() if f.is_file()) if cache.is_dir() else 0
    raise ResourceLimitError(
        f"release stage {stage}: {human(free)} free on the work folder's disk ({root}), under "
        f"min_free_gb={min_free_gb:g}; the study cache {cache} holds {human(held)}. Free space (a lower "
        "cache_max_gb cuts the cache to it, least recently used files first; a missing file is recomputed) "
        "and run again: finished stages are kept"
    )


def hydra_arguments(argv: Sequence[str]) -> list[str]:
    """``--from X`` / ``--until X`` / ``--plan`` as Hydra overrides; everything else unchanged."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--from", "--until") and i + 1 < len(argv):
            out.append(f"{arg[2:]}={argv[i + 1]}")
            i += 2
            continue
        if arg.startswith(("--from=", "--until=")):
            out.append(arg[2:])
        elif arg == "--plan":
            out.append("plan_only=true")
        else:
            out.append(arg)
        i += 1
    return out


def release_from_config(cfg: Any) -> list[PlanRow]:
    """``spinelesion-release``'s config (configs/release.yaml) -> :func:`run_release`."""
    from omegaconf import OmegaConf

    from spinelesion.release.recipe import checks_only, recipe_from_config

    release = OmegaConf.to_container(cfg.release, resolve=True)
    if not isinstance(release, dict):
        raise TypeError("release: the recipe must be a mapping")
    recipe = recipe_from_config(str(release.get("name", "release")), release.get("stages") or {})
    if cfg.get("check"):
        recipe = checks_only(recipe, str(cfg.check))
    return run_release(
        recipe,
        Path(str(cfg.work_dir)),
        Path(str(cfg.shared_dir)),
        Path(str(cfg.models_dir)),
        start=cfg.get("from"),
        until=cfg.get("until"),
        force=list(cfg.get("force") or []),
        overrides=list(cfg.get("overrides") or []),
        plan_only=bool(cfg.get("plan_only", False)),
        keep=list(cfg.get("keep") or []),
        min_free_gb=float(cfg.get("min_free_gb") or 0.0),
        cache_max_gb=float(cfg.get("cache_max_gb") or 0.0),
    )
