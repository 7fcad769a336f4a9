"""On-disk cache of decoded studies resampled onto their reference grid.

Decoding a DICOM series and resampling four sequences is the slow part of data loading;
it is done once per study and stored as an ``.npz`` (no pickle: loading it runs no code).
The key hashes the sequence paths, every file's size and modification time, and the
preparation settings, so a changed, added or removed file, or a new setting, gives a new
key and the stale entry is simply never read again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinelesion.atomic import refuse_symlinks
from spinelesion.labels import SEQUENCES

log = logging.getLogger(__name__)

CACHE_VERSION = "1"


@dataclass
class PreparedStudy:
    """All sequences of a study on one grid: (C, I, J, K) in :data:`SEQUENCES` order."""

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
    """Read every sequence and resample it onto the reference grid (no cache)."""
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


class StudyCache:
    """Prepared studies, from ``cache_dir`` when present there, else computed and stored.

    ``cache_dir=None`` disables the disk cache (everything is computed each time).
    Arrays are stored as float16 after dividing each channel by a robust maximum; the
    normalisation downstream is scale-free, so nothing is lost but rounding (< 0.1 %).
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None, reference: str = "auto"):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.reference = reference
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.npz"

    def get(self, study_id: str, sequences: Mapping[str, Path]) -> PreparedStudy:
        path = None
        if self.cache_dir is not None:
            path = self._path(study_key(sequences, {"reference": self.reference}))
            if path.is_file():
                try:
                    loaded = self._load(path, study_id)
                    self.hits += 1
                    return loaded
                except (OSError, ValueError, KeyError) as exc:  # a truncated or foreign file: rebuild it
                    log.warning("cache entry %s unreadable (%s); rebuilding", path, exc)
        self.misses += 1
        prepared = prepare_study(study_id, sequences, self.reference)
        prepared.array = _to_half(prepared.array)
        if path is not None:
            self._store(path, prepared)
        # Hand out exactly what a later hit reads back, so cached and fresh runs agree.
        prepared.array = prepared.array.astype(np.float32)
        return prepared

    @staticmethod
    def _load(path: Path, study_id: str) -> PreparedStudy:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return PreparedStudy(
                study_id,
                z["array"].astype(np.float32),
                z["affine"],
                z["available"],
                meta["reference"],
                meta["warnings"],
            )

    @staticmethod
    def _store(path: Path, prepared: PreparedStudy) -> None:
        refuse_symlinks(path)  # a cache inside a run's output folder follows no link out of it
        path.parent.mkdir(parents=True, exist_ok=True)
        half = prepared.array.astype(np.float16)
        meta = json.dumps(
            {"reference": prepared.reference, "warnings": prepared.warnings, "sequences": list(SEQUENCES)}
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        os.close(fd)
        try:
            np.savez(
                tmp, array=half, affine=prepared.affine, available=prepared.available, meta=np.array(meta)
            )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _to_half(array: np.ndarray) -> np.ndarray:
    """float16 copy with each channel divided by a robust maximum (p99.9 of non-zero -> 4)."""
    scale = np.ones(array.shape[0], dtype=np.float32)
    for c in range(array.shape[0]):
        nz = array[c][array[c] != 0]
        if nz.size:
            scale[c] = max(float(np.percentile(nz, 99.9)), 1e-6) / 4.0  # headroom below fp16's 65504
    return (array / scale[:, None, None, None]).astype(np.float16)
