"""ENAS RNN side by side with the public PyTorch code, on the same PTB text, in alternating rounds. Prints one JSON
object: per size, both sides' figures per round, their min and median, and the project / reference ratios.

  python benchmarks/side_by_side_enas.py                                 # hidden 256, batch 16 and 64; 3 rounds
  python benchmarks/side_by_side_enas.py --sizes 1000x64 --rounds 2 --pad-vocab-to 10000
  python benchmarks/side_by_side_enas.py --peers PATH/TO/peers --ptb PATH/TO/ptb --device cuda

Each round runs, for every size HIDDENxBATCH (12 blocks, bptt 35 by default), first the project in this process
(`enas_step.bench_rnn` on the text: supernet step with a new architecture every step, the same architectures each
compiled alone, controller steps), then the reference's driver `<peers>/enas_pytorch/bench.py` in a subprocess
(`Trainer.train_shared()` steps, a new DAG sampled by its controller each step, and `train_controller()` steps).
Both train on PTB valid.txt (the reference's copy of it is its train.txt) with the reference's vocabulary (valid +
test words, 7,596), or both padded to --pad-vocab-to. Figures:
  shared_tokens_per_s      tokens per second of shared-weight training steps (higher is faster)
  controller_steps_per_s   controller steps per second (sample, reward on one validation window, update)
  supernet_over_fixed      the project's supernet step time over a cell compiled alone (no reference figure)
The reference's tokens/s includes its controller's DAG sampling of each shared step (its own loop does that).
Ratios are project / reference of the same round (the machine's load changes between rounds; `load` is the 1-minute
load average when a round starts). Prints {"skipped": reason} and exits 0 when torch or the peers are absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

import jax
import numpy as np

from enas_step import bench_rnn
from nas_forgetting.data.text import batchify, load_corpus
from nas_forgetting.paths import shared_data_dir

REPO = pathlib.Path(__file__).resolve().parent.parent


def default_peers() -> pathlib.Path:
  """.gpu/peers when the checkout carries them (GPU runs), else ../shared/peers beside the checkout."""
  carried = REPO / ".gpu" / "peers"
  return carried if carried.is_dir() else REPO.parent / "shared" / "peers"


def skip_reason(peers: pathlib.Path) -> str | None:
  if importlib.util.find_spec("torch") is None:
    return "torch is not installed (CPU build: pip install torch==2.13.0)"
  if not (peers / "enas_pytorch" / "bench.py").is_file():
    return f"no reference driver at {peers / 'enas_pytorch' / 'bench.py'} (pass --peers)"
  return None


def summary(values: list[float]) -> dict:
  return {"min": min(values), "median": statistics.median(values), "rounds": values}


def ratio(project: list[float], reference: list[float]) -> dict:
  """project / reference per round, with their min and median."""
  return summary([p / r for p, r in zip(project, reference)])


def run_reference(a, peers: pathlib.Path, hidden: int, batch: int) -> dict:
  cmd = [sys.executable, str(peers / "enas_pytorch" / "bench.py"), "--device", a.device, "--steps", str(a.steps),
         "--warmup", str(a.warmup), "--controller_steps", str(a.controller_steps), "--controller_warmup", "1",
         "--pad_vocab_to", str(a.pad_vocab_to), "--", "--num_blocks", str(a.blocks), "--shared_hid", str(hidden),
         "--shared_embed", str(hidden), "--batch_size", str(batch)]
  done = subprocess.run(cmd, capture_output=True, text=True, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode != 0 or not lines:
    raise RuntimeError(f"reference failed (rc {done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
  return json.loads(lines[-1])


def run_project(a, tokens: np.ndarray, vocab: int, hidden: int, batch: int) -> dict:
  sizes = argparse.Namespace(blocks=a.blocks, hidden=hidden, vocab=vocab, batch=batch, bptt=a.bptt, steps=a.steps,
                             num_archs=a.num_archs)
  return bench_rnn(sizes, data=batchify(tokens, batch)[:a.bptt * 8 + 1])


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sizes", nargs="+", default=["256x16", "256x64"], help="HIDDENxBATCH pairs")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--blocks", type=int, default=12)
  p.add_argument("--bptt", type=int, default=35)
  p.add_argument("--steps", type=int, default=8, help="timed shared steps per side and round")
  p.add_argument("--warmup", type=int, default=1, help="reference's untimed shared steps (the project warms up once)")
  p.add_argument("--controller-steps", type=int, default=8)
  p.add_argument("--num-archs", type=int, default=2, help="the project's architectures, each also compiled alone")
  p.add_argument("--pad-vocab-to", type=int, default=0, help="both sides' vocabulary padded to this size (0: none)")
  p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="the reference's device")
  p.add_argument("--peers", type=pathlib.Path, default=default_peers(), help="folder holding enas_pytorch/bench.py")
  p.add_argument("--ptb", type=pathlib.Path, default=None, help="PTB folder (valid.txt, test.txt); default shared")
  a = p.parse_args()
  reason = skip_reason(a.peers)
  if reason:
    print(json.dumps({"benchmark": "side_by_side_enas", "skipped": reason}))
    return

  import torch  # optional: only for its version (the reference runs in its own process)

  corpus = load_corpus(a.ptb or shared_data_dir() / "ptb", allow_missing_train=True)
  vocab = max(len(corpus.vocab), a.pad_vocab_to)
  sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes]
  rounds = {s: {"project": [], "reference": [], "load": []} for s in sizes}
  for _ in range(a.rounds):
    for hidden, batch in sizes:
      rounds[(hidden, batch)]["load"].append(os.getloadavg()[0])
      rounds[(hidden, batch)]["project"].append(run_project(a, corpus.train, vocab, hidden, batch))
      rounds[(hidden, batch)]["reference"].append(run_reference(a, a.peers, hidden, batch))

  results = []
  for (hidden, batch), r in rounds.items():
    tok = {"project": [x["supernet_new_arch_every_step"]["tokens_per_second"] for x in r["project"]],
           "reference": [x["tokens_per_s"] for x in r["reference"]]}
    ctl = {"project": [x["controller_steps_per_second"] for x in r["project"]],
           "reference": [x["controller_steps_per_s"] for x in r["reference"]]}
    results.append({
        "hidden": hidden, "batch": batch, "load": r["load"],
        "shared_tokens_per_s": {side: summary(v) for side, v in tok.items()} | {"ratio": ratio(**tok)},
        "controller_steps_per_s": {side: summary(v) for side, v in ctl.items()} | {"ratio": ratio(**ctl)},
        "supernet_over_fixed": summary([x["supernet_over_fixed_time_ratio"] for x in r["project"]]),
        "project_compilations": max(x["supernet_new_arch_every_step"]["compilations"] for x in r["project"])})
  print(json.dumps({
      "benchmark": "side_by_side_enas", "device": str(jax.devices()[0]), "reference_device": a.device,
      "cpu_count": os.cpu_count(), "jax": jax.__version__, "torch": torch.__version__,
      "python": platform.python_version(), "data": "PTB valid.txt (shared data), bptt windows from its start",
      "vocab": vocab, "blocks": a.blocks, "bptt": a.bptt, "steps": a.steps, "controller_steps": a.controller_steps,
      "rounds": a.rounds, "sizes": results}, indent=2))


if __name__ == "__main__":
  main()
