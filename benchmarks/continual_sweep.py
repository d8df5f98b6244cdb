"""A sweep of seeds x strengths in one compiled program vs the same single runs one after the other.

  python benchmarks/continual_sweep.py [--seeds 4 --strengths 1e2,1e3,1e4,1e5 --method ewc --config split_mnist]

Setup: `configs/split_mnist.py` (task-IL, 5 tasks of 2 digits, the offline MNIST test split carved into 8,000
train / 2,000 test images, MLP 784-400-400, Adam lr 1e-3, 4 epochs per task of batch 128, Fisher on 1,000
examples per task), `--method` alone, swept over `--seeds` seeds (0, 1, ...) x `--strengths`, no validation split.
`--quick` uses the `quick` variant (smoke test). Each side runs in a fresh Python process of its own (so each pays
its own compilation), after the task stream is loaded:
  sweep_s       the whole grid in one vmapped program (`continual.sweep.run_method`, chunked as configured)
  sequential_s  the same members as single runs (`runner.MethodRun.run`), one after the other in one process (they
                share one compilation of the epoch through the runner's cache), each writing what a launch writes
                (checkpoint per epoch, metrics, CSV, plots) into a temporary folder
Both include compilation. Prints one JSON object: both times, their ratio, the largest difference between the two
sides' accuracy matrices (overall and per member: float rounding of the vmapped products, amplified by training),
the devices and the versions.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(args):
  sys.path.insert(0, str(REPO))
  import importlib  # pylint: disable=import-outside-toplevel
  config = importlib.import_module(f"configs.{args.config}").get_config("quick" if args.quick else None)
  config.methods = (args.method,)
  config.sweep.seeds = tuple(range(args.seeds))
  config.sweep.strengths[args.method] = tuple(float(s) for s in args.strengths.split(","))
  config.sweep.validation_fraction = 0.0
  config.sweep.chunk = args.chunk
  return config


def _side(args) -> dict:
  """One side of the comparison in this process: seconds and accuracy matrices."""
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


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="split_mnist")
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--method", default="ewc")
  parser.add_argument("--seeds", type=int, default=4)
  parser.add_argument("--strengths", default="1e2,1e3,1e4,1e5")
  parser.add_argument("--chunk", type=int, default=0, help="sweep.chunk (0: sized from memory)")
  parser.add_argument("--side", choices=("sweep", "sequential"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.side:
    print(json.dumps(_side(args)))
    return

  sides = {}
  for side in ("sweep", "sequential"):
    cmd = [sys.executable, __file__, "--side", side] + sys.argv[1:]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    sides[side] = json.loads(out.strip().splitlines()[-1])

  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import flax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  config = _config(args)
  gap = np.abs(np.asarray(sides["sweep"]["accuracy"]) - np.asarray(sides["sequential"]["accuracy"]))
  diff = float(gap.max())
  print(json.dumps({
      "benchmark": "continual_sweep",
      "setup": {"config": f"configs/{args.config}.py" + (":quick" if args.quick else ""), "method": args.method,
                "seeds": list(config.sweep.seeds), "strengths": list(config.sweep.strengths[args.method]),
                "members": len(sides["sweep"]["members"]), "data": f"{config.data.source} {config.data.path} "
                f"({config.data.train_size} train / {config.data.test_size} test)", "tasks": config.stream.num_tasks,
                "hidden": list(config.model.hidden), "epochs_per_task": config.train.epochs,
                "batch_size": config.train.batch_size},
      "sweep_s": round(sides["sweep"]["seconds"], 2), "sweep_chunk": sides["sweep"]["chunk"],
      "sequential_s": round(sides["sequential"]["seconds"], 2),
      "speedup": round(sides["sequential"]["seconds"] / sides["sweep"]["seconds"], 2),
      "max_accuracy_difference": diff,
      "max_accuracy_difference_per_member": [round(float(x), 4) for x in gap.reshape(gap.shape[0], -1).max(1)],
      "devices": [str(d) for d in jax.devices()], "backend": jax.default_backend(),
      "versions": {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
                   "optax": optax.__version__, "numpy": np.__version__},
  }, indent=2))


if __name__ == "__main__":
  main()
