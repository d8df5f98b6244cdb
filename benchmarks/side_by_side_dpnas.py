"""DP-NAS side by side with the PyTorch reference, on the same data, in alternating rounds, in one command.

  python benchmarks/side_by_side_dpnas.py [--rounds 3] [--segment 5] [--n-train 2000 --n-val 500 --epochs 3]
                                          [--peers ../shared/peers/dpnas] [--data ../shared/data/mnist]

Each round runs both sides (the order alternates between rounds), each in a fresh process:

* the reference: `<peers>/bench.py --device cpu --repeats 2 --nets-json <segment>` (its own training code, its
  default per-sample embedding files on disk unless `--embed-store memory`);
* the project: this script with `--side project`, the `Evaluator` with the reference's settings (3 epochs, batch
  128, Adam 1e-3, BatchNorm calibrated on the first 1,024 training images).

Data: the first n_train + n_val images of the MNIST test split (`t10k`, the only split available offline; the
reference's bench reads the same file), scaled to [0, 1] and split at random into train/val; the validation images
stand in for the test split on both sides, as in the reference's bench. Measured, wall-clock inside each process
(imports and process start excluded on both sides):

1. one evaluation of `--net` (the README net): `cold` the first in the process (the project compiles everything,
   the reference warms up torch), `warm` the same architecture with a new random encoder (nothing compiled);
2. a search segment: `--segment` new architectures sampled by the project's search space (epsilon 1, seeded,
   feasible ones only; the same list every round; conv widths and depth narrowed by `--conv-features` and
   `--max-conv` so that a round fits in minutes on a small CPU) evaluated one after another after (1), compilation included:
   evaluations per hour.

Prints one JSON object: per side the values of every round with their min and median, the ratios (reference time /
project time, project evaluations per hour / reference's) per round and of the medians, and `uptime`'s load before
and after each round (the CPU may be shared: read ratios within a round). Skips cleanly (JSON with `skipped`, exit
0) when torch or the reference's `bench.py` is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from dpnas_evaluator import README_NET  # noqa: E402  (the benchmarks folder is not a package)

DEFAULT_PEERS = ROOT.parent / "shared" / "peers" / "dpnas"


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--peers", default=str(DEFAULT_PEERS), help="folder of the reference's bench.py")
  parser.add_argument("--data", default="", help="MNIST IDX folder (default: the shared data's mnist)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--segment", type=int, default=5, help="new architectures per search segment (0: none)")
  parser.add_argument("--sample-seed", type=int, default=0, help="seed of the architecture sampling")
  parser.add_argument("--conv-features", default="16,32,64,128",
                      help="the search space's conv widths (the reference's: 16,32,64,128,256,512,1024, whose "
                           "early samples take many minutes each on a 2-core CPU)")
  parser.add_argument("--max-conv", type=int, default=6, help="the search space's maximum conv depth (reference 12)")
  parser.add_argument("--net", default=README_NET)
  parser.add_argument("--n-train", type=int, default=2000)
  parser.add_argument("--n-val", type=int, default=500)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--embed-store", choices=["disk", "memory"], default="disk", help="the reference's")
  parser.add_argument("--conv", default="auto", help="the project's EvalConfig.conv (auto: matmul on the CPU)")
  parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed to one side of one round")
  parser.add_argument("--side", choices=["both", "project"], default="both", help=argparse.SUPPRESS)
  parser.add_argument("--nets-json", default="", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def data_folder(args) -> pathlib.Path:
  if args.data:
    return pathlib.Path(args.data)
  from nas_forgetting.paths import shared_data_dir
  return shared_data_dir() / "mnist"


def reference_data(args):
  """The first n_train + n_val test images in [0, 1], split at random (seeded) into train/val; val is also test."""
  import numpy as np
  from nas_forgetting.data.idx import load_idx_pair
  from nas_forgetting.dpnas.evaluator import SplitData, split_train_val
  folder = data_folder(args)
  images, labels = load_idx_pair(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
  n = args.n_train + args.n_val
  x = images[:n].astype(np.float32) / 255.0
  train_x, train_y, val_x, val_y = split_train_val(x, labels[:n], val_fraction=args.n_val / n, seed=0)
  return SplitData(train_x, train_y, val_x, val_y, val_x, val_y, 10)


def search_space(args):
  from nas_forgetting.dpnas.state_space import SearchSpace
  features = tuple(int(v) for v in args.conv_features.split(","))
  return SearchSpace(image_size=28, num_classes=10, conv_features=features, max_conv=args.max_conv)


def sample_segment(space, n: int, seed: int) -> list[str]:
  """`n` distinct feasible architectures sampled as a search samples them at epsilon 1."""
  import numpy as np
  from nas_forgetting.dpnas.q_learning import QTable
  table, rng, nets = QTable(space), np.random.default_rng(seed), []
  while len(nets) < n:
    net = table.sample_net(1.0, rng)
    if net not in nets and space.check_feasible(net, 1).ok:
      nets.append(net)
  return nets


def project_side(args) -> dict:
  """Runs in its own process: the README net twice (cold, warm), then the segment; prints one JSON line."""
  import jax
  from nas_forgetting.dpnas import evaluator as ev
  evaluator = ev.Evaluator(reference_data(args), ev.EvalConfig(epochs=args.epochs, conv=args.conv))

  def timed(net, seed):
    start = time.perf_counter()
    result = evaluator.evaluate(net, [seed])[0]
    return time.perf_counter() - start, result

  cold, first = timed(args.net, 0)
  warm, _ = timed(args.net, 1)
  nets = json.loads(pathlib.Path(args.nets_json).read_text()) if args.nets_json else []
  per_net, rewards = [], []
  for k, net in enumerate(nets):
    seconds, result = timed(net, 100 + k)
    per_net.append(round(seconds, 3))
    rewards.append(round(result.reward, 4))
  return {"cold_s": round(cold, 3), "warm_s": round(warm, 3), "segment_s": round(sum(per_net), 3),
          "segment_per_net_s": per_net, "segment_rewards": rewards, "readme_final_val_acc": first.acc_val_all_epochs[-1],
          "jax": jax.__version__, "devices": jax.device_count(), "traces": dict(ev.TRACES)}


def run_json(command: list[str], timeout: int, cwd=None) -> dict:
  out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)
  if out.returncode:
    raise SystemExit(f"{' '.join(command[:3])} failed ({out.returncode}):\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def reference_round(args, nets_json: str) -> dict:
  peers = pathlib.Path(args.peers)
  command = [sys.executable, str(peers / "bench.py"), "--device", "cpu", "--epochs", str(args.epochs), "--net",
             args.net, "--n-train", str(args.n_train), "--n-val", str(args.n_val), "--workers", "0", "--repeats", "2",
             "--embed-store", args.embed_store]
  if args.segment:
    command += ["--nets-json", nets_json]
  report = run_json(command, args.timeout, cwd=peers)
  runs = report["runs"]
  return {"cold_s": runs[0]["total_s"], "warm_s": runs[1]["total_s"], "segment_s": report["sequence_total_s"] or 0.0,
          "segment_per_net_s": [r["total_s"] for r in report["sequence"]],
          "segment_final_val_acc": [r["val_acc_all"][-1] if r["val_acc_all"] else None for r in report["sequence"]],
          "readme_final_val_acc": report["final_val_acc"], "torch": report["torch"], "threads": report["threads"]}


def project_round(args, nets_json: str) -> dict:
  command = [sys.executable, __file__, "--side", "project", "--net", args.net, "--n-train", str(args.n_train),
             "--n-val", str(args.n_val), "--epochs", str(args.epochs), "--data", str(data_folder(args)),
             "--conv", args.conv]
  if args.segment:
    command += ["--nets-json", nets_json]
  return run_json(command, args.timeout)


def load() -> list[float]:
  return [round(v, 2) for v in os.getloadavg()]


def summary(values: list[float]) -> dict:
  return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
          "rounds": [round(v, 3) for v in values]}


def skip_reason(args) -> str | None:
  if importlib.util.find_spec("torch") is None:
    return "torch is not installed (pip install torch==2.13.0 for a CPU build)"
  if not (pathlib.Path(args.peers) / "bench.py").is_file():
    return f"the reference's bench.py is not in {args.peers} (pass --peers)"
  return None


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.side == "project":
    print(json.dumps(project_side(args)))
    return
  reason = skip_reason(args)
  if reason:
    print(json.dumps({"bench": "dpnas_side_by_side", "skipped": reason}))
    return
  space = search_space(args)
  nets = sample_segment(space, args.segment, args.sample_seed)
  rounds = []
  with tempfile.TemporaryDirectory() as tmp:
    nets_json = str(pathlib.Path(tmp) / "nets.json")
    pathlib.Path(nets_json).write_text(json.dumps(nets))
    for r in range(args.rounds):
      sides = [("reference", reference_round), ("project", project_round)]
      record = {"load_before": load()}
      for name, fn in (sides if r % 2 == 0 else sides[::-1]):
        record[name] = fn(args, nets_json)
      record["load_after"] = load()
      rounds.append(record)
  hour = lambda side, rr: 3600 * args.segment / rr[side]["segment_s"] if args.segment else None
  out = {"bench": "dpnas_side_by_side", "device": "cpu", "cpu_count": os.cpu_count(), "net": args.net,
         "data": f"MNIST t10k first {args.n_train + args.n_val}: {args.n_train} train / {args.n_val} val (= test), "
                 "28x28", "epochs": args.epochs, "reference_embed_store": args.embed_store, "project_conv": args.conv,
         "search_space": {"conv_features": list(space.conv_features), "max_conv": space.max_conv,
                          "sample_seed": args.sample_seed}, "segment_nets": nets,
         "versions": {"torch": rounds[0]["reference"]["torch"], "jax": rounds[0]["project"]["jax"]},
         "load": [(rr["load_before"], rr["load_after"]) for rr in rounds]}
  for key in ("cold_s", "warm_s"):
    out[key] = {side: summary([rr[side][key] for rr in rounds]) for side in ("reference", "project")}
    per_round = [rr["reference"][key] / rr["project"][key] for rr in rounds]
    out[key]["speedup_reference_over_project"] = summary(per_round)
  if args.segment:
    out["segment_evals_per_hour"] = {side: summary([hour(side, rr) for rr in rounds])
                                     for side in ("reference", "project")}
    out["segment_evals_per_hour"]["ratio_project_over_reference"] = summary(
        [hour("project", rr) / hour("reference", rr) for rr in rounds])
  out["rounds"] = rounds
  print(json.dumps(out))


if __name__ == "__main__":
  main()
