"""Deterministic patient-level splits: no patient is ever in two splits."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from spinelesion.data.manifest import Row
from spinelesion.labels import SPLITS, TASKS

log = logging.getLogger(__name__)


def _stratum(rows: Sequence[Row], frequency: Mapping[tuple[str, str], int]) -> tuple[str, str]:
    """A patient's rarest known label, so rare classes are spread over every split."""
    labels = [(t, r.labels[t]) for r in rows for t in TASKS if r.labels[t]]
    if not labels:
        return ("", "")
    return min(labels, key=lambda tl: (frequency[tl], tl))


def assign_splits(rows: Sequence[Row], ratios: Mapping[str, float], seed: int) -> dict[str, str]:
    """Patient -> split for every patient; splits given in the manifest are kept.

    Patients without a split are stratified by their rarest label, shuffled with ``seed``
    within each stratum and dealt out in the given ratios (largest remainder rounding), so
    the result depends only on the manifest content and the seed.
    """
    unknown = set(ratios) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split name(s) {sorted(unknown)}; allowed: {', '.join(SPLITS)}")
    by_patient: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_patient[r.patient_id].append(r)
    given = {p: next((r.split for r in rs if r.split), "") for p, rs in by_patient.items()}
    out = {p: s for p, s in given.items() if s}
    todo = sorted(p for p, s in given.items() if not s)
    if not todo:
        return out
    frequency = Counter((t, r.labels[t]) for r in rows for t in TASKS if r.labels[t])
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in todo:
        strata[_stratum(by_patient[p], frequency)].append(p)
    names = [s for s in SPLITS if ratios.get(s, 0) > 0]
    weights = np.array([ratios[s] for s in names], dtype=np.float64)
    weights = weights / weights.sum()
    rng = np.random.default_rng(seed)
    carry = np.zeros(len(names))  # remainders carried across strata keep global ratios exact
    for key in sorted(strata):
        patients = list(strata[key])
        rng.shuffle(patients)
        want = weights * len(patients) + carry
        counts = _allocate(want, len(patients))
        carry = want - counts
        start = 0
        for name, n in zip(names, counts, strict=True):
            for p in patients[start : start + n]:
                out[p] = name
            start += n
    return out


def _allocate(want: np.ndarray, n: int) -> np.ndarray:
    """Non-negative integers summing to ``n``, as close as possible to ``want``."""
    counts = np.maximum(np.floor(want), 0).astype(int)
    while counts.sum() < n:
        counts[int(np.argmax(want - counts))] += 1
    while counts.sum() > n:
        over = np.where(counts > 0, counts - want, -np.inf)
        counts[int(np.argmax(over))] -= 1
    return counts


def check_no_leakage(rows: Sequence[Row]) -> None:
    """Raise if a patient's rows (their ``split`` fields) fall in more than one split."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        seen[r.patient_id].add(r.split)
    leaked = {p: s for p, s in seen.items() if len(s) > 1}
    if leaked:
        raise AssertionError(f"patients in several splits: {leaked}")


def class_count_table(rows: Sequence[Row], split_of: Mapping[str, str]) -> str:
    """A plain-text table of class counts per split, for the start-of-training log."""
    lines = []
    header = f"{'task':<12}{'class':<28}" + "".join(f"{s:>8}" for s in SPLITS)
    lines.append(header)
    for task, classes in TASKS.items():
        for cls in (*classes, ""):
            counts = Counter(split_of[r.patient_id] for r in rows if r.labels[task] == cls)
            if cls == "" and not counts:
                continue
            lines.append(
                f"{task:<12}{cls or '(unknown)':<28}" + "".join(f"{counts.get(s, 0):>8}" for s in SPLITS)
            )
    patients = Counter(split_of.values())
    lines.append(f"{'patients':<40}" + "".join(f"{patients.get(s, 0):>8}" for s in SPLITS))
    return "\n".join(lines)
