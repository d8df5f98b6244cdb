"""The evaluator over two processes joined by jax.distributed on localhost equals a single-process run."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_two_processes_over_loopback_match_one_process():
  env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dpnas_multiprocess.py"), "--processes", "2",
                        "--devices-per-process", "2", "--seeds", "4"], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert report["global_devices"] == 4 and report["processes"] == 2
  assert report["all_processes_match_single_process"] is True
  assert len(report["val_accuracies"]) == 4
