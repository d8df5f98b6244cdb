"""Run folders (config.json, git_revision.txt) and progress bars."""

import json
import re
import subprocess

import ml_collections
import pytest

from nas_forgetting import progress
from nas_forgetting.errors import ConfigError
from nas_forgetting.io import run


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


def _stored(path):
  return json.loads((path / "config.json").read_text())


def test_open_run_stores_the_first_config_and_refuses_other_settings(tmp_path):
  with run.open_run(tmp_path / "runs" / "a", _config()) as path:
    assert path.is_absolute() and _stored(path)["lr"] == 0.1
    revision = (path / "git_revision.txt").read_text().strip()
    assert revision == run.git_revision()
    assert revision == "unknown" or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", revision)
  with run.open_run(path, _config()):  # The same settings: a resume.
    pass
  other = _config()
  other.lr, other.model.width = 0.5, 64
  with pytest.raises(ConfigError) as error:
    with run.open_run(path, other):
      pytest.fail("a run with other settings was let in")
  message = str(error.value)
  assert "refusing to mix two runs" in message
  assert "lr: 0.1 -> 0.5" in message and "model.width: 128 -> 64" in message and "seed" not in message
  assert _stored(path)["lr"] == 0.1  # The stored config is untouched.


def test_open_run_accepts_resume_safe_fields_and_records_them(tmp_path):
  safe = ("base", "model.width")
  with run.open_run(tmp_path / "a", _config(), resume_safe=safe):
    pass
  longer = _config()
  longer.model.width = 256
  with run.open_run(tmp_path / "a", longer, resume_safe=safe) as path:
    assert _stored(path)["model"]["width"] == 256
  longer.base = 30  # `derived` follows `base` and is not resume-safe itself.
  with pytest.raises(ConfigError, match="derived: 20 -> 60"):
    with run.open_run(path, longer, resume_safe=safe):
      pass
  assert run.config_differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 2, "c": 2}}, ignore=("a",)) == []
  assert run.config_differences({"a": 1}, {"a": 1, "b": [1]}) == ["b: (absent) -> [1]"]


def test_open_run_refuses_another_experiment_and_foreign_folders(tmp_path):
  with run.open_run(tmp_path / "a", _config()):
    pass
  other = _config()
  other.experiment = "dpnas"
  with pytest.raises(ConfigError, match="holds a 'continual' run; a 'dpnas' run needs a workdir of its own"):
    with run.open_run(tmp_path / "a", other):
      pass
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "notes.txt").write_text("mine")
  with pytest.raises(ConfigError, match=r"is not empty \(notes.txt\) and holds no run"):
    with run.open_run(tmp_path / "b", _config()):
      pass
  assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["notes.txt"]


def test_open_run_path_errors_create_nothing(tmp_path):
  (tmp_path / "file").write_text("")
  cases = {"": "--workdir is empty", str(tmp_path / "file"): "exists and is not a folder",
           str(tmp_path / "file" / "sub"): "lies below .*file, which is a file"}
  for workdir, expected in cases.items():
    with pytest.raises(ConfigError, match=expected):
      with run.open_run(workdir, _config()):
        pass
  with pytest.raises(ConfigError, match="expected an ml_collections.ConfigDict"):
    with run.open_run(tmp_path / "w", [1, 2]):
      pass
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failed_launch_leaves_nothing_behind_but_a_started_run_is_kept(tmp_path):
  for interruption in (KeyboardInterrupt, ConfigError):
    with pytest.raises(interruption):
      with run.open_run(tmp_path / "new" / "deep" / "run", _config()):
        raise interruption("stopped before the run wrote anything")
    assert not (tmp_path / "new").exists()
  with pytest.raises(KeyboardInterrupt):
    with run.open_run(tmp_path / "started", _config()) as path:
      (path / "metrics.jsonl").write_text("{}\n")
      raise KeyboardInterrupt
  assert sorted(p.name for p in path.iterdir()) == [".lock", "config.json", "git_revision.txt", "metrics.jsonl"]


def test_one_launch_at_a_time_and_the_lock_dies_with_its_process(tmp_path):
  import os
  import signal
  import sys
  import textwrap
  with run.open_run(tmp_path / "a", _config()) as path:
    with pytest.raises(ConfigError, match=rf"in use by another launch \(process {os.getpid()}\)"):
      with run.open_run(path, _config()):
        pass
  with run.open_run(path, _config()):  # Released at the end of the first launch.
    pass
  path = tmp_path / "b"
  holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
      import sys, time
      from nas_forgetting.io import run
      with run.open_run({str(path)!r}, {{"experiment": "continual", "seed": 3}}):
        print("locked", flush=True)
        time.sleep(120)
      """)], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match=rf"in use by another launch \(process {holder.pid}\)"):
      with run.open_run(path, {"experiment": "continual", "seed": 3}):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with run.open_run(path, {"experiment": "continual", "seed": 3}):  # The OS released the dead launch's lock.
    pass
