"""One run, one output folder: a lock file, the output marker, and cleanup of leftovers.

Two runs writing into one folder would mix their files and ``run.json``; the second is
refused while the first lives. The lock is the kernel's (``flock`` on the lock file, held for
the run): it is released when its holder dies (kill -9, a crash), whatever process id may be
reused since, and the next run takes it over with a warning. The file names the holder (pid,
host, command, start) for the refusal's message. Where ``fcntl`` is missing (Windows) the
holder's pid decides: a lock naming a process that no longer exists on this machine is stale. Once
the lock is held, temporaries left by an interrupted run are removed, and the folder is
marked as an output folder so that discovery never reads it as input. For the whole run,
no write below the folder follows a symbolic link (:func:`spinelesion.atomic.guarded_folder`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spinelesion.atomic import clean_temporaries, guarded_folder, refuse_symlinks
from spinelesion.io.limits import OUTPUT_MARKER

log = logging.getLogger(__name__)

LOCK_NAME = ".spinelesion.lock"


class RunLockError(RuntimeError):
    """Another live run holds the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(lock: Path) -> dict[str, Any]:
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _stale(holder: dict[str, Any]) -> bool:
    """A lock is stale when its process is gone; a lock from another host is never judged stale."""
    if holder.get("host") not in (None, socket.gethostname()):
        return False
    try:
        return not _alive(int(holder["pid"]))
    except (KeyError, TypeError, ValueError):
        return True  # unreadable or half-written lock: its writer died before finishing it


_held: dict[Path, int] = {}  # lock path -> the descriptor holding its flock, for this process's runs


def _busy(folder: Path, lock: Path, holder: dict[str, Any]) -> RunLockError:
    return RunLockError(
        f"output folder {folder} is in use by another run ({holder.get('command', '?')}, pid "
        f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}); "
        f"wait for it or choose another output_dir (a lock left by a crash is taken over "
        f"automatically once its process is gone: {lock})"
    )


def _acquire_flock(folder: Path, lock: Path, info: dict[str, Any]) -> Path:
    import fcntl

    for _ in range(3):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(folder, lock, _read(lock)) from None
        try:  # the path must still name the file we locked (a releasing run unlinks it)
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        before = _read(lock)
        if before.get("pid") not in (None, os.getpid()):
            log.warning(
                "taking over the lock of a run that no longer holds it (pid %s, started %s): %s",
                before.get("pid"),
                before.get("started"),
                lock,
            )
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode("utf-8"))
        _held[lock] = fd
        return lock
    raise RunLockError(f"could not take the lock {lock} (another run keeps recreating it)")


def _acquire_pid_file(folder: Path, lock: Path, info: dict[str, Any]) -> Path:
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(lock)
            if not _stale(holder):
                raise _busy(folder, lock, holder) from None
            log.warning(
                "removing a stale lock of a run that no longer exists (pid %s, started %s): %s",
                holder.get("pid"),
                holder.get("started"),
                lock,
            )
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(info, fh)
        return lock
    raise RunLockError(f"could not take the lock {lock} (another run keeps recreating it)")


def acquire(folder: str | os.PathLike[str], command: str = "spinelesion") -> Path:
    """Take ``folder``'s lock or raise :class:`RunLockError`; returns the lock path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = refuse_symlinks(folder / LOCK_NAME, root=folder)  # a planted link is not a lock to judge
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        import fcntl  # noqa: F401 - POSIX only
    except ImportError:
        return _acquire_pid_file(folder, lock, info)
    return _acquire_flock(folder, lock, info)


def check_free(folder: str | os.PathLike[str]) -> None:
    """Raise :class:`RunLockError` when a live run holds ``folder``'s lock; takes nothing. For
    Hydra's callback: a refused second run must not write its log and ``.hydra/`` first."""
    lock = Path(folder) / LOCK_NAME
    if not lock.is_file() or lock.is_symlink():
        return
    try:
        import fcntl
    except ImportError:
        if not _stale(_read(lock)):
            raise _busy(Path(folder), lock, _read(lock)) from None
        return
    fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(Path(folder), lock, _read(lock)) from None
    finally:
        os.close(fd)  # drops the probe's shared lock


def release(lock: Path) -> None:
    """Remove the lock if it is still ours (and drop the kernel's lock with it)."""
    fd = _held.pop(lock, None)
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)
        return
    if _read(lock).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


@contextlib.contextmanager
def output_folder(folder: str | os.PathLike[str], command: str = "spinelesion") -> Iterator[Path]:
    """Hold ``folder`` for one run: lock it, clean leftovers, mark it as output, refuse symbolic
    links below it; release at the end."""
    folder = Path(folder)
    lock = acquire(folder, command)
    try:
        with guarded_folder(folder):
            clean_temporaries(folder)
            marker = refuse_symlinks(folder / OUTPUT_MARKER)
            if not marker.exists():
                marker.write_text(
                    "written by spinelesion; input discovery skips this folder\n", encoding="utf-8"
                )
            yield folder
    finally:
        release(lock)
