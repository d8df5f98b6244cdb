"""Cost of WPL in ENAS shared training: the WPL step (CE + penalty on the architecture's active shared weights) and
the per-burst Fisher/anchor update, against the plain shared step on the same architectures. Prints one JSON object.

  python benchmarks/wpl_step.py             # reduced RNN sizes (CPU)
  python benchmarks/wpl_step.py --paper     # paper-size RNN (12 nodes, 1000 hidden, batch 64, bptt 35)

The plain step is `enas.trainer.rnn_shared_step`. The WPL step is the same computation with
`wpl.state.penalty(state, rnn_monitored(params), rnn_active_mask(arch), hp)` added to the loss (written out here
because the trainer step has no loss hook yet). The burst end is the Fisher estimate on one validation window
(`wpl.enas_fisher.rnn_fisher`: `empirical` = per-sequence squared gradients, and the reference's `batch`), then
`wpl.state.end_burst`. Target (the issue's): WPL step <= 1.5x the plain step; a burst of `num_batch_per_iter`
WPL steps plus its update, per step, reported as well. Architectures rotate every step; one compilation each.
Timings: the minimum over interleaved rounds.
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
from timing import seconds_per_call
from nas_forgetting.enas import trainer as tr
from nas_forgetting.models.enas_rnn import EnasRnn, rnn_lm_loss
from nas_forgetting.wpl import enas_fisher
from nas_forgetting.wpl import masks
from nas_forgetting.wpl import state as wpl


def wpl_rnn_step(state, wstate, data, start, hidden, arch, rng, lr, *, model, optimizer, bptt, hp):
  """rnn_shared_step with the WPL penalty added to the loss."""
  inputs, targets = tr.lm_window(data, start, bptt)
  hidden = jax.lax.stop_gradient(hidden)
  mask = masks.rnn_active_mask(arch, model.num_blocks)

  def loss_fn(params):
    logits, new_hidden, extras = model.apply({"params": params}, inputs, hidden, arch, train=True,
                                             rngs={"dropout": rng})
    loss, parts = rnn_lm_loss(logits, targets, extras)
    penalty = wpl.penalty(wstate, masks.rnn_monitored(params), mask, hp)
    return loss + penalty, (new_hidden, penalty)

  (loss, (new_hidden, penalty)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
  return tr.SharedState(params, opt_state, state.step + 1), new_hidden, {"shared/loss": loss, "wpl/penalty": penalty}


def wpl_burst_end(wstate, params, data, arch, *, model, bptt, hp, estimator):
  """Fisher estimate on one validation window (`enas_fisher.rnn_fisher`) and the WPL state update."""
  inputs, targets = tr.lm_window(data, jnp.int32(0), bptt)
  sq = enas_fisher.rnn_fisher(params, inputs, targets, arch, model=model, estimator=estimator)
  return wpl.end_burst(wstate, masks.rnn_monitored(params), sq, masks.rnn_active_mask(arch, model.num_blocks), hp)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--paper", action="store_true")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--num_archs", type=int, default=4)
  parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (minimum reported)")
  parser.add_argument("--burst", type=int, default=7, help="num_batch_per_iter")
  a = parser.parse_args()
  if a.paper:
    a.blocks, a.hidden, a.vocab, a.batch, a.bptt = 12, 1000, 10000, 64, 35
  else:
    a.blocks, a.hidden, a.vocab, a.batch, a.bptt = 6, 128, 2000, 16, 20

  model = EnasRnn(vocab_size=a.vocab, num_blocks=a.blocks, hidden_size=a.hidden)
  space = ss.RnnSearchSpace(num_blocks=a.blocks)
  opt = tr.shared_optimizer(0.25, 1e-7)
  hp = wpl.WPLHyperParams.from_config(wpl.reference_rnn_wpl_config())
  arch0 = jnp.zeros((a.blocks, 2), jnp.int32)
  params = jax.jit(lambda k: model.init(k, jnp.zeros((a.bptt, a.batch), jnp.int32), jnp.zeros((a.batch, a.hidden)),
                                        arch0, train=False)["params"])(jax.random.key(0))
  data = jax.random.randint(jax.random.key(1), (a.bptt * 8 + 1, a.batch), 0, a.vocab)
  archs = jax.vmap(space.random_arch)(jax.random.split(jax.random.key(2), a.num_archs))

  plain = jax.jit(functools.partial(tr.rnn_shared_step, model=model, optimizer=opt, bptt=a.bptt, ar_alpha=0.0,
                                    tar_beta=0.0))
  step = jax.jit(functools.partial(wpl_rnn_step, model=model, optimizer=opt, bptt=a.bptt, hp=hp))
  burst_end = {e: jax.jit(functools.partial(wpl_burst_end, model=model, bptt=a.bptt, hp=hp, estimator=e))
               for e in enas_fisher.ENAS_ESTIMATORS}

  shared = tr.init_shared(params, opt)
  wstate = wpl.init_wpl_state(masks.rnn_monitored(params))
  wstate = wstate._replace(fisher=jax.tree.map(lambda f: f + 1e-3, wstate.fisher))
  hidden = jnp.zeros((a.batch, a.hidden))
  counter = {"i": 0}

  def run_plain():
    nonlocal shared
    i = counter["i"] = counter["i"] + 1
    s, _, m = plain(shared, data, jnp.int32(0), hidden, archs[i % a.num_archs], jax.random.key(i), jnp.float32(1.0))
    jax.block_until_ready(m["shared/loss"])

  def run_wpl():
    i = counter["i"] = counter["i"] + 1
    s, _, m = step(shared, wstate, data, jnp.int32(0), hidden, archs[i % a.num_archs], jax.random.key(i),
                   jnp.float32(1.0))
    jax.block_until_ready(m["shared/loss"])

  def run_burst_end(estimator):
    i = counter["i"] = counter["i"] + 1
    jax.block_until_ready(burst_end[estimator](wstate, shared.params, data, archs[i % a.num_archs]).fisher)

  # Interleaved rounds, minimum per kind: the machine may be shared, and the minimum is the least disturbed.
  rounds = {"plain": [], "wpl": [], **{e: [] for e in enas_fisher.ENAS_ESTIMATORS}}
  for _ in range(a.rounds):
    rounds["plain"].append(seconds_per_call(run_plain, a.steps))
    rounds["wpl"].append(seconds_per_call(run_wpl, a.steps))
    for e in enas_fisher.ENAS_ESTIMATORS:
      rounds[e].append(seconds_per_call(functools.partial(run_burst_end, e), a.steps))
  t_plain, t_wpl = min(rounds["plain"]), min(rounds["wpl"])
  t_end = {e: min(rounds[e]) for e in enas_fisher.ENAS_ESTIMATORS}
  print(json.dumps({
      "benchmark": "wpl_step", "device": str(jax.devices()[0]), "platform": platform.platform(),
      "jax": jax.__version__, "optax": optax.__version__,
      "sizes": {"blocks": a.blocks, "hidden": a.hidden, "vocab": a.vocab, "batch": a.batch, "bptt": a.bptt,
                "num_batch_per_iter": a.burst, "steps_per_round": a.steps, "rounds": a.rounds},
      "plain_step_seconds": t_plain, "wpl_step_seconds": t_wpl,
      "burst_end_seconds": t_end, "wpl_step_ratio": t_wpl / t_plain,
      "wpl_step_plus_amortised_update_ratio": {e: (t_wpl + t / a.burst) / t_plain for e, t in t_end.items()},
      "compilations": {"plain": plain._cache_size(), "wpl_step": step._cache_size(),
                       **{f"burst_end_{e}": f._cache_size() for e, f in burst_end.items()}},
  }, indent=1))


if __name__ == "__main__":
  main()
