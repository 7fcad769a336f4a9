"""Cohort runs: deterministic shards, resumable studies that are never half-written, a CSV that grows.

A study is written into ``<output>/.partial/<name>/`` and moved to ``<output>/<name>/`` only
once complete (a rename within one file system is atomic), after its rows were appended to
``predictions.csv``. So a study folder present under its final name is complete, and a run
killed at any point (kill -9 included) leaves only a ``.partial`` folder and, at worst, CSV
rows of a study that is not there yet; ``resume=true`` drops both and carries on.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from spinelesion.atomic import atomic_path, refuse_symlinks
from spinelesion.inference.writers import safe_name

log = logging.getLogger(__name__)

STAGING = ".partial"
MARKER = "predictions.json"  # written last by the predictor, moved last here: its presence means complete
T = TypeVar("T")


def part_of(study_id: str, num_parts: int) -> int:
    """The shard of a study: a hash of its id, so it depends on nothing else in the cohort."""
    digest = hashlib.sha1(study_id.encode("utf-8")).hexdigest()
    return int(digest[:12], 16) % num_parts


def select_part(items: Iterable[T], key: str, num_parts: int, part_id: int) -> list[T]:
    """The items (objects with a ``key`` attribute holding the study id) of shard ``part_id``."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"part_id={part_id} must lie in [0, num_parts={num_parts})")
    return [it for it in items if part_of(str(getattr(it, key)), num_parts) == part_id]


class CohortOutput:
    """The output folder of a cohort run: staging, completion, resume and the growing CSV."""

    def __init__(self, out: Path, csv_name: str, header: Sequence[str], resume: bool):
        self.out = out
        self.staging = out / STAGING
        self.csv_path = out / csv_name
        self.header = list(header)
        self.resume = resume
        refuse_symlinks(self.staging)
        if self.staging.exists():  # a killed run's unfinished studies: never reused
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        kept: list[list[str]] = []
        if resume and self.csv_path.is_file():
            with open(self.csv_path, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
            # rows of studies whose folder never arrived (killed between the CSV and the rename) go
            kept = [r for r in rows[1:] if len(r) == len(self.header) and self.is_complete(safe_name(r[0]))]
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(self.header)
            w.writerows(kept)

    def is_complete(self, folder_name: str) -> bool:
        return (self.out / folder_name / MARKER).is_file()

    def skip(self, folder_name: str) -> bool:
        """True when ``resume`` is on and the study's outputs are complete."""
        return self.resume and self.is_complete(folder_name)

    def append_rows(self, rows: Sequence[Sequence[object]]) -> None:
        """Add a study's rows to the CSV, flushed to disk before its folder is moved into place."""
        with open(refuse_symlinks(self.csv_path), "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)
            fh.flush()
            os.fsync(fh.fileno())

    def commit(self, staged: Path) -> Path:
        """Move a finished study folder from staging to its final name.

        Over an older folder of the same study, files are replaced one by one (files of the
        user's own there are kept) with predictions.json removed first and moved last: a
        kill in between leaves the study incomplete, so ``resume`` redoes it.
        """
        final, moves = self.destinations(staged)
        if not final.exists():
            staged.rename(final)
            return final
        (final / MARKER).unlink(missing_ok=True)
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        os.replace(staged / MARKER, final / MARKER)
        shutil.rmtree(staged, ignore_errors=True)
        return final

    def destinations(self, staged: Path) -> tuple[Path, list[tuple[Path, Path]]]:
        """A staged study's final folder and the moves of its files (the marker apart), every
        destination checked to follow no symbolic link: called before the study's rows go into
        the CSV, a refused study leaves neither rows nor files."""
        final = refuse_symlinks(self.out / staged.name)
        files = sorted(p for p in staged.rglob("*") if p.is_file() and p.name != MARKER)
        moves = [(src, refuse_symlinks(final / src.relative_to(staged))) for src in files]
        refuse_symlinks(final / MARKER)
        return final, moves

    def discard(self, folder_name: str) -> None:
        """Remove what a failed study left in staging."""
        shutil.rmtree(self.staging / folder_name, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
