"""DICOM series reading: ours against SimpleITK's ``ImageSeriesReader`` on the same files.

Both read pixels and geometry of one series folder from scratch each time: ours is
:func:`spinelesion.io.dicom.read_dicom_folder` (walk, parse, group, sort along the normal,
check, decode, rescale to float32); SimpleITK's is GDCM series discovery
(``GetGDCMSeriesFileNames``) plus ``ImageSeriesReader.Execute``. Each is warmed up once
(the files are then in the page cache for both), then timed ``repeats`` times, the two
interleaved so that load from other processes hits both alike. The results also say
whether both readers agree on the voxels and the affine.

Run: ``python -m spinelesion.benchmark.data_read FOLDER [--repeats 5]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spinelesion.portable import portable_path

log = logging.getLogger(__name__)


def _summary(times: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": len(times),
    }


def _sitk_reader(folder: Path) -> Callable[[], Any]:
    import SimpleITK as sitk

    def read() -> Any:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), "", False, True)  # recursive
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        return reader.Execute()

    return read


def sitk_volume(image: Any) -> tuple[np.ndarray, np.ndarray]:
    """(array in (i, j, k) order, voxel-to-LPS affine) of a SimpleITK image (ITK is LPS)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())[None]
    affine[:3, 3] = image.GetOrigin()
    return array, affine


def bench_dicom_read(folder: str | os.PathLike[str], repeats: int = 5) -> dict[str, Any]:
    """Seconds to read one DICOM series folder (pixels + geometry): ours and SimpleITK's.

    Returns:
        ``{"folder", "files", "shape", "spinelesion": {median_s, min_s, max_s, repeats},
        "simpleitk": {...} | "not installed", "speedup_vs_simpleitk": median(sitk) / median(ours)
        (> 1: ours is faster), "agreement": {max_abs_diff, affine_max_diff}, "conditions"}``.
    """
    from spinelesion.io.dicom import read_dicom_folder

    folder = Path(folder)
    ours_fn = lambda: read_dicom_folder(folder)  # noqa: E731
    volume = ours_fn()  # warm-up
    out: dict[str, Any] = {
        "folder": portable_path(folder),
        "files": len(volume.meta.get("files", [])),
        "shape": list(volume.shape),
        "conditions": {
            "cpus": os.cpu_count(),
            "repeats": repeats,
            "warmup": 1,
            "cache": "warm (page cache)",
            "note": "wall-clock; other processes on the machine add noise",
        },
    }
    try:
        sitk_fn = _sitk_reader(folder)
        image = sitk_fn()  # warm-up
    except ImportError:
        sitk_fn = None
        out["simpleitk"] = "not installed"
    fns: dict[str, Callable[[], Any]] = {"spinelesion": ours_fn}
    if sitk_fn is not None:
        fns["simpleitk"] = sitk_fn
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():  # interleaved: a burst of load hits both
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    for name, t in times.items():
        out[name] = _summary(t)
    if sitk_fn is not None:
        out["speedup_vs_simpleitk"] = round(out["simpleitk"]["median_s"] / out["spinelesion"]["median_s"], 3)
        ref_array, ref_affine = sitk_volume(image)
        same_shape = ref_array.shape == volume.array.shape
        out["agreement"] = {
            "same_shape": same_shape,
            "max_abs_diff": float(np.abs(ref_array.astype(np.float64) - volume.array).max())
            if same_shape
            else None,
            "affine_max_diff": float(np.abs(ref_affine - volume.affine).max()),
        }
    return out


def bench_discovery(folder: str | os.PathLike[str], repeats: int = 5) -> dict[str, Any]:
    """Seconds to list the series of a folder (headers only): ours against GDCM's series ids."""
    from spinelesion.io.dicom.discover import discover_series

    folder = Path(folder)
    fns: dict[str, Callable[[], Any]] = {"spinelesion": lambda: discover_series(folder)}
    try:
        import SimpleITK as sitk

        fns["simpleitk"] = lambda: [
            sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid, False, True)
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        ]
    except ImportError:
        pass
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    out: dict[str, Any] = {"folder": portable_path(folder), **{k: _summary(v) for k, v in times.items()}}
    if "simpleitk" in out:
        out["speedup_vs_simpleitk"] = round(out["simpleitk"]["median_s"] / out["spinelesion"]["median_s"], 3)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="DICOM series folders (one series each)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = [
        {"read": bench_dicom_read(f, args.repeats), "discovery": bench_discovery(f, args.repeats)}
        for f in args.folders
    ]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
