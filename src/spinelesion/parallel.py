"""Jobs over worker processes, in order (results do not depend on the number of workers)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def map_jobs(
    fn: Callable[[Any], T],
    jobs: Iterable[Any],
    workers: int,
    initializer: Callable[[], None] | None = None,
) -> Iterator[T]:
    """``fn`` over ``jobs`` in this process (``workers <= 1``, or inside a pool's worker, which may
    not start processes of its own) or a pool, yielding in job order. ``initializer`` runs once
    in each worker process (never in this one)."""
    if workers <= 1 or multiprocessing.current_process().daemon:
        for job in jobs:
            yield fn(job)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=initializer) as pool:
        yield from pool.map(fn, jobs, chunksize=1)
