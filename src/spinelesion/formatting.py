"""How numbers are shown to people: one metric-with-CI format for the training summary,
the model card and the benchmark report (machine-readable outputs keep full values)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fmt_value(v: Any, digits: int = 3) -> str:
    """A float to ``digits`` decimals; ``None`` as ``-``; anything else as ``str``."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def fmt_ci(ci: Sequence[float] | None, digits: int = 3) -> str:
    """A 95 % interval as ``(lo-hi)``; empty when there is none."""
    if not ci or len(ci) != 2 or any(x is None for x in ci):
        return ""
    return f"({ci[0]:.{digits}f}-{ci[1]:.{digits}f})"


def fmt_metric(v: Any, ci: Sequence[float] | None = None, digits: int = 3) -> str:
    """``0.812 (0.700-0.900)``, or ``0.812`` without an interval, or ``-`` when undefined."""
    interval = fmt_ci(ci, digits)
    return f"{fmt_value(v, digits)} {interval}" if interval else fmt_value(v, digits)


def printable(text: str) -> str:
    """``text`` writable as UTF-8: bytes of a file name that were not UTF-8 (Python keeps them as
    lone surrogates) shown as ``\\xff`` escapes. Ids and reasons made from such names reach JSON,
    CSV and logs; the file itself is still read through its real path."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
