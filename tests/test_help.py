"""``--help`` of every command: its own settings with the descriptions its YAML carries (issue 36)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spinelesion.tasks.help import command_help, help_or_run, read_settings

ROOT = Path(__file__).resolve().parents[1]


def test_settings_and_their_comments_are_read_from_the_yaml() -> None:
    text = """# tool key=value
# second header line
defaults:
  - paths: default
task_name: x
input: ???
# a comment above a key
# that goes on
threshold: 0.5
scan:
  stride_mm: 8.0        # windows at most this far apart;
                        # continued here
  regex: '#notacomment'  # quoted hash kept
                         # and continued under its own comment
  plain: 3
hydra:
  run: {dir: x}
"""
    header, settings = read_settings(text)
    assert header == ["tool key=value", "second header line"]
    got = {s.key: (s.default, s.description) for s in settings}
    assert list(got) == ["input", "threshold", "scan", "scan.stride_mm", "scan.regex", "scan.plain"]
    assert got["input"] == ("???", "")
    assert got["threshold"] == ("0.5", "a comment above a key that goes on")
    assert got["scan.stride_mm"] == ("8.0", "windows at most this far apart; continued here")
    assert got["scan.regex"] == ("'#notacomment'", "quoted hash kept and continued under its own comment")
    assert got["scan.plain"] == ("3", "")


def test_predict_help_lists_its_own_settings_and_not_the_trainings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import spinelesion.predict as predict

    ran = []
    help_or_run("spinelesion-predict", "predict", predict.__doc__, lambda: ran.append(1), ["--help"])
    out = capsys.readouterr().out
    assert not ran
    assert "input" in out and "(required)" in out
    assert "scan.call_threshold" in out and "model's operating point" in out  # a description
    assert "trainer" not in out and "max_epochs" not in out  # the training's groups are not predict's
    help_or_run("spinelesion-predict", "predict", predict.__doc__, lambda: ran.append(1), ["input=x"])
    assert ran == [1]


def test_train_help_names_its_config_groups_and_their_choices() -> None:
    import spinelesion.train as train

    text = command_help("spinelesion-train", "train", train.__doc__)
    assert "model" in text and "spinecnn" in text and "resnet18" in text
    assert "decision_rule" in text


@pytest.mark.parametrize(
    "command", ["predict", "train", "evaluate", "make-data", "insert", "bench", "export-bundle", "release"]
)
def test_every_command_answers_help_without_running(command: str, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / f"spinelesion-{command}"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"``spinelesion-{command}``") and "Settings" in out.stdout
    assert not any(tmp_path.iterdir())  # nothing written: no outputs/ folder, no log


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_setting_hydra_cannot_compose_exits_2_like_every_unusable_setting(
    command: str, tmp_path: Path
) -> None:
    """Issue 37: an unknown key was Hydra's exit 1, which predict also uses for failed studies."""
    exe = Path(sys.executable).parent / f"spinelesion-{command}"
    out = subprocess.run(
        [str(exe), "no_such_key=1"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 2
    assert "no_such_key" in out.stderr + out.stdout
    assert not any(tmp_path.iterdir())
