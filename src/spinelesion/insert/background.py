"""Real normal studies and their masks, read onto the study's own grid.

Two layouts are recognised (``../shared/data/real-normals/``; its README gives sources):

* **bodies**: ``t2.nii.gz`` (and any of ``t1``, ``stir``, ``t1c``) beside
  ``vertebral_bodies.nii.gz``, one label per body numbered from superior to inferior;
  level names come from the folder's ``manifest.csv`` rows when present (matched by centre),
  else from ``levels`` given by the caller.
* **subregions** (TPTBox): ``vertebrae.nii.gz`` (instance labels = level numbers) and
  ``subregions.nii.gz`` (49 vertebral body, 60 cord, 61 canal).

Masks on another grid than the image are resampled onto it by nearest neighbour through
both affines, never by array index.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from spinelesion.io.nifti import read_nifti
from spinelesion.io.study import sequence_files
from spinelesion.io.volume import Volume, apply_affine, dominant_axes

log = logging.getLogger(__name__)

# TPTBox subregion labels (Hendrik-code/TPTBox).
TPTBOX_BODY, TPTBOX_CORD, TPTBOX_CANAL = 49, 60, 61
CERVICAL = [f"C{i}" for i in range(1, 8)]
THORACIC = [f"T{i}" for i in range(1, 13)]
LUMBAR = [f"L{i}" for i in range(1, 6)]
ALL_LEVELS = CERVICAL + THORACIC + LUMBAR


@dataclass
class BackgroundSpec:
    """Where a real study and its masks are; ``dataset`` names the source for reports."""

    study_id: str
    subject: str
    dataset: str
    sequences: dict[str, Path]
    layout: str  # "bodies" | "subregions"
    masks: dict[str, Path]
    native_mm: tuple[float, float, float] | None = None  # acquired resolution along LPS x, y, z
    levels: list[str] = field(default_factory=list)
    bottom_level: str | None = None  # the lowest labelled body's level (labels 1..N from the top)


@dataclass
class Background:
    """A real study on one grid: images per sequence, labelled bodies, optional cord/canal."""

    spec: BackgroundSpec
    images: dict[str, np.ndarray]
    dtypes: dict[str, np.dtype]
    affine: np.ndarray  # voxel -> LPS mm
    bodies: np.ndarray  # int16: 0 background, k = body k
    levels: dict[int, str]
    cord: np.ndarray | None = None
    canal: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        s = next(iter(self.images.values())).shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(0))

    def slice_axis(self) -> int:
        """The array axis the study was sliced along (its coarsest acquired resolution)."""
        if self.spec.native_mm is not None:
            return int(np.argmax(np.asarray(self.spec.native_mm)[dominant_axes(self.affine)]))
        return int(np.argmax(self.spacing))

    def native_sigma_vox(self) -> np.ndarray:
        """Gaussian sigma (voxels, per array axis) of the acquisition's point spread."""
        spacing = self.spacing
        if self.spec.native_mm is None:
            return np.full(3, 0.5)
        native = np.maximum(np.asarray(self.spec.native_mm)[dominant_axes(self.affine)], spacing)
        return np.maximum(native / 2.355 / spacing, 0.3)


def folder_patients(root: Path) -> dict[str, str]:
    """study_id -> patient_id from ``root/manifest.csv`` (exams of one patient share an id)."""
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        return {}
    with open(manifest, newline="", encoding="utf-8") as fh:
        return {r["study_id"]: r["patient_id"] for r in csv.DictReader(fh) if r.get("patient_id")}


def discover_backgrounds(
    root: str | Path,
    levels: Sequence[str] | None = None,
    native_mm: Mapping[str, Sequence[float]] | None = None,
    bottom_level: Mapping[str, str] | None = None,
) -> list[BackgroundSpec]:
    """Every study under ``root`` with a recognised layout, sorted by folder name.

    ``native_mm`` maps a dataset name (the folder name before its last ``_``) to the acquired
    resolution along LPS x, y, z, for studies resampled finer than they were acquired.
    ``bottom_level`` maps a dataset name to the level of its lowest labelled body, for masks
    numbered from the top of a field of view that starts at no fixed level (VB1: mid-thoracic
    to the sacrum, the last body L5); other datasets name labels 1..N with ``levels``.
    A study's subject is its ``patient_id`` in ``root/manifest.csv`` (else its folder name), so
    that a split never puts two exams of one patient on both sides.
    """
    root = Path(root)
    native_mm = dict(native_mm or {})
    bottom = dict(bottom_level or {})
    patients = folder_patients(root)
    specs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        seqs = sequence_files(folder)
        if not seqs:
            continue
        dataset = folder.name.split("_", 1)[0]
        nat = native_mm.get(dataset)
        spec = BackgroundSpec(
            study_id=folder.name,
            subject=patients.get(folder.name, folder.name),
            dataset=dataset,
            sequences=seqs,
            layout="",
            masks={},
            native_mm=(float(nat[0]), float(nat[1]), float(nat[2])) if nat else None,
        )
        if (folder / "vertebral_bodies.nii.gz").is_file():
            spec.layout, spec.masks = "bodies", {"bodies": folder / "vertebral_bodies.nii.gz"}
            spec.levels = list(levels or [])
            spec.bottom_level = bottom.get(dataset)
        elif (folder / "vertebrae.nii.gz").is_file() and (folder / "subregions.nii.gz").is_file():
            spec.layout = "subregions"
            spec.masks = {
                "vertebrae": folder / "vertebrae.nii.gz",
                "subregions": folder / "subregions.nii.gz",
            }
        else:
            continue
        specs.append(spec)
    return specs


def _on_grid(mask: Volume, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling of a label volume onto (shape, affine)."""
    if mask.shape == tuple(shape) and np.allclose(mask.affine, affine, atol=1e-4):
        return mask.array
    to_mask = np.linalg.inv(mask.affine) @ affine
    return ndimage.affine_transform(
        mask.array,
        to_mask[:3, :3],
        offset=to_mask[:3, 3],
        output_shape=shape,
        order=0,
        mode="constant",
        cval=0,
    )


def _levels_from_manifest(folder: Path, bodies: np.ndarray, affine: np.ndarray) -> dict[int, str]:
    """Body label -> level name, matching the folder's manifest rows to body centroids."""
    manifest = folder.parent / "manifest.csv"
    if not manifest.is_file():
        return {}
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("study_id") == folder.name and r.get("level")]
    if not rows:
        return {}
    labels = [k for k in np.unique(bodies) if k > 0]
    centres = ndimage.center_of_mass(bodies > 0, bodies, labels)
    world = apply_affine(affine, np.asarray(centres, dtype=float))
    out = {}
    for r in rows:
        point = np.array([float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"])])
        k = int(np.argmin(np.linalg.norm(world - point, axis=1)))
        if np.linalg.norm(world[k] - point) < 10.0:
            out[int(labels[k])] = r["level"]
    return out


def levels_from_bottom(labels: Sequence[int], bottom: str, study: str) -> dict[int, str]:
    """Body labels 1..N (superior to inferior) named upwards from ``bottom`` (the last label)."""
    if bottom not in ALL_LEVELS:
        raise ValueError(f"{study}: unknown bottom level {bottom!r}")
    end = ALL_LEVELS.index(bottom) + 1
    if len(labels) > end:
        raise ValueError(f"{study}: {len(labels)} labelled bodies cannot end at {bottom}")
    return dict(zip(sorted(labels), ALL_LEVELS[end - len(labels) : end], strict=True))


def load_background(spec: BackgroundSpec) -> Background:
    """Read a study's sequences (on the first sequence's grid) and masks."""
    vols = {s: read_nifti(p) for s, p in spec.sequences.items()}
    ref = next(iter(vols.values()))
    images: dict[str, np.ndarray] = {}
    dtypes: dict[str, np.dtype] = {}
    import nibabel as nib

    for s, v in vols.items():
        if v.shape != ref.shape or not np.allclose(v.affine, ref.affine, atol=1e-3):
            raise ValueError(f"{spec.sequences[s]}: sequences of a background must share one grid")
        images[s] = v.array.astype(np.float32)
        dtypes[s] = nib.load(str(spec.sequences[s])).get_data_dtype()
    cord = canal = None
    if spec.layout == "bodies":
        bodies = _on_grid(read_nifti(spec.masks["bodies"], dtype=np.int16), ref.shape, ref.affine).astype(
            np.int16
        )
        levels = _levels_from_manifest(spec.masks["bodies"].parent, bodies, ref.affine)
        labels = [int(k) for k in np.unique(bodies) if k > 0]
        if not levels and spec.bottom_level:
            levels = levels_from_bottom(labels, spec.bottom_level, spec.study_id)
        elif not levels and spec.levels:
            levels = dict(zip(labels, spec.levels, strict=False))
    else:
        vert = _on_grid(read_nifti(spec.masks["vertebrae"], dtype=np.int16), ref.shape, ref.affine)
        sub = _on_grid(read_nifti(spec.masks["subregions"], dtype=np.int16), ref.shape, ref.affine)
        bodies = np.where((sub == TPTBOX_BODY) & (vert > 0) & (vert < 100), vert, 0).astype(np.int16)
        labels = [int(k) for k in np.unique(bodies) if k > 0]
        levels = {k: ALL_LEVELS[k - 1] for k in labels if 1 <= k <= len(ALL_LEVELS)}
        cord = sub == TPTBOX_CORD
        canal = (sub == TPTBOX_CANAL) | cord
    missing = [k for k in labels if k not in levels]
    if missing:
        raise ValueError(f"{spec.study_id}: no level name for body label(s) {missing}")
    return Background(spec, images, dtypes, ref.affine, bodies, levels, cord, canal)
