"""Render one synthetic study: anatomy, findings, painting, acquisition of every sequence, ROIs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinelesion.io.volume import Volume
from spinelesion.labels import FINDINGS as LABELLED
from spinelesion.phantom.acquisition import SEQ_NAMES, SeriesPlan, acquire, plan_series
from spinelesion.phantom.anatomy import (
    Anatomy,
    canvas_bounds,
    degenerate_canal,
    layout,
    paint_background,
    paint_basivertebral_vein,
    paint_canal,
    paint_disc,
    paint_vertebra,
    sample_anatomy,
)
from spinelesion.phantom.canvas import Canvas
from spinelesion.phantom.findings import (
    DISC_FINDINGS,
    FINDINGS,
    BodyMetastasis,
    DropMetastases,
    EpiduralExtension,
    Finding,
    Fracture,
    IntraduralMass,
    IntramedullaryMetastasis,
    ParaspinalMass,
    RoiRecord,
)
from spinelesion.phantom.tissues import TissueTable

CANAL_STAGE = (EpiduralExtension, IntraduralMass, DropMetastases, IntramedullaryMetastasis, ParaspinalMass)
# the registry's mimics this renderer draws, in the registry's order (the draws depend on it)
MIMICS = tuple(n for n, f in LABELLED.items() if f.role == "mimic" and n in FINDINGS)


@dataclass
class RenderedStudy:
    study_id: str
    patient_id: str
    volumes: dict[str, Volume]
    plans: dict[str, SeriesPlan]
    rois: list[RoiRecord]
    findings: list[Finding]
    anatomy: Anatomy
    canvas: Canvas | None
    info: dict[str, Any] = field(default_factory=dict)


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return str(rng.choice(names, p=p / p.sum()))


def _free_level(
    rng: np.random.Generator, an: Anatomy, taken: set[int], disc: bool = False, avoid: set[int] | None = None
) -> int | None:
    n = len(an.vertebrae)  # levels 0 and n-1 are context: findings go in between
    hi = n - 3 if disc else n - 2
    candidates = [i for i in range(1, hi + 1) if i not in taken and (not disc or i + 1 not in taken)]
    if avoid:
        candidates = [i for i in candidates if i not in avoid and (not disc or i + 1 not in avoid)]
    return int(rng.choice(candidates)) if candidates else None


def plan_findings(
    rng: np.random.Generator, an: Anatomy, cfg: dict, forced: str | None = None
) -> list[Finding]:
    """Primary finding (weighted by class), its companions, an occasional incidental one."""
    feat = cfg["features"]
    primary = forced or _choose(rng, cfg["finding_weights"])
    findings: list[Finding] = []
    taken: set[int] = set()

    def add(
        name: str | Finding, level: int | None = None, disc: bool = False, avoid: set[int] | None = None
    ) -> Finding | None:
        f = FINDINGS[name]() if isinstance(name, str) else name
        lvl = level if level is not None else _free_level(rng, an, taken, disc=disc, avoid=avoid)
        if lvl is None:
            return None
        f.draw_signs(rng, feat)  # every sign on its own, at its rate
        f.level_index = lvl
        taken.add(lvl)
        if disc:
            taken.add(lvl + 1)
        findings.append(f)
        return f

    level = None
    if primary == "intramedullary_metastasis" and an.region == "lumbar":
        level = 1  # the cord ends at the conus: put it in the top level, above it
    main = add(primary, level=level, disc=primary in DISC_FINDINGS)
    fractured: set[int] = set()
    if isinstance(main, Fracture):
        fractured.add(main.level_index)
        if main.kind == "pathologic":
            if main.signs.get("epidural_mass"):
                add(EpiduralExtension(), level=main.level_index)
            if main.signs.get("paraspinal_mass"):
                add(ParaspinalMass(), level=main.level_index)
            for _ in range(int(main.signs.get("other_metastases", False)) * int(rng.integers(1, 3))):
                add(
                    _choose(
                        rng, {"lytic_metastasis": 0.6, "blastic_metastasis": 0.25, "mixed_metastasis": 0.15}
                    )
                )
        elif main.signs.get("multiple"):
            old = add(Fracture("benign", chronic=True, secondary=True))
            if old is not None:
                fractured.add(old.level_index)
    if primary == "epidural_extension" and rng.random() < feat["epidural_with_body_metastasis_rate"]:
        add(BodyMetastasis(str(rng.choice(["lytic", "mixed"]))), level=main.level_index if main else None)
    if rng.random() < cfg["incidental_rate"]:
        name = str(rng.choice(MIMICS))
        adjacent = {i + d for i in fractured for d in (-1, 0, 1)}
        add(name, disc=name in DISC_FINDINGS, avoid=adjacent)
    return findings


# How far behind the canal's back wall a "dorsal" normal ROI lies, mm (background ROIs start at 30).
DORSAL_MM = (2.0, 28.0)
# Where a "ventral" normal ROI lies, mm along y from the canal's front wall (the back of the
# bodies and discs): from inside the posterior cortex to the front of the thecal sac.
VENTRAL_MM = (-6.0, 0.0)  # the upper end is the sac's front, added at the ROI's z


def normal_rois(rng: np.random.Generator, an: Anatomy, findings: list[Finding], cfg: dict) -> list[RoiRecord]:
    """ROIs on normal anatomy (body, canal, disc, in front of or behind the sac), away from the
    findings, labelled none."""
    busy = set().union(*[f.occupies | {f.level_index} for f in findings]) if findings else set()
    lesion_z = [float(f.center[2]) for f in findings]
    long_reach = [
        float(f.center[2]) for f in findings if isinstance(f, IntramedullaryMetastasis | DropMetastases)
    ]
    out = []
    n = int(rng.integers(cfg["normal_rois"][0], cfg["normal_rois"][1] + 1))
    for _ in range(n):
        kind = _choose(rng, cfg["normal_roi_kinds"])
        inner = range(1, len(an.vertebrae) - 1)  # the first and last levels are context only
        free = [i for i in inner if i not in busy and an.vertebrae[i].state == "none"]
        if not free:
            break
        i = int(rng.choice(free))
        v = an.vertebrae[i]
        if (
            kind == "disc"
            and i < len(an.discs) - 1
            and i + 1 not in busy
            and an.vertebrae[i + 1].state == "none"
        ):
            c = an.discs[i].center.copy()
        elif kind == "canal":
            yc = float(an.sac_geometry(np.array([v.center[2]]))[0][0])
            c = np.array([0.0, yc, v.center[2]])
        elif kind == "canal_disc" and i < len(an.discs):
            # the canal behind the disc below: where degenerative narrowing lies (degenerate_canal)
            z = float(an.discs[i].center[2])
            c = np.array([0.0, float(an.sac_geometry(np.array([z]))[0][0]), z])
        elif kind == "dorsal":
            # Just behind the sac: posterior epidural fat, laminae, spinous processes. Scan mode
            # puts windows here; without normal ROIs in this band the model called it intradural.
            z = float(v.center[2] + rng.uniform(-0.5, 0.5) * v.height)
            back = float(an.canal_front(np.array([z]))[0]) + an.canal_ap
            c = np.array([rng.uniform(-6.0, 6.0), back + rng.uniform(DORSAL_MM[0], DORSAL_MM[1]), z])
        elif kind == "ventral":
            # The front of the canal: the posterior wall of a body or disc and the anterior
            # epidural space in front of the sac. Scan windows visit it between the body and
            # canal ROIs, and a model that never saw it normal called it intradural.
            z = float(v.center[2] + rng.uniform(-0.6, 0.6) * v.height)
            front = float(an.canal_front(np.array([z]))[0])
            yc, b, _ = (float(t[0]) for t in an.sac_geometry(np.array([z])))
            c = np.array([rng.uniform(-6.0, 6.0), rng.uniform(front + VENTRAL_MM[0], yc - b), z])
        else:
            c = v.center + np.array([rng.uniform(-0.2, 0.2) * v.width, rng.uniform(-0.2, 0.2) * v.depth, 0.0])
        if any(abs(c[2] - z) < 30 for z in lesion_z) or any(abs(c[2] - z) < 90 for z in long_reach):
            continue
        busy.add(i)
        out.append(RoiRecord(c, "none", "none", "normal", v.name))
    # Background: soft tissue in front of or behind the spine. Scanning a whole study puts
    # ROIs everywhere; the model must have seen that "no lesion" also looks like this.
    lo, hi = cfg.get("background_rois", [0, 0])
    for _ in range(int(rng.integers(lo, hi + 1))):
        v = an.vertebrae[int(rng.integers(1, len(an.vertebrae) - 1))]
        z = float(v.center[2] + rng.uniform(-0.5, 0.5) * v.height)
        yc = float(an.centre_y(z))
        if rng.random() < 0.5:  # prevertebral
            y = yc - v.depth / 2 - rng.uniform(15, 45)
        else:  # paraspinal muscles / subcutaneous tissue
            y = (
                yc
                + v.depth / 2
                + an.canal_ap
                + rng.uniform(30, an.posterior_depth - v.depth / 2 - an.canal_ap - 5)
            )
        c = np.array([rng.uniform(-15, 15), y, z])
        if any(
            abs(c[2] - zz) < 30 and abs(c[1] - float(f.center[1])) < 40
            for f, zz in zip(findings, lesion_z, strict=True)
        ):
            continue
        out.append(RoiRecord(c, "none", "none", "normal", v.name))
    return out


def plan_study(
    study_seed: int | list[int],
    cfg: dict,
    patient_seed: int | list[int] | None = None,
    finding: str | None = None,
    region: str | None = None,
) -> tuple[np.random.Generator, np.random.Generator, Anatomy, list[Finding]]:
    """The anatomy and the findings (with their signs) a study draws, before anything is painted;
    also the patient's and the study's random streams, where rendering goes on from."""
    rng_p = np.random.default_rng(patient_seed if patient_seed is not None else study_seed)
    rng = np.random.default_rng(study_seed)
    primary = finding or _choose(rng, cfg["finding_weights"])
    bias = cfg.get("finding_region_bias", {}).get(primary)
    if region is None and bias and rng.random() < bias["rate"]:
        region = _choose(rng, bias["regions"])  # e.g. meningioma: mostly thoracic
    an = sample_anatomy(rng_p, cfg["anatomy"], region=region)
    return rng_p, rng, an, plan_findings(rng, an, cfg, forced=primary)


def render_study(
    study_seed: int | list[int],
    cfg: dict,
    patient_seed: int | list[int] | None = None,
    finding: str | None = None,
    region: str | None = None,
    keep_canvas: bool = False,
    study_id: str = "S0",
    patient_id: str = "P0",
) -> RenderedStudy:
    """Render every sequence of one study.

    Args:
        study_seed: findings and acquisition draw from this.
        patient_seed: the anatomy draws from this (a patient's follow-up study shares it).
        finding: force the primary finding (tests, previews); otherwise drawn by weight.
        keep_canvas: keep the painted object grid (ground truth for tests).
    """
    rng_p, rng, an, findings = plan_study(study_seed, cfg, patient_seed, finding, region)
    feat = cfg["features"]
    for f in findings:
        f.modify(an, rng, feat)
    layout(an, rng_p)
    # its own stream: a phantom without degenerative narrowing renders as before it existed
    seed_list = np.atleast_1d(np.asarray(study_seed, dtype=np.int64)).tolist()
    degenerate_canal(an, np.random.default_rng([*seed_list, 0x5E5]), cfg["anatomy"].get("stenosis"))
    for f in findings:
        f.canal(an, rng, feat)

    lo, hi = canvas_bounds(an, cfg["anatomy"])
    cv = Canvas.empty(lo, hi, float(cfg["object_spacing_mm"]))
    # The study's contrast has its own stream: which signs a finding drew does not change it,
    # so a sign switched on or off is compared on the same contrast (previews, transfer checks).
    rng_t = np.random.default_rng([*np.atleast_1d(np.asarray(study_seed, dtype=np.int64)).tolist(), 0x7155])
    tt = TissueTable(
        rng_t,
        spread=float(cfg["tissue_spread"]),
        age=an.age,
        contrast_spread=float(cfg.get("contrast_spread", 0.0)),
    )
    paint_background(cv, an, tt, rng)
    for v in an.vertebrae:
        paint_vertebra(cv, an, v, tt, rng, focus_rate=float(cfg["anatomy"].get("marrow_focus_rate", 0.0)))
        if rng.random() < feat["basivertebral_vein_rate"]:
            paint_basivertebral_vein(cv, v, tt)
    for d in an.discs:
        paint_disc(cv, d, tt)
    for f in findings:
        if not isinstance(f, CANAL_STAGE):
            f.paint(cv, an, tt, rng, feat)
    paint_canal(cv, an, tt, rng)
    for f in findings:
        if isinstance(f, CANAL_STAGE):
            f.paint(cv, an, tt, rng, feat)

    # ROI placement draws from its own stream as well: how many draws the painting took does
    # not move the ROIs (and, through the series that cover them, the acquisition).
    rng = np.random.default_rng([*np.atleast_1d(np.asarray(study_seed, dtype=np.int64)).tolist(), 0x201])
    rois = []
    owners: list[Finding] = []  # the finding behind each lesion ROI
    jitter = np.asarray(cfg["roi_jitter_mm"], dtype=float)
    for f in findings:
        for r in f.rois(an):
            if isinstance(f, Fracture) and f.secondary and rng.random() > feat["chronic_fracture_roi_rate"]:
                continue
            level_state = an.level_at(float(r.center[2])).state
            fracture = (
                r.fracture
                if isinstance(f, Fracture)
                else (
                    level_state
                    if (r.compartment == "extradural" and f.name not in DISC_FINDINGS)
                    else r.fracture
                )
            )
            rois.append(
                RoiRecord(
                    r.center + rng.uniform(-1, 1, 3) * jitter, r.compartment, fracture, r.finding, r.level
                )
            )
            owners.append(f)
    for r in normal_rois(rng, an, findings, cfg):
        rois.append(
            RoiRecord(
                r.center + rng.uniform(-1, 1, 3) * jitter, r.compartment, r.fracture, r.finding, r.level
            )
        )

    acq = cfg["acquisition"]
    # The acquisition has its own stream too: nothing about the findings (which signs, how many
    # draws they took) changes the scanner, the field of view, the noise or the artefacts.
    rng = np.random.default_rng([*np.atleast_1d(np.asarray(study_seed, dtype=np.int64)).tolist(), 0xAC0])
    field_strength = float(rng.choice([1.5, 3.0]))
    present = [s for s in SEQ_NAMES if rng.random() >= acq["missing_rate"][s]]
    if "t1" not in present and "t2" not in present:
        present.append(str(rng.choice(["t1", "t2"])))
    centre = np.array([0.0, float(an.centre_y(0.0)) + an.canal_ap, 0.0])
    extent = hi - lo - 10.0  # the field of view stays inside the painted object
    volumes, plans = {}, {}
    for c, seq in enumerate(SEQ_NAMES):
        if seq not in present:
            continue
        plan = plan_series(
            rng,
            seq,
            centre,
            extent,
            acq,
            field_strength,
            cover=np.array([r.center for r in rois]).reshape(-1, 3),
        )
        plans[seq] = plan
        volumes[seq] = acquire(cv, c, plan, rng)
    for r, f in zip(rois, owners, strict=False):  # the normal ROIs come after: they show anyway
        r.unseen = not f.shown_by(volumes)
    # Every series is planned to cover every ROI centre; one that still falls outside a series
    # (a matrix at its cap) would leave that channel blank at the label: drop it (rare).
    for k, r in enumerate(rois):
        r.index = k
    rois = [r for r in rois if all(vol.contains(r.center) for vol in volumes.values())]
    info = {
        "region": an.region,
        "age": round(an.age, 1),
        "sex": str(rng.choice(["F", "M"])),
        "field_strength": field_strength,
        "levels": [v.name for v in an.vertebrae],
        "findings": [f.name for f in findings],
        "fat_fraction": round(tt.fat_fraction, 3),
    }
    return RenderedStudy(
        study_id, patient_id, volumes, plans, rois, findings, an, cv if keep_canvas else None, info
    )
