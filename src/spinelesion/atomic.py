"""Atomic file writes: a file appears under its final name only once it is complete.

A crash mid-write leaves a hidden temporary file, never a truncated JSON or NIfTI that
looks finished; :func:`clean_temporaries` removes such leftovers when a run starts. JSON is
written strictly: NaN and infinities become ``null``, never the non-standard ``NaN``.

Inside an output folder held by a run (:func:`guarded_folder`), no write follows a symbolic
link: :func:`refuse_symlinks` checks every part of the path below the folder, and every
write here goes through it. A link planted there (``<output>/<study> -> /elsewhere``) would
otherwise have a run write, or replace files, outside the folder it was given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp(?P<suffix>(\.[A-Za-z0-9]+)*)$")
"""Names :func:`atomic_path` gives its temporaries: ``.<name>.<8 random>.tmp<suffixes of name>``."""


class SymlinkRefusedError(OSError):
    """A write inside a guarded output folder would follow a symbolic link."""


_GUARDED: list[tuple[str, str]] = []
"""Output folders held by this process: (absolute path as given, real path) of each."""


@contextlib.contextmanager
def guarded_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """While the block runs, writes below ``folder`` refuse symbolic links (the folder itself,
    and the folders above it, may be links: only what lies inside it is the run's)."""
    entry = (os.path.abspath(folder), os.path.realpath(folder))
    _GUARDED.append(entry)
    try:
        yield Path(folder)
    finally:
        _GUARDED.remove(entry)


def _parts_below(path: str, root: str) -> list[str] | None:
    """The parts of ``path`` below ``root`` (both absolute), or None when it lies elsewhere."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return None
    if rel == os.curdir:
        return []
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return rel.split(os.sep)


def refuse_symlinks(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """``path``, after checking that no part of it below ``root`` is a symbolic link.

    ``root`` None: the output folders held by :func:`guarded_folder` (a path below none of
    them is not checked). Raises :class:`SymlinkRefusedError` naming the link.
    """
    target = os.path.abspath(path)
    if root is not None:
        roots = [(os.path.abspath(root), os.path.realpath(root))]
    else:
        roots = list(_GUARDED)
    for given, real in roots:
        for base in dict.fromkeys((given, real)):  # paths may come resolved (writers.inside) or as given
            parts = _parts_below(target, base)
            if parts is None:
                continue
            current = base
            for part in parts:
                current = os.path.join(current, part)
                if os.path.islink(current):
                    raise SymlinkRefusedError(
                        f"refusing to write through the symbolic link {current} (-> {os.readlink(current)}) "
                        f"inside the output folder {given}: remove it or choose another output_dir"
                    )
                if not os.path.lexists(current):
                    break  # what does not exist yet is created here, as a plain file or folder
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = refuse_symlinks(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)  # keep .nii.gz etc.: some writers choose the format by suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_path`'s temporaries (suffix matching its target)."""
    m = TEMP_NAME.match(name)
    return bool(m and m.group("name").endswith(m.group("suffix")))


def clean_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporaries left below ``folder`` by an interrupted run (kill -9); returns them.

    Call only while holding the folder's run lock: a live run's temporaries look the same.
    """
    removed = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if is_temporary(name):
                path = Path(root) / name
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run, e.g. %s", len(removed), removed[0])
    return removed


def finite_json(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None (numpy scalars made plain)."""
    if isinstance(data, Mapping):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite_json(v) for v in data]
    if hasattr(data, "item") and callable(data.item) and getattr(data, "ndim", None) == 0:
        data = data.item()  # numpy scalar
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Strict JSON (no NaN/Infinity literals: they become null), atomically."""
    text = json.dumps(finite_json(data), indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
