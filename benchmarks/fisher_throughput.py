"""Fisher-diagonal throughput: every estimator and path against a plain batched backward pass (examples/s).

    python benchmarks/fisher_throughput.py [--num-examples 10000] [--repeats 3] [--conv-examples 2000] [--no-torch]
                                           [--models mlp convnet]

Data: the real MNIST test images from the shared data folder ($SHARED_DATA or ../shared/data, `mnist/`), read with
`nas_forgetting.data.idx`. Models: the MLP 784-256-128-10 (`models.MLP(hidden=(256, 128))`) on all images, and a
small ConvNet (`models.ConvNet(features=(16, 32), hidden=(64,))`, 3x3 SAME convolutions with 2x2 max pooling) on
`--conv-examples` images. Each JAX measurement is the best of `--repeats` timed calls after one warm-up call that
compiles (compilation is excluded; the public functions are timed as a user calls them). When PyTorch is
importable, the same MLP in PyTorch is timed too: a plain batched backward and `torch.func.vmap(grad)` for the
empirical Fisher. Prints one JSON object; on a shared CPU the ratios to the plain backward are what count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np

from nas_forgetting import importance, paths
from nas_forgetting.data import idx
from nas_forgetting.models.convnet import ConvNet
from nas_forgetting.models.mlp import MLP
from timing import best_seconds


def _best_time(fn, repeats: int) -> float:
  return best_seconds(lambda: jax.block_until_ready(fn()), repeats)  # the first call compiles


def _load_mnist(n: int):
  folder = paths.shared_data_dir() / "mnist"
  images, labels = idx.load_idx_pair(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
  x = jnp.asarray(images[:n], jnp.float32) / 255.0
  return x, jnp.asarray(labels[:n], jnp.int32)


def _plain_backward(apply_fn):
  @jax.jit
  def grad_of_mean_loss(params, x, y):
    def loss(p):
      logits = apply_fn(p, x)
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
    return jax.grad(loss)(params)
  return grad_of_mean_loss


def _jax_rows(name, model, x, y, repeats, vmap_examples, chunk_per_layer, chunk_vmap):
  params = model.init(jax.random.key(0), x[:2])["params"]

  def apply_fn(p, xx):
    return model.apply({"params": p}, xx)

  n = int(x.shape[0])
  rows = []
  plain = _plain_backward(apply_fn)
  t = _best_time(lambda: plain(params, x, y), repeats)
  rows.append({"model": name, "method": "jax plain batched backward (floor)", "examples": n, "seconds": t})
  rng = jax.random.key(1)
  configs = [("per_layer", est, n, chunk_per_layer) for est in ("exact", "sampled", "empirical")]
  configs += [("vmap", est, min(n, vmap_examples), chunk_vmap) for est in ("exact", "sampled", "empirical")]
  configs += [("-", "batch", n, n)]
  for path, est, m, chunk in configs:
    kw = dict(estimator=est, chunk_size=chunk, rng=rng)
    if path != "-":
      kw["path"] = path
    t = _best_time(lambda: importance.fisher_diagonal(apply_fn, params, x[:m], y[:m], **kw), repeats)
    label = f"jax fisher {est}" + (f", {path} path" if path != "-" else " (square of batch-mean gradient)")
    rows.append({"model": name, "method": label, "examples": m, "chunk_size": chunk, "seconds": t})
  # MAS per-example on the per-layer path, for reference
  t = _best_time(lambda: importance.mas_importance(apply_fn, params, x, chunk_size=chunk_per_layer), repeats)
  rows.append({"model": name, "method": "jax MAS per_example (l2), per_layer path", "examples": n,
               "chunk_size": chunk_per_layer, "seconds": t})
  # the per-layer and vmap paths agree on these data (empirical Fisher, first vmap_examples images)
  m = min(n, vmap_examples)
  a = importance.fisher_diagonal(apply_fn, params, x[:m], y[:m], estimator="empirical", path="per_layer",
                                 chunk_size=chunk_per_layer)
  b = importance.fisher_diagonal(apply_fn, params, x[:m], y[:m], estimator="empirical", path="vmap",
                                 chunk_size=chunk_vmap)
  rel = max(float(jnp.max(jnp.abs(u - v)) / jnp.maximum(jnp.max(jnp.abs(v)), 1e-30))
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return rows, rel


def _torch_rows(x, y, repeats, vmap_examples):
  try:
    import torch
    from torch.func import functional_call, grad, vmap
  except ImportError:
    return [], None
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                            torch.nn.ReLU(), torch.nn.Linear(128, 10))
  xt = torch.from_numpy(np.asarray(x).reshape(x.shape[0], -1).copy())
  yt = torch.from_numpy(np.asarray(y).astype(np.int64))
  n = xt.shape[0]

  def timed(fn):
    return best_seconds(fn, repeats)

  def plain():
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(xt), yt).backward()

  rows = [{"model": "mlp", "method": "torch plain batched backward", "examples": n, "seconds": timed(plain)}]
  params = {k: v.detach() for k, v in net.named_parameters()}

  def loss_one(p, xi, yi):
    return torch.nn.functional.cross_entropy(functional_call(net, p, (xi[None],)), yi[None])

  per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
  m = min(n, vmap_examples)

  def func_vmap():
    with torch.no_grad():
      out = {k: torch.zeros_like(v) for k, v in params.items()}
      for s in range(0, m, 500):
        g = per_example(params, xt[s:s + 500], yt[s:s + 500])
        for k in out:
          out[k] += (g[k] ** 2).sum(0)
      return out

  rows.append({"model": "mlp", "method": "torch.func vmap(grad) empirical Fisher", "examples": m, "chunk_size": 500,
               "seconds": timed(func_vmap)})
  return rows, torch.__version__


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num-examples", type=int, default=10000)
  parser.add_argument("--vmap-examples", type=int, default=2000, help="examples for the (slow) vmap rows")
  parser.add_argument("--conv-examples", type=int, default=2000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--models", nargs="+", choices=("mlp", "convnet"), default=("mlp", "convnet"))
  args = parser.parse_args()

  x, y = _load_mnist(args.num_examples)
  rows, agree = [], {}
  if "mlp" in args.models:
    mlp_rows, agree["mlp"] = _jax_rows("mlp", MLP(hidden=(256, 128), num_outputs=10), x, y, args.repeats,
                                       args.vmap_examples, chunk_per_layer=args.num_examples, chunk_vmap=500)
    rows += mlp_rows
  if "convnet" in args.models:
    conv_rows, agree["convnet"] = _jax_rows("convnet", ConvNet(features=(16, 32), hidden=(64,), num_outputs=10),
                                            x[:args.conv_examples], y[:args.conv_examples], args.repeats,
                                            min(args.vmap_examples, args.conv_examples), chunk_per_layer=500,
                                            chunk_vmap=250)
    rows += conv_rows
  torch_version = None
  if not args.no_torch and "mlp" in args.models:
    torch_rows, torch_version = _torch_rows(x, y, args.repeats, args.vmap_examples)
    rows += torch_rows
  floor = {r["model"]: r["examples"] / r["seconds"] for r in rows if r["method"].startswith("jax plain")}
  for r in rows:
    r["examples_per_s"] = r["examples"] / r["seconds"]
    r["ratio_to_jax_plain_backward"] = r["examples_per_s"] / floor[r["model"]]
  print(json.dumps({
      "benchmark": "fisher_throughput",
      "device": f"{jax.devices()[0].device_kind} ({os.cpu_count()} cores), {platform.processor() or platform.machine()}",
      "data": f"MNIST test split (real), first {args.num_examples} images (convnet: {args.conv_examples})",
      "versions": {"jax": jax.__version__, "python": platform.python_version(), "torch": torch_version},
      "repeats": args.repeats, "timing": "best of repeats after one compile/warm-up call",
      "per_layer_vs_vmap_max_rel_diff": agree,
      "rows": rows,
  }, indent=1))


if __name__ == "__main__":
  main()
