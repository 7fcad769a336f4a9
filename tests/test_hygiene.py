"""No machine paths in committed files, nor in what the code writes for sharing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from spinelesion.models.folder import save_model_folder
from spinelesion.models.networks import build_network
from spinelesion.portable import portable_path, redact_paths

ROOT = Path(__file__).resolve().parents[1]
# Built from parts so this file does not match itself.
_ROOTS = "|".join(["wo" + "rk", "ro" + "ot", "ho" + "me", "tm" + "p", "Us" + "ers"])
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:" + _ROOTS + r")/[\w.-]")


def _tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    out = []
    for name in names.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and path.stat().st_size < 5_000_000:
            head = path.read_bytes()[:8192]
            if b"\0" not in head:  # text only
                out.append(path)
    return out


def test_no_machine_paths_in_tracked_files():
    offenders = []
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for i, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    assert not offenders, "absolute machine paths in committed files:\n" + "\n".join(offenders)


def test_redact_paths_keeps_relative_and_strips_absolute(tmp_path: Path):
    inside = tmp_path / "outputs" / "run"
    data = {
        "a": str(inside),
        "b": ["/srv/pacs/DOE^JANE/series1", "data/x.csv", "https://example.org/x"],
        "c": 3,
        "d": None,
    }
    out = redact_paths(data, base=tmp_path)
    assert out == {
        "a": "outputs/run",
        "b": ["series1", "data/x.csv", "https://example.org/x"],
        "c": 3,
        "d": None,
    }
    assert portable_path("/srv/pacs/DOE^JANE/t2.nii.gz", base=tmp_path) == "t2.nii.gz"


def test_model_folder_metadata_has_no_machine_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    net = build_network({"backbone": "spinecnn", "widths": [4, 8, 8, 8], "hidden": 8})
    meta = {
        "name": "t",
        "version": "0",
        "network": {"backbone": "spinecnn", "widths": [4, 8, 8, 8], "hidden": 8},
        "roi": {},
        "training": {"trainer": {"default_root_dir": str(tmp_path / "outputs" / "release")}},
    }
    save_model_folder(net, tmp_path / "m", meta)
    written = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert written["training"]["trainer"]["default_root_dir"] == "outputs/release"
    assert str(tmp_path) not in (tmp_path / "m" / "metadata.json").read_text()
    assert torch.is_tensor(net.temperature)
