"""The dataset manifest of the data contract: parsing and validation.

Validation collects *every* problem (file, row, column, reason) before failing, so a user
fixes a broken manifest in one pass instead of one error per run (nnU-Net's
``verify_dataset_integrity`` habit).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinelesion.atomic import atomic_path
from spinelesion.labels import SEQUENCES, SPLITS, TASKS

REQUIRED_COLUMNS: tuple[str, ...] = ("case_id", "study_id", "patient_id", "x_mm", "y_mm", "z_mm")
OPTIONAL_COLUMNS: tuple[str, ...] = ("split", *SEQUENCES, *TASKS, "level", "finding")
COLUMNS: tuple[str, ...] = (
    "case_id",
    "study_id",
    "patient_id",
    "split",
    *SEQUENCES,
    "x_mm",
    "y_mm",
    "z_mm",
    *TASKS,
    "level",
    "finding",
)
"""All contract columns, in the order the project writes them."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest. ``row`` is the 1-based data row (header excluded)."""

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}"


SHOWN_PROBLEMS = 20
"""Problems a :class:`ManifestError` message lists; the rest are counted by column."""


class ManifestError(ValueError):
    """Raised with every problem found (all in ``problems``); the message lists the first
    :data:`SHOWN_PROBLEMS`, one per line, and counts the others by column."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        shown, hidden = self.problems[:SHOWN_PROBLEMS], self.problems[SHOWN_PROBLEMS:]
        lines = [f"  - {p}" for p in shown]
        if hidden:  # a million bad rows must not become a million log lines
            by_column = Counter(p.column or "no column" for p in hidden)
            counts = ", ".join(f"{column} {n}" for column, n in by_column.most_common())
            lines.append(f"  ... and {len(hidden)} more not shown (by column: {counts})")
        super().__init__(f"{len(self.problems)} problem(s) in the manifest:\n" + "\n".join(lines))


@dataclass
class Row:
    """One ROI of the manifest, parsed. Paths are absolute; labels are strings ('' = unknown)."""

    case_id: str
    study_id: str
    patient_id: str
    center_lps: np.ndarray
    sequences: dict[str, Path]
    labels: dict[str, str]
    split: str = ""
    level: str = ""
    finding: str = ""
    row_number: int = 0
    source: str = ""  # the manifest's folder name: which set of a training mix the row came from

    def sequence_key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, str(v)) for k, v in self.sequences.items()))


@dataclass
class Manifest:
    path: Path
    rows: list[Row] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.path.parent

    def studies(self) -> dict[str, list[Row]]:
        """Rows grouped by study, in first-appearance order."""
        out: dict[str, list[Row]] = {}
        for row in self.rows:
            out.setdefault(row.study_id, []).append(row)
        return out

    def subset(self, rows: Iterable[Row]) -> Manifest:
        return Manifest(self.path, list(rows))


GeometryFn = Callable[[Path], tuple[tuple[int, int, int], np.ndarray]]
"""Returns (shape, voxel-to-LPS affine) of a sequence path from its headers."""


def source_of(patient_id: str) -> str:
    """The data set a patient comes from: the part of its id before ``_`` (real: ``vb2_07`` ->
    ``vb2``); the phantom's patients (``P100000000``) have none and are ``phantom``."""
    return patient_id.split("_", 1)[0] if "_" in patient_id else "phantom"


# Where an insertion set's normal ROI lies, from its case id (insert/dataset.py normal_records:
# ``<study>_<tag><place><nn>``); longest names first ("canal_between" before "canal").
NORMAL_PLACES = ("canal_between", "canal_wall", "canal", "body", "disc", "region", "bg")
# the canal at a body's level, on the sac's wall there, and behind the disc below
CANAL_PLACES = ("canal", "canal_wall", "canal_between")
_PLACE = re.compile(r"(" + "|".join(NORMAL_PLACES) + r")\d+$")


TWIN_SUFFIX = "_twin"  # an inserted study's untouched twin (insert/dataset.py twin_records)


def is_twin(study_id: str) -> bool:
    """Whether a study is an inserted study's untouched twin: training material (the same crop and
    look without the finding), not a study a scan is judged or mined on."""
    return study_id.endswith(TWIN_SUFFIX)


def place_of(case_id: str) -> str:
    """The place of an insertion set's normal ROI (``canal``, ``body``, ...), or "" when unknown."""
    m = _PLACE.search(case_id)
    return m.group(1) if m else ""


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_manifest(
    path: str | os.PathLike[str],
    *,
    check_files: bool = True,
    geometry: GeometryFn | None | bool = None,
) -> Manifest:
    """Parse and validate a manifest; raise :class:`ManifestError` listing every problem.

    Args:
        check_files: check that every sequence path exists (folder or NIfTI file).
        geometry: also check that each ROI centre lies inside its study's volumes, reading
            headers with this function (``True``: the project's header reader; ``None`` or
            ``False``: skip this check, which needs to open every study).
    """
    path = Path(path).resolve()
    name = str(path)
    problems: list[Problem] = []
    if not path.is_file():
        raise ManifestError([Problem(name, None, None, "file not found")])
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            records = list(reader)
    except UnicodeDecodeError as exc:  # name the line: the decoder gives an offset into its chunk only
        data = path.read_bytes()
        try:
            data.decode("utf-8-sig")
            pos = exc.start
        except UnicodeDecodeError as whole:
            pos = whole.start
        line, bad = data[:pos].count(b"\n") + 1, data[pos : pos + 1].hex()
        raise ManifestError(
            [
                Problem(
                    name,
                    None,
                    None,
                    f"line {line}: byte 0x{bad} is not UTF-8 text (saved as "
                    "Latin-1 or Windows-1252?); save the manifest as UTF-8",
                )
            ]
        ) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing and any(";" in h for h in header):  # one cause, not one line per column it hides
        raise ManifestError(
            [
                Problem(
                    name,
                    None,
                    None,
                    "the header line has ';' and not the required columns: the manifest looks "
                    "semicolon-separated (a spreadsheet's export in a decimal-comma locale?); "
                    "the contract is comma-separated, with '.' as the decimal point",
                )
            ]
        )
    for column in missing:
        problems.append(Problem(name, None, column, "required column is missing"))
    if not any(s in header for s in SEQUENCES):
        problems.append(
            Problem(name, None, None, f"needs at least one sequence column of {', '.join(SEQUENCES)}")
        )
    duplicated = sorted({h for h in header if header.count(h) > 1})
    for column in duplicated:
        problems.append(Problem(name, None, column, "column appears more than once"))
    if problems:
        raise ManifestError(problems)
    if not records:
        raise ManifestError([Problem(name, None, None, "has a header but no rows")])

    rows: list[Row] = []
    seen_cases: dict[str, int] = {}
    for number, raw in enumerate(records, start=1):
        rec = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if None in raw:  # more cells than header columns
            problems.append(Problem(name, number, None, "has more cells than the header has columns"))
        row_problems = _check_row(name, number, rec, path.parent, check_files)
        problems.extend(row_problems)
        case_id = rec.get("case_id", "")
        if case_id in seen_cases:
            problems.append(
                Problem(
                    name,
                    number,
                    "case_id",
                    f"'{case_id}' repeats row {seen_cases[case_id]}; case_id must be unique",
                )
            )
        elif case_id:
            seen_cases[case_id] = number
        if row_problems:
            continue
        sequences = {s: _resolve(path.parent, rec[s]) for s in SEQUENCES if rec.get(s)}
        rows.append(
            Row(
                case_id=case_id,
                study_id=rec["study_id"],
                patient_id=rec["patient_id"],
                center_lps=np.array([float(rec["x_mm"]), float(rec["y_mm"]), float(rec["z_mm"])]),
                sequences=sequences,
                labels={task: rec.get(task, "") for task in TASKS},
                split=rec.get("split", ""),
                level=rec.get("level", ""),
                finding=rec.get("finding", ""),
                row_number=number,
            )
        )
    problems.extend(_check_consistency(name, rows))
    if not problems and geometry:
        geometry_fn = _default_geometry() if geometry is True else geometry
        problems.extend(_check_inside(name, rows, geometry_fn))
    if problems:
        raise ManifestError(problems)
    return Manifest(path, rows)


def _resolve(root: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (root / p)


def _check_row(name: str, number: int, rec: dict[str, str], root: Path, check_files: bool) -> list[Problem]:
    out: list[Problem] = []
    for column in ("case_id", "study_id", "patient_id"):
        if not rec.get(column):
            out.append(Problem(name, number, column, "is empty"))
    for column in ("x_mm", "y_mm", "z_mm"):
        text = rec.get(column, "")
        if _parse_float(text) is None:
            out.append(Problem(name, number, column, f"'{text}' is not a finite number (LPS millimetres)"))
    for task, classes in TASKS.items():
        value = rec.get(task, "")
        if value and value not in classes:
            out.append(
                Problem(
                    name, number, task, f"unknown label '{value}'; allowed: {', '.join(classes)} or empty"
                )
            )
    split = rec.get("split", "")
    if split and split not in SPLITS:
        out.append(
            Problem(name, number, "split", f"unknown split '{split}'; allowed: {', '.join(SPLITS)} or empty")
        )
    present = [s for s in SEQUENCES if rec.get(s)]
    if not present:
        out.append(
            Problem(
                name, number, None, f"no sequence given: at least one of {', '.join(SEQUENCES)} must be set"
            )
        )
    if check_files:
        for s in present:
            p = _resolve(root, rec[s])
            if not p.exists():
                out.append(Problem(name, number, s, f"'{rec[s]}' does not exist (resolved to {p})"))
            elif p.is_file() and not str(p).lower().endswith((".nii", ".nii.gz")):
                out.append(
                    Problem(
                        name,
                        number,
                        s,
                        f"'{rec[s]}' is a file but not NIfTI (.nii/.nii.gz); a DICOM series must be given as its folder",
                    )
                )
    return out


def _check_consistency(name: str, rows: list[Row]) -> list[Problem]:
    """Study-level rules: one patient and one set of sequences per study, one split per patient."""
    out: list[Problem] = []
    study_first: dict[str, Row] = {}
    patient_split: dict[str, tuple[str, int]] = {}
    for row in rows:
        first = study_first.setdefault(row.study_id, row)
        if row.patient_id != first.patient_id:
            out.append(
                Problem(
                    name,
                    row.row_number,
                    "patient_id",
                    f"study '{row.study_id}' has patient '{first.patient_id}' in row {first.row_number}, here '{row.patient_id}'",
                )
            )
        if row.sequence_key() != first.sequence_key():
            out.append(
                Problem(
                    name,
                    row.row_number,
                    None,
                    f"study '{row.study_id}' lists different sequence paths than in row {first.row_number}",
                )
            )
        if row.split:
            prev = patient_split.setdefault(row.patient_id, (row.split, row.row_number))
            if prev[0] != row.split:
                out.append(
                    Problem(
                        name,
                        row.row_number,
                        "split",
                        f"patient '{row.patient_id}' is in split '{prev[0]}' in row {prev[1]} and '{row.split}' here; splits must be by patient",
                    )
                )
    return out


def _default_geometry() -> GeometryFn:
    from spinelesion.io.reader import read_geometry

    return read_geometry


def _check_inside(name: str, rows: list[Row], geometry_fn: GeometryFn) -> list[Problem]:
    out: list[Problem] = []
    cache: dict[Path, tuple[tuple[int, int, int], np.ndarray] | Exception] = {}
    for row in rows:
        inside_any = False
        readable: list[str] = []
        for seq, p in row.sequences.items():
            if p not in cache:
                try:
                    cache[p] = geometry_fn(p)
                except Exception as exc:  # reported, not raised: every row gets checked
                    cache[p] = exc
            geo = cache[p]
            if isinstance(geo, Exception):
                out.append(Problem(name, row.row_number, seq, f"cannot read geometry of '{p}': {geo}"))
                continue
            readable.append(seq)
            shape, affine = geo
            ijk = np.linalg.inv(affine)[:3] @ np.append(row.center_lps, 1.0)
            if np.all(ijk >= -0.5) and np.all(ijk <= np.asarray(shape) - 0.5):
                inside_any = True
        if readable and not inside_any:
            out.append(
                Problem(
                    name,
                    row.row_number,
                    "x_mm",
                    f"ROI centre {row.center_lps.tolist()} (LPS mm) lies outside every volume of study '{row.study_id}' ({', '.join(readable)})",
                )
            )
    return out


def write_manifest(path: str | os.PathLike[str], records: Iterable[dict[str, object]]) -> Path:
    """Write manifest records (dicts keyed by contract column) with the contract's column order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="raise")
        writer.writeheader()
        for rec in records:
            writer.writerow({k: ("" if rec.get(k) is None else rec.get(k)) for k in COLUMNS})
    return path


def subset_manifest(
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    studies: int | None,
    sequences: Sequence[str] | None = None,
) -> Path:
    """The rows of the first ``studies`` studies of a manifest (all: None), written to ``out``
    with absolute sequence paths (so the copy works from any folder). ``sequences``: only these
    sequence columns are kept (the others left empty: missing), and rows left with none dropped."""
    src = Path(manifest).resolve()
    with open(src, newline="", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    unknown = sorted(set(sequences or ()) - set(SEQUENCES))
    if unknown:
        raise ValueError(f"{src}: unknown sequence(s) {unknown} (the contract's: {', '.join(SEQUENCES)})")
    keep = set(list(dict.fromkeys(r["study_id"] for r in records))[:studies])
    wanted = set(SEQUENCES if sequences is None else sequences)
    rows = [
        {
            k: (str(_resolve(src.parent, v)) if v and k in wanted else "") if k in SEQUENCES else v
            for k, v in r.items()
        }
        for r in records
        if r["study_id"] in keep
    ]
    return write_manifest(out, [r for r in rows if any(r.get(s) for s in SEQUENCES)])
