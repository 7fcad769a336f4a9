"""Imports run one way: command-line modules on top, then tasks, then the library layers.

Every ``import`` of a ``spinelesion`` module (also the lazy ones inside functions) is read with
``ast``; nothing is imported. A module may import its own layer or a lower one, never a higher
one, and nothing imports a command-line module (the ``[project.scripts]`` of pyproject.toml).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "spinelesion"

# Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "base",
        [
            "spinelesion",
            "spinelesion.atomic",
            "spinelesion.labels",
            "spinelesion.portable",
            "spinelesion.parallel",
            "spinelesion.config_path",
            "spinelesion.formatting",
            "spinelesion.config_schema",
        ],
    ),
    ("io", ["spinelesion.io"]),
    ("data", ["spinelesion.data"]),
    # The generators write contract manifests (data.manifest); nothing below reads them back.
    ("generators", ["spinelesion.phantom", "spinelesion.insert"]),
    # Pure metric functions: the LightningModule logs AUCs, calibration fits a temperature.
    ("scoring", ["spinelesion.scoring"]),
    ("models", ["spinelesion.models", "spinelesion.localize"]),
    ("evaluation", ["spinelesion.evaluation"]),
    ("inference", ["spinelesion.inference"]),
    ("export", ["spinelesion.export", "spinelesion.benchmark"]),
    ("tasks", ["spinelesion.tasks"]),
    # The release recipe drives the commands and the tasks (training, mining, checks).
    ("release", ["spinelesion.release"]),
    # The Python API: the commands' jobs as functions (spinelesion.api.predict).
    ("api", ["spinelesion.api"]),
    ("cli", []),  # filled from pyproject.toml
]


def cli_modules() -> set[str]:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {target.split(":")[0] for target in scripts.values()}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def layer_of(module: str, clis: set[str]) -> int:
    if module in clis:
        return len(LAYERS) - 1
    best, rank = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    if rank < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return rank


def imported(path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) for every spinelesion module ``path`` imports."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == PACKAGE
        ):
            for alias in node.names:  # ``from spinelesion.x import y`` where y is a module
                sub = f"{node.module}.{alias.name}"
                out.append((node.lineno, sub if sub in known else node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write the absolute module")
    return out


def test_every_module_has_a_layer():
    clis = cli_modules()
    for module in all_modules():
        layer_of(module, clis)


def test_every_package_says_what_it_is_for():
    """Each package's ``__init__.py`` opens with a line saying what it holds, not just its name."""
    vague = []
    for path in sorted((SRC / PACKAGE).rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if len(doc.partition("\n")[0].split()) < 3:
            vague.append(str(path.relative_to(ROOT)))
    assert not vague, "say in the docstring's first line what the package is for:\n" + "\n".join(vague)


def test_imports_run_one_way():
    clis = cli_modules()
    modules = all_modules()
    known = set(modules)
    offenders = []
    for module, path in modules.items():
        mine = layer_of(module, clis)
        for line, target in imported(path, known):
            theirs = layer_of(target, clis)
            if theirs > mine:
                offenders.append(
                    f"{path.relative_to(ROOT)}:{line}: {module} ({LAYERS[mine][0]}) imports "
                    f"{target} ({LAYERS[theirs][0]})"
                )
    assert not offenders, "upward imports:\n" + "\n".join(offenders)


@pytest.mark.parametrize("folder", ["src", "scripts"])
def test_nothing_imports_a_command_line_module(folder: str):
    clis = cli_modules()
    known = set(all_modules())
    offenders = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, target in imported(path, known):
            if target in clis and (folder == "scripts" or module_name(path) != target):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
    assert not offenders, "command-line modules are entry points only:\n" + "\n".join(offenders)


def test_command_line_modules_are_thin():
    for module in sorted(cli_modules()):
        path = SRC / (module.replace(".", "/") + ".py")
        lines = len(path.read_text().splitlines())
        assert lines <= 40, (
            f"{path.relative_to(ROOT)} has {lines} lines: move the work into spinelesion.tasks"
        )


def test_the_check_sees_an_upward_import(tmp_path: Path):
    """The parser finds lazy imports inside functions (as most of this package's are)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from spinelesion.tasks.train import train\n    import spinelesion.io.volume\n"
    )
    found = [t for _, t in imported(probe, set(all_modules()))]
    assert found == ["spinelesion.tasks.train", "spinelesion.io.volume"]
    assert layer_of("spinelesion.tasks.train", cli_modules()) > layer_of(
        "spinelesion.models.batch", cli_modules()
    )
