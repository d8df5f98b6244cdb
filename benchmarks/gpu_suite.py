"""The GPU figures BENCHMARKS.md asks for, side by side with the PyTorch references, in one command.

  python benchmarks/gpu_suite.py OUT_DIR [--peers DIR] [--only NAME ...]     # on a GPU machine, at most 8 minutes
  python benchmarks/gpu_suite.py OUT_DIR --smoke                             # the same code paths, tiny, on the CPU

Run from the checkout's root. On a GPU machine without network: build .gpu/ here with
`../shared/tools/gpu-prep --data mnist,ptb --peers`, send it along and `source .gpu/setup.sh` first (jax[cuda] and torch
are preinstalled there). --peers: the references' drivers (enas_pytorch/bench.py, dpnas/bench.py); default .gpu/peers
when the checkout carries them, else ../shared/peers.
Figures (each benchmark a subprocess under its own time limit, limits summing to 8 minutes):
  enas_rnn_side_by_side          ENAS RNN at paper size (12 blocks, hidden 1000, 10k vocabulary, batch 64, bptt 35):
                                 shared tokens/s and controller steps/s against the reference, supernet vs fixed cell
  dpnas_evaluation               DP-NAS README net, 8,000/2,000 MNIST at 28x28, 3 epochs: evaluations/hour, 8 seeds
                                 at once vs one
  dpnas_evaluation_reference_*   the reference on the same net and data, embeddings in memory and as per-sample files
  fisher_throughput              Fisher diagonals, every path, vs a plain backward pass and torch.func
Writes OUT_DIR/gpu_suite.json (environment and every benchmark's {name, command, rc, seconds, result}: the last JSON
object its stdout printed), OUT_DIR/gpu_suite.md (a markdown table of the headline figures) and OUT_DIR/gpu_suite.log
(every benchmark's stderr). --smoke runs every benchmark at tiny sizes on the CPU (the references too when torch is
installed; their entries say "skipped" otherwise) in about a minute: the test suite runs it, so the suite cannot rot.
Imports neither TensorFlow nor ml_collections (nor do the benchmarks it runs).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from typing import NamedTuple

REPO = pathlib.Path(__file__).resolve().parent.parent
ENV_PROBE = ("import jax, platform; print(platform.python_version(), 'jax', jax.__version__, jax.devices())")
SMOKE_NET = "[C(8,3,1,1,1), P(2,2,0,0), C(16,3,1,0,1), SM(10)]"
SMOKE_OTHER_NET = "[C(16,3,1,1,1), P(2,2,0,0), C(16,3,1,0,1), SM(10)]"


class Bench(NamedTuple):
  name: str
  limit_s: int
  full: tuple[str, ...]  # arguments after `python`; {peers} is replaced by the peers folder
  smoke: tuple[str, ...]
  headline: dict[str, str]  # column label -> dotted path into the result (list items by index)
  reference: bool = False  # a reference's own driver: needs torch


BENCHMARKS = (
    Bench("enas_rnn_side_by_side", 170,
          ("benchmarks/side_by_side_enas.py", "--sizes", "1000x64", "--pad-vocab-to", "10000", "--rounds", "2",
           "--steps", "30", "--controller-steps", "20", "--num-archs", "1", "--device", "cuda", "--peers", "{peers}"),
          ("benchmarks/side_by_side_enas.py", "--sizes", "16x4", "--blocks", "3", "--bptt", "5", "--rounds", "1",
           "--steps", "1", "--controller-steps", "1", "--num-archs", "1", "--device", "cpu", "--peers", "{peers}"),
          {"project tokens/s": "sizes.0.shared_tokens_per_s.project.median",
           "reference tokens/s": "sizes.0.shared_tokens_per_s.reference.median",
           "tokens/s ratio": "sizes.0.shared_tokens_per_s.ratio.median",
           "controller ratio": "sizes.0.controller_steps_per_s.ratio.median",
           "supernet / fixed": "sizes.0.supernet_over_fixed.median", "skipped": "skipped"}),
    Bench("dpnas_evaluation", 120, ("benchmarks/dpnas_evaluator.py", "--seeds", "8"),
          ("benchmarks/dpnas_evaluator.py", "--train", "64", "--val", "32", "--image-size", "8", "--epochs", "1",
           "--seeds", "2", "--net", SMOKE_NET, "--other-net", SMOKE_OTHER_NET),
          {"evals/h new arch": "evals_per_hour_new_arch", "evals/h same arch": "evals_per_hour_same_arch",
           "8 seeds / 1 seed time": "seeds_at_once_over_one_seed", "first eval s": "first_eval_s"}),
    *(Bench(f"dpnas_evaluation_reference_{store}", 40,
            ("{peers}/dpnas/bench.py", "--device", "cuda", "--embed-store", store, "--repeats", str(repeats)),
            ("{peers}/dpnas/bench.py", "--device", "cpu", "--embed-store", store, "--repeats", "1", "--epochs", "1",
             "--n-train", "64", "--n-val", "32", "--workers", "0"),
            {"seconds per eval": "total_seconds_per_arch_eval", "cold": "cold_total_seconds_per_arch_eval"},
            reference=True) for store, repeats in (("memory", 2), ("disk", 1))),
    Bench("fisher_throughput", 110, ("benchmarks/fisher_throughput.py",),
          ("benchmarks/fisher_throughput.py", "--num-examples", "64", "--vmap-examples", "16", "--conv-examples", "16",
           "--repeats", "1", "--models", "mlp"),
          {"per-layer empirical / plain backward": "rows.3.ratio_to_jax_plain_backward",
           "vmap empirical / plain backward": "rows.6.ratio_to_jax_plain_backward"}),
)


def last_json(stdout: str):
  """The last JSON object printed on stdout (on one line or indented over several), or None."""
  lines = stdout.splitlines()
  for start in [i for i, line in enumerate(lines) if line.startswith("{")][::-1]:
    for end in range(len(lines), start, -1):
      try:
        return json.loads("\n".join(lines[start:end]))
      except ValueError:
        pass
  return None


def lookup(result, path: str):
  """The value at a dotted path (list items by index), or None."""
  for key in path.split("."):
    if isinstance(result, list) and key.isdigit() and int(key) < len(result):
      result = result[int(key)]
    elif isinstance(result, dict) and key in result:
      result = result[key]
    else:
      return None
  return result


def run_bench(bench: Bench, args: tuple[str, ...], log, env: dict[str, str]) -> dict:
  command = [sys.executable, *args]
  log.write(f"=== {bench.name}: {' '.join(command)}\n")
  log.flush()
  start = time.perf_counter()
  try:
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True, timeout=bench.limit_s,
                          env=env, check=False)
    rc, stdout = done.returncode, done.stdout
  except subprocess.TimeoutExpired as exc:
    rc, stdout = 124, exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
  log.write(stdout + "\n")
  return {"name": bench.name, "command": command, "rc": rc, "seconds": round(time.perf_counter() - start, 1),
          "result": last_json(stdout)}


def markdown(report: dict) -> str:
  def cell(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)

  benches = {b.name: b for b in BENCHMARKS}
  lines = [f"GPU suite ({report['mode']}), {report['started']}: {report['environment']}", "",
           "| benchmark | rc | seconds | figures |", "|---|---|---|---|"]
  for entry in report["benchmarks"]:
    bench = benches[entry["name"]]
    figures = [f"{label} {cell(lookup(entry['result'], path))}" for label, path in bench.headline.items()
               if lookup(entry["result"], path) is not None]
    lines.append(f"| {entry['name']} | {entry['rc']} | {entry['seconds']} | {'; '.join(figures) or '-'} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("out", type=pathlib.Path, help="folder for gpu_suite.json, gpu_suite.md, gpu_suite.log")
  p.add_argument("--peers", type=pathlib.Path, default=None, help="default .gpu/peers, else ../shared/peers")
  p.add_argument("--only", nargs="+", default=None, help="run only these benchmarks")
  p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite runs this)")
  a = p.parse_args(argv)
  peers = a.peers or (REPO / ".gpu" / "peers" if (REPO / ".gpu" / "peers").is_dir() else REPO.parent / "shared" / "peers")
  unknown = set(a.only or ()) - {b.name for b in BENCHMARKS}
  if unknown:
    p.error(f"unknown benchmarks {sorted(unknown)}; known: {[b.name for b in BENCHMARKS]}")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
  if a.smoke:  # one CPU device, as the GPU machine has one GPU (tests force 8 fake CPU devices)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", XLA_FLAGS=" ".join(flags))
  has_torch = importlib.util.find_spec("torch") is not None
  a.out.mkdir(parents=True, exist_ok=True)
  entries = []
  with open(a.out / "gpu_suite.log", "w") as log:
    probe = subprocess.run([sys.executable, "-c", ENV_PROBE], capture_output=True, text=True, env=env, check=False)
    environment = f"{platform.node()}; {probe.stdout.strip() or probe.stderr.strip()[-300:]}"
    for bench in BENCHMARKS:
      if a.only and bench.name not in a.only:
        continue
      if bench.reference and not has_torch:
        entries.append({"name": bench.name, "command": None, "rc": 0, "seconds": 0.0,
                        "result": {"skipped": "torch is not installed"}})
        continue
      args = tuple(arg.replace("{peers}", str(peers)) for arg in (bench.smoke if a.smoke else bench.full))
      entries.append(run_bench(bench, args, log, env))
      print(f"{bench.name}: rc={entries[-1]['rc']}, {entries[-1]['seconds']} s", flush=True)
  report = {"suite": "gpu_suite", "mode": "smoke" if a.smoke else "full", "peers": str(peers),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment, "benchmarks": entries}
  (a.out / "gpu_suite.json").write_text(json.dumps(report, indent=1) + "\n")
  table = markdown(report)
  (a.out / "gpu_suite.md").write_text(table)
  print(table)
  return 0 if all(e["rc"] == 0 for e in entries) else 1


if __name__ == "__main__":
  sys.exit(main())
