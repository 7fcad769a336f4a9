"""The release script's refresh-stage mix (the drawn sets of the release mix and its own mined
rounds) and its choice of real studies for the held-out-dataset scan."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "train_release_model", ROOT / "scripts" / "train_release_model.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refresh_mix_drops_old_mined_rounds_and_keeps_every_drawn_set() -> None:
    script = load_script()
    mix = script.refresh_mix()
    assert mix.startswith("[") and mix.endswith("]")
    names = [Path(m).parent.name for m in mix[1:-1].split(",")]
    listed = yaml.safe_load((ROOT / "configs" / "experiment" / "release_finetune.yaml").read_text())
    release = [Path(m).parent.name for m in listed["data"]["manifest"]]
    drawn = [n for n in release if "hardneg" not in n]
    # every drawn set, in the release's order, then this stage's rounds: none mined on the old texture
    rounds = [folder for pair in script.REFRESH_ROUNDS for folder in pair]
    assert names == drawn + rounds
    assert {"train400", "real-insert", "phantom-cord"} <= set(names)
    assert not set(names) & {n for n in release if "hardneg" in n}
    first = [Path(m).parent.name for m in script.refresh_mix(1)[1:-1].split(",")]
    assert first == drawn + list(script.REFRESH_ROUNDS[0])


def test_held_out_dataset_scan_takes_unused_studies_named_by_sequence(tmp_path: Path) -> None:
    script = load_script()
    normals, real = tmp_path / "real-normals", tmp_path / "real"
    for folder, files in {
        normals / "vb2_01": ["t2.nii.gz", "t2_bodies.nii.gz"],  # a training subject
        normals / "other_t1t2": ["t1.nii.gz", "t2.nii.gz", "t2star.nii.gz", "cord_t2.nii.gz"],
        real / "cervical": ["t2.nii.gz", "t2_seg-manual.nii.gz"],
        real / "abdomen": ["example_mr_sm.nii.gz"],  # sequence not stated: never guessed
        real / "ct": ["dicom"],
    }.items():
        folder.mkdir(parents=True)
        for name in files:
            (folder / name).write_bytes(b"")
    found = script.unused_real_studies([normals, real, tmp_path / "absent"], {"vb2_01"})
    assert list(found) == ["cervical", "other_t1t2"]
    assert found["other_t1t2"] == {
        "t1": normals / "other_t1t2" / "t1.nii.gz",
        "t2": normals / "other_t1t2" / "t2.nii.gz",
    }
    assert found["cervical"] == {"t2": real / "cervical" / "t2.nii.gz"}
