"""ENAS step throughput: the shared supernet step with a new architecture every step versus one fixed architecture
compiled on its own (the architecture a compile-time constant; the same k architectures, step times averaged), for the RNN (tokens/s) and the micro-CNN (images/s),
plus controller steps/s (sample, reward on one validation window, REINFORCE update). Prints one JSON object.

  python benchmarks/enas_step.py                       # reduced sizes (CPU)
  python benchmarks/enas_step.py --paper               # paper-size RNN (12 nodes, 1000 hidden, batch 64, bptt 35)

Tokens are random ids over the vocabulary (speed does not depend on the text). The supernet step must stay within
1.3x of the fixed architecture's step time and must not recompile after warm-up (`compilations` counts traces).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from nas_forgetting.enas import reinforce
from nas_forgetting.enas import search_space as ss
from timing import seconds_per_call
from nas_forgetting.enas import trainer as tr
from nas_forgetting.models import controller as ctl
from nas_forgetting.models.enas_cnn import EnasCnn
from nas_forgetting.models.enas_rnn import EnasRnn


def bench_rnn(a, data=None) -> dict:
  """Supernet vs fixed-cell step and controller steps at the sizes of `a`; `data`: time-major token ids (at least
  bptt + 1 steps, a.batch columns, ids below a.vocab), random ids when None."""
  space = ss.RnnSearchSpace(num_blocks=a.blocks)
  model = EnasRnn(vocab_size=a.vocab, num_blocks=a.blocks, hidden_size=a.hidden)
  opt = tr.shared_optimizer(0.25, 1e-7)
  arch0 = jnp.zeros((a.blocks, 2), jnp.int32)
  params = jax.jit(lambda k: model.init(k, jnp.zeros((a.bptt, a.batch), jnp.int32), jnp.zeros((a.batch, a.hidden)),
                                        arch0, train=False)["params"])(jax.random.key(0))
  if data is None:
    data = jax.random.randint(jax.random.key(1), (a.bptt * 8 + 1, a.batch), 0, a.vocab)
  data = jnp.asarray(data, jnp.int32)
  step = functools.partial(tr.rnn_shared_step, model=model, optimizer=opt, bptt=a.bptt, ar_alpha=0.0, tar_beta=0.0)
  archs = jax.vmap(space.random_arch)(jax.random.split(jax.random.key(2), a.num_archs))
  results = {}

  def measure(fn, call_arch):
    state, hidden, i = tr.init_shared(params, opt), jnp.zeros((a.batch, a.hidden)), 0

    def one():
      nonlocal state, hidden, i
      i += 1
      state, hidden, m = call_arch(fn, state, hidden, i)
      jax.block_until_ready(m["shared/loss"])

    t0 = time.perf_counter()
    one()
    return time.perf_counter() - t0, seconds_per_call(one, a.steps)

  # Supernet: one compiled step, the k architectures in rotation (a new one every step).
  fn = jax.jit(step)
  first, sec = measure(fn, lambda f, s, h, i: f(s, data, jnp.int32(0), h, archs[i % a.num_archs], jax.random.key(i),
                                                jnp.float32(1.0)))
  results["supernet_new_arch_every_step"] = {"seconds_per_step": sec, "tokens_per_second": a.bptt * a.batch / sec,
                                             "first_call_seconds": first, "compilations": fn._cache_size()}
  # Each of the same k architectures compiled on its own (architecture a compile-time constant).
  secs, firsts = [], []
  for k in range(a.num_archs):
    arch = archs[k]
    fixed = jax.jit(lambda s, d, st, h, r, lr, arch=arch: step(s, d, st, h, arch, r, lr))
    first, sec = measure(fixed, lambda f, s, h, i: f(s, data, jnp.int32(0), h, jax.random.key(i), jnp.float32(1.0)))
    secs.append(sec)
    firsts.append(first)
  sec = float(np.mean(secs))
  results["fixed_arch_compiled_alone"] = {"seconds_per_step": sec, "tokens_per_second": a.bptt * a.batch / sec,
                                          "first_call_seconds": float(np.mean(firsts)),
                                          "per_arch_seconds_per_step": secs}
  results["supernet_over_fixed_time_ratio"] = results["supernet_new_arch_every_step"]["seconds_per_step"] / sec

  controller = ctl.Controller(space.num_choices, hidden_size=100)
  copt = reinforce.controller_optimizer(3.5e-4)
  cstate = reinforce.init_reinforce(controller, ctl.init_controller(controller, jax.random.key(3)), copt)
  reward_fn = functools.partial(tr.rnn_reward_fn, model=model, bptt=a.bptt, reward_c=80.0, ppl_square=False)
  cstep = jax.jit(functools.partial(tr.controller_step, controller=controller, optimizer=copt,
                                    decisions_to_arch=space.decisions_to_arch, decision_mask=space.decision_mask,
                                    reward_fn=reward_fn, num_samples=1, ema_decay=0.95, entropy_coeff=1e-4,
                                    entropy_mode="reward"))
  counter = {"i": 0}

  def cone():
    nonlocal cstate
    counter["i"] += 1
    cstate, m = cstep(cstate, params, (data, jnp.int32(0)), jax.random.key(counter["i"]))
    jax.block_until_ready(m["controller/loss"])

  sec = seconds_per_call(cone, a.steps)
  results["controller_steps_per_second"] = 1.0 / sec  # sample + reward on one window + REINFORCE update
  results["controller_compilations"] = cstep._cache_size()
  return results


def bench_cnn(a) -> dict:
  space = ss.CnnSearchSpace(num_blocks=a.cnn_blocks)
  model = EnasCnn(num_classes=10, num_blocks=a.cnn_blocks, features=a.cnn_features, num_modules=a.cnn_modules,
                  num_repeat_normal=a.cnn_repeat, sep_conv_stacks=2)
  opt = tr.shared_optimizer(5.0, 1e-4, 0.9, True)
  images = jax.random.uniform(jax.random.key(0), (a.cnn_batch * 2, 32, 32, 3))
  labels = jax.random.randint(jax.random.key(1), (a.cnn_batch * 2,), 0, 10)
  arch0 = jnp.zeros((2, a.cnn_blocks, 4), jnp.int32)
  params = jax.jit(lambda k: model.init(k, images[:2], arch0, train=False)["params"])(jax.random.key(2))
  step = functools.partial(tr.cnn_shared_step, model=model, optimizer=opt, pad=4, flip=True, cutout=0)
  archs = jax.vmap(space.random_arch)(jax.random.split(jax.random.key(3), a.num_archs))
  idx = jnp.arange(a.cnn_batch)
  results = {}

  def measure(fn, call_arch):
    state, i = tr.init_shared(params, opt), 0

    def one():
      nonlocal state, i
      i += 1
      state, m = call_arch(fn, state, i)
      jax.block_until_ready(m["shared/loss"])

    t0 = time.perf_counter()
    one()
    return time.perf_counter() - t0, seconds_per_call(one, a.cnn_steps)

  fn = jax.jit(step)
  first, sec = measure(fn, lambda f, s, i: f(s, images, labels, idx, archs[i % a.num_archs], jax.random.key(i),
                                             jnp.float32(0.05)))
  results["supernet_new_arch_every_step"] = {"seconds_per_step": sec, "images_per_second": a.cnn_batch / sec,
                                             "first_call_seconds": first, "compilations": fn._cache_size()}
  secs, firsts = [], []
  for k in range(a.num_archs):
    arch = archs[k]
    fixed = jax.jit(lambda s, x, y, ix, r, lr, arch=arch: step(s, x, y, ix, arch, r, lr))
    first, sec = measure(fixed, lambda f, s, i: f(s, images, labels, idx, jax.random.key(i), jnp.float32(0.05)))
    secs.append(sec)
    firsts.append(first)
  sec = float(np.mean(secs))
  results["fixed_arch_compiled_alone"] = {"seconds_per_step": sec, "images_per_second": a.cnn_batch / sec,
                                          "first_call_seconds": float(np.mean(firsts)),
                                          "per_arch_seconds_per_step": secs}
  results["supernet_over_fixed_time_ratio"] = results["supernet_new_arch_every_step"]["seconds_per_step"] / sec
  return results


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--paper", action="store_true", help="paper-size RNN: 12 blocks, 1000 hidden, 10k vocab, batch 64")
  p.add_argument("--blocks", type=int, default=12)
  p.add_argument("--hidden", type=int, default=256)
  p.add_argument("--vocab", type=int, default=10000)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--bptt", type=int, default=35)
  p.add_argument("--steps", type=int, default=12)
  p.add_argument("--num-archs", type=int, default=3, help="architectures compared (each also compiled alone)")
  p.add_argument("--cnn-blocks", type=int, default=5)
  p.add_argument("--cnn-features", type=int, default=16)
  p.add_argument("--cnn-modules", type=int, default=2)
  p.add_argument("--cnn-repeat", type=int, default=1)
  p.add_argument("--cnn-batch", type=int, default=32)
  p.add_argument("--cnn-steps", type=int, default=6)
  p.add_argument("--skip-cnn", action="store_true")
  a = p.parse_args()
  if a.paper:
    a.blocks, a.hidden, a.vocab, a.batch, a.bptt = 12, 1000, 10000, 64, 35
  out = {"benchmark": "enas_step", "device": str(jax.devices()[0]), "platform": jax.default_backend(),
         "jax": jax.__version__, "python": platform.python_version(),
         "rnn_sizes": {"blocks": a.blocks, "hidden": a.hidden, "vocab": a.vocab, "batch": a.batch, "bptt": a.bptt},
         "rnn": bench_rnn(a)}
  if not a.skip_cnn:
    out["cnn_sizes"] = {"blocks": a.cnn_blocks, "features": a.cnn_features, "modules": a.cnn_modules,
                        "repeat_normal": a.cnn_repeat, "batch": a.cnn_batch, "image": 32}
    out["cnn"] = bench_cnn(a)
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
