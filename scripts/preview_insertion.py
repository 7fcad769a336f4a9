#!/usr/bin/env python
"""Pictures of every finding inserted into a real normal study -> docs/images/insert_*.png, of the
same study under random appearances -> docs/images/appearance_*.png, of the plain renderer's
findings (the outside-check proxy) in a held-out one -> docs/images/plain_*.png, and of a real T2
imaged as T1 and STIR beside real ones of another site -> docs/images/contrast_*.png, and of healed
fractures at the mildest Genant ratio drawn -> docs/images/fractures_*.png.

Usage: python scripts/preview_insertion.py [backgrounds folder] [study id ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from spinelesion.insert.background import discover_backgrounds
from spinelesion.insert.preview import (
    write_appearance_preview,
    write_contrast_preview,
    write_fracture_preview,
    write_insertion_preview,
    write_plain_preview,
)

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    cfg = yaml.safe_load((ROOT / "configs" / "insert.yaml").read_text())
    backgrounds = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "real-normals"
    wanted = sys.argv[2:] or ["vb2_04", "tptbox_c5_c7"]
    specs = {
        s.study_id: s
        for s in discover_backgrounds(backgrounds, cfg["levels"], cfg["native_mm"], cfg.get("bottom_level"))
    }
    for study in wanted:
        out = write_insertion_preview(
            specs[study],
            cfg["rates"],
            ROOT / "docs" / "images" / f"insert_{study}.png",
            set(cfg["cord_levels"]),
        )
        print(out)
        if study.startswith("vb2"):
            fractures = ROOT / "docs" / "images" / f"fractures_{study}.png"
            print(write_fracture_preview(specs[study], cfg["rates"], fractures, set(cfg["cord_levels"])))
        print(
            write_appearance_preview(
                specs[study], cfg["appearance"], ROOT / "docs" / "images" / f"appearance_{study}.png"
            )
        )
    if "vb2_07" in specs:  # a held-out subject: the one plain_check's first rows come from
        print(
            write_plain_preview(
                specs["vb2_07"],
                ROOT / "docs" / "images" / "plain_vb2_07.png",
                cord_levels=set(cfg["cord_levels"]),
            )
        )

    multisite = ROOT.parent / "shared" / "data" / "real-multisite"
    if "vb2_04" in specs and (multisite / "vb1_02").is_dir():  # real T1 and STIR of another site beside
        others = {
            s.study_id: s
            for s in discover_backgrounds(multisite, cfg["levels"], cfg["native_mm"], cfg.get("bottom_level"))
        }
        print(
            write_contrast_preview(
                specs["vb2_04"],
                [others["vb1_02"], others["vb1_03"]],
                cfg["rates"],
                ROOT / "docs" / "images" / "contrast_vb2_04.png",
                set(cfg["cord_levels"]),
            )
        )


if __name__ == "__main__":
    main()
