"""``--help`` of each command: its own settings with their one-line descriptions.

Hydra's ``--help`` lists every config group of the shared ``configs/`` folder (the training's
``trainer`` and ``model`` under ``spinelesion-predict`` too) and a YAML dump without a word on
what a key does. The descriptions already live beside each key, as the YAML's comments; this
reads them from the command's own config file, so they cannot drift from the defaults.
``--hydra-help`` and ``--cfg job`` still give Hydra's own views.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spinelesion.config_path import CONFIG_DIR

HIDDEN = {"defaults", "hydra", "task_name"}  # plumbing, not a user's setting
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")


@dataclass
class Setting:
    key: str  # dotted
    default: str  # as written in the YAML ("" for a section)
    description: str


def _split_comment(rest: str) -> tuple[str, str, int]:
    """``value  # comment`` -> (value, comment, where the ``#`` is in ``rest``, -1 without one);
    a ``#`` inside quotes or braces is not a comment."""
    depth, quote = 0, ""
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "#" and depth <= 0 and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].strip(), rest[i + 1 :].strip(), i
    return rest.strip(), "", -1


def read_settings(text: str) -> tuple[list[str], list[Setting]]:
    """(the header's comment lines, every setting with its default and description) of a config
    file: a key's trailing comment, continued by comment lines aligned under it, or the comment
    lines just above it when it has none."""
    lines = text.splitlines()
    header: list[str] = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    settings: list[Setting] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing sections
    above: list[str] = []
    last: Setting | None = None
    last_column = -1
    for line in lines[len(header) :]:
        stripped = line.strip()
        if stripped.startswith("#"):
            column = line.index("#")
            if last is not None and column == last_column:  # continues the comment of the key above
                last.description += " " + stripped[1:].strip()
            else:
                above.append(stripped[1:].strip())
                last = None
            continue
        m = _KEY.match(line)
        if not m:
            if not stripped:
                above, last = [], None
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, comment, at = _split_comment(m["rest"])
        dotted = ".".join([k for _, k in stack] + [m["key"]])
        if not value:
            stack.append((indent, m["key"]))
        description = comment or " ".join(above)
        above = []
        if dotted.split(".")[0] in HIDDEN:
            last = None
            continue
        last = Setting(dotted, value, description)
        last_column = len(line) - len(m["rest"]) + at if at >= 0 else -1
        settings.append(last)
    return header, settings


def command_help(command: str, config_name: str, doc: str | None) -> str:
    """The help text of ``command`` from ``configs/<config_name>.yaml`` and the module's docstring."""
    header, settings = read_settings((Path(CONFIG_DIR) / f"{config_name}.yaml").read_text(encoding="utf-8"))
    summary = (doc or "").strip().split("\n\n")[0].replace("\n", " ")
    width = min(max((len(s.key) for s in settings), default=10), 30)
    out = [summary, "", *[f"  {h}" for h in header if h], ""]
    out.append("Settings (key=value on the command line; nested keys with dots, e.g. scan.threshold=0.6):")
    for s in settings:
        default = (
            f" [{s.default}]" if s.default and s.default != "???" else (" (required)" if s.default else "")
        )
        text = f"{s.description}{default}".strip() or "(a section)"
        body = textwrap.wrap(text, 96 - width) or [""]
        first = (
            f"  {s.key:<{width}}  {body[0]}"
            if len(s.key) <= width
            else f"  {s.key}\n  {'':<{width}}  {body[0]}"
        )
        out += [first, *[f"  {'':<{width}}  {b}" for b in body[1:]]]
    groups = config_groups(config_name)
    if groups:
        out += ["", "Config groups (group=choice; each choice is configs/<group>/<choice>.yaml):"]
        out += [
            f"  {g:<{width}}  {', '.join(c)} [{d if d != 'None' else 'none'}]" for g, (d, c) in groups.items()
        ]
    out += [
        "",
        f"More: {command} --cfg job (the resolved settings), --hydra-help (Hydra's own options),",
        f"docs in the README and configs/{config_name}.yaml.",
    ]
    return "\n".join(out)


def config_groups(config_name: str) -> dict[str, tuple[str, list[str]]]:
    """The config groups a command's ``defaults`` picks (but the plumbing ones): group ->
    (default choice, every choice in ``configs/<group>/``)."""
    import yaml

    cfg = yaml.safe_load((Path(CONFIG_DIR) / f"{config_name}.yaml").read_text(encoding="utf-8")) or {}
    out: dict[str, tuple[str, list[str]]] = {}
    for entry in cfg.get("defaults") or []:
        if not isinstance(entry, dict):
            continue
        for group, choice in entry.items():
            group = str(group).split("@")[0].removeprefix("override ").strip()
            folder = Path(CONFIG_DIR) / group
            if group in ("paths", "hydra") or not folder.is_dir():
                continue
            out[group] = (str(choice), sorted(f.stem for f in folder.glob("*.yaml")))
    return out


def help_or_run(
    command: str,
    config_name: str,
    doc: str | None,
    run: Callable[[], None],
    argv: Sequence[str] | None = None,
) -> None:
    """Print :func:`command_help` for ``--help`` / ``-h``, else run the Hydra app; a setting Hydra
    cannot compose exits 2, as every other unusable setting does."""
    from spinelesion.tasks.arguments import EXIT_NOTHING_RAN
    from spinelesion.tasks.hydra_guard import run_started

    args = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("--help", "-h") for a in args):
        print(command_help(command, config_name, doc))  # noqa: T201 - the help is the command's output
        return
    try:
        run()
    except SystemExit as exc:
        # Hydra exits 1 on a setting it cannot compose (an unknown key, a bad override) before the
        # run starts; an unusable setting is exit 2 everywhere else (README), 1 means failed studies
        if exc.code == 1 and not run_started():
            raise SystemExit(EXIT_NOTHING_RAN) from None
        raise
