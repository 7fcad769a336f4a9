"""A release's checks: each one evaluates a model on one set and returns a JSON-ready result.

Every check takes the model folder, a context (:class:`CheckContext`: where the shared real data
and the drawn sets are, where to write) and its arguments; :data:`CHECKS` names them for the
recipe's ``check`` stages and says under which metadata key the model card shows each result.
The commands run as a user runs them (``spinelesion-evaluate``, ``spinelesion-predict``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
BIN = Path(sys.executable).parent


@dataclass
class CheckContext:
    out: Path  # this check's folder
    data: dict[str, Path]  # upstream data stages by name -> their folder (manifest.csv inside)
    shared: Path  # ../shared/data: real-normals/, real/, real-multisite/
    cache: Path | None = None  # the recipe's study cache, shared by its trainings and checks


def run_command(*args: str) -> None:
    log.info("$ %s", " ".join(args))
    subprocess.run(list(args), check=True)


def evaluate(
    model: Path, manifest: Path, out: Path, *extra: str, cache: Path | None = None
) -> dict[str, Any]:
    """``spinelesion-evaluate`` of ``model`` on ``manifest`` into ``out``; its metrics.json.
    ``cache``: a study cache shared with other runs (else one inside ``out``: each check read
    and resampled its studies again, and kept 1-2 GB of them, 2026-12-06)."""
    run_command(
        str(BIN / "spinelesion-evaluate"),
        f"model_dir={model}",
        f"data.manifest={manifest}",
        f"output_dir={out}",
        f"hydra.run.dir={out}",
        *([f"data.cache_dir={cache}"] if cache is not None else []),
        *extra,
    )
    return dict(json.loads((out / "metrics.json").read_text()))


def predict_rows(model: Path, input_path: Path, dest: Path) -> list[dict[str, str]]:
    """``spinelesion-predict`` (no saliency) on ``input_path`` into ``dest``; its predictions.csv rows."""
    from spinelesion.evaluation.real import read_rows

    run_command(
        str(BIN / "spinelesion-predict"),
        f"model_dir={model}",
        f"input={input_path}",
        f"output_dir={dest}",
        f"hydra.run.dir={dest}",
        "saliency.method=none",
        "progress=false",
    )
    return read_rows(dest / "predictions.csv")


def subjects(manifest: Path, split: str | None = None) -> list[str]:
    """The patients of a manifest (of one ``split``, or all), sorted."""
    from spinelesion.evaluation.real import read_rows

    return sorted({r["patient_id"] for r in read_rows(manifest) if split is None or r["split"] == split})


def unused_real_studies(roots: list[Path], used: set[str]) -> dict[str, dict[str, Path]]:
    """Study name -> {sequence: NIfTI} for each folder under ``roots`` that no training set uses
    and whose files are named by a sequence the model reads (t1.nii.gz, t2.nii.gz, ...); a
    folder without one (masks only, CT, an MR whose sequence is not stated) is left out."""
    from spinelesion.io.study import sequence_files

    studies: dict[str, dict[str, Path]] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for folder in (p for p in root.iterdir() if p.is_dir() and p.name not in used):
            files = sequence_files(folder)
            if files:
                studies[folder.name] = files
    return dict(sorted(studies.items()))


def _manifest(ctx: CheckContext, name: str) -> Path:
    if name not in ctx.data:
        raise ValueError(f"check needs the data stage {name!r} (given: {', '.join(ctx.data) or 'none'})")
    return ctx.data[name] / "manifest.csv"


def phantom_metrics(model: Path, ctx: CheckContext, data: str) -> dict[str, Any]:
    """Headline metrics of ``spinelesion-evaluate`` on a phantom set."""
    from spinelesion.evaluation.report import headline_metrics

    return dict(headline_metrics(evaluate(model, _manifest(ctx, data), ctx.out / "eval", cache=ctx.cache)))


def _split_rows(model: Path, ctx: CheckContext, data: str, split: str = "test") -> list[dict[str, str]]:
    """``spinelesion-evaluate`` on one split of a data stage's set; its predictions.csv rows."""
    from spinelesion.evaluation.real import read_rows

    evaluate(model, _manifest(ctx, data), ctx.out / "eval", f"data.split={split}", cache=ctx.cache)
    return read_rows(ctx.out / "eval" / "predictions.csv")


def real_heldout(model: Path, ctx: CheckContext, data: str) -> dict[str, Any]:
    """Held-out subjects of an insertion set: per dataset, and each inserted body finding paired
    with the same vertebra untouched."""
    from spinelesion.evaluation.real import paired, per_dataset, right_per_finding

    rows = _split_rows(model, ctx, data)
    return {
        "heldout_per_dataset": per_dataset(rows),
        "heldout_paired": paired(rows),
        # both labels right per finding: osteoporotic_fracture_chronic (shape only) apart
        "heldout_per_finding": right_per_finding(rows),
        "heldout_subjects": subjects(_manifest(ctx, data), "test"),
    }


def real_dense(model: Path, ctx: CheckContext, data: str, split: str = "test") -> dict[str, Any]:
    """The held-out subjects' untouched ROIs of a dense-normals set, per place: the body, the canal
    at each level (the real conus and lower thoracic cord), around the spine, anywhere."""
    from spinelesion.evaluation.real import normals_by_place

    return {
        "dense_normals_by_place": normals_by_place(_split_rows(model, ctx, data, split)),
        "dense_subjects": subjects(_manifest(ctx, data), split),
    }


def real_normals(
    model: Path, ctx: CheckContext, manifest: str = "real-normals/manifest.csv"
) -> dict[str, Any]:
    """Every real normal body of a shared manifest called none/none, through evaluate and through
    the user's command (predict reads the manifest's ROIs)."""
    from spinelesion.evaluation.real import read_rows

    path = ctx.shared / manifest
    evaluate(model, path, ctx.out / "eval", cache=ctx.cache)
    rows = read_rows(ctx.out / "eval" / "predictions.csv")
    called = [r["compartment_pred"] == "none" and r["fracture_pred"] == "none" for r in rows]
    predicted = [
        r["compartment_label"] == "none" and r["fracture_label"] == "none"
        for r in predict_rows(model, path, ctx.out / "predict")
    ]
    return {
        "shared_real_normals_called_normal": {
            "manifest": manifest,
            "n": len(called),
            "fraction": round(sum(called) / max(len(called), 1), 4),
            "predict_fraction": round(sum(predicted) / max(len(predicted), 1), 4),
        }
    }


def scan_untouched(
    model: Path, ctx: CheckContext, data: str, backgrounds: str = "real-normals"
) -> dict[str, Any]:
    """Scan mode (``spinelesion-predict`` without ROIs) on the untouched studies of the held-out
    subjects of an insertion set: false lesion calls per study."""
    from spinelesion.evaluation.real import scan_false_calls

    scans: list[dict[str, str]] = []
    scanned: list[str] = []
    for subject in subjects(_manifest(ctx, data), "test"):
        files = _sequence_files(ctx.shared / backgrounds / subject)
        if not files:
            continue
        inputs = _linked_inputs(ctx.out / "inputs" / subject, files)
        scans.extend(
            dict(r, study_id=subject) for r in predict_rows(model, inputs, ctx.out / "scan" / subject)
        )
        scanned.append(subject)
    return {"scan_untouched_heldout": scan_false_calls(scans, scanned)}


def scan_other_datasets(
    model: Path, ctx: CheckContext, data: str, roots: tuple[str, ...] = ("real-normals", "real")
) -> dict[str, Any]:
    """Scan mode on the real normal studies that no training set uses (held out by dataset)."""
    from spinelesion.evaluation.real import scan_false_calls

    used = set(subjects(_manifest(ctx, data)))
    scans: list[dict[str, str]] = []
    scanned: list[str] = []
    for name, files in unused_real_studies([ctx.shared / r for r in roots], used).items():
        inputs = _linked_inputs(ctx.out / "inputs" / name, files)
        scans.extend(dict(r, study_id=name) for r in predict_rows(model, inputs, ctx.out / name))
        scanned.append(name)
    return {"scan_untouched_other_datasets": {**scan_false_calls(scans, scanned), "subjects": scanned}}


def _sequence_files(folder: Path) -> dict[str, Path]:
    from spinelesion.io.study import sequence_files

    return sequence_files(folder) if folder.is_dir() else {}


def _linked_inputs(folder: Path, files: Mapping[str, Path]) -> Path:
    """A folder of the sequences alone (a study folder also holds masks and other series)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seq, path in files.items():
        link = folder / f"{seq}.nii.gz"
        if not link.exists():
            link.symlink_to(Path(path).resolve())
    return folder


def recorded_scans(
    model: Path, manifest: Path, groups: Mapping[str, list[dict[str, str]]]
) -> tuple[list[dict[str, Any]], float]:
    """Scan mode (prediction's settings) on each study of ``groups`` (a manifest's rows by study):
    every candidate with the classifier's answer around it, and the model's call threshold."""
    from tqdm.auto import tqdm

    from spinelesion.evaluation.scan_operating import scan_record
    from spinelesion.inference.predictor import Predictor, PredictorConfig
    from spinelesion.inference.scan import ScanConfig
    from spinelesion.tasks.hard_negatives import scan_candidates, study_of

    predictor = Predictor.from_model_dir(model, PredictorConfig(saliency_method="none"))
    records = []
    for name, rows in tqdm(groups.items(), desc="scan", unit="study"):
        lesions = [
            [float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"])]
            for r in rows
            if (r["compartment"], r["fracture"]) != ("none", "none")
        ]
        found = scan_candidates(predictor, study_of(manifest, rows), ScanConfig())
        records.append(scan_record(name, lesions, found))
    return records, predictor.policy.scan_call_threshold()


def scan_set(
    model: Path,
    ctx: CheckContext,
    data: str,
    splits: tuple[str, ...] = ("train", "val", "test"),
    studies: int | None = None,
    lesion_studies: bool = False,
) -> dict[str, Any]:
    """Scan mode at the model's call threshold on the first ``studies`` studies (all: None) of a
    set's ``splits`` (``lesion_studies``: only those with a finding): a lesion call more than 20 mm
    from every labelled lesion of its study is false; a lesion with a call within 20 mm is found."""
    from spinelesion.evaluation.scan_operating import at_threshold
    from spinelesion.tasks.hard_negatives import study_rows

    manifest = _manifest(ctx, data)
    groups = study_rows(manifest, tuple(splits))
    if lesion_studies:
        groups = {k: v for k, v in groups.items() if any(r["finding"] != "normal" for r in v)}
    records, threshold = recorded_scans(model, manifest, dict(list(groups.items())[:studies]))
    return dict(at_threshold(records, threshold))


def mimics(model: Path, ctx: CheckContext, data: str) -> dict[str, Any]:
    """Mimics and normal variants inserted into the held-out subjects: called none/none?"""
    from spinelesion.evaluation.real import mimics_called_normal

    return dict(mimics_called_normal(_split_rows(model, ctx, data)))


def chronic(model: Path, ctx: CheckContext, data: str) -> dict[str, Any]:
    """Healed fractures (the shape alone) inserted into the held-out subjects: called benign?"""
    from spinelesion.evaluation.real import chronic_fractures

    return chronic_fractures(_split_rows(model, ctx, data)) | {
        "subjects": subjects(_manifest(ctx, data), "test")
    }


def renderer(
    model: Path,
    ctx: CheckContext,
    data: str,
    name: str,
    split: str | None = "test",
    paired: bool = False,
    sequences: list[str] | None = None,
) -> dict[str, Any]:
    """A renderer the model never learnt from (issue 34): the figures the goals name (AUC,
    balanced accuracy, ECE, per-class sensitivity, each mimic called none/none) on its set;
    ``paired``: a set on real backgrounds also gets its per-dataset figures and each body
    finding beside the same vertebra untouched. ``sequences``: only these are given to the model
    (a probe that learnt from T2 alone is asked about the other renderer's T2, not about
    sequences it never saw: that would measure the sequences, not the renderer)."""
    from spinelesion.data.manifest import subset_manifest
    from spinelesion.evaluation.real import paired as paired_bodies
    from spinelesion.evaluation.real import per_dataset, read_rows
    from spinelesion.evaluation.renderers import renderer_report

    manifest = _manifest(ctx, data)
    if sequences:
        manifest = subset_manifest(manifest, ctx.out / "manifest.csv", None, sequences)
    metrics = evaluate(
        model,
        manifest,
        ctx.out / "eval",
        *([f"data.split={split}"] if split else []),
        cache=ctx.cache,
    )
    rows = read_rows(ctx.out / "eval" / "predictions.csv")
    report = renderer_report(metrics, rows) | ({"sequences": sorted(sequences)} if sequences else {})
    if paired:
        report |= {
            "subjects": sorted({r["patient_id"] for r in rows}),
            "per_dataset": per_dataset(rows),
            "paired": paired_bodies(rows),
        }
    return {name: report}


def _sequences_of(rows: list[dict[str, str]]) -> dict[str, str]:
    """case_id -> the sequences its study has, e.g. ``t1`` or ``t2+stir`` (manifest rows)."""
    from spinelesion.labels import SEQUENCES, sequence_set

    return {r["case_id"]: sequence_set(s for s in SEQUENCES if r.get(s)) for r in rows}


def site(
    model: Path,
    ctx: CheckContext,
    data: str,
    dataset: str,
    normals: str = "real-multisite/manifest.csv",
    splits: tuple[str, ...] = ("train", "val", "test"),
    dense: str | None = None,
) -> dict[str, Any]:
    """One real site, per sequence: its untouched bodies (the shared manifest ``normals``) called
    none/none, lesions inserted into its exams (``data``, an insertion set of that site), and
    scan mode's false calls on its untouched exams. ``splits`` are the insertion set's subjects
    to use: every one for a model that never saw the site (leave one dataset out), the test
    subjects for one trained on the others. ``dense``: a dense-normals set of the site's
    untouched exams, read per sequence and place (the canal at each level and behind each disc,
    around the spine), for those of its subjects that are in ``splits``: where a scan's false
    calls on the site come from."""
    from spinelesion.evaluation.real import (
        dataset_of,
        paired,
        per_dataset,
        read_rows,
        scan_false_calls,
    )

    manifest = _manifest(ctx, data)
    manifest_rows = read_rows(manifest)
    patients = {r["patient_id"] for r in manifest_rows if r["split"] in splits}
    # The insertion set, every split asked for (evaluate reads one split, or all).
    evaluate(
        model,
        manifest,
        ctx.out / "eval",
        *(["data.split=" + splits[0]] if len(splits) == 1 else []),
        cache=ctx.cache,
    )
    seqs = _sequences_of(manifest_rows)
    rows = [r for r in read_rows(ctx.out / "eval" / "predictions.csv") if r["patient_id"] in patients]
    inserted = {
        seq: per_dataset([r for r in rows if seqs.get(r["case_id"]) == seq]).get(dataset, {})
        for seq in sorted(set(seqs.values()))
    }
    # The shared manifest's untouched bodies (the site's exams as acquired).
    normals_path = ctx.shared / normals
    site_rows = [
        r
        for r in read_rows(normals_path)
        if dataset_of(r["patient_id"]) == dataset and r["patient_id"] in patients
    ]
    normal_seqs = _sequences_of(site_rows)  # the shared manifest read once, above
    evaluate(model, normals_path, ctx.out / "normals", cache=ctx.cache)
    called: dict[str, list[bool]] = {}
    for r in read_rows(ctx.out / "normals" / "predictions.csv"):
        if r["case_id"] in normal_seqs:
            called.setdefault(normal_seqs[r["case_id"]], []).append(
                r["compartment_pred"] == "none" and r["fracture_pred"] == "none"
            )
    # Scan mode on each untouched exam.
    scans: list[dict[str, str]] = []
    scanned: list[str] = []
    for study in sorted({r["study_id"] for r in site_rows}):
        files = _sequence_files(normals_path.parent / study)
        if files:
            inputs = _linked_inputs(ctx.out / "inputs" / study, files)
            scans.extend(
                dict(r, study_id=study) for r in predict_rows(model, inputs, ctx.out / "scan" / study)
            )
            scanned.append(study)
    return {
        dataset: {
            "patients": sorted(patients),
            "splits": list(splits),
            "bodies_called_normal": {
                seq: {"n": len(v), "fraction": round(sum(v) / max(len(v), 1), 4)}
                for seq, v in sorted(called.items())
            },
            "inserted_per_sequence": inserted,
            "paired": paired(rows),
            "scan_untouched": scan_false_calls(scans, scanned),
            **({"dense_normals_by_sequence": _dense_by_sequence(model, ctx, dense, splits)} if dense else {}),
        }
    }


def _dense_by_sequence(
    model: Path, ctx: CheckContext, dense: str, splits: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """A dense-normals set's ROIs called none/none per sequence and place, its ``splits`` only."""
    from spinelesion.evaluation.real import normals_by_place, read_rows

    manifest = _manifest(ctx, dense)
    seqs = _sequences_of([r for r in read_rows(manifest) if r["split"] in splits])
    one_split = ["data.split=" + splits[0]] if len(splits) == 1 else []
    evaluate(model, manifest, ctx.out / "dense", *one_split, cache=ctx.cache)
    rows = [r for r in read_rows(ctx.out / "dense" / "predictions.csv") if r["case_id"] in seqs]
    return {
        seq: normals_by_place([r for r in rows if seqs[r["case_id"]] == seq])
        for seq in sorted(set(seqs.values()))
    }


def stability(model: Path, ctx: CheckContext, data: str) -> dict[str, Any]:
    """Untouched held-out bodies beside the same bodies under random appearances (a set drawn
    with ``appearance.copies``): how often the call changes."""
    from spinelesion.evaluation.real import appearance_stability

    return {"appearance_stability": appearance_stability(_split_rows(model, ctx, data))}


@dataclass(frozen=True)
class Check:
    run: Callable[..., dict[str, Any]]
    record: tuple[str, ...]  # where the model's metadata keeps it: ("metrics", title) or (key,)
    merge: bool = False  # the result's keys are merged into that section (several checks share it)


CHECKS: dict[str, Check] = {
    # a check stage's ``label`` names its metrics section (the set: "fresh phantom test set, seed ...")
    "phantom_fresh": Check(phantom_metrics, ("metrics", "fresh phantom test set")),
    "phantom_shifted": Check(phantom_metrics, ("metrics", "shifted phantom set")),
    "real_heldout": Check(real_heldout, ("real_anatomy",), merge=True),
    "real_normals": Check(real_normals, ("real_anatomy",), merge=True),
    "real_dense": Check(real_dense, ("real_anatomy",), merge=True),
    "scan_untouched": Check(scan_untouched, ("real_anatomy",), merge=True),
    "scan_other_datasets": Check(scan_other_datasets, ("real_anatomy",), merge=True),
    "scan_phantom": Check(scan_set, ("phantom_scan",)),
    "scan_inserted": Check(scan_set, ("real_inserted_scan",)),
    "mimics": Check(mimics, ("real_mimics",)),
    "chronic": Check(chronic, ("chronic_fractures",)),
    # a normal variant inserted into the held-out subjects (degenerative narrowing): called none/none?
    "variants": Check(mimics, ("real_variants",)),
    # a renderer no training of the model read: renderers.<name> (the release's worst counts)
    "renderer": Check(renderer, ("renderers",), merge=True),
    # a site no training stage read (leave one dataset out), and a site's held-out patients
    "site_left_out": Check(site, ("leave_one_dataset_out",), merge=True),
    "site_heldout": Check(site, ("real_anatomy", "sites_heldout"), merge=True),
    "stability": Check(stability, ("real_anatomy",), merge=True),
}
