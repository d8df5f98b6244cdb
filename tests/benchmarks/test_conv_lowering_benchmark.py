"""benchmarks/conv_lowering.py runs (a tiny layer of each kind) and reports `cpu_conv` equal to XLA's convolution."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import conv_lowering  # noqa: E402  (the benchmarks folder is not a package)


def test_conv_lowering_prints_every_layer(capsys):
  conv_lowering.main(["--batch", "2", "--repeats", "1", "--layers", "8,16,4,3,0", "8,16,4,1,0", "8,3,4,3,1"])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert [row["layer"] for row in out["layers"]] == ["8,16,4,3,0", "8,16,4,1,0", "8,3,4,3,1"]
  for row in out["layers"]:
    assert row["xla_ms"] > 0 and row["cpu_conv_ms"] > 0 and row["xla_speedup_over_xla"] == 1.0
    assert row["cpu_conv_max_relative_difference"] < 1e-5
