"""The GPU suite's smoke mode: every benchmark of `benchmarks/gpu_suite.py` runs at tiny sizes on the CPU and the
JSON and markdown it writes hold every benchmark's result, with TensorFlow and tensorflow-datasets unimportable (the
GPU machine has neither). Nothing is timed here; this only keeps the suite from rotting."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BLOCKED = ("tensorflow", "tensorflow_datasets")


@pytest.mark.slow  # about 80 s of CPU time: five benchmark processes, each compiling its programs
def test_gpu_suite_smoke_runs_every_benchmark_and_writes_json_and_markdown(tmp_path, shared_data):
  block = tmp_path / "block"
  for name in BLOCKED:
    (block / name).mkdir(parents=True)
    (block / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by the GPU suite smoke test')\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), str(REPO)]), SHARED_DATA=str(shared_data))
  out = tmp_path / "out"
  done = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", str(out), "--smoke"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  log = (out / "gpu_suite.log").read_text() if (out / "gpu_suite.log").exists() else ""
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + log[-5000:]

  spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
  suite = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(suite)
  report = json.loads((out / "gpu_suite.json").read_text())
  assert report["mode"] == "smoke"
  entries = {e["name"]: e for e in report["benchmarks"]}
  assert list(entries) == [b.name for b in suite.BENCHMARKS]
  has_torch = importlib.util.find_spec("torch") is not None
  for bench in suite.BENCHMARKS:
    entry = entries[bench.name]
    assert entry["rc"] == 0 and isinstance(entry["result"], dict), entry
    if has_torch:  # every headline figure is where the table looks for it
      assert "skipped" not in entry["result"], entry["result"]
      missing = [p for label, p in bench.headline.items() if label != "skipped" and suite.lookup(entry["result"], p)
                 is None]
      assert not missing, (bench.name, missing)
  if has_torch:
    assert all(entries[n]["result"]["evaluated"] for n in entries if n.startswith("dpnas_evaluation_reference"))
  table = (out / "gpu_suite.md").read_text().splitlines()
  rows = [line for line in table if line.startswith("| ") and not line.startswith("| benchmark")]
  assert [row.split(" | ")[0][2:] for row in rows] == [b.name for b in suite.BENCHMARKS]
