"""DP-NAS evaluator across processes through JAX's multi-process runtime, on this machine over loopback.

Starts `--processes` Python processes (each with `--devices-per-process` CPU devices), each calls
`jax.distributed.initialize` with a localhost coordinator, and every process evaluates the same seeds of one net
on the global device mesh (seeds sharded over all devices of all processes). The parent then evaluates the same
seeds in a single process on one device and compares. Prints one JSON object:

  python benchmarks/dpnas_multiprocess.py [--processes 2] [--devices-per-process 2] [--seeds 4]

Data: a seeded synthetic 8x8 four-class set whose class sets the mean brightness (the point is the runtime, not
the accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

NET = "[C(8,3,1,1,1), P(2,2,0,0), SM(4)]"


def brightness_data(n_train: int, n_val: int, n_test: int):
  """Four classes of 8x8 noise images; class c adds 0.3 c to every pixel (one seeded generator for all splits)."""
  import numpy as np
  from nas_forgetting.dpnas import evaluator as ev
  rng = np.random.default_rng(0)

  def make(n):
    y = rng.integers(0, 4, n).astype(np.int32)
    return (rng.random((n, 8, 8, 1)) + 0.3 * y[:, None, None, None]).astype(np.float32), y

  return ev.SplitData(*make(n_train), *make(n_val), *make(n_test), 4)


def evaluate(seeds, single_device: bool):
  import jax
  import numpy as np
  from jax.sharding import Mesh
  from nas_forgetting.dpnas import evaluator as ev
  from nas_forgetting.dpnas.seed_mesh import AXIS
  config = ev.EvalConfig(epochs=3, batch_size=16, learning_rate=1e-2, early_stopping_epoch=0, reward_window=2)
  mesh = Mesh(np.asarray(jax.local_devices()[:1]), (AXIS,)) if single_device else None
  evaluator = ev.Evaluator(brightness_data(64, 32, 32), config, mesh=mesh)
  return [r.acc_val_all_epochs for r in evaluator.evaluate(NET, seeds)], evaluator.num_devices


def worker(args) -> None:
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.processes,
                             process_id=args.process_id)
  accuracies, devices = evaluate(list(range(args.seeds)), single_device=False)
  print(json.dumps({"process": jax.process_index(), "global_devices": devices,
                    "local_devices": jax.local_device_count(), "val_accuracies": accuracies}))
  jax.distributed.shutdown()


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices-per-process", type=int, default=2)
  parser.add_argument("--seeds", type=int, default=4)
  parser.add_argument("--process-id", type=int, default=-1)
  parser.add_argument("--port", type=int, default=0)
  args = parser.parse_args()
  if args.process_id >= 0:
    worker(args)
    return
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices_per_process}",
             JAX_PLATFORMS="cpu", NAS_FORGETTING_NO_PROGRESS="1")
  start = time.time()
  procs = [subprocess.Popen([sys.executable, __file__, "--process-id", str(i), "--port", str(port),
                             "--processes", str(args.processes), "--seeds", str(args.seeds)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(args.processes)]
  outputs = []
  for p in procs:
    out, err = p.communicate(timeout=600)
    if p.returncode:
      raise SystemExit(f"process failed ({p.returncode}):\n{err[-3000:]}")
    outputs.append(json.loads(out.strip().splitlines()[-1]))
  elapsed = time.time() - start
  single, _ = evaluate(list(range(args.seeds)), single_device=True)
  import numpy as np
  agree = all(np.allclose(o["val_accuracies"], single, atol=1e-3) for o in outputs)
  print(json.dumps({"processes": args.processes, "global_devices": outputs[0]["global_devices"],
                    "seeds": args.seeds, "multi_process_seconds": round(elapsed, 2),
                    "all_processes_match_single_process": bool(agree), "val_accuracies": single}))
  if not agree:
    raise SystemExit(1)


if __name__ == "__main__":
  main()
