"""Train the spine locator (:mod:`spinelesion.localize`) and measure it on held-out spines.

Its examples are single sequences on the locator's grid with their vertebral-body masks, drawn so
that no one site's or renderer's look is what it learns:

- real studies with body masks (``real-normals``, ``real-multisite``), each subject in its split
  (the insertion set's, so the classifier's held-out subjects stay held out here too), as acquired
  and under random appearances (:mod:`spinelesion.data.appearance`);
- the same T2 studies imaged as T1 and STIR (:mod:`spinelesion.insert.contrast`);
- phantom spines of every region, with findings, under each of their sequences
  (:func:`spinelesion.phantom.masks.body_mask`).

Training crops are drawn half on bodies, half anywhere, then flipped left-right, rotated, scaled
and given random contrast, bias and noise (MONAI transforms). Validation: Dice and the share of
labelled bodies found, per dataset, on the validation subjects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from spinelesion.io.resample import sample_grid
from spinelesion.localize.model import LocatorSettings, SpineLocator, save_locator

log = logging.getLogger(__name__)


@dataclass
class LocatorExample:
    name: str  # study, sequence and look
    dataset: str
    split: str
    look: str  # "acquired" (measured when held out), or an appearance draw, or "synthesised"
    image: np.ndarray  # (X, Y, Z) float32, normalised
    bodies: np.ndarray  # (X, Y, Z) uint8: 1 inside a vertebral body
    labels: np.ndarray | None = None  # (X, Y, Z) int16: body k (real studies; for the share found)


def on_locator_grid(
    image: np.ndarray, affine: np.ndarray, settings: LocatorSettings
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """One sequence resampled and normalised as :func:`spinelesion.localize.region.locator_input` does."""
    from spinelesion.localize.region import locator_input

    images, grid_affine, _ = locator_input(
        np.asarray(image, np.float32)[None], affine, np.ones(1, bool), settings
    )
    return images[0], grid_affine, images.shape[1:]


def labels_on_grid(
    labels: np.ndarray, affine: np.ndarray, grid_affine: np.ndarray, shape: Sequence[int]
) -> np.ndarray:
    """Nearest-neighbour body labels on the locator's grid."""
    values = sample_grid(np.asarray(labels, np.float32)[None], affine, grid_affine, shape, mode="nearest")
    return values[0, 0].numpy().round().astype(np.int16)


def real_examples(
    root: Path,
    split_of: Mapping[str, str],
    insert_cfg: Mapping[str, Any],
    settings: LocatorSettings,
    rng: np.random.Generator,
    appearance_draws: int = 2,
    synthesise_as: Sequence[str] = ("t1", "stir"),
) -> list[LocatorExample]:
    """Every study of ``root`` whose subject has a split, each sequence as acquired, under
    ``appearance_draws`` random appearances (training subjects only) and, from a T2, as T1 and STIR."""
    from spinelesion.data.appearance import AppearanceConfig, randomise_sequence
    from spinelesion.insert.anatomy import derive_anatomy
    from spinelesion.insert.background import discover_backgrounds, load_background
    from spinelesion.insert.contrast import synthesise

    specs = discover_backgrounds(
        root, insert_cfg.get("levels"), insert_cfg.get("native_mm"), insert_cfg.get("bottom_level")
    )
    appearance = AppearanceConfig(enabled=True)
    out: list[LocatorExample] = []
    for spec in specs:
        split = split_of.get(spec.subject)
        if split is None:
            continue
        try:
            bg = load_background(spec)
        except (OSError, ValueError) as exc:  # one unreadable study is reported and left out
            log.warning("locator: %s left out: %s", spec.study_id, exc)
            continue
        looks: list[tuple[str, str, np.ndarray]] = [(s, "acquired", img) for s, img in bg.images.items()]
        if split == "train":
            for s, img in bg.images.items():
                for k in range(appearance_draws):
                    drawn = randomise_sequence(img, s, bg.spacing, bg.slice_axis(), rng, appearance)
                    looks.append((s, f"appearance{k}", drawn))
            if "t2" in bg.images and synthesise_as:
                an = derive_anatomy(bg, set(insert_cfg["cord_levels"]))
                for target in synthesise_as:
                    made = synthesise(bg, an, target, rng)
                    looks.append((target, "synthesised", made.images[target]))
        labels = None  # every look of a study lies on its grid: its bodies resampled once
        for seq, look, img in looks:
            image, grid_affine, shape = on_locator_grid(img, bg.affine, settings)
            if labels is None:
                labels = labels_on_grid(bg.bodies, bg.affine, grid_affine, shape)
            out.append(
                LocatorExample(
                    f"{spec.study_id}/{seq}/{look}",
                    spec.dataset,
                    split,
                    look,
                    image,
                    (labels > 0).astype(np.uint8),
                    labels,
                )
            )
    return out


def phantom_examples(
    studies: int,
    seed: int,
    settings: LocatorSettings,
    split: str = "train",
    overrides: Mapping[str, Any] | None = None,
) -> list[LocatorExample]:
    """``studies`` phantom studies (every region, with findings), each sequence an example."""
    from spinelesion.phantom.config import default_phantom_config
    from spinelesion.phantom.masks import body_mask
    from spinelesion.phantom.study import render_study

    cfg = default_phantom_config(**dict(overrides or {}))
    out = []
    for k in range(int(studies)):
        study = render_study([seed, k], cfg, patient_seed=[seed, 100000 + k], study_id=f"L{seed}_{k}")
        for seq, vol in study.volumes.items():
            image, grid_affine, shape = on_locator_grid(vol.array, vol.affine, settings)
            bodies = body_mask(study.anatomy, shape, grid_affine)
            # the part of the spine the series covers: the field of view's bounding box is wider
            covered = sample_grid(np.ones((1, *vol.array.shape), np.float32), vol.affine, grid_affine, shape)
            bodies &= covered[0, 0].numpy() > 0.5
            labels, _ = ndimage.label(bodies)
            out.append(
                LocatorExample(
                    f"{study.study_id}/{seq}",
                    "phantom",
                    split,
                    "acquired",
                    image,
                    bodies.astype(np.uint8),
                    labels.astype(np.int16),
                )
            )
    return out


def training_transforms(settings: LocatorSettings) -> Any:
    """Crops half on bodies, flips, small rotations and scalings, contrast, bias and noise."""
    from monai import transforms as T

    patch = tuple(int(v) for v in settings.patch)
    keys = ["image", "label"]
    return T.Compose(
        [
            T.SpatialPadd(keys, patch),
            T.RandCropByPosNegLabeld(keys, "label", patch, pos=1, neg=1, num_samples=1),
            T.RandFlipd(keys, prob=0.5, spatial_axis=0),
            T.RandAffined(
                keys,
                prob=0.5,
                rotate_range=(0.25, 0.1, 0.1),
                scale_range=(0.15, 0.15, 0.15),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            T.RandAdjustContrastd(["image"], prob=0.5, gamma=(0.6, 1.6)),
            T.RandBiasFieldd(["image"], prob=0.3, coeff_range=(0.1, 0.4)),
            T.RandScaleIntensityd(["image"], factors=0.2, prob=0.5),
            T.RandGaussianNoised(["image"], prob=0.3, std=0.05),
        ]
    )


def fit_locator(
    examples: Sequence[LocatorExample],
    settings: LocatorSettings,
    steps: int,
    batch_size: int = 4,
    seed: int = 0,
    lr: float = 5e-3,
) -> torch.nn.Module:
    """The locator's U-Net trained ``steps`` steps on the training examples."""
    import pytorch_lightning as pl
    from monai.data import DataLoader, Dataset

    from spinelesion.localize.module import LocatorModule

    pl.seed_everything(seed, workers=True)
    train = [
        {"image": e.image[None].astype(np.float32), "label": e.bodies[None].astype(np.float32)}
        for e in examples
        if e.split == "train"
    ]
    if not train:
        raise ValueError("spine locator: no training example (no subject in the train split?)")
    # a fixed number of steps whatever the number of examples: sample with replacement
    sampler = torch.utils.data.RandomSampler(train, replacement=True, num_samples=steps * batch_size)
    loader = DataLoader(
        Dataset(train, training_transforms(settings)), batch_size=batch_size, sampler=sampler, num_workers=0
    )
    module = LocatorModule(settings, lr=lr, steps=steps)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        deterministic=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, loader)
    return module.net.eval()


def measure(
    locator: SpineLocator, examples: Sequence[LocatorExample], splits: Sequence[str] = ("val", "test")
) -> dict[str, Any]:
    """Per dataset on the held-out examples (as acquired): Dice of the bodies, the share of labelled
    bodies found (half or more of the body inside the prediction), the share wholly inside the scan
    region (:func:`spinelesion.localize.region.spine_region`), and the share of the field of view
    that region is (what scan mode still searches)."""
    from spinelesion.localize.region import predict_bodies, spine_region

    per: dict[str, dict[str, list[float]]] = {}
    for e in examples:
        if e.split not in splits or e.look != "acquired":
            continue
        prob = predict_bodies(locator, e.image[None])
        pred = prob >= locator.settings.threshold
        truth = e.bodies > 0
        dice = 2 * float((pred & truth).sum()) / max(float(pred.sum() + truth.sum()), 1.0)
        row = per.setdefault(e.dataset, {"dice": [], "found": [], "in_region": [], "region_share": []})
        row["dice"].append(dice)
        region = spine_region(prob, np.diag([locator.settings.spacing_mm] * 3 + [1.0]), locator.settings)
        row["region_share"].append(float(region[e.image != 0].mean()) if (e.image != 0).any() else 0.0)
        if e.labels is not None:
            for k in np.unique(e.labels[e.labels > 0]):
                body = e.labels == k
                row["found"].append(float((pred & body).sum() >= 0.5 * body.sum()))
                row["in_region"].append(float(region[body].all()))
    return {
        ds: {
            "examples": len(v["dice"]),
            "dice": round(float(np.mean(v["dice"])), 3),
            "bodies": len(v["found"]),
            "bodies_found": round(float(np.mean(v["found"])), 3) if v["found"] else None,
            "bodies_in_region": round(float(np.mean(v["in_region"])), 3) if v["in_region"] else None,
            "region_share": round(float(np.mean(v["region_share"])), 3),  # of the field of view searched
        }
        for ds, v in sorted(per.items())
    }


def train_locator(
    backgrounds: Sequence[tuple[Path, Mapping[str, str]]],
    insert_cfg: Mapping[str, Any],
    out: Path,
    settings: LocatorSettings | None = None,
    phantom: Mapping[str, Any] | None = None,
    steps: int = 800,
    batch_size: int = 4,
    seed: int = 0,
    lr: float = 5e-3,
    appearance_draws: int = 2,
    synthesise_as: Sequence[str] = ("t1", "stir"),
) -> dict[str, Any]:
    """Examples from each (real root, subject -> split) and phantom spines, the U-Net trained,
    measured on the held-out examples; ``out/locator.safetensors`` and ``out/locator.json`` (the
    model folder's ``locator`` entry) written. Returns that entry."""
    import json

    from spinelesion.atomic import write_json

    settings = settings or LocatorSettings()
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    examples: list[LocatorExample] = []
    for root, split_of in backgrounds:
        examples += real_examples(
            Path(root), split_of, insert_cfg, settings, rng, appearance_draws, synthesise_as
        )
    phantom = dict(phantom or {})
    if phantom.get("studies"):
        examples += phantom_examples(int(phantom["studies"]), int(phantom.get("seed", 6000)), settings)
        examples += phantom_examples(
            int(phantom.get("val_studies", 6)), int(phantom.get("seed", 6000)) + 1, settings, "val"
        )
    timings["examples_s"] = round(time.perf_counter() - t0, 1)
    counts: dict[str, dict[str, int]] = {}
    for e in examples:
        counts.setdefault(e.dataset, {}).setdefault(e.split, 0)
        counts[e.dataset][e.split] += 1
    log.info("spine locator: %d examples %s", len(examples), json.dumps(counts))
    t0 = time.perf_counter()
    net = fit_locator(examples, settings, steps, batch_size, seed, lr)
    timings["train_s"] = round(time.perf_counter() - t0, 1)
    locator = SpineLocator(net, settings, {})
    t0 = time.perf_counter()
    held_out = measure(locator, examples)
    timings["measure_s"] = round(time.perf_counter() - t0, 1)
    locator.info = {
        "trained_on": {ds: {s: n for s, n in v.items() if s == "train"} for ds, v in counts.items()},
        "examples": counts,
        "steps": int(steps),
        "held_out": held_out,
        "timings": timings,
    }
    entry = save_locator(out, locator)
    write_json(Path(out) / "locator.json", entry)
    log.info("spine locator held out: %s", json.dumps(held_out))
    return entry
