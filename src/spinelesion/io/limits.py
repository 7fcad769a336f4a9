"""What reading may cost: only regular files, sizes checked against headers, a memory cap.

Hostile or damaged inputs must fail fast and say why, never hang or exhaust memory:

* only regular files are opened: a named pipe blocks ``open`` forever, a device never ends;
* a DICOM header is parsed from at most :attr:`ReadLimits.header_bytes`; a file much larger
  than its header plus the pixel data it declares is refused before it is read whole;
* a volume's (or study's) float32 memory is estimated from headers and refused over
  :attr:`ReadLimits.max_study_bytes`, naming the file and the setting.

The limits are process-wide (readers are called deep inside loaders); :func:`configure`
sets them from the command line (``limits.max_study_gb``, ``limits.header_mb``) or the
environment (``SPINELESION_MAX_STUDY_GB``, ``SPINELESION_HEADER_MB``).
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1 << 30
MIB = 1 << 20
OUTPUT_MARKER = ".spinelesion-output"
"""Written into every predict/evaluate output folder; discovery never reads a folder holding it."""


class ResourceLimitError(ValueError):
    """An input refused because reading it would cost more than the limits allow."""


@dataclass
class ReadLimits:
    max_study_bytes: int = 8 * GIB
    """float32 memory one volume, or all volumes of a study together, may need."""
    header_bytes: int = 4 * MIB
    """Most bytes parsed looking for the end of a DICOM header (pixel data start)."""
    slack_bytes: int = 1 * MIB
    """Bytes a DICOM file may hold beyond its header and declared pixel data (padding, private data)."""


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    try:
        return float(value) if value else None
    except ValueError:
        return None


LIMITS = ReadLimits()


def configure(max_study_gb: float | None = None, header_mb: float | None = None) -> ReadLimits:
    """Set the process-wide limits; None keeps the environment's value, else the default."""
    gb = max_study_gb if max_study_gb is not None else _env_float("SPINELESION_MAX_STUDY_GB")
    mb = header_mb if header_mb is not None else _env_float("SPINELESION_HEADER_MB")
    LIMITS.max_study_bytes = int(gb * GIB) if gb is not None else ReadLimits.max_study_bytes
    LIMITS.header_bytes = int(mb * MIB) if mb is not None else ReadLimits.header_bytes
    return LIMITS


configure()


def meminfo_bytes(field: str) -> int | None:
    """A ``/proc/meminfo`` field (``MemTotal``, ``MemAvailable``...) in bytes; None off Linux."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def human(n: float) -> str:
    """Bytes for people: ``'238.4 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def special_file_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a regular file that can be read safely (stat only: never opens it), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot stat the file ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    for test, what in (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return f"{what}, not a regular file; not opened"
    return "not a regular file; not opened"


def regular_size(path: str | os.PathLike[str]) -> int:
    """Size of a regular file; :class:`ResourceLimitError` for pipes, sockets and devices."""
    reason = special_file_reason(path)
    if reason:
        raise ResourceLimitError(f"{path}: {reason}")
    return os.stat(path).st_size


def dicom_pixel_bytes(ds: Any) -> int | None:
    """Bytes of pixel data a DICOM header declares (uncompressed), or None when it declares no image."""
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 16)
    except (TypeError, ValueError):
        return None
    if rows <= 0 or cols <= 0:
        return None
    return math.ceil(rows * cols * max(frames, 1) * max(samples, 1) * max(bits, 1) / 8)


def dicom_allowed_bytes(ds: Any, header_end: int) -> int:
    """Most bytes a DICOM file (or a deflated dataset, once inflated) may hold: its header,
    the pixel data it declares (+10%) and :attr:`ReadLimits.slack_bytes`."""
    declared = dicom_pixel_bytes(ds)
    return header_end + LIMITS.slack_bytes + (math.ceil(declared * 1.1) if declared else 0)


def check_dicom_size(path: Path, ds: Any, size: int, header_end: int) -> None:
    """Refuse a file much larger than its header plus the pixel data it declares (e.g. a
    header followed by gigabytes of zeros) before it is read whole."""
    declared = dicom_pixel_bytes(ds)
    allowed = dicom_allowed_bytes(ds, header_end)
    if size > allowed:
        what = f"{human(declared)} of pixel data" if declared else "no pixel data"
        raise ResourceLimitError(
            f"{path}: the file holds {human(size)} but its header declares {what}; "
            "refused unread (damaged or padded file)"
        )


def float32_bytes(shape: Iterable[int]) -> int:
    return 4 * math.prod(int(s) for s in shape)


def check_volume_bytes(what: str | os.PathLike[str], shape: Sequence[int]) -> None:
    """Refuse a volume whose float32 array would exceed the study memory cap, before allocating it."""
    need = float32_bytes(shape)
    if need > LIMITS.max_study_bytes:
        dims = "x".join(str(int(s)) for s in shape)
        raise ResourceLimitError(
            f"{what}: declares {dims} voxels, {human(need)} as float32, over the limit of "
            f"{human(LIMITS.max_study_bytes)} per study (limits.max_study_gb or "
            "SPINELESION_MAX_STUDY_GB)"
        )


def check_study_bytes(
    study_id: str, shapes: Sequence[Sequence[int]], channels: int = 0, reference: Sequence[int] | None = None
) -> int:
    """Estimated float32 bytes of a study (its volumes, plus ``channels`` copies of the
    reference grid once resampled); :class:`ResourceLimitError` over the cap."""
    need = sum(float32_bytes(s) for s in shapes)
    if reference is not None:
        need += channels * float32_bytes(reference)
    if need > LIMITS.max_study_bytes:
        raise ResourceLimitError(
            f"study '{study_id}' would need about {human(need)} of memory, over the limit "
            f"of {human(LIMITS.max_study_bytes)} (limits.max_study_gb or "
            "SPINELESION_MAX_STUDY_GB)"
        )
    return need


RUN_FILES = ("run.json", "predictions.csv", "failed_studies.csv")
"""What every predict run writes at the top of its folder (runs older than the marker too)."""


def is_output_folder(folder: str | os.PathLike[str]) -> bool:
    """A folder written by a predict/evaluate run: it holds :data:`OUTPUT_MARKER`, or all of
    :data:`RUN_FILES` (a run from before the marker existed)."""
    if os.path.isfile(os.path.join(folder, OUTPUT_MARKER)):
        return True
    return all(os.path.isfile(os.path.join(folder, name)) for name in RUN_FILES)
