"""Findings: what each lesion, fracture and mimic does to the anatomy and to each sequence.

One module per compartment or family (``extradural``, ``intradural``, ``intramedullary``,
``fractures``, ``mimics``); the signal recipes live in :mod:`.signals`, the shared steps in
:mod:`.base`. Every finding follows a row of ``docs/radiology.md``; each imaging sign is
drawn on its own at its rate from the config (``features``), listed with sources in
``docs/phantom.md``. Sizes of different classes overlap on purpose: size alone must not
give the answer away.
"""

from __future__ import annotations

from collections.abc import Callable

from spinelesion.phantom.findings.base import Features, Finding, RoiRecord, body_box, chance, plateau
from spinelesion.phantom.findings.extradural import BodyMetastasis, EpiduralExtension, ParaspinalMass
from spinelesion.phantom.findings.fractures import Fracture
from spinelesion.phantom.findings.intradural import DropMetastases, IntraduralMass
from spinelesion.phantom.findings.intramedullary import IntramedullaryMetastasis
from spinelesion.phantom.findings.mimics import Discitis, Haemangioma, Modic1, SchmorlNode

FINDINGS: dict[str, Callable[[], Finding]] = {
    "lytic_metastasis": lambda: BodyMetastasis("lytic"),
    "blastic_metastasis": lambda: BodyMetastasis("blastic"),
    "mixed_metastasis": lambda: BodyMetastasis("mixed"),
    "epidural_extension": EpiduralExtension,
    "paraspinal_mass": ParaspinalMass,
    "meningioma": lambda: IntraduralMass("meningioma"),
    "schwannoma": lambda: IntraduralMass("schwannoma"),
    "drop_metastases": DropMetastases,
    "intramedullary_metastasis": IntramedullaryMetastasis,
    "osteoporotic_fracture": lambda: Fracture("benign"),
    "pathologic_fracture": lambda: Fracture("pathologic"),
    "haemangioma": Haemangioma,
    "modic1": Modic1,
    "schmorl_node": SchmorlNode,
    "discitis": Discitis,
}
"""Every finding the generator renders; keys are the manifest's ``finding`` values."""

DISC_FINDINGS = {"modic1", "discitis"}

__all__ = [
    "DISC_FINDINGS",
    "FINDINGS",
    "BodyMetastasis",
    "Discitis",
    "DropMetastases",
    "EpiduralExtension",
    "Features",
    "Finding",
    "Fracture",
    "Haemangioma",
    "IntraduralMass",
    "IntramedullaryMetastasis",
    "Modic1",
    "ParaspinalMass",
    "RoiRecord",
    "SchmorlNode",
    "body_box",
    "chance",
    "plateau",
]
