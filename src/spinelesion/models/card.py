"""What a model folder says about itself: ``metadata.json`` content and the model card."""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from spinelesion import __version__
from spinelesion.data.manifest import source_of
from spinelesion.formatting import fmt_metric, fmt_value
from spinelesion.labels import SEQUENCES, TASKS
from spinelesion.models.networks import MultiTaskNet, count_parameters

DISCLAIMER = (
    "Trained on synthetic spine MRI (spinelesion's phantom) and on real normal spines into which "
    "lesions were painted by spinelesion's own insertion code. It is a demonstration of the "
    "pipeline, NOT a clinical tool: it has never seen a real patient's lesion and must not be "
    "used for diagnosis or treatment decisions."
)


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {cpu}, {threads} torch threads, {gpu}, torch {torch.__version__}"


def model_metadata(
    cfg: DictConfig, dm: Any, net: MultiTaskNet, fit_seconds: float, epochs: int
) -> dict[str, Any]:
    """Everything a predictor needs to rebuild the inputs the network was trained on."""
    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    counts = {split: len(idx) for split, idx in dm.split_indices.items()}
    learnt = [dm.bank.rows[i] for split in ("train", "val") for i in dm.split_indices.get(split, [])]
    return {
        "name": str(cfg.get("model_name", "spinelesion")),
        "version": __version__,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "network": net_cfg,
        "parameters": count_parameters(net),
        "sequences": list(SEQUENCES),
        "tasks": {t: list(c) for t, c in TASKS.items()},
        "roi": {
            "shape": list(dm.spec.shape),
            "spacing": list(dm.spec.spacing),
            "margin": dm.spec.margin,
            "frame": "LPS axis-aligned, centred on the ROI centre",
        },
        "normalization": {
            "method": "robust_unit_range",
            "lower_percentile": 1.0,
            "upper_percentile": 99.0,
            "statistics_over": "context crop (margin x ROI), non-zero voxels",
        },
        "reference": dm.reference,
        "training": {
            "manifests": [_portable(p) for p in getattr(dm, "manifest_paths", [dm.manifest_path])],
            "rois_per_split": counts,
            "sources": training_sources(learnt),
            "renderers": training_renderers(learnt),
            "epochs": int(epochs),
            "fit_seconds": round(float(fit_seconds), 1),
            "seed": int(cfg.seed),
            "trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
            "optimizer": OmegaConf.to_container(cfg.model.optimizer, resolve=True),
            "machine": machine_description(),
            "command": "spinelesion-train " + " ".join(_overrides()),
        },
        "intended_use": DISCLAIMER,
    }


def training_sources(rows: Sequence[Any]) -> dict[str, dict[str, int]]:
    """ROIs and patients per data set among the rows a model learnt from (train and val)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault(source_of(r.patient_id), {"rois": 0, "patients": set()})
        entry["rois"] += 1
        entry["patients"].add(r.patient_id)
    return {k: {"rois": v["rois"], "patients": len(v["patients"])} for k, v in sorted(out.items())}


def renderer_of(row: Any) -> str:
    """Who drew a training row's finding: ``phantom`` (a synthetic study), ``plain`` (the plain
    renderer, ``insert/plain.py``), ``insert`` (the insertion into a real spine), or ``real`` (an
    untouched real study: no renderer)."""
    if source_of(row.patient_id) == "phantom":
        return "phantom"
    study = str(getattr(row, "study_id", ""))
    if "_plain_" in study:
        return "plain"
    return "insert" if "_ins" in study and getattr(row, "finding", "normal") != "normal" else "real"


def training_renderers(rows: Sequence[Any]) -> dict[str, int]:
    """ROIs per renderer among the rows a model learnt from (:func:`renderer_of`)."""
    out: dict[str, int] = {}
    for r in rows:
        key = renderer_of(r)
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _portable(path: Path | str) -> str:
    """A path relative to the working directory when below it: no machine paths in model folders."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


def _real_lines(real: dict[str, Any]) -> list[str]:
    """The real-anatomy checks of the release recipe (``spinelesion.release.checks``) as Markdown."""
    if not real:
        return []

    f = fmt_value
    lines = [
        "## Real anatomy (held-out subjects of the real normal spines, and lesions inserted into them)",
        "",
        "| dataset | subjects | untouched bodies | called normal | inserted ROIs | inserted correct "
        "| compartment AUC | benign vs pathologic AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in (real.get("heldout_per_dataset") or {}).items():
        lines.append(
            f"| {name} | {d.get('subjects')} | {d.get('untouched_bodies')} | "
            f"{f(d.get('untouched_bodies_called_normal'))} | {d.get('inserted_rois')} | "
            f"{f(d.get('inserted_correct'))} | {f(d.get('compartment_auc_macro'))} | "
            f"{f(d.get('fracture_auc_benign_vs_pathologic'))} |"
        )
    pr = real.get("heldout_paired") or {}
    if pr:
        lines += [
            "",
            f"Paired (the same held-out vertebra untouched and with an inserted body finding, {pr.get('pairs')} "
            f"pairs): untouched called normal {f(pr.get('untouched_called_normal'))}; the answer changes when a "
            f"lesion is inserted and only then in {f(pr.get('changes_only_with_lesion'))} of "
            f"{pr.get('lesion_pairs')} lesion pairs (both labels right: {f(pr.get('lesion_pairs_both_correct'))}); "
            f"mimic pairs both normal {f(pr.get('mimic_pairs_both_normal'))} of {pr.get('mimic_pairs')}.",
        ]
    shared = real.get("shared_real_normals_called_normal") or {}
    if shared:
        lines += [
            "",
            f"Every real normal body of `../shared/data/real-normals/manifest.csv` (training subjects "
            f"included): {f(shared.get('fraction'))} of {shared.get('n')} called none/none.",
        ]
        if shared.get("predict_fraction") is not None:
            lines[-1] += (
                f" Through `spinelesion-predict input=<that manifest>`: {f(shared['predict_fraction'])}."
            )
    scan = real.get("scan_untouched_heldout") or {}
    if scan:
        lines += [
            "",
            f"Scan mode on the held-out untouched real studies: {scan.get('false_calls')} false lesion calls "
            f"in {scan.get('studies')} studies ({f(scan.get('false_calls_per_study'))} per study, "
            f"{scan.get('candidates')} candidates).",
        ]
    chronic = (real.get("heldout_per_finding") or {}).get("osteoporotic_fracture_chronic")
    if chronic:
        lines += [
            "",
            f"Chronic osteoporotic fractures (the shape alone, no signal change) inserted into the held-out "
            f"spines: {f(chronic.get('both_labels_right'))} of {chronic.get('n')} called none/benign.",
        ]
    stable = real.get("appearance_stability") or {}
    if stable.get("pairs"):
        lines += [
            "",
            f"Under a random appearance of the same study (`appearance.*`), {f(stable.get('call_changed'))} of "
            f"{stable.get('pairs')} held-out untouched bodies change their call "
            f"({f(stable.get('normal_call_lost'))} lose their none/none).",
        ]
    other = real.get("scan_untouched_other_datasets") or {}
    if other.get("studies"):
        lines += [
            "",
            f"Scan mode on the real normal studies of datasets no training set uses "
            f"({', '.join(other.get('subjects') or [])}): {other.get('false_calls')} false lesion calls in "
            f"{other.get('studies')} studies ({other.get('candidates')} candidates).",
        ]
    return [*lines, ""]


def _source_lines(sources: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Which data sets the model learnt from (train and val ROIs), by name."""
    if not sources:
        return []
    parts = [
        f"{name} ({v['rois']} ROIs" + (f", {v['patients']} patients)" if name != "phantom" else ")")
        for name, v in sources.items()
    ]
    return [f"- Data it has seen (train and val): {', '.join(parts)}; every other data set is unseen."]


def _site_lines(sites: Mapping[str, Any], title: str) -> list[str]:
    """Per site and sequence: untouched bodies called normal, inserted lesions, scan mode."""
    if not sites:
        return []
    f = fmt_value
    lines = [f"## {title}", ""]
    for name, d in sites.items():
        scan = d.get("scan_untouched") or {}
        lines += [
            f"**{name}** ({len(d.get('patients') or [])} patients, splits {', '.join(d.get('splits') or [])}): "
            f"scan mode on the untouched exams {scan.get('false_calls')} false lesion calls in "
            f"{scan.get('studies')} exams ({f(scan.get('false_calls_per_study'))} per exam).",
            "",
            "| sequence | untouched bodies | called normal | inserted ROIs | inserted correct "
            "| compartment AUC | benign vs pathologic AUC |",
            "|---|---|---|---|---|---|---|",
        ]
        bodies = d.get("bodies_called_normal") or {}
        inserted = d.get("inserted_per_sequence") or {}
        for seq in sorted(set(bodies) | set(inserted)):
            b, i = bodies.get(seq) or {}, inserted.get(seq) or {}
            lines.append(
                f"| {seq} | {b.get('n')} | {f(b.get('fraction'))} | {i.get('inserted_rois')} | "
                f"{f(i.get('inserted_correct'))} | {f(i.get('compartment_auc_macro'))} | "
                f"{f(i.get('fracture_auc_benign_vs_pathologic'))} |"
            )
        lines += ["", *_dense_lines(d.get("dense_normals_by_sequence") or {})]
    return lines


# The places of a dense-normals set as the card names them (data/manifest.NORMAL_PLACES)
DENSE_PLACES = {
    "body": "body",
    "canal": "canal at a body",
    "canal_between": "canal behind a disc",
    "canal_wall": "sac wall at a body",
    "region": "around the spine",
    "bg": "anywhere",
}


def _dense_lines(by_sequence: Mapping[str, Any]) -> list[str]:
    """Untouched ROIs called none/none per sequence and place: where a site's false calls lie."""
    if not by_sequence:
        return []
    f = fmt_value
    lines = [
        "Untouched ROIs all around the exams, called none/none (n):",
        "",
        "| sequence | " + " | ".join(DENSE_PLACES.values()) + " |",
        "|---|" + "---|" * len(DENSE_PLACES),
    ]
    for seq, places in sorted(by_sequence.items()):
        cells = [
            f"{f(places[p]['called_normal'])} ({places[p]['n']})" if p in places else "-"
            for p in DENSE_PLACES
        ]
        lines.append(f"| {seq} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return [portable_override(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # noqa: BLE001 - not running under @hydra.main (tests)
        return []


def portable_override(override: str) -> str:
    """``key=/abs/path`` -> ``key=<path relative to the working directory>``: the command a
    model folder records must not tell where (or for whom) it was made."""
    from spinelesion.portable import redact_paths

    key, sep, value = override.partition("=")
    return f"{key}{sep}{redact_paths(value)}" if sep else override


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "| split | n | compartment AUC (95 % CI) | compartment ECE | benign vs pathologic AUC (95 % CI) | fracture ECE |",
        "|---|---|---|---|---|---|",
    ]

    f = fmt_value
    for split, m in metrics.items():
        lines.append(
            f"| {split} | {m.get('n')} | {fmt_metric(m.get('compartment_auc_macro'), m.get('compartment_auc_macro_ci95'))} "
            f"| {f(m.get('compartment_ece'))} "
            f"| {fmt_metric(m.get('fracture_auc_benign_vs_pathologic'), m.get('fracture_auc_benign_vs_pathologic_ci95'))} "
            f"| {f(m.get('fracture_ece'))} |"
        )
    lines += [
        "",
        "Labels as a user sees them (decision rule applied): balanced accuracy and sensitivity per class.",
        "",
        "| split | task | balanced accuracy | sensitivity per class |",
        "|---|---|---|---|",
    ]
    for split, m in metrics.items():
        for task in TASKS:
            sens = m.get(f"{task}_sensitivity") or {}
            per = ", ".join(f"{c} {f(s)}" for c, s in sens.items()) or "-"
            lines.append(f"| {split} | {task} | {f(m.get(f'{task}_balanced_accuracy'))} | {per} |")
    return lines


def _decision_text(meta: dict[str, Any]) -> str:
    dec = meta.get("decision")
    if not dec:
        return "The label shown is the most probable class (argmax)."
    offs = "; ".join(
        f"{t}: " + ", ".join(f"{c} {v:+.2f}" for c, v in zip(TASKS[t], o, strict=False))
        for t, o in (dec.get("offsets") or {}).items()
    )
    text = (
        "The label shown is argmax(log p + offset), offsets fitted on the validation split to maximise "
        f"balanced accuracy, so rare classes are named when they should be ({offs}); validation balanced "
        f"accuracy {dec.get('validation_balanced_accuracy_argmax')} with argmax -> "
        f"{dec.get('validation_balanced_accuracy_rule')} with the rule."
    )
    if dec.get("normal_recall_drop_allowed") is not None:
        text += (
            f" The offsets are averaged over {dec.get('bootstrap_resamples')} bootstrap resamples and may "
            f"lower the normal class's validation sensitivity by at most {dec['normal_recall_drop_allowed']} "
            f"(argmax {dec.get('validation_normal_sensitivity_argmax')} -> rule "
            f"{dec.get('validation_normal_sensitivity_rule')}): most vertebrae of a real study are normal."
        )
    return text + " Probabilities are unchanged."


def _scan_lines(scan: dict[str, Any], title: str, what: str) -> list[str]:
    """Scan mode on studies with labelled lesions (``scan_check`` of the release script)."""
    if not scan:
        return []
    return [
        f"## {title}",
        "",
        f"{scan.get('studies')} {what} scanned with prediction's settings: "
        f"{scan.get('lesions_found')} of {scan.get('lesions')} labelled lesions have a lesion call within "
        f"{scan.get('radius_mm')} mm; {scan.get('false_calls')} lesion calls farther from every lesion "
        f"({fmt_value(scan.get('false_calls_per_study'))} per study, {scan.get('candidates')} candidates).",
        "",
    ]


def _operating_lines(scan: dict[str, Any]) -> list[str]:
    """Scan mode's fitted operating point (``metadata.json`` ``scan``) and what it cost on validation."""
    if not scan or scan.get("call_threshold") is None:
        return []
    by_t = {round(float(p["threshold"]), 2): p for p in scan.get("curve") or []}
    chosen, base = by_t.get(round(float(scan["call_threshold"]), 2)), by_t.get(0.5)

    def point(p: dict[str, Any] | None) -> str:
        if not p:
            return "?"
        return (
            f"{p.get('lesions_found')} of {p.get('lesions')} lesions found, "
            f"{fmt_value(p.get('false_calls_per_study'))} false calls per study"
        )

    return [
        "## Scan mode's operating point",
        "",
        f"A scan candidate is called a lesion when some task's 1 - p(none) reaches "
        f"**{scan['call_threshold']}** (prediction's `scan.call_threshold: null`; a value given there wins). "
        f"Fitted on {scan.get('fitted_on')}: the fewest false calls among the thresholds that find at most "
        f"{scan.get('max_sensitivity_loss')} of the lesions fewer than 0.5. There: {point(chosen)} "
        f"(at 0.5: {point(base)}).",
        *_rates_lines(scan.get("lesion_rates")),
        "",
    ]


def _locator_lines(locator: Mapping[str, Any]) -> list[str]:
    """The spine locator scan mode searches within: what it was trained on and how it did held out."""
    if not locator:
        return []
    info = locator.get("info") or {}
    seen = ", ".join(
        f"{ds} ({n.get('train', 0)} training examples)"
        for ds, n in sorted((info.get("trained_on") or {}).items())
    )
    lines = [
        "## Spine locator (where scan mode looks)",
        "",
        f"A 3D U-Net on a {locator.get('spacing_mm')} mm grid segments the vertebral bodies from each sequence; "
        f"scan mode proposes candidates only within {locator.get('reach_mm')} mm of the bodies swept "
        f"{locator.get('posterior_mm')} mm posterior (canal, cord, arches) and of the column through them "
        f"(bridging a body it missed, continued {locator.get('extend_mm')} mm past the ends); a study where it finds under "
        f"{locator.get('min_body_ml')} ml of body is searched whole, with a warning "
        f"(`locator.safetensors`, sha256 `{str(locator.get('weights_sha256', ''))[:16]}...`). "
        f"Trained {info.get('steps')} steps on: {seen or 'unknown'} (examples are single sequences: real ones as "
        "acquired and under random appearances, real T2s imaged as T1 and STIR, phantom spines).",
        "",
        "| held-out set | examples | body Dice | bodies found | bodies inside the searched region | share of the field of view searched |",
        "|---|---|---|---|---|---|",
    ]
    for ds, r in sorted((info.get("held_out") or {}).items()):
        lines.append(
            f"| {ds} | {r.get('examples')} | {fmt_value(r.get('dice'))} | {fmt_value(r.get('bodies_found'))} "
            f"| {fmt_value(r.get('bodies_in_region'))} | {fmt_value(r.get('region_share'))} |"
        )
    return [*lines, ""]


def _rates_lines(rates: dict[str, dict[str, float]] | None) -> list[str]:
    """The lesion rates a scan candidate's call was judged at when the point was fitted."""
    if not rates:
        return []
    listed = "; ".join(
        f"{task}: " + ", ".join(f"{name} {v:g}" for name, v in per.items()) for task, per in rates.items()
    )
    return [
        "",
        "1 - p(none) there is taken with the lesion classes at their real relative rates "
        f"({listed}; prediction's `scan.lesion_rates`), moved from the balanced classes the network was "
        "trained on (`sampling_prior` in metadata.json): a scan meets mostly extradural lesions.",
    ]


def _mimic_lines(
    mimics: dict[str, Any],
    heading: str = "Mimics and normal variants on held-out real spines",
    where: str = "`data/real-mimics`, test split",
) -> list[str]:
    """Held-out real mimics or variants (``spinelesion.release.checks.mimics``) as one paragraph."""
    if not mimics:
        return []
    f = fmt_value
    parts = ", ".join(
        f"{name} {f(d.get('called_normal'))} of {d.get('n')}"
        for name, d in (mimics.get("per_finding") or {}).items()
    )
    return [
        f"## {heading}",
        "",
        f"Inserted into the held-out real subjects ({where}), labelled none/none: "
        f"{f(mimics.get('called_normal'))} of {mimics.get('n')} called none/none ({parts}).",
        "",
    ]


def _chronic_lines(chronic: dict[str, Any]) -> list[str]:
    """Healed fractures on held-out real spines (``spinelesion.release.checks.chronic``)."""
    if not chronic.get("n"):
        return []
    f = fmt_value
    return [
        "## Healed fractures: the shape alone",
        "",
        f"Chronic osteoporotic fractures (wedge, biconcave or crush, no signal change) inserted into the "
        f"held-out real subjects: {f(chronic.get('called_benign'))} of {chronic.get('n')} called benign, "
        f"{f(chronic.get('called_fracture'))} called a fracture of either kind; the untouched bodies of the same "
        f"spines called none/none {f(chronic.get('untouched_bodies_called_normal'))} "
        f"(of {chronic.get('untouched_bodies')}).",
        "",
    ]


def _plain_lines(plain: dict[str, Any]) -> list[str]:
    """The outside check's three findings drawn by a second, plain renderer
    (``spinelesion.release.checks.plain``) as one paragraph."""
    if not plain:
        return []
    f = fmt_value
    right = plain.get("both_labels_right") or {}
    n = plain.get("n") or {}
    parts = ", ".join(f"{k} {f(v)} of {n.get(k)}" for k, v in right.items())
    per: dict[str, Any] = next(iter((plain.get("per_dataset") or {}).values()), {})
    return [
        "## A second, plain renderer (a proxy of the outside check)",
        "",
        "A lytic deposit, an osteoporotic wedge fracture with an oedema band and a pathologic collapse "
        "with whole-body signal and a convex posterior wall, drawn into every body of the held-out real "
        f"subjects ({', '.join(plain.get('subjects') or [])}) by `spinelesion.insert.plain`, which shares "
        "no painting or deformation code with the insertion the model was trained on: compartment AUC "
        f"{f(per.get('compartment_auc_macro'))}, benign vs pathologic AUC "
        f"{f(per.get('fracture_auc_benign_vs_pathologic'))}; both labels right: {parts}.",
        "",
    ]


def _renderer_lines(reports: Mapping[str, Any]) -> list[str]:
    """Held-out renderers (``spinelesion.release.checks.renderer``) as a table, the worst last."""
    from spinelesion.scoring.renderers import GOALS, value_at, worst

    if not reports:
        return []
    f = fmt_value
    heads = [k.replace("sensitivity.", "sens. ").replace("_", " ") for k in GOALS]
    lines = [
        "## Held-out renderers (the sign, not the look of one renderer)",
        "",
        "Each set was drawn by a renderer that no training of this model read; the release is judged by "
        "the worst (ECE: the highest). Sens.: sensitivity; mimic: the mimic least often called none/none.",
        "",
        "| renderer | n | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * len(GOALS),
    ]
    for name, r in reports.items():
        lines.append(f"| {name} | {r.get('n')} | " + " | ".join(f(value_at(r, k)) for k in GOALS) + " |")
    if len(reports) > 1:
        w = worst(reports)
        lines.append(
            "| **worst** | | "
            + " | ".join(
                f"{f(w[g]['value'])} ({w[g]['renderer']})" if (g := k.replace(".", "_")) in w else "-"
                for k in GOALS
            )
            + " |"
        )
    return [*lines, ""]


def _tta_text(meta: Mapping[str, Any]) -> str:
    if "lr" not in (meta.get("tta") or []):
        return ""
    return (
        " Each ROI is classified with its left-right mirror image too and the logits are averaged "
        "(test-time mirroring; temperatures and decision rule were fitted so; `tta=false` in "
        "`spinelesion-predict` runs one pass)."
    )


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def write_model_card(folder: Path, meta: dict[str, Any]) -> Path:
    """A README.md beside the weights: what it is, what it is not, how it was made, how good."""
    roi = meta["roi"]
    training = meta.get("training", {})
    lines = [
        f"# {meta['name']} (spinelesion {meta['version']})",
        "",
        f"> **{DISCLAIMER}**",
        "",
        "## What it does",
        "For a region of interest (ROI) in a spine MRI study, two answers: the compartment of the lesion "
        f"centred there ({', '.join(TASKS['compartment'])}) and the state of the vertebral body "
        f"({', '.join(TASKS['fracture'])}). Probabilities are temperature-scaled on the validation split "
        f"(T = {meta.get('temperature')}).{_tta_text(meta)}",
        "",
        _decision_text(meta),
        "",
        "## Inputs",
        f"- Sequences (channels, in order): {', '.join(meta['sequences'])}; any may be missing "
        "(zero channel plus an availability flag the network sees).",
        f"- ROI: {roi['shape']} voxels at {roi['spacing']} mm, axis-aligned in LPS (L-R, A-P, S-I), "
        "around the ROI centre in patient LPS millimetres.",
        "- Intensities: per sequence, 1st-99th percentile of the ROI context mapped to [0, 1].",
        "",
        "## Network",
        f"`{meta['network']}`, {_count(meta.get('parameters'))} parameters.",
        "",
        "## Training",
        f"- Data: {', '.join(f'`{m}`' for m in training.get('manifests') or [training.get('manifest')])}; "
        f"ROIs per split: {training.get('rois_per_split')}.",
        *_source_lines(training.get("sources") or {}),
        *(
            [
                "- Renderers of its lesions (train and val ROIs; real: untouched real studies): "
                + ", ".join(f"{k} {v}" for k, v in training["renderers"].items())
                + "; a renderer not named here is one it never learnt from."
            ]
            if training.get("renderers")
            else []
        ),
        f"- {training.get('epochs')} epochs in {training.get('fit_seconds')} s on {training.get('machine')}.",
        f"- Seed {training.get('seed')}; command: `{training.get('command')}`.",
        "",
        "## Metrics (`spinelesion-evaluate`: val/test splits of the training mix, fresh phantom sets)",
        *_metric_lines(meta.get("metrics") or {}),
        "",
        *_real_lines(meta.get("real_anatomy") or {}),
        *_site_lines(
            meta.get("leave_one_dataset_out") or {},
            "Leave one dataset out (a model of the same recipe that never saw the data set)",
        ),
        *_site_lines(
            (meta.get("real_anatomy") or {}).get("sites_heldout") or {},
            "Held-out patients of a multi-site data set (the released model learnt its other patients)",
        ),
        *_scan_lines(
            meta.get("phantom_scan") or {}, "Scan mode on phantom studies", "studies of the fresh phantom set"
        ),
        *_scan_lines(
            meta.get("real_inserted_scan") or {},
            "Scan mode on held-out real spines with an inserted finding",
            "held-out real studies with one inserted lesion or mimic (mimics are not lesions: a call on one is false)",
        ),
        *_mimic_lines(meta.get("real_mimics") or {}),
        *_mimic_lines(
            meta.get("real_variants") or {},
            "Degenerative narrowing of the canal on held-out real spines",
            "the release recipe's `real_stenosis`, test split",
        ),
        *_chronic_lines(meta.get("chronic_fractures") or {}),
        *_plain_lines(meta.get("plain_renderer") or {}),
        *_renderer_lines(meta.get("renderers") or {}),
        *_operating_lines(meta.get("scan") or {}),
        *_locator_lines(meta.get("locator") or {}),
        "These figures describe synthetic phantoms and real normal spines with synthetic lesions. "
        "Nothing here says how the model would do on real patients' lesions.",
        "",
        "## Files",
        f"- `{meta.get('weights', 'weights.safetensors')}` (sha256 `{meta.get('weights_sha256', '')[:16]}...`): "
        "tensors only, loads without executing code.",
        *(
            [
                f"- `{meta['locator'].get('weights')}`: the spine locator's tensors (sealed in `metadata.json`)."
            ]
            if meta.get("locator")
            else []
        ),
        "- `metadata.json`: everything above, machine-readable; `spinelesion-predict model_dir=<this folder>` uses it.",
        "",
    ]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
