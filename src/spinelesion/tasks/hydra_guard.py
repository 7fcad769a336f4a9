"""A Hydra callback: a run whose log file or ``.hydra/`` would be written through a symbolic link
stops before Hydra writes anything (one line, exit code 2).

Hydra opens its log file and writes ``.hydra/`` in the run folder (``output_dir``) before the
task starts, so the task's own guard (:func:`spinelesion.atomic.guarded_folder`) comes too late
for them. Configured for every command in ``configs/hydra/default.yaml``.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from spinelesion.atomic import refuse_symlinks
from spinelesion.tasks.arguments import run_main

log = logging.getLogger("spinelesion")

HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
"""What Hydra writes into ``hydra.output_subdir`` (``.hydra/``)."""


def hydra_writes(config: DictConfig) -> tuple[Path, list[Path]]:
    """The run folder of a composed config (its ``hydra`` node included) and the paths Hydra
    will write in it: the job's log files, ``.hydra/`` and its files."""
    cfg = copy.deepcopy(config)
    run_dir = Path(str(cfg.hydra.run.dir))
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = os.path.abspath(run_dir)  # set by Hydra only once the job starts
    paths = []
    handlers = OmegaConf.select(cfg, "hydra.job_logging.handlers") or {}
    for name, handler in handlers.items():
        try:
            filename = handler.get("filename") if isinstance(handler, DictConfig) else None
        except OmegaConfBaseException as exc:  # an interpolation only Hydra's job can resolve
            log.debug("log handler %s: filename not checked (%s)", name, exc)
            continue
        if filename:
            paths.append(Path(str(filename)))
    subdir = cfg.hydra.get("output_subdir")
    if subdir is not None:
        paths.append(run_dir / str(subdir))
        paths.extend(run_dir / str(subdir) / name for name in HYDRA_FILES)
    return run_dir, paths


PSEUDO_FILESYSTEMS = ("/proc", "/sys")
"""Kernel interfaces, never an output folder."""


def check_writable_folder(folder: Path) -> None:
    """Raise :class:`ValueError` (one line, exit 2) when ``folder`` cannot be an output folder: it
    is a file, lies under a file or a kernel interface, or cannot be written."""
    absolute = Path(os.path.abspath(folder))
    if any(absolute == Path(p) or Path(p) in absolute.parents for p in PSEUDO_FILESYSTEMS):
        raise ValueError(
            f"output folder {folder}: lies under a kernel interface ({', '.join(PSEUDO_FILESYSTEMS)})"
        )
    if absolute.exists() and not absolute.is_dir():
        raise ValueError(f"output folder {folder}: is a file, not a folder")
    existing = absolute
    while not existing.exists():  # the nearest part that exists must be a writable folder
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"output folder {folder}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {folder}: {existing} is not writable")


def check_run_folder(config: DictConfig) -> None:
    """Raise when Hydra could not write its run folder (one line, exit 2, instead of Hydra's
    traceback), or when a path it writes below the run folder goes through a symbolic link
    (:class:`spinelesion.atomic.SymlinkRefusedError`; the run folder itself may be one)."""
    from spinelesion.inference.run_lock import check_free

    run_dir, paths = hydra_writes(config)
    check_writable_folder(run_dir)
    check_free(run_dir)  # a run holds it: its log and .hydra/ stay as they are
    for path in paths:
        refuse_symlinks(path, root=run_dir)


_started: list[bool] = []  # set once Hydra composed the config and starts the run


def run_started() -> bool:
    """Whether Hydra got as far as starting the run (its config composed: every key known)."""
    return bool(_started)


class RefuseSymlinks(Callback):
    """Checks the run folder before Hydra configures its log file (``on_run_start``)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _started.append(True)
        run_main(check_run_folder, config, log)
