"""Micro-benchmarks of single components (e.g. :mod:`.data_read`: DICOM reading against SimpleITK)."""
