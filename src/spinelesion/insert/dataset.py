"""Real backgrounds -> a contract manifest of inserted and untouched studies, split by subject.

Per real subject: the untouched study itself (referenced where it lies, never copied) with
normal ROIs on every body, disc and the canal, and ``variants_per_subject`` inserted
studies, each with one finding at a body drawn among those where it can occur, written as
a crop around its ROIs (the ROI context box and augmentation fit inside). A subject's
inserted and untouched studies share one split, so held-out subjects stay held out and the
same real vertebra is seen with and without a lesion. With ``appearance.enabled`` each
study of a subject in ``appearance.splits`` (the untouched one and every inserted one) is
written under its own random appearance with probability ``appearance.prob``
(:mod:`spinelesion.data.appearance`, drawn after the lesion is painted), and
``appearance.copies`` randomised copies of every untouched study join it (the stability set).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from spinelesion.atomic import write_json
from spinelesion.data.appearance import AppearanceConfig, appearance_from_dict, randomise_study
from spinelesion.data.manifest import TWIN_SUFFIX, Row, write_manifest
from spinelesion.data.splits import assign_splits
from spinelesion.insert.anatomy import BodyFrame, SpineAnatomy, box_around, derive_anatomy
from spinelesion.insert.background import Background, BackgroundSpec, discover_backgrounds, load_background
from spinelesion.insert.contrast import TARGETS, synthesise
from spinelesion.insert.findings import FINDINGS, eligible, insert_finding
from spinelesion.insert.paint import quantise
from spinelesion.io.nifti import write_nifti
from spinelesion.io.volume import Volume, apply_affine
from spinelesion.labels import CANAL_CLASSES
from spinelesion.parallel import map_jobs

log = logging.getLogger(__name__)


def normal_record(
    case_id: str,
    study_id: str,
    patient_id: str,
    seqs: Mapping[str, str],
    centre: np.ndarray,
    level: str,
    **extra: Any,
) -> dict[str, Any]:
    """A manifest record of a normal ROI (none/none) of an untouched real study at ``centre`` (LPS mm)."""
    return dict(
        case_id=case_id,
        study_id=study_id,
        patient_id=patient_id,
        **extra,
        **seqs,
        x_mm=round(float(centre[0]), 2),
        y_mm=round(float(centre[1]), 2),
        z_mm=round(float(centre[2]), 2),
        compartment="none",
        fracture="none",
        level=level,
        finding="normal",
    )


def normal_records(
    spec: BackgroundSpec,
    bg: Background,
    an: SpineAnatomy,
    out: Path,
    cfg: Mapping[str, Any],
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """ROIs of the untouched study: each body (centre and jittered copies), disc and canal,
    and ``background`` points anywhere in the field of view (a scan looks there too)."""
    seqs = {s: os.path.relpath(p.resolve(), out) for s, p in spec.sequences.items()}
    recs: list[dict[str, Any]] = []

    tag = str(cfg.get("tag", ""))  # keeps case ids unique when several ROI sets of a study are mixed

    def add(centre: np.ndarray, level: str, kind: str) -> None:
        recs.append(
            normal_record(
                f"{spec.study_id}_{tag}{kind}{len(recs):02d}",
                spec.study_id,
                spec.subject,
                seqs,
                centre,
                level,
            )
        )

    jitter = float(cfg.get("jitter_mm", 3.0))
    for i, f in enumerate(an.bodies):
        for k in range(int(cfg.get("per_body", 1))):  # the centre, then jittered copies
            add(f.centre + (rng.uniform(-jitter, jitter, 3) if k else 0.0), f.level, "body")
        if cfg.get("canal", True):
            canal = f.to_world(np.array([0.0, 0.5 * sum(f.canal), 0.0]))
            # the canal centre, then jittered copies: the real cord, conus and roots there are
            # what the intradural and intramedullary insertions are painted into
            for k in range(max(int(cfg.get("per_canal", 1)), 1)):
                add(canal + (rng.uniform(-jitter, jitter, 3) if k else 0.0), f.level, "canal")
        for _ in range(int(cfg.get("per_canal_wall", 0))):
            add(f.to_world(canal_wall_point(f, rng)), f.level, "canal_wall")
        if int(cfg.get("per_canal_between", 0)) and i + 1 < len(an.bodies):
            # the canal behind the disc below: the conus often ends there (T12-L2) and the roots
            # run on; every other canal ROI sits at a body's centre level
            below = an.bodies[i + 1]
            between = 0.5 * (
                f.to_world(np.array([0.0, 0.5 * sum(f.canal), f.inferior]))
                + below.to_world(np.array([0.0, 0.5 * sum(below.canal), below.superior]))
            )
            for k in range(int(cfg["per_canal_between"])):
                add(between + (rng.uniform(-jitter, jitter, 3) if k else 0.0), f.level, "canal_between")
        if cfg.get("discs", True) and i + 1 < len(an.bodies):
            below = an.bodies[i + 1]
            mid = 0.5 * (
                f.to_world(np.array([0.0, 0.0, f.inferior]))
                + below.to_world(np.array([0.0, 0.0, below.superior]))
            )
            add(mid, f.level, "disc")
    if int(cfg.get("background", 0)):
        for point in background_points(bg, int(cfg["background"]), rng):
            nearest = min(an.bodies, key=lambda b: float(np.linalg.norm(b.centre - point)))
            add(point, nearest.level, "bg")
    if int(cfg.get("region", 0)):
        reach = float(cfg.get("region_reach_mm", 25.0))
        for point in region_points(bg, an, int(cfg["region"]), rng, reach):
            nearest = min(an.bodies, key=lambda b: float(np.linalg.norm(b.centre - point)))
            add(point, nearest.level, "region")
    return recs


def canal_wall_point(frame: BodyFrame, rng: np.random.Generator) -> np.ndarray:
    """A local (l, p, t) point on the dural sac's wall behind a body, at a random angle around
    the sac and a random height within the body's middle 80 %: the place an intradural-extramedullary
    lesion lies against, in a real spine the dorsal epidural fat, the ligamentum flavum and the
    roots lying on the dorsal dura. Held-out whole exams' scans called it intradural at L2-L4
    (7 of 12 false calls of the ninth release run, 2026-12-07, 4-8 mm behind the canal centre the
    ``canal`` ROIs sit on). The sac is an ellipse: its depth the canal's, its width 1.4 times
    the depth within 12-24 mm (the lumbar sac is wider than deep)."""
    c0, c1 = frame.canal
    half_depth = 0.5 * (c1 - c0)
    half_width = float(np.clip(1.4 * half_depth, 6.0, 12.0))
    angle = rng.uniform(0.0, 2.0 * np.pi)
    reach = rng.uniform(0.85, 1.15)
    t = rng.uniform(0.8 * frame.inferior, 0.8 * frame.superior)
    return np.array(
        [reach * half_width * np.cos(angle), 0.5 * (c0 + c1) + reach * half_depth * np.sin(angle), t]
    )


def region_points(
    bg: Background, an: SpineAnatomy, n: int, rng: np.random.Generator, reach_mm: float = 25.0
) -> list[np.ndarray]:
    """``n`` LPS points anywhere around the spine: from in front of the bodies to behind the
    canal, +-20 mm to the sides, from ``reach_mm`` above the first labelled body to as far
    below the last, inside the field of view. A scan's candidates fall there, off the body and
    canal centres the other normal ROIs sit on; in an untouched study every one of them is
    normal. A long reach takes in the unlabelled levels a scan also walks (the sacrum and
    coccyx below L5, the thoracic bodies above a lumbar mask), where held-out scans made most
    of their false calls (2026-12-06)."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for f in an.bodies:
        for local in (
            [-20.0, f.anterior - 10.0, f.inferior - reach_mm],
            [20.0, f.canal[1] + 20.0, f.superior + reach_mm],
        ):
            w = f.to_world(np.asarray(local))
            lo, hi = np.minimum(lo, w), np.maximum(hi, w)
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in bg.shape], indexing="ij")).reshape(3, -1).T
    world = apply_affine(bg.affine, corners.astype(float))
    vol_lo, vol_hi = world.min(0), world.max(0)
    margin = np.minimum(np.array([30.0, 45.0, 45.0]), 0.4 * (vol_hi - vol_lo))
    lo, hi = np.maximum(lo, vol_lo + margin), np.minimum(hi, vol_hi - margin)
    hi = np.maximum(hi, lo)
    return [rng.uniform(lo, hi) for _ in range(n)]


def background_points(
    bg: Background,
    n: int,
    rng: np.random.Generator,
    margin_mm: tuple[float, float, float] = (30.0, 45.0, 45.0),
) -> list[np.ndarray]:
    """``n`` LPS points drawn uniformly in the volume, kept a ROI context half-size inside its
    bounding box (or at 40 % of the extent along a thin axis)."""
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in bg.shape], indexing="ij")).reshape(3, -1).T
    world = apply_affine(bg.affine, corners.astype(float))
    lo, hi = world.min(0), world.max(0)
    margin = np.minimum(np.asarray(margin_mm), 0.4 * (hi - lo))
    return [rng.uniform(lo + margin, hi - margin) for _ in range(n)]


def write_crop(
    bg: Background,
    images: Mapping[str, np.ndarray],
    centres: list[np.ndarray],
    folder: Path,
    margin_mm: float,
    draw: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
) -> dict[str, Path]:
    """Write a study's images (on ``bg``'s grid) as a crop covering every ROI centre +- ``margin_mm``,
    in the background's storage type; returns the paths per sequence. ``draw`` (a random
    appearance) is applied to the crop alone: drawing the whole study first cost 3-4 s a study."""
    boxes = [box_around(bg, c, margin_mm) for c in centres]
    lo = np.min([[s.start for s in b] for b in boxes], axis=0)
    hi = np.max([[s.stop for s in b] for b in boxes], axis=0)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    shift = np.eye(4)
    shift[:3, 3] = lo
    affine = bg.affine @ shift
    crops = {seq: img[box] for seq, img in images.items()}
    if draw is not None:
        crops = draw(crops)
    paths = {}
    for seq, img in crops.items():
        array = quantise(img, bg.dtypes[seq])
        paths[seq] = write_nifti(Volume(array, affine), folder / f"{seq}.nii.gz")
    return paths


def choose(rng: np.random.Generator, an: SpineAnatomy, weights: Mapping[str, float]) -> tuple[str, int]:
    """A finding by weight, then a body where it can occur (findings with none are redrawn)."""
    names = [n for n, w in weights.items() if w > 0 and n in FINDINGS]
    probs = np.asarray([weights[n] for n in names], dtype=float)
    for _ in range(100):
        name = str(rng.choice(names, p=probs / probs.sum()))
        bodies = [b for b in an.bodies if eligible(name, an, b)]
        if bodies:
            return name, bodies[int(rng.integers(len(bodies)))].label
    raise ValueError("no finding can be inserted in this study")


def drawer(
    bg: Background, rng: np.random.Generator, appearance: AppearanceConfig
) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A random appearance of ``bg``'s acquisition, to apply to (a crop of) its images."""
    return lambda images: randomise_study(images, bg.spacing, bg.slice_axis(), rng, appearance)


def drawn_normals(
    spec: BackgroundSpec,
    bg: Background,
    an: SpineAnatomy,
    out: Path,
    cfg: Mapping[str, Any],
    rng: np.random.Generator,
    appearance: AppearanceConfig,
    suffix: str,
    draw: bool = True,
) -> list[dict[str, Any]]:
    """The untouched study under one random appearance (``draw``; else as ``bg`` holds it, e.g.
    imaged as another sequence), written as study ``<id>_<variant tag><normal ROI tag><suffix>``,
    with the same kinds of normal ROIs as the study itself. Both tags are in the id: two sets of
    the same subjects (e.g. real_insert and the dense normals) each draw their own look, and
    their ids must stay unique in one training mix."""
    normal_tag = str(cfg.get("normal_rois", {}).get("tag", ""))
    study_id = f"{spec.study_id}_{cfg.get('variant_tag', '')}{normal_tag}{suffix}"
    recs = normal_records(spec, bg, an, out, cfg.get("normal_rois", {}), rng)
    if not recs:
        return []
    centres = [np.array([r["x_mm"], r["y_mm"], r["z_mm"]], dtype=float) for r in recs]
    paths = write_crop(
        bg,
        bg.images,
        centres,
        out / "studies" / study_id,
        float(cfg["crop_margin_mm"]),
        drawer(bg, rng, appearance) if draw else None,
    )
    rel = {s: os.path.relpath(p, out) for s, p in paths.items()}
    # the written sequences only: a study imaged as another sequence has none of the acquired files
    return [
        {
            **{k: v for k, v in r.items() if k not in spec.sequences},
            **rel,
            "case_id": r["case_id"].replace(spec.study_id, study_id, 1),
            "study_id": study_id,
        }
        for r in recs
    ]


def subject_job(args: tuple[BackgroundSpec, int, dict[str, Any], str, str]) -> dict[str, Any]:
    """All studies of one subject (run in a worker process)."""
    spec, index, cfg, out_dir, split = args
    out = Path(out_dir)
    start = time.perf_counter()
    bg = load_background(spec)
    an = derive_anatomy(bg, set(cfg["cord_levels"]))
    rng = np.random.default_rng([int(cfg["seed"]), index, 0])
    appearance = appearance_from_dict(cfg.get("appearance"))
    # Appearance draws fall alike on untouched and inserted studies of the drawn splits, so a
    # randomised look never tells a lesion; the evaluation splits stay as acquired.
    drawn = appearance.enabled and split in appearance.splits
    draw_rng = np.random.default_rng([int(cfg["seed"]), index, 0, 1])
    looks = imaged_as(bg, an, cfg, [int(cfg["seed"]), index, 0, 3])
    if looks:  # the study imaged as other sequences: each untouched look is written (a new image)
        records = []
        for target, (bg_t, an_t) in looks.items():
            draw = drawn and draw_rng.random() < appearance.prob
            records += drawn_normals(spec, bg_t, an_t, out, cfg, rng, appearance, target, draw)
    elif drawn and draw_rng.random() < appearance.prob:
        records = drawn_normals(spec, bg, an, out, cfg, rng, appearance, "app")
    else:
        records = normal_records(spec, bg, an, out, cfg.get("normal_rois", {}), rng)
    if appearance.enabled:  # extra copies beside the study itself: the stability check's pairs
        for c in range(appearance.copies):
            copy_rng = np.random.default_rng([int(cfg["seed"]), index, 0, 2 + c])
            records += drawn_normals(spec, bg, an, out, cfg, copy_rng, appearance, f"app{c:02d}")
    twins = bool(cfg.get("twins", False))
    twin_splits = tuple(cfg.get("twin_splits", ("train",)))
    for v in range(int(cfg["variants_per_subject"])):
        rng = np.random.default_rng([int(cfg["seed"]), index, v + 1])
        if looks:  # the inserted studies take the looks in turn: as many of each
            bg, an = list(looks.values())[v % len(looks)]
        name, label = choose(rng, an, cfg["finding_weights"])
        ctx = insert_finding(bg, an, name, label, rng, cfg["rates"], cfg.get("extents"))
        study_id = f"{spec.study_id}_{cfg.get('variant_tag', '')}ins{v:03d}"
        # A second level or a lateral mass can fall outside a small field of view: such a ROI
        # has no image to read and is left out (the crop still covers what lies inside).
        inside = [r for r in ctx.rois if Volume(bg.bodies, bg.affine).contains(r.centre)]
        if not inside:
            continue
        # after painting: the lesion follows the study's tissues through the draw
        twin = twins and split in twin_splits
        look: int | None = None
        draw = None
        if drawn and draw_rng.random() < appearance.prob:
            if twin:  # one seed for the inserted study and its twin: the same look, twice
                look = int(rng.integers(2**63))
                draw = drawer(bg, np.random.default_rng(look), appearance)
            else:  # the stream as it always was
                draw = drawer(bg, rng, appearance)
        folder = out / "studies" / study_id
        centres = [r.centre for r in ctx.rois]
        paths = write_crop(bg, ctx.images, centres, folder, float(cfg["crop_margin_mm"]), draw)
        rel = {s: os.path.relpath(p, out) for s, p in paths.items()}
        if twin:
            records += twin_records(
                spec, bg, inside, centres, out, study_id, float(cfg["crop_margin_mm"]), look, appearance
            )
        for k, r in enumerate(inside):
            records.append(
                dict(
                    case_id=f"{study_id}_r{k}",
                    study_id=study_id,
                    patient_id=spec.subject,
                    **rel,
                    x_mm=round(float(r.centre[0]), 2),
                    y_mm=round(float(r.centre[1]), 2),
                    z_mm=round(float(r.centre[2]), 2),
                    compartment=r.compartment,
                    fracture=r.fracture,
                    level=r.level,
                    finding=r.finding,
                )
            )
    for r in records:
        r["split"] = split
    return {
        "subject": spec.subject,
        "dataset": spec.dataset,
        "records": records,
        "seconds": time.perf_counter() - start,
    }


def twin_records(
    spec: BackgroundSpec,
    bg: Background,
    rois: Sequence[Any],
    centres: list[np.ndarray],
    out: Path,
    study_id: str,
    margin_mm: float,
    look: int | None,
    appearance: AppearanceConfig,
) -> list[dict[str, Any]]:
    """The inserted study's twin: the same crop of the untouched study under the same look (the
    appearance draw replayed from ``look``), with a normal ROI at each inserted ROI's centre. The
    pair differs by the finding alone, so nothing but the sign tells them apart: not the place
    (the insertion puts 6 of 10 meningiomas on the sac's dorsal wall, and the held-out subjects'
    dorsal walls at L2-L3 were called a lesion 0.6 of the time, 2026-12-07), not the look, not the
    crop. Each ROI is named by its place (``canal`` for the intradural classes, else ``body``), so
    the place balance and the dense checks count it there."""
    twin_id = f"{study_id}{TWIN_SUFFIX}"
    draw = drawer(bg, np.random.default_rng(look), appearance) if look is not None else None
    paths = write_crop(bg, bg.images, centres, out / "studies" / twin_id, margin_mm, draw)
    rel = {s: os.path.relpath(p, out) for s, p in paths.items()}
    recs = []
    for k, r in enumerate(rois):
        place = "canal" if r.compartment in CANAL_CLASSES else "body"
        rec = normal_record(f"{twin_id}_{place}{k:02d}", twin_id, spec.subject, rel, r.centre, r.level)
        recs.append(rec)
    return recs


def imaged_as(
    bg: Background, an: SpineAnatomy, cfg: Mapping[str, Any], seed: list[int]
) -> dict[str, tuple[Background, SpineAnatomy]]:
    """The study imaged as each sequence of ``contrast.targets`` (:mod:`spinelesion.insert.contrast`),
    with its anatomy (the canal as found on the study itself); empty when none is asked for, and
    for a study without a T2 to make them from (it is written as acquired, and said so)."""
    targets = list((cfg.get("contrast") or {}).get("targets") or [])
    if targets and "t2" not in bg.images:
        log.warning("%s: no t2 to image as %s; written as acquired", bg.spec.study_id, ", ".join(targets))
        return {}
    looks = {}
    for k, target in enumerate(targets):
        made = synthesise(bg, an, str(target), np.random.default_rng([*seed, k]))
        looks[str(target)] = (made, derive_anatomy(made, set(cfg["cord_levels"]), canal_from=an))
    return looks


def subject_splits(specs: list[BackgroundSpec], ratios: Mapping[str, float], seed: int) -> dict[str, str]:
    rows = [
        Row(
            case_id=s.study_id,
            study_id=s.study_id,
            patient_id=s.subject,
            center_lps=np.zeros(3),
            sequences={},
            labels={"compartment": "", "fracture": ""},
        )
        for s in specs
    ]
    return assign_splits(rows, dict(ratios), seed)


def generate_inserted(cfg: Mapping[str, Any]) -> Path:
    """Write ``output_dir/manifest.csv`` (+ ``dataset.json``); returns the manifest path."""
    root = Path(str(cfg["backgrounds"]))
    if not root.is_dir():
        raise FileNotFoundError(
            f"backgrounds folder '{root}' not found (set backgrounds=... or SPINELESION_REAL_NORMALS)"
        )
    unknown = [t for t in (cfg.get("contrast") or {}).get("targets") or [] if t not in TARGETS]
    if unknown:
        raise ValueError(f"contrast.targets: {unknown} (each one of {', '.join(TARGETS)})")
    specs = discover_backgrounds(root, cfg.get("levels"), cfg.get("native_mm"), cfg.get("bottom_level"))
    if not specs:
        raise ValueError(f"{root}: no real study with vertebral-body masks found")
    out = Path(str(cfg["output_dir"])).resolve()
    out.mkdir(parents=True, exist_ok=True)
    split_of = subject_splits(specs, cfg["splits"], int(cfg["split_seed"]))
    jobs = [(s, i, dict(cfg), str(out), split_of[s.subject]) for i, s in enumerate(specs)]
    start = time.perf_counter()
    results = list(
        tqdm(
            map_jobs(subject_job, jobs, int(cfg.get("workers", 1))),
            total=len(jobs),
            desc="subjects",
            unit="subject",
            disable=not cfg.get("progress", True),
        )
    )
    records = [r for res in results for r in res["records"]]
    path = write_manifest(out / "manifest.csv", records)
    inserted = [r for r in records if r["finding"] != "normal"]
    write_json(
        out / "dataset.json",
        {
            "backgrounds": str(cfg["backgrounds"]),
            "subjects": len(specs),
            "seed": int(cfg["seed"]),
            "studies": len({r["study_id"] for r in records}),
            "rois": len(records),
            "seconds": round(time.perf_counter() - start, 1),
            "splits": {
                s: sorted(k for k, v in split_of.items() if v == s) for s in sorted(set(split_of.values()))
            },
            "datasets": dict(Counter(res["dataset"] for res in results)),
            "counts": {
                "finding": dict(Counter(r["finding"] for r in records)),
                "compartment": dict(Counter(r["compartment"] for r in records)),
                "fracture": dict(Counter(r["fracture"] for r in records)),
                "inserted_by_split": dict(Counter(r["split"] for r in inserted)),
            },
            "finding_weights": dict(cfg["finding_weights"]),
            "rates": dict(cfg["rates"]),
            "extents": {k: list(v) for k, v in (cfg.get("extents") or {}).items()},
        },
    )
    log.info(
        "%d subjects, %d studies, %d ROIs -> %s",
        len(specs),
        len({r["study_id"] for r in records}),
        len(records),
        path,
    )
    return path
