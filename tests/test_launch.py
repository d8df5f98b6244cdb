"""launch.py: flags, config loading and dispatch fail clearly on bad input."""

import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _launch(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, capture_output=True, text=True,
                        timeout=300, check=False)


@pytest.fixture
def config_file(tmp_path: pathlib.Path) -> pathlib.Path:
  path = tmp_path / "cfg.py"
  path.write_text(textwrap.dedent("""
      import ml_collections
      def get_config(arg=None):
        c = ml_collections.ConfigDict()
        c.experiment = "no_such_experiment"
        c.seed = 0
        c.model = ml_collections.ConfigDict({"width": 3})
        return c
      """))
  return path


def test_unknown_experiment_lists_choices(config_file, tmp_path):
  result = _launch(f"--config={config_file}", f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0
  assert "unknown experiment 'no_such_experiment'" in result.stderr
  for name in ("continual", "enas", "dpnas", "wpl_two_model"):
    assert name in result.stderr


def test_unknown_config_key_lists_valid_keys(config_file, tmp_path):
  result = _launch(f"--config={config_file}", f"--workdir={tmp_path / 'w'}", "--config.model.widht=4")
  assert result.returncode != 0
  assert "unknown config key 'model.widht'" in result.stderr
  assert "valid keys there: width" in result.stderr
  result = _launch(f"--config={config_file}", f"--workdir={tmp_path / 'w'}", "--config.modle.width=4")
  assert "valid keys there: experiment, model, seed" in result.stderr


def test_bad_value_and_bad_flag(config_file, tmp_path):
  result = _launch(f"--config={config_file}", f"--workdir={tmp_path / 'w'}", "--config.model.width=wide")
  assert result.returncode != 0 and "--config.model.width=wide" in result.stderr
  result = _launch(f"--config={config_file}", f"--workdir={tmp_path / 'w'}", "--no_such_flag=1")
  assert result.returncode != 0 and "no_such_flag" in result.stderr


def test_missing_config_file(tmp_path):
  result = _launch(f"--config={tmp_path / 'absent.py'}", f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0
  assert "cannot load config file" in result.stderr and "absent.py" in result.stderr


def test_workdir_is_required(config_file):
  result = _launch(f"--config={config_file}")
  assert result.returncode != 0 and "workdir" in result.stderr


def test_quick_run_writes_config_revision_and_outputs(tmp_path):
  workdir = tmp_path / "run"
  result = _launch("--config=configs/quickstart.py:quick", f"--workdir={workdir}", "--config.seed=3")
  assert result.returncode == 0, result.stderr[-2000:]
  import json  # pylint: disable=import-outside-toplevel
  config = json.loads((workdir / "config.json").read_text())
  assert config["experiment"] == "continual" and config["seed"] == 3
  revision = (workdir / "git_revision.txt").read_text().strip()
  assert revision
  assert (workdir / "comparison.csv").is_file() and (workdir / "comparison.png").is_file()
  assert "avg acc %" in result.stdout
  assert "orbax-checkpoint-tmp" not in result.stderr  # per-save library chatter stays out of the terminal
