"""A release recipe: named stages in order, each of a kind, with parameters and references to
earlier stages' outputs (``configs/release/*.yaml``).

A parameter of a kind's ``refs`` (e.g. ``manifests`` of ``train``) names earlier stages; those are
the stage's inputs, and their keys are part of its own (:mod:`spinelesion.release.store`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spinelesion.config_schema import ConfigError


@dataclass(frozen=True)
class Kind:
    """What a stage kind needs: which parameters name earlier stages, which source it runs."""

    refs: tuple[str, ...]  # parameters holding a stage name or a list of them
    code: tuple[str, ...]  # paths under src/spinelesion whose contents are part of the key
    required: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()  # other parameters (besides refs, required and "estimate_min")
    configs: tuple[str, ...] = ()  # paths under configs/ the kind's command reads (part of the key)


TRAIN_CONFIGS = ("train.yaml", "data", "model", "trainer", "callbacks", "logger", "experiment")
KINDS: dict[str, Kind] = {
    # spinelesion-make-data: a phantom set
    "phantom": Kind(
        (),
        ("phantom", "io", "data/manifest.py", "labels.py"),
        ("studies", "seed"),
        ("overrides",),
        ("make_data.yaml",),
    ),
    # spinelesion-insert: lesions or normal ROIs on real backgrounds
    "insert": Kind(
        (), ("insert", "io", "data", "labels.py"), ("backgrounds",), ("overrides",), ("insert.yaml",)
    ),
    # the plain renderer on an insertion set's held-out subjects (or on all, each in its split)
    "plain": Kind(
        ("subjects_of",),
        ("insert", "io", "labels.py"),
        ("backgrounds",),
        ("splits", "findings"),
        ("insert.yaml",),
    ),
    # spinelesion-train (from scratch, or fine-tuning an earlier stage's model)
    "train": Kind(
        ("manifests", "init"),
        ("models", "data", "evaluation", "scoring", "tasks/train.py", "train.py"),
        ("manifests",),
        ("overrides",),
        TRAIN_CONFIGS,
    ),
    # scan candidates of a model on untouched studies -> normal ROIs (hard negatives)
    "mine": Kind(
        ("model", "studies_of"),
        ("inference", "localize", "models", "scoring", "tasks/hard_negatives.py"),
        ("model", "studies_of"),
        ("settings",),
    ),
    # the spine locator trained on real body masks (split as the named sets) and phantom spines
    "locator": Kind(
        ("split_from",),
        ("localize", "insert", "io", "data", "phantom", "tasks/locator.py"),
        ("backgrounds", "split_from"),
        ("measure_only", "phantom", "steps", "seed", "settings"),
        ("insert.yaml", "make_data.yaml"),
    ),
    # a copy of a model with a locator stage's spine locator (scan mode then searches near the spine)
    "with_locator": Kind(
        ("model", "locator"), ("localize", "models/folder.py", "models/card.py"), ("model", "locator")
    ),
    # scan mode's operating point on the validation subjects' real studies (a copy of the model)
    "scan_point": Kind(
        ("model", "studies_of"),
        ("inference", "localize", "models", "evaluation", "scoring", "release/checks.py"),
        ("model", "studies_of"),
        ("max_sensitivity_loss", "max_untouched_false_calls"),
    ),
    # one check of a model (release/checks.py); its result is a JSON file
    "check": Kind(
        ("model", "data"),
        ("inference", "localize", "models", "evaluation", "scoring", "tasks", "release/checks.py"),
        ("model", "check"),
        ("args", "label"),
        ("eval.yaml", "predict.yaml", "data"),
    ),
    # the checks recorded in a copy of the model's metadata and card, and the release rule judged
    "judge": Kind(("model", "checks"), ("models/card.py", "release"), ("model", "checks", "rule")),
    # an existing model folder (e.g. the released one, to check it again); its files are its key
    "import": Kind((), (), ("path",)),
    # the judged model copied into models/ (only when the rule passed, unless forced)
    "publish": Kind(("model",), (), ("model",), ("name", "force")),
}


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str
    params: dict[str, Any]
    estimate_min: float | None = None

    @property
    def needs(self) -> list[str]:
        """Earlier stages this one reads, in the order its parameters name them."""
        out: list[str] = []
        for ref in KINDS[self.kind].refs:
            value = self.params.get(ref)
            for name in [value] if isinstance(value, str) else list(value or []):
                if name not in out:
                    out.append(name)
        return out


@dataclass
class Recipe:
    name: str
    stages: list[Stage] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.kind not in KINDS:
                raise ConfigError(
                    f"release stage {stage.name}: unknown kind {stage.kind!r} (kinds: {', '.join(KINDS)})"
                )
            kind = KINDS[stage.kind]
            missing = [p for p in kind.required if p not in stage.params]
            if missing:
                raise ConfigError(f"release stage {stage.name} ({stage.kind}): missing {', '.join(missing)}")
            known = set(kind.refs) | set(kind.required) | set(kind.allowed)
            unknown = sorted(set(stage.params) - known)
            if unknown:
                raise ConfigError(
                    f"release stage {stage.name} ({stage.kind}): unknown parameter(s) {', '.join(unknown)} "
                    f"(known: {', '.join(sorted(known))})"
                )
            later = [n for n in stage.needs if n not in seen]
            if later:
                raise ConfigError(
                    f"release stage {stage.name}: needs {', '.join(later)}, which must be an earlier stage"
                )
            if stage.name in seen:
                raise ConfigError(f"release stage {stage.name}: named twice")
            seen.add(stage.name)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"no release stage {name!r} (stages: {', '.join(s.name for s in self.stages)})")

    def select(self, start: str | None = None, until: str | None = None) -> list[Stage]:
        """The stages from ``start`` to ``until`` (both included), in order; an unknown name is an error."""
        names = [s.name for s in self.stages]
        lo = names.index(self.stage(start).name) if start else 0
        hi = names.index(self.stage(until).name) if until else len(names) - 1
        if lo > hi:
            raise ConfigError(f"release: from={start} comes after until={until}")
        return self.stages[lo : hi + 1]


def recipe_from_config(name: str, stages: Mapping[str, Mapping[str, Any]] | Sequence[Any]) -> Recipe:
    """A recipe from a config's ``stages`` mapping (name -> {kind, estimate_min, params...})."""
    if not isinstance(stages, Mapping):
        raise ConfigError("release: stages must be a mapping of stage name -> settings")
    out = []
    for stage_name, raw in stages.items():
        values = dict(raw or {})
        kind = values.pop("kind", None)
        if kind is None:
            raise ConfigError(f"release stage {stage_name}: no kind")
        estimate = values.pop("estimate_min", None)
        out.append(Stage(str(stage_name), str(kind), values, None if estimate is None else float(estimate)))
    return Recipe(name, out)


def checks_only(recipe: Recipe, model_path: str) -> Recipe:
    """The recipe's judged checks, rule and release on an existing model folder instead of its own training:
    an ``import`` stage of ``model_path`` (``released``) feeds every check and the judge, the data
    sets the checks read are kept, and publish writes the re-measured copy back whatever the verdict
    (``make real-check``: the same model, measured again)."""
    outputs = {"check", "judge", "publish"}
    # the checks a judge reads: a recipe's other checks trace its own training stages (e.g. the
    # real normals after stage1), which a given model does not have
    judged = {c for s in recipe.stages if s.kind == "judge" for c in s.params.get("checks", [])}
    kept = [s for s in recipe.stages if s.kind in outputs and (s.kind != "check" or s.name in judged)]
    wanted: set[str] = set()
    todo = [
        n
        for s in kept
        for ref, value in s.params.items()
        if ref != "model" and ref in KINDS[s.kind].refs
        for n in ([value] if isinstance(value, str) else value)
    ]
    while todo:
        name = todo.pop()
        if name in wanted or recipe.stage(name).kind in outputs:
            continue
        wanted.add(name)
        todo.extend(recipe.stage(name).needs)
    data = [s for s in recipe.stages if s.name in wanted]
    if any(s.kind in ("train", "mine", "scan_point") for s in data):
        raise ConfigError(
            "release checks read a training stage's output other than the model; cannot check alone"
        )
    # Own names for the rebound stages: they share the work folder (and so the drawn sets) with the
    # full recipe, whose checks of its own candidate keep their folders.
    renamed = {s.name: f"{s.name}_released" for s in kept}
    imported = Stage("released", "import", {"path": model_path}, 0.1)
    rebound = []
    for s in kept:
        params: dict[str, Any] = {}
        for ref, value in s.params.items():
            if ref == "model" and recipe.stage(value).kind not in outputs:
                value = imported.name
            elif ref in KINDS[s.kind].refs:
                value = (
                    renamed.get(value, value)
                    if isinstance(value, str)
                    else [renamed.get(v, v) for v in value]
                )
            params[ref] = value
        if s.kind == "publish":
            params["force"] = True
        rebound.append(Stage(renamed[s.name], s.kind, params, s.estimate_min))
    return Recipe(recipe.name, [*data, imported, *rebound])
