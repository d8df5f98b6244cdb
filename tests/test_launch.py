"""launch.py: flags, config loading and dispatch fail clearly on bad input."""

import csv
import gc
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from nas_forgetting.io import run as run_io

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


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("launch") / "run"
  result = _launch("--config=configs/quickstart.py:quick", f"--workdir={workdir}", "--config.seed=3")
  return workdir, result


def _errors(result: subprocess.CompletedProcess) -> list[str]:
  """stderr without absl's INFO lines."""
  return [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("I")]


def test_quick_run_writes_config_revision_and_outputs(quick_run):
  workdir, result = quick_run
  assert result.returncode == 0, result.stderr[-2000:]
  config = json.loads((workdir / "config.json").read_text())
  assert config["experiment"] == "continual" and config["seed"] == 3
  revision = (workdir / "git_revision.txt").read_text().strip()
  assert revision
  assert (workdir / "comparison.csv").is_file() and (workdir / "comparison.png").is_file()
  assert "avg acc %" in result.stdout
  assert "orbax-checkpoint-tmp" not in result.stderr  # per-save library chatter stays out of the terminal
  assert "Unable to initialize backend 'tpu'" not in result.stderr  # nor JAX's notice on machines without a TPU


def test_relaunch_with_other_settings_or_another_experiment_is_refused(quick_run):
  workdir, _ = quick_run
  before = (workdir / "config.json").read_text()
  result = _launch("--config=configs/quickstart.py:quick", f"--workdir={workdir}", "--config.seed=3",
                   "--config.train.learning_rate=0.5", "--config.strength.ewc=1e6")
  assert result.returncode != 0
  assert "refusing to mix two runs" in result.stderr
  assert re.search(r"train.learning_rate: [0-9.e-]+ -> 0.5\n", result.stderr)
  assert re.search(r"strength.ewc: [0-9.e+]+ -> 1000000.0\n", result.stderr)
  result = _launch("--config=configs/dpnas_mnist.py:quick", f"--workdir={workdir}")
  assert result.returncode != 0
  assert "holds a 'continual' run; a 'dpnas' run needs a workdir of its own" in result.stderr
  assert (workdir / "config.json").read_text() == before
  assert "Traceback" not in result.stderr


def test_a_second_launch_on_a_workdir_in_use_is_refused(quick_run):
  workdir, _ = quick_run
  with run_io.open_run(workdir, json.loads((workdir / "config.json").read_text())):
    result = _launch("--config=configs/quickstart.py:quick", f"--workdir={workdir}", "--config.seed=3")
  assert result.returncode != 0
  assert _errors(result) == [f"error: workdir {workdir} is in use by another launch (process {os.getpid()}); "
                             "wait for it to end or choose another --workdir"]


def test_launcher_errors_are_one_clear_line_and_leave_nothing_behind(tmp_path):
  (tmp_path / "file").write_text("")
  cases = {
      ("--config=configs/enas_ptb.py:nosuch", f"--workdir={tmp_path / 'w'}"): "unknown variant 'nosuch' of configs/enas_ptb.py; valid (comma-separated): quick, tiny",
      ("--config=configs/quickstart.py:quick", "--workdir="): "--workdir is empty",
      ("--config=configs/quickstart.py:quick", f"--workdir={tmp_path / 'file'}"): "exists and is not a folder",
      ("--config=configs/quickstart.py:quick", f"--workdir={tmp_path / 'file' / 'w'}"): "which is a file",
      ("--config=configs/quickstart.py:quick", f"--workdir={tmp_path / 'w'}", "extra"): "unexpected arguments",
  }
  for args, expected in cases.items():
    result = _launch(*args)
    assert result.returncode != 0, args
    errors = _errors(result)
    assert len(errors) == 1 and errors[0].startswith("error: ") and expected in errors[0], (args, errors)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_help_exits_zero():
  for flag in ("-h", "--help"):
    result = _launch(flag)
    assert result.returncode == 0, result.stderr
    assert "--workdir" in result.stdout and "--config" in result.stdout


def test_ctrl_c_stops_with_one_line_and_the_run_resumes(tmp_path):
  workdir = tmp_path / "run"
  process = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--config=configs/quickstart.py",
                              f"--workdir={workdir}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  deadline = time.time() + 240
  while not (workdir / "finetune" / "metrics.jsonl").exists() and time.time() < deadline and process.poll() is None:
    time.sleep(0.2)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr
  assert stderr.rstrip().splitlines()[-1] == ("interrupted; launch the same command again to resume from the last "
                                              f"checkpoint in {workdir}")
  assert (workdir / "config.json").is_file()  # The started run stays, to be resumed.


def test_distributed_flags_fail_in_one_line(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES",
                                                                  "JAX_PROCESS_ID", "SLURM_", "OMPI_"))}
  common = ("--config=configs/quickstart.py:quick", f"--workdir={tmp_path / 'w'}")
  run = lambda *args: subprocess.run([sys.executable, str(ROOT / "launch.py"), *common, *args], cwd=ROOT, env=env,
                                     capture_output=True, text=True, timeout=300, check=False)
  result = run("--distributed")
  assert result.returncode != 0 and _errors(result) == [
      "error: distributed launch: no coordinator address, number of processes, process id given and no cluster "
      "detected; pass --coordinator_address, --num_processes and --process_id (or set JAX_COORDINATOR_ADDRESS, "
      "JAX_NUM_PROCESSES, JAX_PROCESS_ID), or launch under SLURM / Open MPI"]
  result = run("--num_processes=2")
  assert result.returncode != 0 and _errors(result) == ["error: --num_processes given without --distributed"]
  # two processes joined over loopback, one launched for 3: both stop with the same line, before any output
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env["XLA_FLAGS"], env["JAX_PLATFORMS"] = "--xla_force_host_platform_device_count=1", "cpu"
  procs = [subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *common, "--distributed",
                             f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={n}", f"--process_id={i}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i, n in enumerate((2, 3))]
  for p in procs:
    _, stderr = p.communicate(timeout=240)
    assert p.returncode != 0
    assert stderr.rstrip().splitlines()[-1] == ("error: distributed launch: 2 processes joined, but process 1 was "
                                                "launched for 3"), stderr[-2000:]
  assert not (tmp_path / "w").exists()


def test_an_interrupt_inside_a_garbage_collector_callback_is_sent_again_not_raised_there():
  """Python prints and ignores an exception raised in a gc callback (JAX registers one), so a Ctrl-C landing there
  would be lost and the run would go on: the handler must recognise that place and only there defer the interrupt."""
  sys.path.insert(0, str(ROOT))
  try:
    import launch  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.remove(str(ROOT))
  seen = []
  callback = lambda phase, info: seen.append(launch._inside_swallowing_callback(sys._getframe()))  # pylint: disable=protected-access
  gc.callbacks.append(callback)
  try:
    gc.collect()
  finally:
    gc.callbacks.remove(callback)
  assert seen and all(seen)
  assert not launch._inside_swallowing_callback(sys._getframe())  # pylint: disable=protected-access
  with pytest.raises(KeyboardInterrupt):
    launch._interrupt(signal.SIGINT, sys._getframe())  # pylint: disable=protected-access


def test_compilation_cache_is_written_and_reused_with_the_same_results(quick_run, tmp_path):
  """--compilation_cache: the first launch stores its compiled programs under a per-machine subfolder, a second
  launch loads them (it compiles nothing new: no new entries) and gives the numbers of a launch without the cache."""
  from nas_forgetting import compilation_cache  # pylint: disable=import-outside-toplevel
  cache = tmp_path / "cache"
  args = ("--config=configs/quickstart.py:quick", "--config.seed=3", f"--compilation_cache={cache}")
  first = _launch(*args, f"--workdir={tmp_path / 'first'}")
  assert first.returncode == 0, first.stderr[-2000:]
  folder = cache / compilation_cache.machine_fingerprint()
  entries = sorted(p.name for p in folder.iterdir())
  assert len(entries) >= 5
  second = _launch(*args, f"--workdir={tmp_path / 'second'}")
  assert second.returncode == 0, second.stderr[-2000:]
  assert sorted(p.name for p in folder.iterdir()) == entries
  uncached, _ = quick_run
  numbers = lambda workdir: [{k: v for k, v in row.items() if k != "seconds"}
                             for row in csv.DictReader((workdir / "comparison.csv").open())]
  for run in ("first", "second"):
    assert numbers(tmp_path / run) == numbers(uncached)
  (tmp_path / "file").write_text("")
  refused = _launch(*args[:2], f"--compilation_cache={tmp_path / 'file'}", f"--workdir={tmp_path / 'third'}")
  assert refused.returncode != 0 and _errors(refused)[-1].startswith("error: --compilation_cache=")
  assert not (tmp_path / "third").exists()
