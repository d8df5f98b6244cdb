"""benchmarks/continual_sweep.py: the launch commands it times are the grid's members and the sweep, the sides
alternate over rounds, and its quick mode (2 seeds x 1 strength) runs all four sides and agrees with itself. Nothing
is timed here; this only keeps the benchmark from rotting."""

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _benchmark():
  spec = importlib.util.spec_from_file_location("continual_sweep_benchmark", REPO / "benchmarks" / "continual_sweep.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _args(**overrides):
  values = {"config": "split_mnist", "quick": True, "method": "ewc", "seeds": 2, "strengths": "1e2,1e4", "chunk": 0}
  return argparse.Namespace(**{**values, **overrides})


def test_launch_commands_name_each_member_and_the_whole_grid():
  bench = _benchmark()
  args = _args()
  assert bench._members(args) == [(0, 100.0), (0, 10000.0), (1, 100.0), (1, 10000.0)]  # seed-major, as sweep.grid
  member = bench.launch_command(args, pathlib.Path("/w/3"), member=(1, 10000.0))
  assert member[1:] == ["launch.py", "--config", "configs/split_mnist.py:quick", "--workdir", "/w/3",
                        "--config.methods=('ewc',)", "--config.seed=1", "--config.strength.ewc=10000.0"]
  grid = bench.launch_command(_args(quick=False, chunk=8), pathlib.Path("/w/sweep"))
  assert grid[1:] == ["launch.py", "--config", "configs/split_mnist.py", "--workdir", "/w/sweep",
                      "--config.methods=('ewc',)", "--config.sweep.seeds=(0,1,)",
                      "--config.sweep.strengths.ewc=(100.0,10000.0,)", "--config.sweep.validation_fraction=0.0",
                      "--config.sweep.chunk=8"]


def test_side_order_alternates_over_rounds():
  bench = _benchmark()
  assert bench.side_order(0) == ("sweep", "sequential", "launches", "sweep_launch")
  assert bench.side_order(1) == ("sweep_launch", "launches", "sequential", "sweep")
  assert bench.side_order(2) == bench.side_order(0)


def test_read_sweep_accuracy_orders_members_and_refuses_a_different_grid(tmp_path):
  bench = _benchmark()
  (tmp_path / "ewc").mkdir()
  (tmp_path / "ewc" / "sweep_accuracy.csv").write_text(
      "seed,strength,after_task,task_0,task_1\n"
      "1,100.0,0,0.5,0.25\n1,100.0,1,0.5,0.75\n0,100.0,0,1.0,0.0\n0,100.0,1,0.875,1.0\n")
  assert bench.read_sweep_accuracy(tmp_path, "ewc", [(0, 100.0), (1, 100.0)]) == [
      [[1.0, 0.0], [0.875, 1.0]], [[0.5, 0.25], [0.5, 0.75]]]
  with pytest.raises(RuntimeError, match="expected"):
    bench.read_sweep_accuracy(tmp_path, "ewc", [(0, 100.0), (2, 100.0)])


@pytest.mark.slow  # five processes (two in-process sides, two launches, one sweep launch), each compiling its programs
def test_quick_mode_runs_all_four_sides_and_the_launches_equal_the_single_runs(shared_data):
  env = dict(os.environ, SHARED_DATA=str(shared_data))
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user runs it (the suite's conftest forces 8)
  done = subprocess.run([sys.executable, "benchmarks/continual_sweep.py", "--quick", "--seeds", "2",
                         "--strengths", "1e2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                        check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  report = json.loads(done.stdout)
  assert report["setup"]["members"] == 2 and report["setup"]["config"] == "configs/split_mnist.py:quick"
  for side in ("sweep", "sequential", "launches", "sweep_launch"):
    assert report[f"{side}_s"] > 0 and report["seconds"][side]["rounds"] == [report[f"{side}_s"]]
    assert len(report["load_average_1min_start_end"][side]) == 1  # one round: the load at its start and end
  # the ratios come from the unrounded times
  assert report["speedup_launches"] == pytest.approx(report["launches_s"] / report["sweep_launch_s"], abs=0.02)
  assert report["speedup"] == pytest.approx(report["sequential_s"] / report["sweep_s"], abs=0.02)
  assert report["max_accuracy_difference_launches_vs_sequential"] <= 1e-6  # the same single runs
  assert report["max_accuracy_difference_sweep_launch_vs_sweep"] <= 1e-6  # the same grid program
  assert report["max_accuracy_difference"] <= 0.05
