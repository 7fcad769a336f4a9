"""The label vocabulary of the data contract (``docs/data-contract.md``), in one place."""

from __future__ import annotations

SEQUENCES: tuple[str, ...] = ("t1", "t2", "stir", "t1c")
"""Sequence names, in channel order. ``t1c`` is T1 after gadolinium."""

TASKS: dict[str, tuple[str, ...]] = {
    "compartment": ("none", "extradural", "intradural_extramedullary", "intramedullary"),
    "fracture": ("none", "benign", "pathologic"),
}
"""Classes per task, in the index order every head, metric and file uses."""

IGNORE_INDEX = -100
"""Target index of an unknown (empty) label: that task's loss and metrics skip the row."""

SPLITS: tuple[str, ...] = ("train", "val", "test")


def encode(task: str, label: str | None) -> int:
    """Class index of ``label`` for ``task``; empty or None means unknown (:data:`IGNORE_INDEX`)."""
    if label is None or label == "":
        return IGNORE_INDEX
    classes = TASKS[task]
    if label not in classes:
        raise ValueError(f"unknown {task} label {label!r}; allowed: {', '.join(classes)} or empty")
    return classes.index(label)


def decode(task: str, index: int) -> str:
    """Label string of class ``index`` for ``task`` (empty string for :data:`IGNORE_INDEX`)."""
    return "" if index == IGNORE_INDEX else TASKS[task][index]
