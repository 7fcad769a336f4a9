#!/usr/bin/env python
"""Seal the inference settings of model folders written before 2026-12-06 (no ``inference_sha256``
in their metadata.json), after checking their weights' hash: only for model folders you trust.

A model written since then carries the seal; loading refuses one without it (issue 37).

Usage: python scripts/seal_model.py MODEL_DIR [MODEL_DIR ...]
       (e.g. every model of a release work folder: ~/.cache/spinelesion/release/spinelesion-demo/*/model)
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from spinelesion.models.folder import METADATA, WEIGHTS, sha256_of, write_metadata

log = logging.getLogger("seal_model")


def seal_folder(folder: Path) -> bool:
    """Seal one folder; False (and why, logged) when its weights do not match their recorded hash."""
    meta = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    weights = folder / str(meta.get("weights", WEIGHTS))
    if sha256_of(weights) != meta.get("weights_sha256"):
        log.error("%s: weights do not match weights_sha256; not sealed", folder)
        return False
    write_metadata(folder, meta)
    log.info("%s: sealed", folder)
    return True


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not argv:
        log.error(__doc__)
        return 2
    return 0 if all([seal_folder(Path(a)) for a in argv]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
