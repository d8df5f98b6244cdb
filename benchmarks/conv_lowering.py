"""Single convolution layers of sampled DP-NAS nets: XLA's convolution against `deep_prior.cpu_conv`'s forms, and
PyTorch's when it is installed, side by side in one process.

  python benchmarks/conv_lowering.py [--batch 256] [--repeats 3] [--layers H,CIN,COUT,K,PAD ...]

Each layer (input H x H x CIN, COUT outputs, K x K kernel, stride 1, padding PAD) is timed alone, jitted, on random
data: `xla` (`lax.conv_general_dilated`), `cpu_conv` (what `conv="cpu"` computes: a 1x1 unpadded layer as a matrix
product, an unpadded larger kernel as the centre of the zero-padded convolution, anything else unchanged) and
`torch` (`torch.nn.functional.conv2d`, NCHW, its default CPU threads). A layer alone is how a BatchNorm calibration
pass sees it (its statistics separate each layer from the next); in an inference pass XLA fuses the whole stack and
times differ. Prints one JSON object: per layer the best of `--repeats` runs in milliseconds and GFLOP/s (the unpadded
layer's multiply-adds x 2, the border `cpu_conv` computes and drops not counted), the speedups over `xla`, and the
largest difference between `cpu_conv`'s result and XLA's relative to the largest output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from timing import best_seconds

# unpadded layers of sampled nets (benchmarks/side_by_side_dpnas.py's search segment), and padded ones for contrast
DEFAULT_LAYERS = ["28,64,32,5,0", "24,128,32,7,0", "28,128,128,1,0", "24,64,16,1,0", "24,16,64,7,0",
                  "14,128,16,5,0", "24,128,128,11,0", "24,64,16,3,1", "24,32,128,7,3"]


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--layers", nargs="+", default=DEFAULT_LAYERS, help="H,CIN,COUT,K,PAD per layer")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  import jax
  import numpy as np
  from nas_forgetting.models import deep_prior as dp
  try:
    import torch
  except ImportError:
    torch = None
  layout = ("NHWC", "HWIO", "NHWC")
  rng = np.random.default_rng(0)
  rows = []
  for spec in args.layers:
    size, cin, cout, kernel, pad = (int(v) for v in spec.split(","))
    x = rng.random((args.batch, size, size, cin), np.float32)
    w = (rng.standard_normal((kernel, kernel, cin, cout)) * 0.1).astype(np.float32)
    conv_args = ((1, 1), ((pad, pad), (pad, pad)))
    out = size + 2 * pad - kernel + 1
    gflop = 2 * args.batch * out * out * kernel * kernel * cin * cout / 1e9
    row = {"layer": spec, "gflop": round(gflop, 4)}
    xj, wj = jax.device_put(x), jax.device_put(w)
    results = {}
    for name, conv in (("xla", jax.lax.conv_general_dilated), ("cpu_conv", dp.cpu_conv)):
      fn = jax.jit(lambda x, w, conv=conv: conv(x, w, *conv_args, dimension_numbers=layout))
      results[name] = np.asarray(fn(xj, wj))
      row[name + "_ms"] = 1000 * best_seconds(lambda: fn(xj, wj).block_until_ready(), args.repeats)
    scale = float(np.abs(results["xla"]).max())
    row["cpu_conv_max_relative_difference"] = float(np.abs(results["cpu_conv"] - results["xla"]).max()) / scale
    if torch is not None:
      xt, wt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
      with torch.no_grad():
        row["torch_ms"] = 1000 * best_seconds(lambda: torch.nn.functional.conv2d(xt, wt, padding=pad), args.repeats)
    for name in ("xla", "cpu_conv", "torch"):
      if name + "_ms" in row:
        row[name + "_gflops"] = round(gflop / row[name + "_ms"] * 1000, 1)
        row[name + "_speedup_over_xla"] = round(row["xla_ms"] / row[name + "_ms"], 2)
        row[name + "_ms"] = round(row[name + "_ms"], 3)
    rows.append(row)
  print(json.dumps({"bench": "conv_lowering", "batch": args.batch, "repeats": args.repeats,
                    "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                    "jax": jax.__version__, "torch": getattr(torch, "__version__", None),
                    "load": list(os.getloadavg()), "layers": rows}))


if __name__ == "__main__":
  main()
