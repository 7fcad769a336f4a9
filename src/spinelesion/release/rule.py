"""The release rule: lines written before measuring (the recipe's ``rule``), judged on the
candidate model's recorded checks.

A line names a value by its path in the model's metadata (dots between keys, e.g.
``real_anatomy.scan_untouched_heldout.false_calls_per_study``), a comparison and a target. A
value that is missing or not a number fails its line: a check that did not run passes nothing.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from spinelesion.config_schema import ConfigError

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def lookup(meta: Mapping[str, Any], path: str) -> Any:
    node: Any = meta
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def check_rule(lines: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rule's lines, each {what, op, target}, checked before anything runs."""
    out = []
    for i, line in enumerate(lines):
        what, op, target = line.get("what"), line.get("op"), line.get("target")
        if not isinstance(what, str) or op not in OPS or not isinstance(target, int | float):
            raise ConfigError(
                f"release rule line {i + 1}: needs what (a metadata path), op ({', '.join(OPS)}) and a "
                f"numeric target, got {dict(line)}"
            )
        out.append({"what": what, "op": op, "target": float(target), "why": str(line.get("why", ""))})
    return out


def judge_rule(meta: Mapping[str, Any], lines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every line with its value and verdict; passed when all pass."""
    judged = []
    for line in check_rule(lines):
        value = lookup(meta, line["what"])
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        ok = number is not None and math.isfinite(number) and OPS[line["op"]](number, line["target"])
        judged.append({**line, "value": value, "passed": bool(ok)})
    return {"passed": all(j["passed"] for j in judged), "lines": judged}
