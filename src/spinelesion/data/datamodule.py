"""LightningDataModule: manifest -> validated rows -> patient-level splits -> cached ROIs -> loaders.

The ROIs go through :mod:`spinelesion.data.monai_pipeline` (MONAI study transforms, cached by a
``PersistentDataset`` under ``cache_dir``) into an in-memory :class:`~spinelesion.data.dataset.RoiBank`;
MONAI's DataLoader serves its items.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from monai.data import DataLoader

from spinelesion.data.augment import BatchAugment, augmentation_from_dict
from spinelesion.data.dataset import RoiBank, RoiDataset
from spinelesion.data.manifest import CANAL_PLACES, Manifest, Row, place_of, read_manifest, source_of
from spinelesion.data.monai_pipeline import build_roi_bank, roi_dataset, transforms_options, warm_cache
from spinelesion.data.roi import RoiSpec
from spinelesion.data.sampler import KeyedSampler
from spinelesion.data.splits import assign_splits, check_no_leakage, class_count_table
from spinelesion.labels import CANAL_CLASSES, SPLITS, TASKS, sequence_set

log = logging.getLogger(__name__)


def roi_spec_from(values: Mapping[str, Any] | RoiSpec | None, section: str = "data.roi") -> RoiSpec:
    """A :class:`RoiSpec` from a ``roi`` section (unknown keys refused, see :meth:`RoiSpec.from_config`)."""
    return values if isinstance(values, RoiSpec) else RoiSpec.from_config(values, section)


def read_manifests(paths: Sequence[str | Path], **kwargs: Any) -> Manifest:
    """Several contract manifests as one (rows carry absolute paths, so folders may differ).

    case_id must stay unique across them; a study_id may appear in several only when it
    names the same files (more ROIs on one study). A clash is an error naming both files.
    """
    manifests = [read_manifest(p, **kwargs) for p in paths]
    for m in manifests:
        for r in m.rows:
            r.source = Path(m.path).parent.name
    seen: dict[str, int] = {}
    studies: dict[str, tuple[int, tuple[tuple[str, str], ...]]] = {}
    for i, m in enumerate(manifests):
        for case in {r.case_id for r in m.rows}:
            if seen.setdefault(case, i) != i:
                raise ValueError(
                    f"{m.path}: case_id {case!r} also appears in {manifests[seen[case]].path}; "
                    "ids must be unique across the manifests of a mix"
                )
        for r in m.rows:
            key = tuple(sorted((s, str(Path(p).resolve())) for s, p in r.sequences.items()))
            j, files = studies.setdefault(r.study_id, (i, key))
            if j != i and files != key:
                raise ValueError(
                    f"{m.path}: study_id {r.study_id!r} also appears in {manifests[j].path} with other "
                    "files; ids must be unique across the manifests of a mix"
                )
    return Manifest(manifests[0].path, [r for m in manifests for r in m.rows])


def _label_groups(rows: Sequence[Row]) -> np.ndarray:
    index: dict[tuple[str, ...], int] = {}
    return np.array([index.setdefault(tuple(r.labels[t] for t in TASKS), len(index)) for r in rows])


def _spread_over_domains(rows: Sequence[Row], weights: np.ndarray) -> np.ndarray:
    """Within each combination of labels, the domains' draws in proportion to their share of all
    rows (renormalised over the domains that have that combination), each row of a (labels,
    domain) cell keeping its weight relative to the others; each combination keeps its total."""
    domains = np.array([source_of(str(r.patient_id)) for r in rows])
    names, counts = np.unique(domains, return_counts=True)
    share = dict(zip(names.tolist(), (counts / counts.sum()).tolist(), strict=True))
    groups = _label_groups(rows)
    out = weights.copy()
    for g in np.unique(groups):
        members = groups == g
        total = weights[members].sum()
        present = np.unique(domains[members]).tolist()
        norm = sum(share[d] for d in present)
        for d in present:
            cell = members & (domains == d)
            mass = weights[cell].sum()
            out[cell] = weights[cell] * (total * share[d] / norm / mass) if mass > 0 else 0.0
    return out


# Canal lesions (labels.CANAL_CLASSES); the normal ROIs of their place are named in an insertion
# set's case ids (CANAL_PLACES).
# The places whose normal ROIs the place balance weighs against the lesions there, and how many
# normal draws each needs per lesion draw: the canal as many (2026-12-06, the real conus), a body
# as many as the normal class has against the lesions in the whole mix ("prior": then a body's
# class prior is the mix's, which is what the decision and calibration assume).
BALANCED_PLACES: dict[str, tuple[tuple[str, ...], float | str]] = {
    "canal": (CANAL_PLACES, 1.0),
    "body": (("body",), "prior"),
}


def lesion_place(row: Row) -> str:
    """Where a lesion ROI lies, for the place balance: ``canal`` (the intradural classes),
    ``body`` (a fracture or an extradural lesion: the bone and beside it), or "" (normal)."""
    if row.labels["compartment"] in CANAL_CLASSES:
        return "canal"
    if row.labels["fracture"] not in ("", "none") or row.labels["compartment"] == "extradural":
        return "body"
    return ""


def _balance_places(rows: Sequence[Row], weights: np.ndarray) -> np.ndarray:
    """Within each domain, level and look (the study's set of sequences), the normal ROIs of each place of :data:`BALANCED_PLACES`
    (the canal, the body) drawn at least its share of the draws of the lesions there: their
    extra weight taken from the domain's other normal ROIs (around the spine, anywhere, discs,
    mined; at most half of their draws), and what that cannot match taken from the lesions there
    and given to the same labels in the other domains; each combination of labels keeps its
    total. Without it the model learns the place, not the sign: the class balance drew a real
    T11-T12 canal as an inserted intramedullary lesion 5 times as often as normal (2026-12-06:
    the release's false calls at the real conus), and a real body as a fracture or extradural
    lesion 16 times as often as normal once the dense normals of every other place had joined
    the domain's normal draws (2026-12-07: the fine-tuning stages called real normal bodies
    benign fractures; stage1, without the dense normals, 4 times). The look is part of the key
    because a real T2 site imaged as T1 or STIR (``real_synth``) had few normal canal ROIs beside
    the lesions painted there: a T1-only canal was drawn as a lesion 3 times as often as normal
    (0.0153 against 0.0049 of finetune1's draws), while T2's dense normals balanced the level as a
    whole; the model left out of VB1 then called 0.87 of VB1's normal T1 canal ROIs a lesion and
    0.61 of its STIR ones, against 0.08 of vb2's T2 (2026-12-07)."""
    # the domain and the look in one key: each (site, sequences) is weighed on its own
    domains = np.array([f"{source_of(str(r.patient_id))}/{sequence_set(r.sequences)}" for r in rows])
    normal = np.array([r.labels["compartment"] == "none" and r.labels["fracture"] == "none" for r in rows])
    named = {name: place for place, (names, _) in BALANCED_PLACES.items() for name in names}
    lesion_mass = weights[~normal].sum()
    prior = float(weights[normal].sum() / lesion_mass) if lesion_mass > 0 else 1.0
    ratio = {p: prior if r == "prior" else float(r) for p, (_, r) in BALANCED_PLACES.items()}
    normal_place = np.array(
        [named.get(place_of(r.case_id), "") if n else "" for r, n in zip(rows, normal, strict=True)]
    )
    at_place = np.array([lesion_place(r) for r in rows])
    levels = np.array([r.level for r in rows])
    groups = _label_groups(rows)
    out = weights.copy()
    keys = sorted({(d, lv, p) for d, lv, p in zip(domains, levels, at_place, strict=True) if p and lv})
    lesions = {k: (domains == k[0]) & (levels == k[1]) & (at_place == k[2]) for k in keys}
    normals = {k: (domains == k[0]) & (levels == k[1]) & (normal_place == k[2]) for k in keys}
    need = {k: ratio[k[2]] * out[lesions[k]].sum() - out[normals[k]].sum() for k in keys}
    need = {k: v for k, v in need.items() if v > 0 and normals[k].any()}
    for domain in sorted({k[0] for k in need}):
        others = normal & (normal_place == "") & (domains == domain)
        pool = out[others].sum()
        wanted = sum(v for k, v in need.items() if k[0] == domain)
        scale = min(1.0, 0.5 * pool / wanted)  # never more than half their draws
        if scale <= 0:
            continue
        for k in (k for k in need if k[0] == domain):
            out[normals[k]] += need[k] * scale / normals[k].sum()
        out[others] *= 1.0 - wanted * scale / pool
    # what the normals could not match: those lesions give the rest of their draws to the same
    # labels in the other domains, where no place is weighed (a weighed one would tip over)
    weighed = np.zeros(len(rows), dtype=bool)
    for k in keys:
        weighed |= lesions[k] if normals[k].any() else False
    for k in need:
        keep = out[normals[k]].sum() / (ratio[k[2]] * out[lesions[k]].sum())
        for g in np.unique(groups[lesions[k]]) if keep < 1.0 else []:
            cell, rest = lesions[k] & (groups == g), (groups == g) & (domains != k[0]) & ~weighed
            if out[rest].sum() > 0:
                removed = out[cell].sum() * (1.0 - keep)
                out[cell] *= keep
                out[rest] *= 1.0 + removed / out[rest].sum()
    return out


def balanced_weights(
    rows: Sequence[Row],
    source_weights: Mapping[str, float] | None = None,
    domain_balance: bool = False,
    place_balance: bool = False,
) -> np.ndarray:
    """Per-row weight: mean over tasks (with a known label) of 1 / class frequency.

    ``source_weights`` multiplies the weight of every row of a set of the mix (its manifest's
    folder name, :attr:`Row.source`; others 1). Class balance alone gives every normal ROI the
    same weight, so each set added to "none" shrinks the share of every other kind of normal
    place (bodies, canal, background, hard negatives): a set can instead take its share from a
    named one, e.g. ``{phantom-hardneg: 0.75}``. Each combination of labels keeps its total
    weight, so the class balance is unchanged.

    ``domain_balance`` then spreads each combination's draws over the image domains (the data
    set of each row's patient, :func:`~spinelesion.data.manifest.source_of`) in proportion to each domain's share of all rows, so that the class drawn
    is independent of the domain: a site whose exams carry inserted lesions in most ROIs would
    otherwise teach that its look means "lesion" (2026-12-06: a VB1 patient held out after
    training on the others had 0.22 of its T1 bodies called normal).

    ``place_balance`` then gives the normal ROIs of the canal and of the bodies of each domain
    and level at least their share of the draws of the lesions there (:data:`BALANCED_PLACES`,
    :func:`_balance_places`), so the place does not predict the class.
    """
    counts = {t: Counter(r.labels[t] for r in rows if r.labels[t]) for t in TASKS}
    weights = np.zeros(len(rows))
    for i, r in enumerate(rows):
        terms = [1.0 / counts[t][r.labels[t]] for t in TASKS if r.labels[t]]
        weights[i] = float(np.mean(terms)) if terms else 0.0
    if source_weights:
        sources = {r.source for r in rows}
        unknown = sorted(set(source_weights) - sources)
        if unknown:
            raise ValueError(
                f"data.source_weights names {unknown}, not a set of this mix (its sets: {sorted(sources)})"
            )
        bad = {k: v for k, v in source_weights.items() if not np.isfinite(v) or v < 0}
        if bad:
            raise ValueError(f"data.source_weights must be finite and >= 0: {bad}")
        scaled = weights * np.array([float(source_weights.get(r.source, 1.0)) for r in rows])
        # Each combination of labels keeps its total weight: the multipliers move draws among the
        # sets of a class, never between classes.
        groups = _label_groups(rows)
        for g in np.unique(groups):
            members = groups == g
            total = scaled[members].sum()
            scaled[members] *= weights[members].sum() / total if total > 0 else 0.0
        weights = scaled
    weights = _spread_over_domains(rows, weights) if domain_balance else weights
    return _balance_places(rows, weights) if place_balance else weights


def sampling_prior(rows: Sequence[Any], weights: np.ndarray | None = None) -> dict[str, list[float]]:
    """Per task, each class's share of training draws: the sampler's ``weights`` per row
    (uniform when None) summed over the rows with that label (rows without one left out)."""
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, np.float64)
    prior: dict[str, list[float]] = {}
    for task, classes in TASKS.items():
        mass = np.zeros(len(classes))
        for r, wi in zip(rows, w, strict=True):
            label = r.labels[task]
            if label:
                mass[classes.index(label)] += wi
        total = mass.sum()
        prior[task] = [
            float(v) for v in (mass / total if total > 0 else np.full(len(classes), 1 / len(classes)))
        ]
    return prior


def draw_shares(rows: Sequence[Row], weights: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Per domain, the share of all draws of each kind of ROI: a normal one by its place (``body``,
    ``canal``, ... or ``other``) and a lesion by where it lies (:func:`lesion_place`). What the
    sampler teaches each site's places to mean: a place drawn far more often as a lesion than as
    normal is learnt as the lesion (2026-12-07: real bodies 16 to 1 in finetune1's mix, 20 to 1 in finetune2's)."""
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, np.float64)
    total = float(w.sum()) or 1.0
    out: dict[str, dict[str, float]] = {}
    for r, wi in zip(rows, w, strict=True):
        where = lesion_place(r)
        kind = f"lesion:{where or 'other'}" if where else f"normal:{place_of(r.case_id) or 'other'}"
        cell = out.setdefault(source_of(str(r.patient_id)), {})
        cell[kind] = cell.get(kind, 0.0) + float(wi) / total
    return {d: {k: round(v, 4) for k, v in sorted(c.items())} for d, c in sorted(out.items())}


class SpineDataModule(pl.LightningDataModule):
    """Batches of multi-sequence ROIs from any manifest that follows the data contract."""

    def __init__(
        self,
        manifest: str | Path | Sequence[str | Path],
        cache_dir: str | Path | None = None,
        reference: str = "auto",
        roi: Mapping[str, Any] | RoiSpec | None = None,
        splits: Mapping[str, float] | None = None,
        split_seed: int = 42,
        seed: int = 0,
        batch_size: int = 16,
        eval_batch_size: int | None = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        balanced_sampling: bool = True,
        source_weights: Mapping[str, float] | None = None,
        domain_balance: bool = False,
        place_balance: bool = False,
        samples_per_epoch: int | None = None,
        check_geometry: bool = True,
        augment: Mapping[str, Any] | None = None,
        progress: bool = True,
        cache_workers: int = 2,
        build_all: bool = True,
        transforms: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        # Several manifests make one training mix (e.g. phantom + real studies with inserted lesions).
        self.manifest_paths = (
            [Path(manifest)] if isinstance(manifest, str | Path) else [Path(m) for m in manifest]
        )
        if not self.manifest_paths:
            raise ValueError("data.manifest: give a manifest path or a non-empty list of them")
        self.manifest_path = self.manifest_paths[0]
        self.spec = roi_spec_from(roi)
        # the PersistentDataset (spinelesion.data.monai_pipeline) goes in cache_dir/monai
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.reference = reference
        self.ratios = dict(splits or {"train": 0.7, "val": 0.15, "test": 0.15})
        self.split_seed = split_seed
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.balanced_sampling = balanced_sampling
        self.source_weights = dict(source_weights or {})
        self.domain_balance = bool(domain_balance)
        self.place_balance = bool(place_balance)
        if samples_per_epoch is not None and int(samples_per_epoch) < 1:
            raise ValueError(f"data.samples_per_epoch: {samples_per_epoch} (give a positive count, or null)")
        self.samples_per_epoch = None if samples_per_epoch is None else int(samples_per_epoch)
        self.check_geometry = check_geometry
        self.augment_cfg = augmentation_from_dict(augment)
        # data.transforms: extra MONAI transforms and the augmentation mode (spinelesion.data.monai_pipeline)
        self.extra_transforms, self.augment_mode = transforms_options(transforms)
        self._augment = self.augmenter()
        self.progress = progress
        self.cache_workers = int(cache_workers)
        self.build_all = build_all
        self.manifest: Manifest | None = None
        self.split_of: dict[str, str] = {}
        self.bank: RoiBank | None = None
        self.split_indices: dict[str, list[int]] = {}
        self._built_splits: set[str] = set()

    # -- preparation -----------------------------------------------------------------------
    def load_manifest(self) -> Manifest:
        if self.manifest is None:
            manifest = read_manifests(self.manifest_paths, check_files=True, geometry=self.check_geometry)
            self.split_of = assign_splits(manifest.rows, self.ratios, self.split_seed)
            for row in manifest.rows:
                row.split = self.split_of[row.patient_id]
            check_no_leakage(manifest.rows)
            self.manifest = manifest
        return self.manifest

    def prepare_data(self) -> None:
        """Rank zero only: fill the PersistentDataset so that every rank's setup reads it
        (failures are raised, with their rows, by setup)."""
        if self.cache_dir is None or self.bank is not None:  # bank: Lightning calls this again in fit
            return
        warm_cache(
            self.load_manifest().rows,
            self.spec,
            self.cache_dir,
            self.reference,
            self.progress,
            self.cache_workers,
        )

    @staticmethod
    def _splits_for(stage: str | None) -> set[str]:
        return {"fit": {"train", "val"}, "validate": {"val"}, "test": {"test"}}.get(stage or "", set(SPLITS))

    def setup(self, stage: str | None = None) -> None:
        # Every split at once: the final evaluation needs test after fit, and a second pass
        # over the studies would cost more than the memory the test ROIs take.
        wanted = set(SPLITS) if self.build_all else (self._splits_for(stage) | self._built_splits)
        if self.bank is not None and wanted <= self._built_splits:
            return
        rows = [r for r in self.load_manifest().rows if r.split in wanted]
        if not rows:
            raise ValueError(f"{self.manifest_path}: no rows in the splits needed for stage '{stage}'")
        self.bank = build_roi_bank(
            rows, self.spec, self.cache_dir, self.reference, on_error="raise", progress=self.progress
        )
        self._built_splits = wanted
        self.split_indices = {s: [i for i, r in enumerate(self.bank.rows) if r.split == s] for s in SPLITS}
        log.info(
            "class counts per split (ROIs) from %s:\n%s",
            self.manifest_path,
            class_count_table(self.bank.rows, self.split_of),
        )

    # -- loaders ---------------------------------------------------------------------------
    def dataset(self, split: str, augment: bool | None = None) -> RoiDataset:
        """Training items carry their whole context box: ``on_after_batch_transfer`` augments and
        crops the batch (with ``data.transforms.augment=batched``); see :func:`roi_dataset`."""
        assert self.bank is not None, "call setup() first"
        augment = (split == "train") if augment is None else augment
        return roi_dataset(self, split, augment)

    def augmenter(self) -> BatchAugment | None:
        batched = self.augment_cfg.enabled and self.augment_mode == "batched"
        return BatchAugment(self.augment_cfg, self.spec) if batched else None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment and crop training batches where they are (GPU or CPU).

        The random draws are seeded by (seed, global step, rank): identical whatever the
        number of workers, different on every DDP rank, and a resumed run continues exactly.
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.training or self._augment is None:
            return batch
        g = self._augment.generator(
            batch["image"].device, self.seed, trainer.global_step, trainer.global_rank
        )
        batch["image"], batch["available"] = self._augment(batch["image"], batch["available"], g)
        return batch

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = self.dataset(split)
        if not ds.indices:
            raise ValueError(f"{self.manifest_path}: split '{split}' is empty")
        weights = None
        if train and self.balanced_sampling:
            assert self.bank is not None, "call setup() first"
            weights = balanced_weights(
                [self.bank.rows[i] for i in ds.indices],
                self.source_weights,
                self.domain_balance,
                self.place_balance,
            )
        if train and self.samples_per_epoch is not None and weights is None:
            weights = np.ones(len(ds.indices))  # a fixed epoch draws with replacement
        sampler = KeyedSampler(
            ds.indices,
            seed=self.seed,
            shuffle=train,
            weights=weights,
            num_samples=self.samples_per_epoch if train else None,
        )
        # MONAI's loader: torch's arguments, plus its collation and per-worker seeding of random transforms
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def draws(self, split: str = "train") -> tuple[list[Row], np.ndarray | None]:
        """The manifest rows of ``split`` and the sampler's weight of each (None: uniform, without
        balanced sampling): what :func:`sampling_prior` and :func:`draw_shares` summarise."""
        rows = [r for r in self.load_manifest().rows if r.split == split]
        weights = (
            balanced_weights(rows, self.source_weights, self.domain_balance, self.place_balance)
            if self.balanced_sampling
            else None
        )
        return rows, weights

    def class_counts(self, split: str = "train") -> dict[str, np.ndarray]:
        """Counts per class for each task in a split (for loss weights)."""
        assert self.bank is not None
        idx = self.split_indices[split]
        out = {}
        for task, classes in TASKS.items():
            t = self.bank.targets[task][idx]
            out[task] = np.array([(t == c).sum().item() for c in range(len(classes))])
        return out
