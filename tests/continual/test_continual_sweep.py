"""Sweeps: every (seed, strength) of a method in one compiled program equals the independent single runs."""

import chex
import jax
import numpy as np
import pytest

from nas_forgetting import importance as imp
from nas_forgetting.continual import experiment, sweep
from nas_forgetting.continual.runner import MethodRun
from nas_forgetting.errors import ConfigError
from nas_forgetting.io.metrics import read_csv
from tests.continual.conftest import make_tiny_config


def sweep_config(methods=("ewc",), **sweep_fields):
  c = make_tiny_config(epochs=1)
  c.stream.num_tasks = 2
  c.methods = methods
  c.sweep.seeds = (0, 1)
  c.sweep.strengths.ewc = (10.0, 1000.0)
  c.sweep.validation_fraction = 0.0
  for k, v in sweep_fields.items():
    c.sweep[k] = v
  return c


@pytest.fixture(scope="module")
def tasks():
  return experiment.load_tasks(sweep_config())


@pytest.fixture(scope="module")
def ewc_grid(tasks):
  """The 2 seeds x 2 strengths EWC grid in one program (one trace of the grid epoch for both tasks)."""
  config = sweep_config()
  members = sweep.grid(config, "ewc")
  return config, members, sweep.GridRun(config, tasks, "ewc", members, max_traces=1).run()


def _single_runs(config, tasks, method, members, folder):
  """The independent single run of every grid member (seed, strength), in grid order."""
  for i, (seed, strength) in enumerate(members):
    yield MethodRun(sweep.member_config(config, seed), tasks, sweep.member_label(method, strength),
                    folder / str(i)).run()


def _assert_member_equals(grid, i, single):
  """Grid member i's parameters and accuracy matrix equal its single run's (float tolerance)."""
  chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], grid["params"]), single["params"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grid["accuracy"][i], single["accuracy"], atol=1e-6)


def test_grid_equals_independent_single_runs(ewc_grid, tasks, tmp_path):
  config, members, result = ewc_grid
  assert members == [(0, 10.0), (0, 1000.0), (1, 10.0), (1, 1000.0)]
  assert result["accuracy"].shape == (4, 2, 2)
  for i, single in enumerate(_single_runs(config, tasks, "ewc", members, tmp_path)):
    _assert_member_equals(result, i, single)
    np.testing.assert_allclose(result["baseline"][i], single["baseline"], atol=1e-6)
  # the members differ: seeds change the initialisation, strengths the training
  flat = [np.concatenate([np.ravel(x[i]) for x in jax.tree.leaves(result["params"])]) for i in range(4)]
  assert len({f.tobytes() for f in flat}) == 4


def test_mas_grid_importance_vmapped_equals_single_runs(tasks, tmp_path, monkeypatch):
  config = sweep_config(methods=("mas",))
  config.sweep.strengths.ewc = ()
  config.sweep.strengths.mas = (0.1, 10.0)
  members = sweep.grid(config, "mas")
  calls = []
  original = imp.mas_importance
  monkeypatch.setattr(imp, "mas_importance", lambda *a, **k: calls.append(1) or original(*a, **k))
  grid = sweep.GridRun(config, tasks, "mas", members, max_traces=1).run()
  assert len(calls) == 2  # one vmapped Omega per task for the 4 members
  for i, single in enumerate(_single_runs(config, tasks, "mas", members, tmp_path)):
    _assert_member_equals(grid, i, single)


def test_grid_sharded_over_devices_equals_one_device(ewc_grid, tasks):
  config, members, sharded = ewc_grid  # 4 members over 4 of the 8 fake CPU devices (tests/conftest.py)
  assert len(jax.local_devices()) >= 4
  for leaf in jax.tree.leaves(sharded["params"]):
    assert len(leaf.sharding.device_set) == 4
  one = sweep.GridRun(sweep_config(shard=False), tasks, "ewc", members).run()
  for leaf in jax.tree.leaves(one["params"]):
    assert len(leaf.sharding.device_set) == 1
  np.testing.assert_allclose(sharded["accuracy"], one["accuracy"], atol=1e-6)
  chex.assert_trees_all_close(sharded["params"], one["params"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("at_once", [1, 2])
def test_members_computed_a_few_at_a_time_equal_the_vmapped_grid(ewc_grid, tasks, at_once):
  """On one device the grid's epoch and evaluation run over the members `at_once` at a time (jax.lax.map), one
  trace for both tasks; the results equal the vmapped grid's (which equals the single runs)."""
  config, members, vmapped = ewc_grid
  chex.clear_trace_counter()  # chex counts traces per definition site: the other parameter's run traced it too
  grid = sweep.GridRun(sweep_config(shard=False, members_at_once=at_once), tasks, "ewc", members, max_traces=1)
  assert grid.at_once == at_once
  result = grid.run()
  np.testing.assert_allclose(result["accuracy"], vmapped["accuracy"], atol=1e-6)
  np.testing.assert_allclose(result["baseline"], vmapped["baseline"], atol=1e-6)
  chex.assert_trees_all_close(result["params"], vmapped["params"], rtol=1e-5, atol=1e-6)


def test_members_at_once_setting():
  mesh = sweep.grid_mesh(4, jax.local_devices()[:4])
  assert sweep.members_at_once(0, 4, None, backend="cpu") == 1  # automatic: one at a time on the CPU
  assert sweep.members_at_once(0, 4, None, backend="gpu") == 0  # all at once (vmapped) on an accelerator
  assert sweep.members_at_once(2, 4, None) == 2 and sweep.members_at_once(4, 4, None) == 0
  assert sweep.members_at_once(0, 4, mesh) == 0  # sharded: each device's members together
  with pytest.raises(ConfigError, match="sharded over 4 devices"):
    sweep.members_at_once(1, 4, mesh)


def test_grid_mesh_uses_the_most_devices_dividing_the_grid():
  devices = jax.local_devices()[:8]
  assert sweep.grid_mesh(4, devices).devices.size == 4
  assert sweep.grid_mesh(6, devices).devices.size == 6
  assert sweep.grid_mesh(16, devices).devices.size == 8
  assert sweep.grid_mesh(7, devices[:4]) is None  # 7 is prime: one device


def test_forced_small_chunk_gives_the_same_results(ewc_grid, tasks):
  config, members, whole = ewc_grid
  chunked = sweep.run_method(sweep_config(chunk=3), tasks, "ewc")  # at most 3 together: two chunks of 2
  assert chunked["chunk"] == 2 and chunked["members"] == members
  np.testing.assert_allclose(chunked["accuracy"], whole["accuracy"], atol=1e-6)
  chex.assert_trees_all_close(chunked["params"], whole["params"], rtol=1e-5, atol=1e-6)


def test_chunk_from_memory_budget():
  assert sweep.grid_chunk(16, 100, chunk=4, memory_fraction=0.5, cpu_budget=1) == 4
  assert sweep.grid_chunk(16, 100, chunk=5, memory_fraction=0.5, cpu_budget=1) == 4  # 4 equal chunks, not 5+5+5+1
  assert sweep.grid_chunk(16, 100, chunk=15, memory_fraction=0.5, cpu_budget=1) == 8
  assert sweep.grid_chunk(16, 100, chunk=0, memory_fraction=0.5, cpu_budget=450) == 4  # the CPU reports no memory
  assert sweep.grid_chunk(16, 100, chunk=0, memory_fraction=0.5, cpu_budget=10) == 1
  assert sweep.grid_chunk(3, 100, chunk=0, memory_fraction=0.5, cpu_budget=10**9) == 3


def test_validation_split_is_carved_from_training_data(tasks):
  train, valid = sweep.split_validation(tasks, 0.25, seed=0)
  for task, tr, va in zip(tasks, train, valid):
    n = len(task.train.labels)
    assert len(va.test.labels) == round(0.25 * n) and len(tr.train.labels) + len(va.test.labels) == n
    rows = {r.tobytes() for r in task.train.images}
    assert all(r.tobytes() in rows for r in va.test.images)  # from the training split...
    assert not {r.tobytes() for r in va.test.images} & {r.tobytes() for r in tr.train.images}  # held out of it
    np.testing.assert_array_equal(va.train.images, task.train.images)  # (unused) and the test split untouched
    np.testing.assert_array_equal(tr.test.images, task.test.images)


def test_sweep_experiment_outputs(tmp_path):
  config = sweep_config(methods=("finetune", "ewc"), validation_fraction=0.25)
  out = experiment.run(config, str(tmp_path))
  table = read_csv(tmp_path / "sweep_summary.csv")
  assert [(r["method"], float(r["strength"])) for r in table] == [("finetune", 0.0), ("ewc", 10.0), ("ewc", 1000.0)]
  members = read_csv(tmp_path / "sweep_members.csv")
  assert len(members) == 2 + 4
  for row in table:  # mean and std over the seeds of the member rows
    accs = [float(m["avg_accuracy"]) for m in members
            if m["method"] == row["method"] and float(m["strength"]) == float(row["strength"])]
    assert float(row["avg_accuracy_mean"]) == pytest.approx(np.mean(accs))
    assert float(row["avg_accuracy_std"]) == pytest.approx(np.std(accs))
  ewc = [r for r in table if r["method"] == "ewc"]
  best = max(ewc, key=lambda r: float(r["validation_avg_accuracy_mean"]))
  assert out["best"] == {"ewc": float(best["strength"])}
  assert [r["best"] for r in table] == ["False"] + [str(r is best) for r in ewc]
  matrices = read_csv(tmp_path / "ewc" / "sweep_accuracy.csv")
  assert len(matrices) == 4 * 2 and set(matrices[0]) == {"seed", "strength", "after_task", "task_0", "task_1"}
  assert (tmp_path / "sweep_strength.png").stat().st_size > 0
  assert "ewc" in out["text"] and "+-" in out["text"]


@pytest.mark.parametrize("field, value, message", [
    ("seeds", (0, 0), "repeats a seed"),
    ("seeds", (), "needs sweep.seeds"),
    ("chunk", -1, "sweep.chunk"),
    ("members_at_once", -1, "sweep.members_at_once"),
    ("validation_fraction", 1.0, "sweep.validation_fraction"),
])
def test_validate_sweep_fields(field, value, message):
  config = sweep_config()
  config.sweep[field] = value
  with pytest.raises(ConfigError, match=message):
    experiment.validate_config(config)


def test_validate_sweep_strengths():
  config = sweep_config()
  config.train.stop_after_epochs = 1
  with pytest.raises(ConfigError, match="stop_after_epochs"):
    experiment.validate_config(config)
  config = sweep_config()
  config.sweep.strengths.ewc = (1.0, -1.0)
  with pytest.raises(ConfigError, match="sweep.strengths.ewc"):
    experiment.validate_config(config)
  config.sweep.strengths.ewc = (1.0, 1.0)
  with pytest.raises(ConfigError, match="repeats a strength"):
    experiment.validate_config(config)
  config = sweep_config(methods=("ewc@100",))
  with pytest.raises(ConfigError, match="names its own"):
    experiment.validate_config(config)
  experiment.validate_config(sweep_config())


def _sweep_outputs(workdir):
  return {name: (workdir / name).read_text()
          for name in ("ewc/sweep_accuracy.csv", "sweep_members.csv", "sweep_summary.csv")}


def test_sweep_killed_at_every_write_boundary_resumes_to_the_uninterrupted_outputs(write_faults, tmp_path):
  config = sweep_config(chunk=2, validation_fraction=0.25)  # two chunks of 2 members, each checkpointed
  full = tmp_path / "full"
  writes = write_faults.count(lambda: experiment.run(config, str(full)))
  expected = _sweep_outputs(full)
  assert writes == 2 * 2 + 4  # a checkpoint per epoch of each chunk, then 3 CSV files and the plot
  for k in range(1, writes + 1):
    workdir = tmp_path / f"kill_{k}"
    assert write_faults.kill_after(k, lambda: experiment.run(config, str(workdir)))
    experiment.run(config, str(workdir))
    assert _sweep_outputs(workdir) == expected, f"killed after write {k}"
  again = {}
  assert write_faults.count(lambda: again.update(experiment.run(config, str(full)))) == 0  # finished: no write
  assert again["already_finished"] and "ewc" in again["text"]
