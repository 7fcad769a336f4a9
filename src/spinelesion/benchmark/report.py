"""report.md, report.json and plots of a benchmark run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from spinelesion.atomic import atomic_path, write_json, write_text  # noqa: E402
from spinelesion.formatting import fmt_metric, fmt_value  # noqa: E402
from spinelesion.portable import redact_paths  # noqa: E402

_f = fmt_value


def _t(m: dict[str, Any] | None) -> str:
    if not m:
        return "-"
    flag = "" if m.get("trustworthy", True) else " (spread too wide to trust)"
    return f"{m['median_s'] * 1000:.1f} ms [{m['min_s'] * 1000:.1f}-{m['max_s'] * 1000:.1f}]{flag}"


def plot_learning_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, pts in curves.items():
        if pts:
            ax.plot([p["seconds"] for p in pts], [p["score"] for p in pts], "o-", ms=3, label=name)
    ax.set_xlabel("training seconds (this machine)")
    ax.set_ylabel("validation score\n(mean of compartment AUC\nand benign-vs-pathologic AUC)")
    ax.set_title("Learning curves under an equal wall-clock budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def plot_scaling(rows: list[dict[str, Any]], x_key: str, xlabel: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    xs = [r[x_key] for r in rows]
    ax.plot(xs, [r["time"]["median_s"] for r in rows], "o-", color="tab:blue")
    ax.fill_between(xs, [r["time"]["min_s"] for r in rows], [r["time"]["max_s"] for r in rows], alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seconds (median, min-max)", color="tab:blue")
    mem = [r.get("peak_rss_mib") for r in rows]
    if any(m is not None for m in mem):
        ax2 = ax.twinx()
        ax2.plot(xs, [m if m is not None else float("nan") for m in mem], "s--", color="tab:red")
        ax2.set_ylabel("peak RSS (MiB)", color="tab:red")
    ax.set_title(f"Scaling with {xlabel}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def scan_section(scan: dict[str, Any] | None) -> list[str]:
    """Scan mode per study: the lattice scan against the MONAI scan it replaced."""
    if not scan or not scan.get("studies"):
        return []
    lines = [
        "",
        "## Scan mode per study",
        "",
        "| study | grid | lattice scan s | windows classified / relevant / all | MONAI scan s | ratio | same candidates |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in scan["studies"]:
        w = r["windows"]
        lines.append(
            f"| {r['study']} | {'x'.join(map(str, r['shape']))} | {r['lattice_s']} "
            f"| {w.get('classified')} / {w.get('relevant')} / {w.get('total')} "
            f"| {r.get('reference_s', '-')} | {r.get('ratio', '-')} | {r.get('same_candidates', '-')} |"
        )
    lines += [
        "",
        f"Median lattice scan {scan.get('median_lattice_s')} s; median ratio {scan.get('median_ratio', '-')}.",
    ]
    return lines


def write_report(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    results = redact_paths(results)  # reports get committed: no machine paths (temporary data folders)
    m = results["machine"]
    lines = [
        f"# spinelesion benchmark ({'quick' if results['quick'] else 'full'})",
        "",
        f"- date: {m['date']}",
        f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores, {m['torch_threads']} torch threads",
        f"- memory: {m['memory_gib']} GiB; GPU: {m['gpu']['name'] if m['gpu'] else 'none'}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items() if v)}",
        f"- data: train `{results.get('train_manifest')}`, test `{results.get('test_manifest')}`",
        f"- wall time of this benchmark: {results.get('seconds', 0):.0f} s",
        "",
    ]
    acc = results.get("accuracy")
    if acc:
        lines += [
            "## Accuracy under an equal wall-clock budget",
            f"Budget per network: {acc['budget_s']:.0f} s of training on this machine; evaluated with "
            "`spinelesion-evaluate` on the same test set.",
            "",
            "| network | epochs | compartment AUC (95 % CI) | bal. acc | ECE | benign vs pathologic AUC (95 % CI) | bal. acc | ECE |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in acc["runs"]:
            lines.append(
                f"| {r['model']} | {r['epochs']} | {fmt_metric(r['compartment_auc_macro'], r['compartment_auc_macro_ci95'])} "
                f"| {_f(r['compartment_balanced_accuracy'])} | {_f(r['compartment_ece'])} "
                f"| {fmt_metric(r['fracture_auc_benign_vs_pathologic'], r['fracture_auc_benign_vs_pathologic_ci95'])} "
                f"| {_f(r['fracture_balanced_accuracy'])} | {_f(r['fracture_ece'])} |"
            )
        lines += [
            "",
            f"Default network above DenseNet121-3D at every point of the learning curve: "
            f"**{acc.get('default_beats_densenet_everywhere')}** (goal: True). See `learning_curve.png`.",
            "",
        ]
    sp = results["speed"]
    tr = sp["training"]
    lines += [
        "## Speed (ratios measured in this run)",
        "",
        "| measurement | value | goal |",
        "|---|---|---|",
        f"| training ROIs/s, default network | {tr['default']['rois_per_s']} | |",
        f"| training ROIs/s, DenseNet121-3D | {tr['densenet121']['rois_per_s']} | |",
        f"| training speed ratio default / DenseNet121 | {tr['ratio_default_over_densenet']}x | >= 5x |",
    ]
    d = sp.get("data", {})
    if "dicom" in d:
        lines.append(
            f"| DICOM series read, speed-up vs SimpleITK | {d['dicom'].get('speedup_vs_simpleitk')}x "
            f"({_t(d['dicom']['spinelesion'])} vs {_t(d['dicom'].get('simpleitk') if isinstance(d['dicom'].get('simpleitk'), dict) else None)}) | >= 1x |"
        )
    if "loader" in d:
        lines.append(
            f"| studies/s uncached (read, resample, crop) | {d['loader']['studies_per_s_uncached']} | |"
        )
        lines.append(
            f"| ROIs/s the cached loader delivers (index + collate) | {d['loader']['rois_per_s_cached']} | |"
        )
        lines.append(f"| cached loader / training step | {d.get('loader_over_train_step')}x | >= 5x |")
        if d["loader"].get("rois_per_s_augment"):
            lines.append(
                f"| ROIs/s of batched augmentation on the CPU (runs on the GPU when training there) | "
                f"{d['loader']['rois_per_s_augment']} | |"
            )
            lines.append(
                f"| augmentation's share of a CPU training step | {d.get('augment_share_of_cpu_step')} | |"
            )
    lines += _monai_path_rows(d.get("monai_path"))
    inf = sp.get("inference")
    if inf:
        s = inf["split_s"]
        lines += [
            f"| per study ({inf['rois']} ROIs): read / preprocess / network / saliency / write (s) | "
            f"{s['read']:.3f} / {s['preprocess']:.3f} / {s['network']:.3f} / {s['saliency']:.3f} / {s['write']:.3f} | |",
            f"| per study: DICOM SR + saliency Parametric Maps (DICOM inputs, output.dicom) (s) | {s.get('dicom', 0.0):.3f} | |",
            *_per_study_rows(inf.get("per_study"), sp.get("inference_nifti")),
            f"| total over reading time | {inf['total_over_read']}x | |",
            f"| Grad-CAM over forward (per task) | {inf['gradcam_over_forward_per_task']}x | <= 3x |",
            f"| Grad-CAM++ over forward (per task) | {inf['gradcampp_over_forward_per_task']}x | |",
            f"| occlusion over forward (per ROI and task) | {inf['occlusion_over_forward_per_roi_task']}x | |",
        ]
    ex = sp.get("export")
    if ex:
        lines.append(
            f"| CPU runtimes, ROIs/s (batch {ex['batch_size']}): eager / TorchScript / ONNX Runtime | "
            f"{ex['rois_per_s']['eager']} / {ex['rois_per_s']['torchscript']} / {ex['rois_per_s']['onnxruntime']} "
            f"(fastest: {ex['fastest_on_cpu']}) | |"
        )
    lines += scan_section(sp.get("scan"))
    lines += ["", "## GPU", "", results.get("gpu_note", "not measured (no CUDA device on this machine)"), ""]
    sc = sp.get("scaling")
    if sc:
        lines += ["## Scaling", "", "| ROIs per study | time | peak RSS MiB |", "|---|---|---|"]
        lines += [f"| {r['rois']} | {_t(r['time'])} | {_f(r.get('peak_rss_mib'), 0)} |" for r in sc["rois"]]
        lines += ["", "| voxels per sequence | time (prepare + 1 ROI) | peak RSS MiB |", "|---|---|---|"]
        lines += [
            f"| {r['voxels_per_sequence']} | {_t(r['time'])} | {_f(r.get('peak_rss_mib'), 0)} |"
            for r in sc["volume"]
        ]
        lines += ["", "Plots: `scaling_rois.png`, `scaling_volume.png`.", ""]
    lines += [
        "Timings are medians of repeated runs after a warm-up, [min-max] shown; a spread over "
        "50 % of the median is flagged. Models trained on synthetic data are demonstrations, not clinical tools.",
        "",
    ]
    md = write_text(out / "report.md", "\n".join(lines))
    js = write_json(out / "report.json", results)
    return md, js


def _per_study_rows(*costs: dict[str, Any] | None) -> list[str]:
    """Whole-study cost with every default output, per input format: wall and process CPU time."""
    rows = []
    for c in costs:
        if not c:
            continue
        rows.append(
            f"| per study ({c['rois']} ROIs, Grad-CAM both tasks, all default outputs), {c['input']} input: "
            f"wall / process CPU, {c['threads']} torch threads; process CPU with 1 thread (s) | "
            f"{c['wall_s']:.3f} / {c['cpu_s']:.3f}; **{c['cpu_s_one_thread']:.3f}** | <= {c.get('goal_s', 0.8)} |"
        )
    return rows


def _monai_path_rows(mp: dict[str, Any] | None) -> list[str]:
    """Rows on the data path (first setup against a setup from its cache) and the two augmentations."""
    if not mp:
        return []
    a = mp["augmentation"]
    return [
        f"| data path ({mp['studies']} studies, {mp['rois']} ROIs): first setup (read, resample, crop, fill "
        f"the cache) / setup from the filled cache, s | {mp['first_setup_s']} / {mp['cached_setup_s']} "
        f"({mp['first_over_cached_setup']}x) | |",
        f"| data path: loader ROIs/s (index + collate) / training ROIs/s end to end (loader, batched "
        f"augmentation, step) | {mp['loader_rois_per_s']} / {mp['train_rois_per_s']} | |",
        f"| data path: peak RSS, MiB / cache on disk, MiB | {mp['peak_rss_mib']} / {mp['cache_mib']} | |",
        f"| augmentation ROIs/s on the CPU: batched / MONAI per-item | {a['batched_rois_per_s']} / "
        f"{a['monai_per_item_rois_per_s']} ({a['batched_over_monai']}x) | |",
    ]
