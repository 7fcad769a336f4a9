"""What the data cache is keyed by and what it stores, and a study's preparation without it.

The cache itself is MONAI's :class:`~monai.data.PersistentDataset` over the study transforms
(:mod:`spinelesion.data.monai_pipeline`). Here:

* :func:`study_key`: a hash of the sequence paths, every file's size and modification time, and
  the preparation settings, carried in each study item, so a changed, added or removed file, or
  a new setting, gives a new key and the stale entry is simply never read again;
* :func:`to_half`: the float16 the study is rounded to before its ROIs are cropped (per-channel
  robust scaling; the normalisation downstream is scale-free, so nothing is lost but rounding);
* :func:`prepare_study`: read every sequence and resample it onto the reference grid, no cache
  (the benchmark's read timing, and the reference computation the tests hold the cache to);
* :func:`prune_cache`: the least recently used files of a cache folder deleted down to a size (a
  study whose file is missing is prepared again), for a cache that many runs share (the release's).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CACHE_VERSION = "1"


@dataclass
class PreparedStudy:
    """All sequences of a study on one grid: (C, I, J, K) in :data:`~spinelesion.labels.SEQUENCES` order."""

    study_id: str
    array: np.ndarray
    affine: np.ndarray
    available: np.ndarray  # (C,) bool
    reference: str
    warnings: list[str] = field(default_factory=list)


def file_fingerprint(path: Path) -> list[tuple[str, int, int]]:
    """(relative name, size, mtime_ns) of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return [(path.name, st.st_size, st.st_mtime_ns)]
    out = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = Path(root) / name
            st = full.stat()
            out.append((str(full.relative_to(path)), st.st_size, st.st_mtime_ns))
    return sorted(out)


def study_key(sequences: Mapping[str, Path], settings: Mapping[str, object]) -> str:
    payload = {
        "version": CACHE_VERSION,
        "settings": dict(settings),
        "sequences": {
            s: [str(Path(p).resolve()), file_fingerprint(Path(p))] for s, p in sorted(sequences.items())
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def prepare_study(study_id: str, sequences: Mapping[str, Path], reference: str = "auto") -> PreparedStudy:
    """Read every sequence and resample it onto the reference grid (no cache, full precision)."""
    from spinelesion.io.resample import to_reference
    from spinelesion.io.study import load_study_from_paths

    study = load_study_from_paths(study_id, dict(sequences))
    array, affine, available, ref_name = to_reference(study, reference=reference)
    return PreparedStudy(
        study_id,
        np.asarray(array, dtype=np.float32),
        np.asarray(affine),
        np.asarray(available, dtype=bool),
        ref_name,
        list(study.warnings),
    )


def to_half(array: np.ndarray) -> np.ndarray:
    """float16 copy with each channel divided by a robust maximum (p99.9 of non-zero -> 4)."""
    scale = np.ones(array.shape[0], dtype=np.float32)
    for c in range(array.shape[0]):
        nz = array[c][array[c] != 0]
        if nz.size:
            scale[c] = max(float(np.percentile(nz, 99.9)), 1e-6) / 4.0  # headroom below fp16's 65504
    return (array / scale[:, None, None, None]).astype(np.float16)


def mark_used(path: Path) -> None:
    """Stamp a cache file as just used (its modification time: access times are not kept
    reliably, relatime), so that :func:`prune_cache` keeps what a run still reads."""
    try:
        os.utime(path)
    except OSError:  # gone or read-only: it is only a hint for pruning
        pass


def prune_cache(folder: str | os.PathLike[str], max_bytes: int) -> tuple[int, int]:
    """Delete the least recently used files (oldest :func:`mark_used` stamp first) of ``folder``
    until the rest holds at most ``max_bytes``; (files deleted, bytes freed). Safe whenever no
    process is writing the folder: a missing file is a cache miss, recomputed on the next read."""
    root = Path(folder)
    if not root.is_dir():
        return 0, 0
    files = []
    for entry in os.scandir(root):
        if entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            files.append((st.st_mtime_ns, st.st_size, Path(entry.path)))
    total = sum(size for _, size, _ in files)
    deleted = freed = 0
    for _, size, path in sorted(files, key=lambda f: (f[0], str(f[2]))):
        if total - freed <= max_bytes:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        deleted, freed = deleted + 1, freed + size
    return deleted, freed
