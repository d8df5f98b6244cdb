"""Run folders (config.json, git_revision.txt) and progress bars."""

import json
import re
import subprocess

import ml_collections
import pytest

from nas_forgetting.errors import ConfigError
from nas_forgetting.io import progress, run


def _config():
  c = ml_collections.ConfigDict()
  c.experiment = "continual"
  c.seed = 3
  c.model = ml_collections.ConfigDict({"width": 128, "widths": (256, 128)})
  c.lr = 0.1
  c.base = 10
  c.derived = c.get_ref("base") * 2  # A field reference: written resolved.
  c.lock()
  return c


def test_prepare_workdir_writes_resolved_config_and_revision(tmp_path):
  path = run.prepare_workdir(tmp_path / "runs" / "a", _config())
  assert path == (tmp_path / "runs" / "a") and path.is_dir() and path.is_absolute()
  written = json.loads((path / "config.json").read_text())
  assert written == {"experiment": "continual", "seed": 3, "model": {"width": 128, "widths": [256, 128]},
                     "lr": 0.1, "base": 10, "derived": 20}
  revision = (path / "git_revision.txt").read_text().strip()
  assert revision == run.git_revision()
  assert revision == "unknown" or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", revision)
  # Again on the same folder (a resumed run): rewritten, nothing else added.
  run.prepare_workdir(path, ml_collections.ConfigDict({"experiment": "x"}))
  assert json.loads((path / "config.json").read_text()) == {"experiment": "x"}
  assert sorted(p.name for p in path.iterdir()) == ["config.json", "git_revision.txt"]


def test_prepare_workdir_accepts_a_plain_mapping(tmp_path):
  path = run.prepare_workdir(str(tmp_path / "w"), {"b": 1, "a": [1, 2]})
  assert json.loads((path / "config.json").read_text()) == {"a": [1, 2], "b": 1}


def test_prepare_workdir_errors_name_the_problem(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(ConfigError, match="file exists and is not a folder"):
    run.prepare_workdir(tmp_path / "file", _config())
  with pytest.raises(ConfigError, match="expected an ml_collections.ConfigDict"):
    run.prepare_workdir(tmp_path / "w", [1, 2])
  assert not (tmp_path / "w").exists()


def test_git_revision_inside_and_outside_a_checkout(tmp_path):
  assert run.git_revision(tmp_path) == "unknown"
  try:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, capture_output=True)
  except (OSError, subprocess.CalledProcessError):
    pytest.skip("git is not available")
  assert run.git_revision(tmp_path) == "unknown"  # No commit yet.
  (tmp_path / "f.txt").write_text("1")
  git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
  subprocess.run([*git, "add", "f.txt"], check=True, capture_output=True)
  subprocess.run([*git, "commit", "-q", "-m", "c"], check=True, capture_output=True)
  head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
  assert run.git_revision(tmp_path) == head
  (tmp_path / "f.txt").write_text("2")
  assert run.git_revision(tmp_path) == head + "-dirty"


def test_progress_bar_shows_eta_on_stderr(monkeypatch, capsys):
  monkeypatch.setenv(progress.ENV_VAR, "0")
  assert list(progress.progress(range(4), desc="epoch 1", unit="step", leave=True)) == [0, 1, 2, 3]
  captured = capsys.readouterr()
  assert captured.out == ""
  assert "epoch 1" in captured.err and "4/4" in captured.err and "<00:00" in captured.err  # elapsed<remaining.
  assert "step/s" in captured.err


def test_progress_bar_off_by_environment(monkeypatch, capsys):
  monkeypatch.setenv(progress.ENV_VAR, "1")
  bar = progress.progress(total=3, desc="x")
  bar.update(3)
  bar.close()
  assert list(progress.progress([5, 6])) == [5, 6]
  assert capsys.readouterr().err == ""
