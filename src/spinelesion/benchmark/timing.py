"""Timing and memory measurement: median of repeats after a warm-up, with the spread shown."""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

SPREAD_LIMIT = 0.5  # (max - min) / median above this: the figure is flagged as not to be trusted


def measure(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, sync_cuda: bool = False
) -> dict[str, Any]:
    """Seconds per call: median, min, max over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        if sync_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    spread = (max(times) - min(times)) / med if med > 0 else 0.0
    return {
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
        "spread": round(spread, 3),
        "trustworthy": spread <= SPREAD_LIMIT,
    }


def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """median(a) / median(b)."""
    return float(a["median_s"]) / max(float(b["median_s"]), 1e-12)


def _read_hwm_kib() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory(fn: Callable[[], Any]) -> dict[str, float | None]:
    """Peak resident memory of this process during ``fn`` (Linux: VmHWM after a reset), and
    peak CUDA memory when on a GPU. None where the platform cannot tell."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    reset = False
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")  # resets the peak RSS counter
        reset = True
    except OSError:
        pass
    fn()
    hwm = _read_hwm_kib()
    return {
        "peak_rss_mib": round(hwm / 1024, 1) if (hwm is not None and reset) else None,
        "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }
