"""Paths fit to leave the machine: relative to the working directory, or a bare file name.

Model folders, benchmark reports and prediction outputs get committed, shared and sent
back to clinics; an absolute path in them tells where they were made and, for PACS
exports, often carries a patient's name in a folder name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_ABSOLUTE = re.compile(r"^(/|~/|[A-Za-z]:[\\/])")


def portable_path(path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> str:
    """``path`` relative to ``base`` (default: the working directory) when below it, else its name."""
    p = Path(path).expanduser()
    root = Path(base) if base is not None else Path.cwd()
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return p.name


def redact_paths(value: Any, base: str | os.PathLike[str] | None = None) -> Any:
    """A copy of JSON-like ``value`` with every absolute-path string made portable."""
    if isinstance(value, Mapping):
        return {k: redact_paths(v, base) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_paths(v, base) for v in value]
    if isinstance(value, str) and _ABSOLUTE.match(value) and "\n" not in value:
        return portable_path(value, base)
    if isinstance(value, Path) and value.is_absolute():
        return portable_path(value, base)
    return value
