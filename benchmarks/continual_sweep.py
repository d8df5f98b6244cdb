"""A sweep of seeds x strengths in one compiled program vs the same members run one at a time, in and out of process.

  python benchmarks/continual_sweep.py [--seeds 4 --strengths 1e2,1e3,1e4,1e5 --method ewc --config split_mnist]
                                       [--rounds 1] [--chunk 0] [--quick]

Setup: `configs/split_mnist.py` (task-IL, 5 tasks of 2 digits, the offline MNIST test split carved into 8,000
train / 2,000 test images, MLP 784-400-400, Adam lr 1e-3, 4 epochs per task of batch 128, Fisher on 1,000
examples per task), `--method` alone, swept over `--seeds` seeds (0, 1, ...) x `--strengths`, no validation split.
`--quick` uses the `quick` variant (smoke test). Four sides, each in fresh Python processes of its own (so each pays
its own compilation):
  sweep_s         the whole grid in one vmapped program (`continual.sweep.run_method`, chunked as configured), timed
                  in its process after the task stream is loaded
  sequential_s    the same members as single runs (`runner.MethodRun.run`), one after the other in one process (they
                  share one compilation of the epoch through the runner's cache), each writing what a launch writes
                  (checkpoint per epoch, metrics, CSV, plots) into a temporary folder; timed like `sweep_s`
  launches_s      every member as its own `python launch.py --config configs/<config>.py --workdir <tmp>/<i>
                  --config.methods=('<method>',) --config.seed=<seed> --config.strength.<method>=<strength>` process,
                  one after the other: what a user of a library without sweeps runs (one process per seed and
                  strength). Wall-clock from each process's start to its exit (Python and JAX start-up, data loading,
                  compilation and outputs included), summed
  sweep_launch_s  the whole grid as ONE `python launch.py` process with the sweep config (`--config.sweep.seeds=...
                  --config.sweep.strengths.<method>=... --config.sweep.validation_fraction=0.0
                  --config.sweep.chunk=<chunk>`), wall-clock from start to exit
`launches_over_sweep_launch` is the user-level ratio (both sides whole processes); `sequential_over_sweep` the
conservative in-process one (the sequential side already shares one compilation). With `--rounds N` every side runs
N times, the order of the sides reversed every other round; each side reports every round's time, the min and the
median, and the ratios are given on medians and on minima (the top-level `*_s` figures are the medians). The
1-minute load average is recorded at the start and end of every side (on a shared machine the sides may run under
different loads).

Prints one JSON object: the times and ratios; the largest differences between accuracy matrices (sweep vs
sequential, overall and per member: float rounding of the vmapped products, amplified by training; launches vs
sequential: the same single runs, which must agree to float tolerance; sweep launch vs sweep: the same program);
the devices and the versions. The launched members equal the grid's members only when the task stream does not
depend on `config.seed` (Split MNIST; a permuted stream draws its permutations from the seed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SIDES = ("sweep", "sequential", "launches", "sweep_launch")
IN_PROCESS = ("sweep", "sequential")


def _config(args):
  sys.path.insert(0, str(REPO))
  import importlib  # pylint: disable=import-outside-toplevel
  config = importlib.import_module(f"configs.{args.config}").get_config("quick" if args.quick else None)
  config.methods = (args.method,)
  config.sweep.seeds = tuple(range(args.seeds))
  config.sweep.strengths[args.method] = _strengths(args)
  config.sweep.validation_fraction = 0.0
  config.sweep.chunk = args.chunk
  return config


def _strengths(args) -> tuple[float, ...]:
  return tuple(float(s) for s in args.strengths.split(","))


def _members(args) -> list[tuple[int, float]]:
  """The grid's (seed, strength) members, seed-major (the order of `continual.sweep.grid`)."""
  return [(seed, strength) for seed in range(args.seeds) for strength in _strengths(args)]


def _tuple_literal(values) -> str:
  """A Python tuple literal that `--config.<field>=` parses (a trailing comma keeps one element a tuple)."""
  return "(" + ",".join(repr(v) for v in values) + ",)"


def launch_command(args, workdir: pathlib.Path, *, member: tuple[int, float] | None = None) -> list[str]:
  """The `python launch.py` command of one grid member (`member`: its seed and strength), or of the whole grid as
  one sweep (`member=None`), with the benchmark's config (`--config`, `--quick`, `--method`, `--chunk`)."""
  cmd = [sys.executable, "launch.py", "--config", f"configs/{args.config}.py" + (":quick" if args.quick else ""),
         "--workdir", str(workdir), f"--config.methods={_tuple_literal((args.method,))}"]
  if member is not None:
    seed, strength = member
    return cmd + [f"--config.seed={seed}", f"--config.strength.{args.method}={float(strength)!r}"]
  return cmd + [f"--config.sweep.seeds={_tuple_literal(range(args.seeds))}",
                f"--config.sweep.strengths.{args.method}={_tuple_literal(_strengths(args))}",
                "--config.sweep.validation_fraction=0.0", f"--config.sweep.chunk={args.chunk}"]


def _run_process(cmd: list[str]) -> float:
  """Runs `cmd` in the repository; its wall-clock seconds from start to exit (a failure raises with its output)."""
  start = time.perf_counter()
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if done.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
  return seconds


def _read_matrix_rows(path: pathlib.Path) -> list[dict[str, str]]:
  with open(path, newline="", encoding="utf-8") as fh:
    return list(csv.DictReader(fh))


def _task_columns(row: dict[str, str]) -> list[str]:
  return sorted((k for k in row if k.startswith("task_")), key=lambda k: int(k[len("task_"):]))


def read_member_accuracy(workdir: pathlib.Path, method: str) -> list[list[float]]:
  """A launched single run's accuracy matrix (T, T) from `<workdir>/<method>/accuracy_matrix.csv`."""
  rows = _read_matrix_rows(workdir / method / "accuracy_matrix.csv")
  return [[float(r[k]) for k in _task_columns(r)] for r in rows]


def read_sweep_accuracy(workdir: pathlib.Path, method: str, members: list[tuple[int, float]]) -> list:
  """A launched sweep's accuracy matrices (G, T, T), in the order of `members`, from
  `<workdir>/<method>/sweep_accuracy.csv` (rows: seed, strength, after_task, task_j)."""
  by_member: dict[tuple[int, float], list[list[float]]] = {}
  for r in _read_matrix_rows(workdir / method / "sweep_accuracy.csv"):
    by_member.setdefault((int(r["seed"]), float(r["strength"])), []).append([float(r[k]) for k in _task_columns(r)])
  if sorted(by_member) != sorted(members):
    raise RuntimeError(f"the launched sweep wrote members {sorted(by_member)}; expected {sorted(members)}")
  return [by_member[m] for m in members]


def _in_process_side(args) -> dict:
  """One in-process side of the comparison ('sweep' or 'sequential'): seconds and accuracy matrices."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from nas_forgetting.continual import experiment, sweep  # pylint: disable=import-outside-toplevel
  from nas_forgetting.continual.runner import MethodRun  # pylint: disable=import-outside-toplevel

  config = _config(args)
  experiment.validate_config(config)
  tasks = experiment.load_tasks(config)
  members = sweep.grid(config, args.method)
  start = time.perf_counter()
  if args.side == "sweep":
    result = sweep.run_method(config, tasks, args.method)
    accuracy, chunk = result["accuracy"], result["chunk"]
  else:
    chunk = 1
    with tempfile.TemporaryDirectory() as tmp:
      accuracy = np.stack([MethodRun(sweep.member_config(config, seed), tasks, sweep.member_label(args.method, s),
                                     pathlib.Path(tmp) / str(i)).run()["accuracy"]
                           for i, (seed, s) in enumerate(members)])
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "accuracy": accuracy.tolist(), "chunk": chunk, "members": members}


def run_side(side: str, args, argv: list[str]) -> dict:
  """One side, in processes of its own: {'seconds', 'accuracy' (G, T, T) as nested lists, ...}."""
  if side in IN_PROCESS:
    cmd = [sys.executable, __file__, "--side", side] + argv
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])
  members = _members(args)
  with tempfile.TemporaryDirectory(prefix=f"continual_sweep_{side}_") as tmp:
    tmp = pathlib.Path(tmp)
    if side == "launches":
      seconds, accuracy = 0.0, []
      for i, member in enumerate(members):
        seconds += _run_process(launch_command(args, tmp / str(i), member=member))
        accuracy.append(read_member_accuracy(tmp / str(i), args.method))
    else:
      seconds = _run_process(launch_command(args, tmp / "sweep"))
      accuracy = read_sweep_accuracy(tmp / "sweep", args.method, members)
  return {"seconds": seconds, "accuracy": accuracy, "members": [list(m) for m in members]}


def side_order(round_index: int) -> tuple[str, ...]:
  """The order of the sides in round `round_index` (0-based): SIDES, reversed every other round."""
  return SIDES if round_index % 2 == 0 else SIDES[::-1]


def _gap(a, b):
  import numpy as np  # pylint: disable=import-outside-toplevel
  gap = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
  return float(gap.max()), [round(float(x), 4) for x in gap.reshape(gap.shape[0], -1).max(1)]


def _ratios(times: dict[str, float]) -> dict[str, float]:
  return {"launches_over_sweep_launch": round(times["launches"] / times["sweep_launch"], 2),
          "sequential_over_sweep": round(times["sequential"] / times["sweep"], 2),
          "launches_over_sequential": round(times["launches"] / times["sequential"], 2),
          "sweep_launch_over_sweep": round(times["sweep_launch"] / times["sweep"], 2)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--config", default="split_mnist")
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--method", default="ewc")
  parser.add_argument("--seeds", type=int, default=4)
  parser.add_argument("--strengths", default="1e2,1e3,1e4,1e5")
  parser.add_argument("--chunk", type=int, default=0, help="sweep.chunk (0: sized from memory)")
  parser.add_argument("--rounds", type=int, default=1, help="times every side runs (order reversed every other round)")
  parser.add_argument("--side", choices=IN_PROCESS, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.side:
    print(json.dumps(_in_process_side(args)))
    return
  if args.rounds < 1 or args.seeds < 1:
    parser.error("--rounds and --seeds must be >= 1")

  argv = sys.argv[1:]
  seconds: dict[str, list[float]] = {side: [] for side in SIDES}
  load: dict[str, list[list[float]]] = {side: [] for side in SIDES}  # 1-minute load average at a side's start, end
  first: dict[str, dict] = {}  # each side's first result (its accuracy matrices; every round computes the same)
  for r in range(args.rounds):
    for side in side_order(r):
      before = os.getloadavg()[0]
      result = run_side(side, args, argv)
      load[side].append([round(before, 2), round(os.getloadavg()[0], 2)])
      seconds[side].append(result["seconds"])
      first.setdefault(side, result)
      print(f"round {r + 1}/{args.rounds}: {side} {result['seconds']:.2f} s", file=sys.stderr, flush=True)

  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import flax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  config = _config(args)
  median = {s: statistics.median(v) for s, v in seconds.items()}
  minimum = {s: min(v) for s, v in seconds.items()}
  diff, per_member = _gap(first["sweep"]["accuracy"], first["sequential"]["accuracy"])
  launch_diff, launch_per_member = _gap(first["launches"]["accuracy"], first["sequential"]["accuracy"])
  sweep_launch_diff, _ = _gap(first["sweep_launch"]["accuracy"], first["sweep"]["accuracy"])
  ratios = _ratios(median)
  print(json.dumps({
      "benchmark": "continual_sweep",
      "setup": {"config": f"configs/{args.config}.py" + (":quick" if args.quick else ""), "method": args.method,
                "seeds": list(config.sweep.seeds), "strengths": list(config.sweep.strengths[args.method]),
                "members": len(first["sweep"]["members"]), "data": f"{config.data.source} {config.data.path} "
                f"({config.data.train_size} train / {config.data.test_size} test)", "tasks": config.stream.num_tasks,
                "hidden": list(config.model.hidden), "epochs_per_task": config.train.epochs,
                "batch_size": config.train.batch_size, "rounds": args.rounds,
                "launch_member_example": " ".join(launch_command(args, pathlib.Path("<tmp>/0"),
                                                                 member=_members(args)[0])[1:]),
                "launch_sweep": " ".join(launch_command(args, pathlib.Path("<tmp>/sweep"))[1:])},
      "sweep_s": round(median["sweep"], 2), "sweep_chunk": first["sweep"]["chunk"],
      "sequential_s": round(median["sequential"], 2),
      "launches_s": round(median["launches"], 2),
      "sweep_launch_s": round(median["sweep_launch"], 2),
      "speedup": ratios["sequential_over_sweep"],
      "speedup_launches": ratios["launches_over_sweep_launch"],
      "ratios_median": ratios, "ratios_min": _ratios(minimum),
      "seconds": {s: {"rounds": [round(x, 2) for x in v], "min": round(minimum[s], 2), "median": round(median[s], 2)}
                  for s, v in seconds.items()},
      "order": [list(side_order(r)) for r in range(args.rounds)],
      "load_average_1min_start_end": load,
      "max_accuracy_difference": diff,
      "max_accuracy_difference_per_member": per_member,
      "max_accuracy_difference_launches_vs_sequential": launch_diff,
      "max_accuracy_difference_launches_vs_sequential_per_member": launch_per_member,
      "max_accuracy_difference_sweep_launch_vs_sweep": sweep_launch_diff,
      "devices": [str(d) for d in jax.devices()], "backend": jax.default_backend(),
      "versions": {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
                   "optax": optax.__version__, "numpy": np.__version__},
  }, indent=2))


if __name__ == "__main__":
  main()
