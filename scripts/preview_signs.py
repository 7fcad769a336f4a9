"""Previews of every finding with each of its signs forced on and off: docs/images/signs_<finding>.png.

    python scripts/preview_signs.py [--out docs/images] [--seed 3] [--findings meningioma ...]

Each row is one sign: the same study (same seed, same anatomy, same contrast) rendered with
that sign's rate set to 1 (left four panels) and to 0 (right four), every other sign at its
default. Low noise and no missing sequences, so the eye sees the sign, not the acquisition.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_phantom_signs import SIGN_RATES  # noqa: E402

from spinelesion.phantom.acquisition import SEQ_NAMES  # noqa: E402
from spinelesion.phantom.config import default_phantom_config  # noqa: E402
from spinelesion.phantom.preview import LABELS, sagittal  # noqa: E402
from spinelesion.phantom.study import RenderedStudy, render_study  # noqa: E402

log = logging.getLogger("preview_signs")
REGION = {"meningioma": "thoracic", "intramedullary_metastasis": "cervical", "drop_metastases": "lumbar"}


def quiet(**features: float) -> dict:
    cfg = default_phantom_config(
        **{
            "acquisition.noise_fraction": [0.01, 0.012],
            "acquisition.bias_strength": [0.0, 0.02],
            "acquisition.missing_rate": {"t1": 0.0, "t2": 0.0, "stir": 0.0, "t1c": 0.0},
            "acquisition.oblique_rate": 0.0,
            "incidental_rate": 0.0,
            "features.benign_chronic_rate": 0.0,
        }
    )
    cfg["features"].update(features)
    return cfg


def roi_of(study: RenderedStudy, finding: str) -> np.ndarray:
    for r in study.rois:
        if r.finding == finding:
            return np.asarray(r.center)
    return np.asarray(study.findings[0].center)


def panels(
    axes: np.ndarray, study: RenderedStudy, centre: np.ndarray, title: str, view: float = 110.0
) -> None:
    x, y, z = (float(v) for v in centre)
    for ax, seq in zip(axes, SEQ_NAMES, strict=True):
        ax.set_xticks([])
        ax.set_yticks([])
        vol = study.volumes[seq]
        img = sagittal(vol.array, vol.affine, x, y, z, view, pixel=0.6)
        vmax = np.percentile(img[img > 0], 99.5) if np.any(img > 0) else 1.0
        ax.imshow(
            img.T,
            origin="lower",
            cmap="gray",
            vmin=0,
            vmax=vmax,
            extent=(-view / 2, view / 2, -view / 2, view / 2),
        )
        ax.plot(0, 0, "+", color="yellow", ms=7)
        ax.set_title(f"{title} {LABELS[seq]}", fontsize=8)


def preview_finding(finding: str, out: Path, seed: int) -> Path:
    signs = SIGN_RATES[finding]
    fig, axes = plt.subplots(len(signs), 8, figsize=(17, 2.3 * len(signs) + 0.5), dpi=72, squeeze=False)
    for row, (sign, key) in zip(axes, signs.items(), strict=True):
        extra = {"im_haemorrhage_rate": 0.0} if sign == "melanoma" else {}
        for col, rate in ((0, 1.0), (4, 0.0)):
            s = render_study(
                [seed, 11], quiet(**{key: rate, **extra}), finding=finding, region=REGION.get(finding)
            )
            centre = roi_of(s, finding)
            panels(row[col : col + 4], s, centre, f"{sign} {'ON' if rate else 'off'}:")
    fig.suptitle(
        f"{finding}: each row one sign forced on (left) and off (right), same study otherwise; "
        "anterior left, superior up, + = ROI centre",
        fontsize=10,
    )
    fig.tight_layout()
    path = out / f"signs_{finding}.png"
    fig.savefig(path, format="png")
    plt.close(fig)
    log.info("wrote %s", path)
    return path


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--findings", nargs="*", default=sorted(SIGN_RATES))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for finding in args.findings:
        preview_finding(finding, args.out, args.seed)


if __name__ == "__main__":
    main()
