"""The DP-NAS evaluator benchmark runs without TensorFlow: a tiny run of benchmarks/dpnas_evaluator.py in a fresh
process where every import of tensorflow or tensorflow_datasets is recorded and refused."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Runs the benchmark as __main__ behind a finder that records and refuses the TensorFlow packages (installed or not,
# and even where the import is caught), then prints what was attempted as the last line.
DRIVER = """
import importlib.abc, json, runpy, sys

BLOCKED = ("tensorflow", "tensorflow_datasets")
attempted = []

class Refuse(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      attempted.append(name)
      raise ImportError(f"{name} is refused in this test")
    return None

sys.meta_path.insert(0, Refuse())
sys.argv = ["dpnas_evaluator.py"] + sys.argv[1:]
runpy.run_path(sys.argv.pop(1), run_name="__main__")
print(json.dumps({"attempted": attempted, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
"""


@pytest.mark.slow  # a fresh process with three compilations: about 20 s on 2 cores
def test_evaluator_benchmark_needs_no_tensorflow(shared_data, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
             XLA_FLAGS="--xla_force_host_platform_device_count=1", SHARED_DATA=str(shared_data))
  args = ["--train", "64", "--val", "32", "--image-size", "8", "--epochs", "1", "--seeds", "2",
          "--net", "[C(4,3,1,1,1), P(2,2,0,0), SM(10)]", "--other-net", "[C(4,1,1,0,1), P(2,2,0,0), SM(10)]"]
  out = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / "benchmarks" / "dpnas_evaluator.py"), *args],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  assert json.loads(lines[-1]) == {"attempted": [], "loaded": []}
  report = json.loads(lines[-2])
  assert report["first_eval_s"] > 0
