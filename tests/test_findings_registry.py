"""One finding registry (issue 35): every finding is named once with its labels in
``spinelesion.labels.FINDINGS``; the phantom, the insertion and the plain renderer each draw a
subset and write the registry's labels."""

from __future__ import annotations

import pytest

from spinelesion.labels import FINDINGS, TASKS, finding_labels


def test_the_registry_speaks_the_contract() -> None:
    for name, labels in FINDINGS.items():
        assert labels.compartment in TASKS["compartment"] and labels.fracture in TASKS["fracture"], name
        assert labels.role in {"lesion", "mimic", "variant", "normal"}, name
        # only a lesion carries a label; a mimic, a normal variant or an untouched ROI is none/none
        assert ((labels.compartment, labels.fracture) != ("none", "none")) == (labels.role == "lesion"), name
    with pytest.raises(ValueError, match="unknown finding 'osteoma'; known: normal, lytic_metastasis"):
        finding_labels("osteoma")


def test_every_renderer_draws_registered_findings_with_their_labels() -> None:
    from spinelesion.insert.findings import FINDINGS as INSERTED
    from spinelesion.insert.plain import PLAIN_FINDINGS
    from spinelesion.phantom.findings import FINDINGS as PHANTOM

    drawn = set(PHANTOM) | set(INSERTED) | set(PLAIN_FINDINGS)
    # nothing unregistered is drawn, and every registered finding has a renderer (the insertion
    # labels a healed fracture osteoporotic_fracture_chronic; untouched ROIs are "normal")
    assert drawn <= set(FINDINGS)
    assert set(FINDINGS) - drawn == {"normal"}
    for name, make in PHANTOM.items():
        f = make()
        assert (f.name, f.compartment, f.fracture) == (
            name,
            FINDINGS[name].compartment,
            FINDINGS[name].fracture,
        )
    for name, labels in PLAIN_FINDINGS.items():
        assert labels == (FINDINGS[name].compartment, FINDINGS[name].fracture)
