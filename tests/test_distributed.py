"""Several processes over loopback (jax.distributed, gloo CPU collectives) run an experiment as one process does.

`test_two_processes_equal_one_process` starts this file twice as a worker (`python tests/test_distributed.py
<port> <process id> <folder>`): each process joins the run (`distributed.initialize`, what `launch.py
--distributed` calls) and runs, through `launch.run`, a tiny continual sweep (4 grid members over the 2 devices of
the 2 processes), the same sweep again (finished: restored from its collective checkpoints, nothing written) and a
tiny DP-NAS search (one net, 2 seeds over the 2 devices). The outputs equal those of the same experiments in this one
process, and process 1 writes nothing but its shards of the sweep's checkpoints.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
if __name__ == "__main__":
  sys.path.insert(0, str(ROOT))

import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

from nas_forgetting import distributed  # pylint: disable=wrong-import-position
from nas_forgetting import experiments  # pylint: disable=wrong-import-position
from nas_forgetting.continual import config as continual_config  # pylint: disable=wrong-import-position
from nas_forgetting.data.datasets import default_data_config  # pylint: disable=wrong-import-position
from nas_forgetting.dpnas import config as dpnas_config  # pylint: disable=wrong-import-position
from nas_forgetting.dpnas import logs  # pylint: disable=wrong-import-position
from nas_forgetting.errors import ConfigError  # pylint: disable=wrong-import-position
from nas_forgetting.io import atomic, metrics  # pylint: disable=wrong-import-position
from nas_forgetting.io import run as run_io  # pylint: disable=wrong-import-position
from nas_forgetting.io.metrics import read_csv  # pylint: disable=wrong-import-position


def sweep_config():
  """EWC, 2 seeds x 2 strengths over 2 split tasks of the embedded digits, MLP 8, one epoch per task."""
  c = continual_config.default_config()
  c.data.train_size, c.data.test_size = 200, 80
  c.stream.kind, c.stream.num_tasks, c.stream.classes_per_task, c.stream.scenario = "split", 2, 2, "task"
  c.model.hidden = (8,)
  c.train.optimizer, c.train.learning_rate, c.train.epochs = "momentum", 0.05, 1
  c.train.batch_size, c.train.eval_batch_size = 16, 64
  c.importance.num_examples, c.importance.chunk_size = 32, 32
  c.methods = ("ewc",)
  c.sweep.seeds = (0, 1)
  c.sweep.strengths.ewc = (1.0, 1e4)
  return c


def dpnas_search_config():
  """One net of one convolution, 2 seeds, one epoch, on 96 embedded 8x8 digits."""
  c = dpnas_config.default_config(default_data_config(source="embedded", train_size=96, test_size=32))
  c.data.image_size = 8
  c.evaluator.epochs, c.evaluator.early_stopping_epoch = 1, 0
  c.evaluator.batch_size, c.evaluator.learning_rate = 8, 1e-2
  c.search_space.conv_features, c.search_space.conv_sizes = (4, 8), (1, 3)
  c.search_space.min_conv = c.search_space.max_conv = 1
  c.search.schedule = ((1.0, 1),)
  c.search.seeds_per_architecture = 2
  c.search.replay_number = 2
  c.verbose = False
  return c


RUNS = (("sweep", sweep_config), ("sweep", sweep_config), ("dpnas", dpnas_search_config))  # the sweep twice


def worker(port: int, process_id: int, folder: pathlib.Path) -> None:
  import launch  # pylint: disable=import-outside-toplevel
  distributed.initialize(f"127.0.0.1:{port}", 2, process_id)
  for name, make in RUNS:
    launch.run(make(), str(folder / name))


def _files(folder: pathlib.Path) -> set[str]:
  """The run's files but the lock, TensorBoard events (named by host and pid) and checkpoint contents."""
  return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".lock"
          and "tensorboard" not in p.parts and not any(part.endswith("checkpoints") for part in p.parts)}


def test_two_processes_equal_one_process(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), NAS_FORGETTING_NO_PROGRESS="1")
  two = tmp_path / "two"
  procs = [subprocess.Popen([sys.executable, __file__, str(port), str(i), str(two)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  # the same experiments in this process, meanwhile (one process, its 8 fake CPU devices)
  one = tmp_path / "one"
  results = {}
  try:
    for name, make in RUNS[::2]:
      config = make()
      experiment = experiments.get_experiment(config.experiment)
      with run_io.open_run(one / name, config, resume_safe=experiment.resume_safe_fields) as workdir:
        results[name] = experiment.run(config, str(workdir))
    outputs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
    assert out.count(results["sweep"]["text"]) == 2  # the sweep's table, and again from its restored checkpoints

  for name in ("sweep", "dpnas"):
    assert _files(two / name) == _files(one / name), name
  for csv in ("ewc/sweep_accuracy.csv", "sweep_summary.csv", "sweep_members.csv"):
    a, b = read_csv(one / "sweep" / csv), read_csv(two / "sweep" / csv)
    assert [r.keys() for r in a] == [r.keys() for r in b]
    for ra, rb in zip(a, b):
      for key in ra:
        try:
          np.testing.assert_allclose(float(rb[key]), float(ra[key]), atol=1e-5, err_msg=f"{csv} {key}")
        except ValueError:
          assert rb[key] == ra[key], (csv, key)
  accuracies = [float(r["avg_accuracy_mean"]) for r in read_csv(one / "sweep" / "sweep_summary.csv")]
  assert len(set(accuracies)) == 2  # the strengths differ: the comparison means something
  a = logs.read_replay_buffer(one / "dpnas" / "search" / "replay_buffer.csv")
  b = logs.read_replay_buffer(two / "dpnas" / "search" / "replay_buffer.csv")
  assert [r.net for r in a] == [r.net for r in b] and len(a) == 1 and a[0].reward > 0
  np.testing.assert_allclose([r.reward for r in b], [r.reward for r in a], atol=1e-5)
  summary = json.loads((two / "dpnas" / "summary.json").read_text())
  assert summary["devices"] == 2
  # process 1 wrote only its shards of the sweep's orbax checkpoints
  written = {p.relative_to(two) for p in two.rglob("*process_1*")}
  assert written and all("sweep_checkpoints" in p.parts for p in written)


def test_a_process_other_than_0_writes_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(distributed, "process_index", lambda: 1)
  with run_io.open_run(tmp_path / "run", {"experiment": "x"}) as workdir:
    atomic.atomic_write_text(workdir / "a.txt", "a")
    metrics.write_csv(workdir / "t.csv", [{"x": 1}])
    with metrics.MetricsLogger(workdir / "m") as logger:
      logger.log(0, {"loss": 1.0})
      with pytest.raises(ValueError, match="expected a number"):  # still checked
        logger.log(1, {"loss": "high"})
  assert list(tmp_path.iterdir()) == []
  monkeypatch.setattr(distributed, "process_index", lambda: 0)
  atomic.atomic_write_text(tmp_path / "a.txt", "a")
  assert (tmp_path / "a.txt").read_text() == "a"


def test_missing_coordinator_info_and_bad_process_id_are_clear_errors(monkeypatch):
  for name in list(os.environ):
    if name.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_", "OMPI_", "KUBERNETES_")):
      monkeypatch.delenv(name)
  with pytest.raises(ConfigError, match="no coordinator address, number of processes, process id given and no "
                                        "cluster detected"):
    distributed.initialize()
  with pytest.raises(ConfigError, match=r"no process id given"):
    distributed.initialize("127.0.0.1:1", 2)
  monkeypatch.setenv("JAX_PROCESS_ID", "2")
  with pytest.raises(ConfigError, match=r"process id 2 is not in \[0, 2\)"):
    distributed.initialize("127.0.0.1:1", 2)
  monkeypatch.setenv("JAX_PROCESS_ID", "one")
  with pytest.raises(ConfigError, match="JAX_PROCESS_ID='one' is not an integer"):
    distributed.initialize("127.0.0.1:1", 2)


if __name__ == "__main__":
  worker(int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3]))
