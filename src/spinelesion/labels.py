"""The label vocabulary of the data contract (``docs/data-contract.md``), in one place: the
sequences, the classes per task, and every finding a renderer draws with its labels."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SEQUENCES: tuple[str, ...] = ("t1", "t2", "stir", "t1c")
"""Sequence names, in channel order. ``t1c`` is T1 after gadolinium."""


def sequence_set(names: Iterable[str]) -> str:
    """A study's set of sequences as one name, in channel order: ``t1``, ``t2+stir``... (the
    place balance weighs each set apart; the site checks report per set)."""
    have = set(names)
    return "+".join(s for s in SEQUENCES if s in have)


TASKS: dict[str, tuple[str, ...]] = {
    "compartment": ("none", "extradural", "intradural_extramedullary", "intramedullary"),
    "fracture": ("none", "benign", "pathologic"),
}
"""Classes per task, in the index order every head, metric and file uses."""

CANAL_CLASSES: tuple[str, ...] = ("intradural_extramedullary", "intramedullary")
"""The compartments inside the dural sac: lesions of the canal, not of the bone beside it."""

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


@dataclass(frozen=True)
class FindingLabels:
    """What a finding is, whoever draws it: its labels and its role (``lesion``; ``mimic``, a
    non-neoplastic look-alike that must be called none/none; ``variant``, a normal variant;
    ``normal``, an untouched ROI)."""

    compartment: str
    fracture: str
    role: str


def _f(compartment: str, fracture: str = "none", role: str = "lesion") -> FindingLabels:
    return FindingLabels(compartment, fracture, role)


FINDINGS: dict[str, FindingLabels] = {
    "normal": _f("none", role="normal"),
    "lytic_metastasis": _f("extradural"),
    "blastic_metastasis": _f("extradural"),
    "mixed_metastasis": _f("extradural"),
    "epidural_extension": _f("extradural"),
    "paraspinal_mass": _f("extradural"),
    "osteoporotic_fracture": _f("none", "benign"),
    "osteoporotic_fracture_chronic": _f("none", "benign"),  # healed: the shape alone
    "pathologic_fracture": _f("extradural", "pathologic"),
    "meningioma": _f("intradural_extramedullary"),
    "schwannoma": _f("intradural_extramedullary"),
    "drop_metastases": _f("intradural_extramedullary"),
    "intradural_mass": _f("intradural_extramedullary"),  # the plain renderer's one IDEM mass
    "intramedullary_metastasis": _f("intramedullary"),
    "haemangioma": _f("none", role="mimic"),
    "modic1": _f("none", role="mimic"),
    "schmorl_node": _f("none", role="mimic"),
    "discitis": _f("none", role="mimic"),
    "focal_fat": _f("none", role="variant"),
    "degenerative_stenosis": _f(
        "none", role="variant"
    ),  # disc bulge and thick ligamenta flava pinching the sac
}
"""Every finding any renderer draws (the manifest's ``finding``), named once with its labels.
The phantom (``phantom.findings.FINDINGS``), the insertion (``insert.findings.FINDINGS``) and
the plain renderer (``insert.plain.PLAIN_FINDINGS``) each draw a subset and take the labels
from here."""


def finding_labels(name: str) -> FindingLabels:
    """The labels of finding ``name``; an unknown name is an error that lists the known ones."""
    if name not in FINDINGS:
        raise ValueError(f"unknown finding {name!r}; known: {', '.join(FINDINGS)}")
    return FINDINGS[name]
