"""DICOM errors that say where (file or folder, series, study) and why.

Every message reads ``<where> (series <number> '<description>', SeriesInstanceUID <uid>,
study <uid>): <reason>`` so a user with a 2,000-file export can find the culprit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class DicomError(ValueError):
    """A DICOM problem, naming where (file or series folder), which series and study, and why."""

    def __init__(
        self,
        where: str | os.PathLike[str],
        reason: str,
        series_uid: str | None = None,
        *,
        study_uid: str | None = None,
        series_label: str | None = None,
    ):
        self.where, self.reason, self.series_uid = str(where), reason, series_uid
        self.study_uid, self.series_label = study_uid, series_label
        parts = [
            p
            for p in (
                series_label,
                f"SeriesInstanceUID {series_uid}" if series_uid else None,
                f"study {study_uid}" if study_uid else None,
            )
            if p
        ]
        context = f" ({', '.join(parts)})" if parts else ""
        super().__init__(f"{where}{context}: {reason}")


class DicomSeriesError(DicomError):
    """The slices (or frames) of a series do not make one regular 3D volume."""


class DicomDecodeError(DicomError):
    """Pixel data that cannot be decoded here: a missing decoder package, a length or a
    codec-declared size that disagrees with the header, or a decoded size over the memory limit."""


class NonImageError(DicomError):
    """An object that holds no image (report, RT object, presentation state...)."""


@dataclass(frozen=True)
class SeriesContext:
    """Where a series comes from, to put in every error raised while reading it."""

    where: Path
    series_uid: str | None = None
    study_uid: str | None = None
    label: str | None = None

    def error(
        self, cls: type[DicomError], reason: str, where: str | os.PathLike[str] | None = None
    ) -> DicomError:
        return cls(
            where if where is not None else self.where,
            reason,
            self.series_uid or None,
            study_uid=self.study_uid or None,
            series_label=self.label,
        )


def series_label(number: object, description: object, n_files: int | None = None) -> str:
    """``series 3 'T2 TSE SAG' (15 files)``; parts that are unknown are left out."""
    label = "series" if number in (None, "") else f"series {number}"
    label += f" '{description or ''}'"
    if n_files is not None:
        label += f" ({n_files} file{'s' if n_files != 1 else ''})"
    return label
