"""The dpnas experiment's outputs across launches, on real MNIST at tiny sizes: a run killed after any durable
write of its save path resumes to the uninterrupted run's outputs (search and fixed nets); a finished run
relaunched says so and writes nothing; summary seconds add up over launches; metrics.jsonl has one record per
architecture (no duplicates after a resume); the run ends with a result block."""

import json
import pathlib
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nas_forgetting.dpnas import experiment
from nas_forgetting.dpnas import fixed
from nas_forgetting.dpnas import logs
from nas_forgetting.dpnas import q_learning as ql
from nas_forgetting.io.metrics import read_jsonl

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from configs import dpnas_mnist  # noqa: E402

NETS = ("[C(4,3,1,1,1), P(2,2,0,0), SM(10)]", "[C(8,1,1,0,1), P(2,2,0,0), SM(10)]")


def tiny(config, shared_data):
  config.data.path = str(shared_data / "mnist")
  config.data.train_size, config.data.test_size, config.data.image_size = 120, 30, 8
  config.evaluator.epochs, config.evaluator.early_stopping_epoch, config.evaluator.reward_window = 2, 0, 1
  config.evaluator.batch_size = 32
  config.search_space.conv_features = (4, 8)
  config.search_space.conv_sizes = (1, 3)
  config.search_space.max_conv = 2
  config.search.schedule = ((1.0, 2), (0.0, 1))
  config.search.replay_number = 3
  config.search.plot_every = 1000
  config.fixed.num_seeds = 2
  config.verbose = False
  return config


def search_config(shared_data):
  return tiny(dpnas_mnist.get_config("quick"), shared_data)


def fixed_config(shared_data, replay_csv):
  config = tiny(dpnas_mnist.get_config("quick,hypothesis2"), shared_data)
  config.fixed.replay_buffer_csv_path = str(replay_csv)
  return config


def write_replay(path):
  rows = [ql.ReplayRow(1.0, net, True, 0.5 + 0.1 * i, 50.0, (50.0,), (50.0,), 40.0) for i, net in enumerate(NETS)]
  path.write_text(logs.replay_buffer_text(rows))
  return path


def without_clock(summary):
  """A summary without what differs between launches of the same run (wall clock, folder, compilations)."""
  summary = {k: v for k, v in summary.items() if k not in ("seconds", "workdir", "compilations", "finished_before")}
  if "search" in summary:
    summary["search"] = {k: v for k, v in summary["search"].items() if k not in ("seconds", "trained_now")}
  return summary


def checkpoint_arrays(folder):
  """{leaf path: (dtype, shape, bytes)} of the orbax checkpoint of a fixed-net (net, seed) folder (its files hold
  timestamps and random ids, so the stored arrays are compared, not the files)."""
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.restore(folder / str(fixed.CHECKPOINT_STEP) / "default")
  return {jax.tree_util.keystr(k): (str(v.dtype), v.shape, np.asarray(v).tobytes())
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def outputs(workdir):
  """Every output a resumed run must reproduce (wall-clock fields left out)."""
  files = {}
  checkpoints = sorted(p for p in workdir.rglob("seed_*") if p.is_dir())
  for folder in checkpoints:
    files[str(folder.relative_to(workdir))] = checkpoint_arrays(folder)
  for path in sorted(workdir.rglob("*")):
    name = str(path.relative_to(workdir))
    if not path.is_file() or path.suffix in (".png", ".pdf") or "tensorboard" in name or name.startswith("."):
      continue
    if any(folder in path.parents for folder in checkpoints):
      continue
    if path.name == "summary.json":
      files[name] = without_clock(json.loads(path.read_text()))
    elif path.name == "metrics.jsonl":
      files[name] = read_jsonl(path)
    elif path.suffix == ".json":
      record = json.loads(path.read_text())
      record.pop("seconds", None)
      files[name] = record
    else:
      files[name] = path.read_bytes()
  return files


def test_search_killed_after_each_write_resumes_to_the_uninterrupted_run(tmp_path, write_faults, shared_data):
  config = search_config(shared_data)
  writes = write_faults.count(lambda: experiment.run(config, str(tmp_path / "full")))
  expected = outputs(tmp_path / "full")
  metrics = expected["metrics.jsonl"]
  assert [r["step"] for r in metrics] == list(range(len(metrics)))  # one record per sampled architecture
  assert len(metrics) == len(logs.read_replay_buffer(tmp_path / "full" / "search" / "replay_buffer.csv"))
  assert expected["summary.json"]["finished"]
  # every boundary of one full save path (metrics record, the generation's two CSVs, the state, the two user-facing
  # CSVs) and the last writes (the final commit and summary.json); test_dpnas_resume_faults kills the search loop
  # after each of its writes
  per_step = 6
  assert writes == per_step * len(metrics) + 1
  for k in list(range(1, per_step + 2)) + [writes - 1, writes]:
    workdir = tmp_path / f"kill{k}"
    assert write_faults.kill_after(k, lambda: experiment.run(config, str(workdir)))
    experiment.run(config, str(workdir))
    assert outputs(workdir) == expected, f"killed after write {k} of {writes}"


def test_fixed_nets_killed_after_each_write_resume_to_the_uninterrupted_run(tmp_path, write_faults, shared_data):
  config = fixed_config(shared_data, write_replay(tmp_path / "replay.csv"))
  config.fixed.num_seeds = 1  # two nets, one seed each: 12 writes (several seeds resume in test_dpnas_fixed)
  writes = write_faults.count(lambda: experiment.run(config, str(tmp_path / "full")))
  expected = outputs(tmp_path / "full")
  assert [(r["step"], r["seed"], r["index"]) for r in expected["metrics.jsonl"]] == [(0, 0, 0), (1, 0, 1)]
  # 12 = the 10 of the run's state and logs + the seed-spread figure's PDF and PNG (atomic writes of io/plots.py)
  assert len(expected["fixed/fixed_net.csv"].splitlines()) == 3 and writes == 12
  for k in range(1, writes + 1):
    workdir = tmp_path / f"kill{k}"
    assert write_faults.kill_after(k, lambda: experiment.run(config, str(workdir)))
    experiment.run(config, str(workdir))
    assert outputs(workdir) == expected, f"killed after write {k} of {writes}"


def test_a_finished_run_relaunched_does_nothing_and_seconds_add_up_over_launches(tmp_path, shared_data, capsys):
  config = search_config(shared_data)
  workdir = tmp_path / "run"
  config.search.max_architectures = 1
  first = experiment.run(config, str(workdir))
  assert not first["finished"] and first["search"]["rows"] == 1
  committed = json.loads((workdir / "search" / "search_state.json").read_text())["seconds"]
  config.search.max_architectures = 0
  start = time.time()
  second = experiment.run(config, str(workdir))
  wall = time.time() - start
  assert second["finished"]
  # the second launch's total counts the first launch's seconds too
  assert committed + 0.9 * wall <= second["seconds"] <= committed + wall + 1e-6
  out = capsys.readouterr().out
  assert "DP-NAS search (task 1)" in out and "data" in out and "mnist (idx" in out and "best net 1" in out
  assert f"{second['search']['best_net']}: reward {second['search']['best_reward']:.4f}" in out

  before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in workdir.rglob("*") if p.is_file()}
  third = experiment.run(config, str(workdir))
  assert third["finished_before"] and without_clock(third) == without_clock(second)
  assert third["seconds"] == second["seconds"]
  assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in workdir.rglob("*") if p.is_file()} == before
  out = capsys.readouterr().out
  assert "has finished; nothing to do" in out and "best net 1" in out


def test_fixed_result_block_names_data_nets_rewards_and_test_accuracies(tmp_path, shared_data, capsys):
  config = fixed_config(shared_data, write_replay(tmp_path / "replay.csv"))
  summary = experiment.run(config, str(tmp_path / "run"))
  out = capsys.readouterr().out
  assert "DP-NAS fixed nets (task 2, deep prior)" in out and "mnist (idx" in out
  assert "108 train / 12 val / 30 test, 8x8x1" in out
  for key, result in summary["fixed"].items():
    assert key in out and f"reward {result['mean']:.4f}" in out
    assert f"test accuracy {result['test_accuracy_mean']:.2f} %" in out
    assert result["seeds"] == 2
