"""Cost of WPL in ENAS shared training: the WPL step (loss + penalty on the architecture's active shared weights)
and the per-burst Fisher/anchor update, against the plain shared step on the same architectures. Prints one JSON
object.

  python benchmarks/wpl_step.py                   # reduced RNN sizes (CPU)
  python benchmarks/wpl_step.py --paper           # paper-size RNN (12 nodes, 1000 hidden, batch 64, bptt 35)
  python benchmarks/wpl_step.py --blocks 12 --hidden 256 --batch 32 --bptt 35   # RNN sizes set one by one
  python benchmarks/wpl_step.py --network cnn     # reduced micro-CNN (5 blocks, 2 modules x 1 normal cell, 8 filters)

The plain step is `enas.trainer.rnn_shared_step` / `cnn_shared_step`; the WPL step is the same function with
`wpl_hp` and a WPL state (the penalty over the architecture's active edges added to the loss). The burst end is
the Fisher estimate on one validation batch (`wpl.enas_fisher.rnn_fisher` / `cnn_fisher`: `empirical` =
per-example squared gradients, the default; `batch` = the reference's squared batch-mean gradient), then
`wpl.state.end_burst`, as in `enas.tasks` (called by `enas.search`). For the RNN, `vmap_per_sequence` times the per-sequence estimate
computed the direct way (`vmap` of `grad` over batch columns), which `empirical` replaced. Target (the issue's):
WPL step <= 1.5x the plain step; a burst of `num_batch_per_iter` WPL steps plus its update, per step, is reported
as well. Architectures rotate every call; one compilation each. Timings: the minimum over interleaved rounds.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform

import jax
import jax.numpy as jnp
import optax

from nas_forgetting.enas import search_space as ss
from nas_forgetting.enas import trainer as tr
from nas_forgetting.models.enas_cnn import EnasCnn
from nas_forgetting.models.enas_rnn import EnasRnn
from nas_forgetting.wpl import enas_fisher
from nas_forgetting.wpl import masks
from nas_forgetting.wpl import state as wpl
from timing import seconds_per_call


def vmap_per_sequence_fisher(params, inputs, targets, arch, *, model):
  """The per-sequence estimate the direct way: vmap over columns of the gradient of one column's cross-entropy."""
  def column_ce(p, x, y):
    return tr.rnn_batch_ce(p, x[:, None], y[:, None], jnp.zeros((1, model.hidden_size)), arch, model=model)[0]
  per_column = jax.vmap(lambda x, y: masks.rnn_monitored(jax.grad(column_ce)(params, x, y)), in_axes=(1, 1))(
      inputs, targets)
  return jax.tree.map(lambda g: jnp.mean(jnp.square(g), axis=0), per_column)


def rnn_setup(a, hp):
  """(plain step, WPL step, {estimator: burst end}, archs, monitored-view function) for the RNN."""
  model = EnasRnn(vocab_size=a.vocab, num_blocks=a.blocks, hidden_size=a.hidden)
  space = ss.RnnSearchSpace(num_blocks=a.blocks)
  opt = tr.shared_optimizer(0.25, 1e-7)
  arch0 = jnp.zeros((a.blocks, 2), jnp.int32)
  params = jax.jit(lambda k: model.init(k, jnp.zeros((a.bptt, a.batch), jnp.int32), jnp.zeros((a.batch, a.hidden)),
                                        arch0, train=False)["params"])(jax.random.key(0))
  data = jax.random.randint(jax.random.key(1), (a.bptt * 8 + 1, a.batch), 0, a.vocab)
  archs = jax.vmap(space.random_arch)(jax.random.split(jax.random.key(2), a.num_archs))
  hidden = jnp.zeros((a.batch, a.hidden))
  kw = dict(model=model, optimizer=opt, bptt=a.bptt, ar_alpha=0.0, tar_beta=0.0)
  plain = jax.jit(functools.partial(tr.rnn_shared_step, **kw))
  step = jax.jit(functools.partial(tr.rnn_shared_step, **kw, wpl_hp=hp))

  def burst_end(wstate, params, arch, *, fisher_fn):
    inputs, targets = tr.lm_window(data, jnp.int32(0), a.bptt)
    sq = fisher_fn(params, inputs, targets, arch, model=model)
    return wpl.end_burst(wstate, masks.rnn_monitored(params), sq, masks.rnn_active_mask(arch, a.blocks), hp)

  fisher_fns = {e: functools.partial(enas_fisher.rnn_fisher, estimator=e) for e in enas_fisher.ENAS_ESTIMATORS}
  fisher_fns["vmap_per_sequence"] = vmap_per_sequence_fisher
  ends = {e: jax.jit(functools.partial(burst_end, fisher_fn=f)) for e, f in fisher_fns.items()}
  run_plain = lambda shared, arch, key: plain(shared, data, jnp.int32(0), hidden, arch, key, jnp.float32(1.0))[2]
  run_wpl = lambda shared, ws, arch, key: step(shared, data, jnp.int32(0), hidden, arch, key, jnp.float32(1.0), ws)[2]
  return params, opt, archs, masks.rnn_monitored, (plain, run_plain), (step, run_wpl), ends


def cnn_setup(a, hp):
  """The same for the micro-CNN."""
  model = EnasCnn(num_classes=10, num_blocks=a.blocks, features=a.features, num_modules=a.modules,
                  num_repeat_normal=a.repeat, sep_conv_stacks=2)
  space = ss.CnnSearchSpace(num_blocks=a.blocks)
  opt = tr.shared_optimizer(5.0, 1e-4, 0.9, True)
  images = jax.random.uniform(jax.random.key(0), (a.batch * 2, 32, 32, 3))
  labels = jax.random.randint(jax.random.key(1), (a.batch * 2,), 0, 10)
  arch0 = jnp.zeros((2, a.blocks, 4), jnp.int32)
  params = jax.jit(lambda k: model.init(k, images[:a.batch], arch0, train=False)["params"])(jax.random.key(3))
  archs = jax.vmap(space.random_arch)(jax.random.split(jax.random.key(2), a.num_archs))
  index = jnp.arange(a.batch)
  kw = dict(model=model, optimizer=opt, pad=4, flip=True, cutout=0)
  plain = jax.jit(functools.partial(tr.cnn_shared_step, **kw))
  step = jax.jit(functools.partial(tr.cnn_shared_step, **kw, wpl_hp=hp))

  def burst_end(wstate, params, arch, *, estimator):
    sq = enas_fisher.cnn_fisher(params, images[a.batch:], labels[a.batch:], arch, model=model, estimator=estimator)
    view = masks.cnn_monitored(params)
    return wpl.end_burst(wstate, view, sq, masks.cnn_active_mask(arch, view), hp)

  ends = {e: jax.jit(functools.partial(burst_end, estimator=e)) for e in enas_fisher.ENAS_ESTIMATORS}
  run_plain = lambda shared, arch, key: plain(shared, images, labels, index, arch, key, jnp.float32(0.05))[1]
  run_wpl = lambda shared, ws, arch, key: step(shared, images, labels, index, arch, key, jnp.float32(0.05), ws)[1]
  return params, opt, archs, masks.cnn_monitored, (plain, run_plain), (step, run_wpl), ends


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--network", choices=("rnn", "cnn"), default="rnn")
  parser.add_argument("--paper", action="store_true", help="paper-size RNN")
  parser.add_argument("--steps", type=int, default=20, help="calls per timing round")
  parser.add_argument("--num_archs", type=int, default=4)
  parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (minimum reported)")
  parser.add_argument("--burst", type=int, default=7, help="num_batch_per_iter")
  for size in ("blocks", "hidden", "vocab", "batch", "bptt"):
    parser.add_argument(f"--{size}", type=int, default=None, help="RNN size override")
  a = parser.parse_args()
  if a.network == "rnn":
    given = {k: getattr(a, k) for k in ("blocks", "hidden", "vocab", "batch", "bptt")}
    for k, v in zip(given, (12, 1000, 10000, 64, 35) if a.paper else (6, 128, 2000, 16, 20)):
      setattr(a, k, v if given[k] is None else given[k])
    sizes = {k: getattr(a, k) for k in ("blocks", "hidden", "vocab", "batch", "bptt")}
    hp = wpl.WPLHyperParams.from_config(wpl.reference_rnn_wpl_config())
    setup = rnn_setup
  else:
    a.blocks, a.features, a.modules, a.repeat, a.batch = 5, 8, 2, 1, 16
    sizes = {k: getattr(a, k) for k in ("blocks", "features", "modules", "repeat", "batch")}
    hp = wpl.WPLHyperParams.from_config(wpl.reference_cnn_wpl_config())
    setup = cnn_setup
  params, opt, archs, view_fn, (plain, run_plain), (step, run_wpl), ends = setup(a, hp)

  shared = tr.init_shared(params, opt)
  wstate = wpl.init_wpl_state(view_fn(params))
  wstate = wstate._replace(fisher=jax.tree.map(lambda f: f + 1e-3, wstate.fisher))
  counter = {"i": 0}

  def next_arch():
    i = counter["i"] = counter["i"] + 1
    return archs[i % a.num_archs], jax.random.key(i)

  timed = {"plain": lambda: jax.block_until_ready(run_plain(shared, *next_arch())["shared/loss"]),
           "wpl": lambda: jax.block_until_ready(run_wpl(shared, wstate, *next_arch())["shared/loss"])}
  for e, end in ends.items():
    timed[e] = functools.partial(lambda end: jax.block_until_ready(
        end(wstate, shared.params, next_arch()[0]).fisher), end)

  # Interleaved rounds, minimum per kind: the machine may be shared, and the minimum is the least disturbed.
  rounds = {k: [] for k in timed}
  for _ in range(a.rounds):
    for k, fn in timed.items():
      rounds[k].append(seconds_per_call(fn, a.steps))
  best = {k: min(v) for k, v in rounds.items()}
  t_plain, t_wpl = best["plain"], best["wpl"]
  t_end = {e: best[e] for e in ends}
  print(json.dumps({
      "benchmark": "wpl_step", "network": a.network, "device": str(jax.devices()[0]),
      "platform": platform.platform(), "jax": jax.__version__, "optax": optax.__version__,
      "sizes": {**sizes, "num_batch_per_iter": a.burst, "steps_per_round": a.steps, "rounds": a.rounds},
      "plain_step_seconds": t_plain, "wpl_step_seconds": t_wpl,
      "burst_end_seconds": t_end, "wpl_step_ratio": t_wpl / t_plain,
      "wpl_step_plus_amortised_update_ratio": {e: (t_wpl + t / a.burst) / t_plain for e, t in t_end.items()},
      "compilations": {"plain": plain._cache_size(), "wpl_step": step._cache_size(),
                       **{f"burst_end_{e}": f._cache_size() for e, f in ends.items()}},
  }, indent=1))


if __name__ == "__main__":
  main()
