"""spinelesion: lesion compartment and vertebral fracture classification on spine MRI."""

from __future__ import annotations

__version__ = "0.1.0"
