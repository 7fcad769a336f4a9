"""What machine a benchmark ran on: CPU, cores, memory, GPU, library versions."""

from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata
from typing import Any

import torch

LIBRARIES = (
    "torch",
    "monai",
    "pytorch-lightning",
    "hydra-core",
    "pydicom",
    "nibabel",
    "numpy",
    "scipy",
    "onnxruntime",
    "SimpleITK",
    "spinelesion",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    from spinelesion.io.limits import meminfo_bytes

    total = meminfo_bytes("MemTotal")
    return None if total is None else round(total / 2**30, 1)


def describe() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "bf16": torch.cuda.is_bf16_supported(),
            "cuda": torch.version.cuda,
        }
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": memory_gib(),
        "gpu": gpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }
