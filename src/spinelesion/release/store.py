"""The work folder of a release: one folder per stage, kept under a key of the stage's inputs.

A stage's key hashes its kind and parameters, the keys of the stages it reads, and the source
its kind runs (the files under ``src/spinelesion`` and ``configs/`` its
:class:`~spinelesion.release.recipe.Kind` lists). A finished stage leaves ``done.json`` (key, seconds, when); a run
skips a stage whose ``done.json`` has its current key, and reruns one whose inputs changed. A
stage that was interrupted has a folder without ``done.json``: it runs again in the same folder
(training resumes from its last checkpoint there).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinelesion.atomic import write_json
from spinelesion.release.recipe import KINDS, Stage

PACKAGE = Path(__file__).resolve().parents[1]  # src/spinelesion
CONFIGS = PACKAGE.parents[1] / "configs"


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(path.anchor)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_hash(kind: str, package: Path = PACKAGE, configs: Path = CONFIGS) -> str:
    """The source a stage kind runs: its listed package paths' Python files and the configs its
    command reads (an edit elsewhere, say to the benchmark's config, leaves its stages done)."""
    files: list[Path] = []
    for root, rels, pattern in (
        (package, KINDS[kind].code, "*.py"),
        (configs, KINDS[kind].configs, "*.yaml"),
    ):
        for rel in rels:
            path = root / rel
            files += sorted(path.rglob(pattern)) if path.is_dir() else [path] if path.is_file() else []
    return _hash_files([f for f in files if "__pycache__" not in f.parts])


def folder_hash(folder: Path) -> str:
    """The contents of every file under ``folder`` (an imported model: its weights and metadata)."""
    return (
        _hash_files(sorted(p for p in Path(folder).rglob("*") if p.is_file()))
        if Path(folder).is_dir()
        else "absent"
    )


def stage_key(stage: Stage, upstream: Mapping[str, str], code: str) -> str:
    """16 hex digits of the hash of a stage's kind, parameters, inputs' keys and code."""
    blob = json.dumps(
        {
            "kind": stage.kind,
            "params": stage.params,
            "inputs": {n: upstream[n] for n in stage.needs},
            "code": code,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class WorkFolder:
    root: Path

    def folder(self, stage: Stage) -> Path:
        return self.root / stage.name

    def record(self, stage: Stage) -> dict[str, Any] | None:
        path = self.folder(stage) / "done.json"
        if not path.is_file():
            return None
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    def stamp(self, stage: Stage) -> str | None:
        """Which run of a finished stage this is (its key and finish time); None when not done."""
        rec = self.record(stage)
        return None if rec is None else f"{rec.get('key')}@{rec.get('at')}"

    def is_done(self, stage: Stage, key: str, inputs: Mapping[str, str | None] | None = None) -> bool:
        """Finished under ``key`` and, when ``inputs`` (name -> :meth:`stamp`) are given, from those
        very runs of its inputs: a rerun input makes its readers stale even with the same key."""
        rec = self.record(stage)
        if rec is None or rec.get("key") != key:
            return False
        return inputs is None or dict(rec.get("inputs") or {}) == dict(inputs)

    def started_key(self, stage: Stage) -> str | None:
        """The key an unfinished run of the stage started under (None: never started, or finished)."""
        started = self.folder(stage) / "started.json"
        if self.record(stage) is not None or not started.is_file():
            return None
        try:
            key = json.loads(started.read_text()).get("key")
        except (OSError, ValueError):
            return None
        return str(key) if key else None

    def start(self, stage: Stage, key: str) -> Path:
        """The stage's folder, ready to run: an earlier finished run under another key is cleared
        (its outputs no longer match the inputs); an interrupted run under the same key is kept."""
        import shutil

        folder = self.folder(stage)
        started = folder / "started.json"
        previous = None
        if started.is_file():
            try:
                previous = json.loads(started.read_text()).get("key")
            except (OSError, ValueError):
                previous = None
        if folder.exists() and (previous != key or self.record(stage) is not None):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(started, {"key": key, "stage": stage.name, "kind": stage.kind, "at": _now()})
        return folder

    def finish(
        self,
        stage: Stage,
        key: str,
        seconds: float,
        outputs: Mapping[str, Any],
        inputs: Mapping[str, str | None],
    ) -> None:
        write_json(
            self.folder(stage) / "done.json",
            {
                "key": key,
                "stage": stage.name,
                "kind": stage.kind,
                "seconds": round(seconds, 1),
                "at": _now(),
                "inputs": dict(inputs),
                "outputs": dict(outputs),
            },
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z") + f".{time.time_ns() % 1_000_000_000:09d}"
