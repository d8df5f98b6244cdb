"""benchmarks/side_by_side_dpnas.py: skips cleanly (JSON with a reason, exit 0) without the reference, and its
project side runs on a tiny configuration (the same code path as a full round)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "side_by_side_dpnas.py"


def run(*args, env=None):
  out = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_skips_without_the_reference(tmp_path):
  report = run("--peers", str(tmp_path / "absent"))
  assert report["bench"] == "dpnas_side_by_side" and "skipped" in report


@pytest.mark.slow  # a fresh process compiling two small nets: 20-50 s on 2 busy cores
def test_project_side_on_a_tiny_configuration(shared_data, tmp_path):
  nets = tmp_path / "nets.json"
  nets.write_text(json.dumps(["[C(8,1,1,0,1), P(4,4,0,0), SM(10)]"]))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  report = run("--side", "project", "--net", "[C(4,3,1,1,0), P(4,4,0,0), SM(10)]", "--n-train", "48", "--n-val",
               "16", "--epochs", "1", "--data", str(shared_data / "mnist"), "--nets-json", str(nets), env=env)
  assert report["cold_s"] > 0 and report["warm_s"] > 0 and len(report["segment_per_net_s"]) == 1
  assert all(0 <= r <= 1 for r in report["segment_rewards"])
