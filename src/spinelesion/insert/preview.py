"""Before/after pictures of every finding inserted into one real study (``docs/images``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spinelesion.insert.anatomy import derive_anatomy
from spinelesion.insert.background import BackgroundSpec, load_background
from spinelesion.insert.findings import FINDINGS, eligible, insert_finding
from spinelesion.io.resample import sample_plane
from spinelesion.io.volume import apply_affine


def _sagittal(
    bg_affine: np.ndarray, image: np.ndarray, centre: np.ndarray, half_mm: float = 55.0
) -> np.ndarray:
    """The sagittal plane through ``centre`` (LPS), anterior left, superior up, 0.5 mm pixels."""
    return sample_plane(image, bg_affine, centre, (0.0, 1.0, 0.0), (0.0, 0.0, -1.0), half_mm, step_mm=0.5)


def _save(fig: Any, path: str | Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay out, write at 80 dpi (docs/images) and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=rect)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_insertion_preview(
    spec: BackgroundSpec, rates: Mapping[str, float], path: str | Path, cord_levels: set[str], seed: int = 3
) -> Path:
    """One before/after pair per finding, each through the lesion's own sagittal plane."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bg = load_background(spec)
    an = derive_anatomy(bg, cord_levels)
    seq = "t2" if "t2" in bg.images else next(iter(bg.images))
    names = list(FINDINGS)
    cols = 4
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols * 2, figsize=(cols * 4.2, rows * 2.5))
    vmax = float(np.percentile(bg.images[seq], 99.7))
    for n, ax_pair in enumerate(axes.reshape(rows, cols, 2).reshape(-1, 2)):
        for ax in ax_pair:
            ax.axis("off")
        if n >= len(names):
            continue
        name = names[n]
        bodies = [b for b in an.bodies if eligible(name, an, b)]
        body = bodies[len(bodies) // 2]
        ctx = insert_finding(bg, an, name, body.label, np.random.default_rng(seed), rates)
        roi = ctx.rois[0]
        # Through the lesion nearest the ROI (a second fracture or deposit elsewhere is left out).
        lesion = apply_affine(bg.affine, np.argwhere(ctx.lesion).astype(float))
        lesion = lesion[np.linalg.norm(lesion - roi.centre, axis=1) < 35.0]
        centre = lesion.mean(0) if len(lesion) else roi.centre
        for ax, img, title in ((ax_pair[0], bg.images[seq], "before"), (ax_pair[1], ctx.images[seq], name)):
            ax.imshow(_sagittal(bg.affine, img, centre), cmap="gray", vmin=0, vmax=vmax)
            ax.set_title(
                title if title == "before" else f"{name}\n{roi.compartment} / {roi.fracture}", fontsize=7
            )
            # ROI centre projected on this plane
            dy, dz = roi.centre[1] - centre[1], roi.centre[2] - centre[2]
            ax.plot([(dy + 55.0) / 0.5], [(55.0 - dz) / 0.5], "r+", ms=6)
    fig.suptitle(
        f"{seq.upper()}: findings inserted into real study {spec.study_id} (left: untouched, right: inserted; "
        "red +: ROI centre)",
        fontsize=9,
    )
    return _save(fig, path)


def write_fracture_preview(
    spec: BackgroundSpec,
    rates: Mapping[str, float],
    path: str | Path,
    cord_levels: set[str],
    levels: tuple[str, ...] = ("T12", "L5"),
    seed: int = 0,
) -> Path:
    """Healed fractures (the shape alone) at the mildest ratio drawn, per shape, at ``levels`` (a body
    that wedges by nature and a lordotic one), each titled with its Genant ratio before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spinelesion.insert.anatomy import column_heights
    from spinelesion.insert.findings import GENANT_RATIO, SHAPES, Insert, _collapse

    bg = load_background(spec)
    an = derive_anatomy(bg, cord_levels)
    seq = "t2" if "t2" in bg.images else next(iter(bg.images))
    bodies = [b for b in an.bodies if b.level in levels]
    fig, axes = plt.subplots(
        len(bodies), 1 + len(SHAPES), figsize=(2.6 * (1 + len(SHAPES)), 3.2 * len(bodies))
    )
    axes = np.atleast_2d(axes)
    vmax = float(np.percentile(bg.images[seq], 99.7))
    for row, body in zip(axes, bodies, strict=True):
        for ax, shape in zip(row, [None, *SHAPES], strict=True):
            ctx = Insert(bg, an, body, np.random.default_rng(seed), dict(rates))
            measured, reference = SHAPES[shape or "wedge"]
            before = column_heights(ctx.loc, ctx.body_mask() > 0.5, body)
            title = f"{body.level} untouched\nA/P {before['anterior'] / before['posterior']:.2f}"
            if shape:
                ctx.u = lambda lo, hi: float(hi)  # type: ignore[method-assign]  # the mildest fracture drawn
                _collapse(ctx, (0.5, GENANT_RATIO), {shape: 1.0})
                after = column_heights(ctx.loc, ctx.body_mask() > 0.5, body)
                if reference is None:
                    title = f"{shape}\nheight {after[measured] / before[measured]:.2f} of before"
                else:
                    ratio = (before[measured] / before[reference], after[measured] / after[reference])
                    title = f"{shape}\n{measured[0].upper()}/{reference[0].upper()} {ratio[0]:.2f} -> {ratio[1]:.2f}"
            ax.imshow(
                _sagittal(bg.affine, ctx.images[seq], body.centre, 40.0), cmap="gray", vmin=0, vmax=vmax
            )
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(
        f"{seq.upper()} of {spec.study_id}: healed fractures at the mildest drawn (Genant {GENANT_RATIO}), "
        "anterior left",
        fontsize=9,
    )
    return _save(fig, path, rect=(0, 0, 1, 0.95))


def write_plain_preview(
    spec: BackgroundSpec,
    path: str | Path,
    level: str = "L2",
    seed: int = 0,
    cord_levels: set[str] | None = None,
) -> Path:
    """Every finding of the plain renderer (:mod:`spinelesion.insert.plain`), sagittal through its
    ROI, beside its body untouched: a renderer held out of training must look like radiology, not
    like this project's insertion. A finding that needs a cord is drawn at the lowest body with one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spinelesion.insert.plain import PLAIN_FINDINGS, eligible_for, render_plain

    bg = load_background(spec)
    an = derive_anatomy(bg, cord_levels)
    seq = "t2" if "t2" in bg.images else next(iter(bg.images))
    vmax = float(np.percentile(bg.images[seq], 99.7))
    default = next((b for b in an.bodies if b.level == level), an.bodies[len(an.bodies) // 2])
    panels = []
    for n, name in enumerate(PLAIN_FINDINGS):
        body = default if eligible_for(name, an, default) else None
        if body is None:
            body = next((b for b in reversed(an.bodies) if eligible_for(name, an, b)), None)
        if body is None:
            continue
        st = render_plain(bg, body, name, np.random.default_rng([seed, n]), an)
        # the sagittal plane through the lesion near the ROI (the ROI's own where nothing was painted)
        lesion = apply_affine(bg.affine, np.argwhere(st.lesion).astype(float))
        lesion = lesion[np.linalg.norm(lesion - st.centre, axis=1) < 35.0]
        x = float(np.median(lesion[:, 0])) if len(lesion) else float(st.centre[0])
        plane = np.array([x, body.centre[1], body.centre[2]])
        panels.append(
            (
                f"{name}\n{' / '.join(PLAIN_FINDINGS[name])}, {body.level}",
                bg.images[seq],
                st.images[seq],
                plane,
                st.centre,
            )
        )
    cols = 4
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols * 2, figsize=(cols * 4.2, rows * 3.1))
    for ax_pair, (title, before, after, plane, centre) in zip(axes.reshape(-1, 2), panels, strict=False):
        for ax, img, label in ((ax_pair[0], before, "untouched"), (ax_pair[1], after, title)):
            ax.imshow(_sagittal(bg.affine, img, plane), cmap="gray", vmin=0, vmax=vmax)
            dy, dz = centre[1] - plane[1], centre[2] - plane[2]
            ax.plot([(dy + 55.0) / 0.5], [(55.0 - dz) / 0.5], "r+", ms=6)
            ax.set_title(label, fontsize=7)
    for ax in axes.reshape(-1):
        ax.axis("off")
    fig.suptitle(
        f"{seq.upper()}: the plain renderer's findings in real study {spec.study_id} "
        "(anterior left, superior up; red +: ROI centre)",
        fontsize=9,
    )
    return _save(fig, path, rect=(0.0, 0.0, 1.0, 0.94))  # room for the title


def write_appearance_preview(
    spec: BackgroundSpec, appearance: Mapping[str, Any], path: str | Path, draws: int = 7, seed: int = 0
) -> Path:
    """One real study's mid-sagittal plane, untouched and under ``draws`` random appearances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spinelesion.data.appearance import appearance_from_dict, randomise_study

    cfg = appearance_from_dict({**appearance, "enabled": True})
    bg = load_background(spec)
    seq = "t2" if "t2" in bg.images else next(iter(bg.images))
    centre = apply_affine(bg.affine, np.argwhere(bg.bodies > 0).mean(0)[None])[0]
    fig, axes = plt.subplots(1, draws + 1, figsize=(2.4 * (draws + 1), 3.0))
    for k, ax in enumerate(axes):
        if k == 0:
            image, title = bg.images[seq], "untouched"
        else:
            rng = np.random.default_rng([seed, k])
            image = randomise_study({seq: bg.images[seq]}, bg.spacing, bg.slice_axis(), rng, cfg)[seq]
            title = f"draw {k}"
        plane = _sagittal(bg.affine, image, centre, half_mm=80.0)
        ax.imshow(plane, cmap="gray", vmin=0, vmax=float(np.percentile(plane, 99.5)))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{seq.upper()} of real study {spec.study_id} under random appearances", fontsize=9)
    return _save(fig, path)


def write_contrast_preview(
    spec: BackgroundSpec,
    references: list[BackgroundSpec],
    rates: Mapping[str, Any],
    path: str | Path,
    cord_levels: set[str] | None = None,
    finding: str = "pathologic_fracture",
    level: str = "L2",
    seed: int = 0,
) -> Path:
    """One real T2 imaged as T1 and STIR (:mod:`spinelesion.insert.contrast`), beside real T1 and
    STIR exams of another site (``references``); below, the same finding inserted after each
    synthesis, painted with that sequence's radiology."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spinelesion.insert.contrast import synthesise

    bg = load_background(spec)
    an = derive_anatomy(bg, cord_levels)
    body = next((b for b in an.bodies if b.level == level), an.bodies[len(an.bodies) // 2])
    centre = body.centre
    looks = [("t2", bg, an)]
    for k, target in enumerate(("t1", "stir")):
        made = synthesise(bg, an, target, np.random.default_rng([seed, k]))
        looks.append((target, made, derive_anatomy(made, cord_levels, canal_from=an)))
    fig, axes = plt.subplots(
        2, len(looks) + len(references), figsize=(2.8 * (len(looks) + len(references)), 6.4)
    )

    def show(ax: Any, affine: np.ndarray, image: np.ndarray, at: np.ndarray, title: str) -> None:
        plane = _sagittal(affine, image, at, half_mm=70.0)
        ax.imshow(plane, cmap="gray", vmin=0, vmax=float(np.percentile(plane, 99.5)))
        ax.set_title(title, fontsize=7)

    for col, (seq, look, anat) in enumerate(looks):
        origin = "real" if seq == "t2" else "made from the T2"
        show(axes[0, col], bg.affine, look.images[seq], centre, f"{spec.study_id} {seq.upper()} ({origin})")
        ctx = insert_finding(look, anat, finding, body.label, np.random.default_rng([seed, 9]), rates)
        show(axes[1, col], bg.affine, ctx.images[seq], centre, f"+ {finding} at {body.level}, {seq.upper()}")
    for k, ref in enumerate(references):
        real = load_background(ref)
        seq = next(iter(real.images))
        mid = apply_affine(real.affine, np.argwhere(real.bodies > 0).mean(0)[None])[0]
        show(
            axes[0, len(looks) + k],
            real.affine,
            real.images[seq],
            mid,
            f"{ref.study_id} {seq.upper()} (real, other site)",
        )
        axes[1, len(looks) + k].set_visible(False)
    for ax in axes.reshape(-1):
        ax.axis("off")
    fig.suptitle(
        f"Real anatomy under other sequences: {spec.study_id}'s T2 imaged as T1 and STIR (anterior left)",
        fontsize=9,
    )
    return _save(fig, path, rect=(0.0, 0.0, 1.0, 0.95))
