"""Finding DICOM series in a folder: headers only, any layout.

Real exports are messy: files without extension, nested folders, several series and
studies side by side, DICOMDIR index files, text files, reports and RT objects, and old
files written without the 128-byte preamble. Discovery reads only the start of each file
(the header; pixels are never read here) and groups files by SeriesInstanceUID.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pydicom
from pydicom.dataset import Dataset

from spinelesion.io.dicom.deflate import check_inflated_size
from spinelesion.io.dicom.errors import DicomError, SeriesContext, series_label
from spinelesion.io.limits import (
    LIMITS,
    MIB,
    ResourceLimitError,
    check_dicom_size,
    human,
    is_output_folder,
    regular_size,
    special_file_reason,
)

log = logging.getLogger(__name__)

# Storage classes that carry no image to classify (SR, presentation states, RT objects,
# key objects, waveforms, encapsulated documents, segmentations, raw data, spectroscopy).
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.481.",  # RT (plan, struct, dose, ...)
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, segmentation, surfaces
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
    "1.2.840.10008.5.1.4.1.1.4.2",  # MR spectroscopy
    "1.3.12.2.1107.5.9.1",  # Siemens CSA non-image (protocol, spectroscopy raw data)
)
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map: a derived map (our saliency), not an acquisition
}
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
HEADER_BYTES = 64 * 1024
"""Discovery reads this much of each file; longer headers (enhanced multi-frame) are read whole."""
IO_THREADS = 4
"""File reads overlap with parsing (the parser holds the GIL, the reads do not)."""

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class SeriesInfo:
    """One series found in a folder: its files, their headers (no pixels), the first header."""

    series_uid: str
    study_uid: str
    files: list[Path] = field(default_factory=list)
    header: Dataset | None = None
    headers: list[Dataset] = field(default_factory=list)  # one per file, pixels not read
    # files in the series' folders that could not be read or parsed: a gap in the series may be one
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def description(self) -> str:
        return str(self.header.get("SeriesDescription", "")) if self.header is not None else ""

    @property
    def number(self) -> int | None:
        value = self.header.get("SeriesNumber") if self.header is not None else None
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    @property
    def label(self) -> str:
        return series_label(self.number, self.description, len(self.files))

    @property
    def is_image(self) -> bool:
        return non_image_reason(self.header) is None if self.header is not None else False

    @property
    def context(self) -> SeriesContext:
        return SeriesContext(
            common_folder(self.files),
            self.series_uid,
            self.study_uid or None,
            series_label(self.number, self.description),
        )

    def unusable_reason(self) -> str | None:
        """Why this series cannot become a volume, judged from its first header, or None."""
        if self.header is None:
            return "no readable header"
        return non_image_reason(self.header) or geometry_reason(self.header)


def common_folder(files: Iterable[Path]) -> Path:
    files = list(files)
    if not files:
        return Path(".")
    try:
        return Path(os.path.commonpath([str(f.parent) for f in files]))
    except ValueError:  # different drives
        return files[0].parent


def non_image_reason(ds: Dataset) -> str | None:
    """Why a dataset is not an image we can use, or None."""
    sop = str(ds.get("SOPClassUID", "")) or str(
        getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")
    )
    if sop == MEDIA_DIRECTORY:
        return "a DICOMDIR index, not an image"
    if sop in NON_IMAGE_SOP_CLASSES or any(sop.startswith(p) for p in NON_IMAGE_SOP_PREFIXES):
        name = getattr(ds.get("SOPClassUID"), "name", sop)
        return f"not an image ({name})"
    if "Rows" not in ds or "Columns" not in ds:
        modality = ds.get("Modality", "")
        return f"not an image (no Rows/Columns; SOP class {sop or 'unknown'}{', modality ' + modality if modality else ''})"
    return None


def geometry_reason(ds: Dataset) -> str | None:
    """Why an image header cannot be placed in patient space or stacked, or None."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return (
            f"colour image (SamplesPerPixel {ds.get('SamplesPerPixel')}, "
            f"{ds.get('PhotometricInterpretation', '')}), not a grayscale volume"
        )
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return None  # enhanced multi-frame: geometry lives in the functional groups
    missing = [t for t in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if t not in ds]
    if missing:
        return f"no patient geometry (missing {', '.join(missing)}); e.g. a screenshot or a projection"
    return None


def walk(top: str | os.PathLike[str]) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top)`` (top-down, symbolic links to folders listed but not entered, unreadable
    folders skipped) without recursion: Python 3.11's ``os.walk`` recurses once per level, so a
    series 1,100 folders deep raised RecursionError and aborted the whole run. The caller may
    prune ``dirs`` in place, as with ``os.walk``."""
    stack = [os.fspath(top)]
    while stack:
        root = stack.pop()
        try:
            with os.scandir(root) as it:
                entries = list(it)
        except OSError:
            continue
        dirs: list[str] = []
        files: list[str] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(entry.name)
        yield root, dirs, files
        for name in reversed(dirs):  # popped in the order the caller left them
            path = os.path.join(root, name)
            if not os.path.islink(path):
                stack.append(path)


OUTPUT_FOLDER_REASON = (
    "an output folder of an earlier run (it holds .spinelesion-output or run.json and failed_studies.csv): "
    "not read as input; move the marker away to predict what it holds"
)


def iter_files(
    folder: Path,
    skipped: list[tuple[Path, str]] | None = None,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[Path]:
    """Every regular file below ``folder`` (recursive, hidden files skipped), in a stable order.

    Pipes, sockets and devices are never yielded (opening a pipe blocks forever); they go
    to ``skipped`` with the reason. Folders in ``exclude`` and output folders of earlier
    runs (see :func:`~spinelesion.io.limits.is_output_folder`) are not entered.
    """
    excluded = {os.path.realpath(e) for e in exclude}
    for root, dirs, files in walk(folder):
        kept = []
        for d in sorted(dirs):
            sub = os.path.join(root, d)
            if d.startswith(".") or os.path.realpath(sub) in excluded:
                continue
            if is_output_folder(sub):  # named, never silently lost: a study folder may hold a stray marker
                if skipped is not None:
                    skipped.append((Path(sub), OUTPUT_FOLDER_REASON))
                continue
            kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            reason = special_file_reason(path)
            if reason:
                if skipped is not None:
                    skipped.append((path, reason))
                continue
            yield path


def prefetch(
    fn: Callable[[T], R], items: Iterable[T], workers: int | None = None, window: int = 64
) -> Iterator[R]:
    """``map(fn, items)`` in order, with up to ``window`` calls running ahead in threads.

    The window bounds memory on huge folders, unlike ``ThreadPoolExecutor.map``, which
    submits everything at once.
    """
    items = list(items)
    workers = IO_THREADS if workers is None else workers
    if workers <= 1 or len(items) < 4:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[Future[R]] = []
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                break
        while pending:
            result = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield result


def sniff(head: bytes) -> str | None:
    """``'part10'`` (preamble + DICM), ``'raw'`` (a bare dataset, as old exports write), or None."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "part10"
    # No preamble: a dataset that starts with a group 0x0002 or 0x0008 tag, either byte order.
    if len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        return "raw"
    return None


def parse_header(path: Path, head: bytes, complete: bool) -> Dataset:
    """Header (no pixels) from the first bytes of a file; the whole file when they are not enough.

    Raises:
        DicomError: the file is not DICOM, or its header cannot be parsed.
    """
    kind = sniff(head)
    if kind is None:
        raise DicomError(path, "not a DICOM file")
    check_inflated_size(path, head)  # pydicom would inflate a deflated dataset whole
    buf = io.BytesIO(head)
    try:
        with warnings.catch_warnings():
            # Odd but readable headers (VR mismatches...) are common in exports; scanning a
            # folder should not print a warning per file. Reading the series still warns.
            warnings.simplefilter("ignore", UserWarning)
            ds: Dataset = pydicom.dcmread(buf, stop_before_pixels=True, force=kind == "raw")
            # Parsing stopped before the end of the buffer only if it met the pixel data (or
            # the file end); otherwise the prefix cut the header: read more, within budget.
            if not complete and buf.tell() >= len(head):
                ds, end, size = _parse_long_header(path, kind)
            else:
                end, size = buf.tell(), None
    except DicomError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt input
        raise DicomError(path, f"unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
    if not complete:
        try:
            check_dicom_size(path, ds, size if size is not None else regular_size(path), end)
        except (ResourceLimitError, OSError) as exc:
            raise DicomError(path, str(exc).removeprefix(f"{path}: ")) from exc
    check_identity(ds, path, kind)
    return ds


def _parse_long_header(path: Path, kind: str) -> tuple[Dataset, int, int]:
    """A header longer than the prefix, parsed from at most ``LIMITS.header_bytes``: a valid
    header followed by gigabytes of zeros would otherwise be parsed for minutes."""
    size = regular_size(path)
    with open(path, "rb") as fh:
        data = fh.read(min(size, LIMITS.header_bytes))
    # Parsing zeros costs ~0.3 s per MB; a header never continues with a megabyte of them.
    tail = data[max(HEADER_BYTES - 4096, 0) : HEADER_BYTES + MIB]
    if len(tail) > MIB and not tail.strip(b"\0"):
        raise DicomError(
            path, f"only zero bytes where the header should continue ({human(size)} file): padded or damaged"
        )
    buf = io.BytesIO(data)
    ds = pydicom.dcmread(buf, stop_before_pixels=True, force=kind == "raw")
    if buf.tell() >= len(data) and size > len(data):
        raise DicomError(
            path,
            f"no pixel data within the first {human(len(data))} of a {human(size)} file "
            "(header too long or file damaged; limit: limits.header_mb)",
        )
    return ds, buf.tell(), size


def check_identity(ds: Dataset, path: Path, kind: str | None) -> None:
    """Refuse what parsed but is no DICOM object: no SOP class and no series UID."""
    if "SOPClassUID" in ds or "SeriesInstanceUID" in ds or "DirectoryRecordSequence" in ds:
        return
    if kind == "raw":
        raise DicomError(path, "not a DICOM file")
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY:
        return
    raise DicomError(path, "damaged or truncated DICOM header (no SOP class or series UID)")


def read_prefix(path: Path) -> tuple[bytes, bool]:
    """The first :data:`HEADER_BYTES` of a regular file and whether that is the whole file."""
    reason = special_file_reason(path)
    if reason:
        raise OSError(reason)
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    return head, len(head) < HEADER_BYTES


def read_header(path: Path) -> Dataset:
    """Header of one file (pixels not read). Raises :class:`DicomError` for non-DICOM files."""
    try:
        head, complete = read_prefix(path)
    except OSError as exc:
        raise DicomError(path, f"cannot read the file ({exc})") from exc
    return parse_header(path, head, complete)


def _safe_prefix(path: Path) -> tuple[bytes, bool] | OSError:
    try:
        return read_prefix(path)
    except OSError as exc:
        return exc


def discover_series(
    folder: str | os.PathLike[str], progress: bool = False, exclude: Iterable[str | os.PathLike[str]] = ()
) -> tuple[list[SeriesInfo], list[tuple[Path, str]]]:
    """Every DICOM series under ``folder`` (headers only), and the files skipped with why.

    Non-image series (reports, RT objects...) are returned too; use ``SeriesInfo.is_image``
    or ``SeriesInfo.unusable_reason()``. DICOMDIR files and non-DICOM files are skipped,
    so are pipes and devices, folders in ``exclude`` and earlier runs' output folders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(folder, "not a folder" if folder.exists() else "does not exist")
    series: dict[str, SeriesInfo] = {}
    skipped: list[tuple[Path, str]] = []
    files = list(iter_files(folder, skipped, exclude))
    for path, reason in skipped:
        log.warning("%s: %s", path, reason)
    results: Iterable[tuple[bytes, bool] | OSError] = prefetch(_safe_prefix, files)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(files), desc=f"scanning {folder.name}", unit="file")
    lost: list[tuple[Path, str]] = []  # unreadable, or DICOM-looking but unparsable: maybe a slice
    for path, got in zip(files, results, strict=True):
        if isinstance(got, OSError):
            skipped.append((path, f"cannot read the file ({got})"))
            lost.append(skipped[-1])
            continue
        try:
            ds = parse_header(path, *got)
        except DicomError as exc:
            if exc.reason != "not a DICOM file":
                log.warning("%s", exc)  # looks like DICOM but cannot be parsed: may be a lost slice
                lost.append((path, exc.reason))
            skipped.append((path, exc.reason))
            continue
        sop = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", ""))
        if sop == MEDIA_DIRECTORY or "DirectoryRecordSequence" in ds:
            skipped.append((path, "DICOMDIR index file (lists the export; not an image)"))
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or f"no-series-uid:{path.parent}"
        info = series.setdefault(uid, SeriesInfo(uid, str(ds.get("StudyInstanceUID", ""))))
        info.files.append(path)
        info.headers.append(ds)
        if info.header is None:
            info.header = ds
    for info in series.values():  # a series with a gap names the unreadable files beside it
        folders = {f.parent for f in info.files}
        info.unreadable = [(path, why) for path, why in lost if path.parent in folders]
    if skipped:
        log.debug("%s: skipped %d file(s), e.g. %s: %s", folder, len(skipped), skipped[0][0], skipped[0][1])
    return list(series.values()), skipped
