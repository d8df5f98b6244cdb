"""The runner's penalty is the one of nas_forgetting.penalties at the configured strength (value and gradient), checked
against the papers' formulas written out here in numpy: a penalty that ignores `strength`, or a MAS/SI factor other
than the MAS paper's (no 1/2), fails."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting import penalties
from nas_forgetting.continual import experiment, steps
from nas_forgetting.continual.runner import MethodRun
from nas_forgetting.continual.stream_model import task_arrays

STRENGTH = 3.0
# value = FACTOR * strength * sum importance * (params - anchor)^2 (summed over slots): EWC / online EWC / L2 have
# the EWC paper's 1/2, MAS and SI the MAS paper's 1 (gradient 2 strength Omega (params - anchor)).
FACTOR = {"ewc": 0.5, "online_ewc": 0.5, "l2": 0.5, "mas": 1.0, "mas_local": 1.0, "si": 1.0}


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(l, np.float64)) for l in jax.tree.leaves(tree)])


def _setup(method, tiny_config, tmp_path, learning_rate):
  config = tiny_config(optimizer="sgd", learning_rate=learning_rate, epochs=1)
  config.stream.num_tasks = 2
  config.strength[method] = STRENGTH
  tasks = experiment.load_tasks(config)
  run = MethodRun(config, tasks, method, tmp_path / method)
  state = run.fresh_state()
  run.build_steps()
  params = state["params"]
  keys = iter(jax.random.split(jax.random.key(7), 4 * len(jax.tree.leaves(params)) * run.num_slots))
  # Every slot filled with its own anchor and positive importance (L2: importance marks the pulled entries, 1).
  anchors = jax.tree.map(lambda p: p[None] + 0.2 * jax.random.normal(next(keys), (run.num_slots,) + p.shape),
                         params)
  if method == "l2":
    importance = jax.tree.map(lambda p: jnp.ones((run.num_slots,) + p.shape), params)
  else:
    importance = jax.tree.map(lambda p: jax.random.uniform(next(keys), (run.num_slots,) + p.shape, minval=0.1),
                              params)
  state = dict(state, anchors=anchors, importance=importance)
  return run, state, tasks


def _analytic(method, params, anchors, importance, slots):
  p = _flat(params)
  total = 0.0
  for s in range(slots):
    a = _flat(jax.tree.map(lambda x: x[s], anchors))
    w = _flat(jax.tree.map(lambda x: x[s], importance))
    total += FACTOR[method] * STRENGTH * np.sum(w * (p - a) ** 2)
  return total


@pytest.mark.parametrize("method", ["ewc", "online_ewc", "l2", "mas", "mas_local", "si"])
def test_logged_penalty_is_the_penalties_module_value_at_the_strength(method, tiny_config, tmp_path):
  # Learning rate 0: the parameters stay put, so every step's penalty, and the epoch's logged mean, is the value at
  # the state's parameters.
  run, state, tasks = _setup(method, tiny_config, tmp_path, learning_rate=0.0)
  data, n = task_arrays(tasks, [1], "train", run.train_size)
  _, metrics = run.train_epoch(state, 1, 0, data, n)
  expected = _analytic(method, state["params"], state["anchors"], state["importance"], run.num_slots)
  np.testing.assert_allclose(metrics["penalty"], expected, rtol=1e-4)
  fn = {"ewc": penalties.ewc_penalty, "online_ewc": penalties.online_ewc_penalty, "mas": penalties.mas_penalty,
        "mas_local": penalties.mas_penalty, "si": penalties.si_penalty}.get(method)
  if fn is None:  # l2: importance ones
    value = sum(float(penalties.l2_penalty(state["params"], jax.tree.map(lambda a, s=s: a[s], state["anchors"]),
                                           STRENGTH)) for s in range(run.num_slots))
  else:
    value = sum(float(fn(state["params"], jax.tree.map(lambda a, s=s: a[s], state["anchors"]),
                         jax.tree.map(lambda i, s=s: i[s], state["importance"]), STRENGTH))
                for s in range(run.num_slots))
  np.testing.assert_allclose(metrics["penalty"], value, rtol=1e-4)


@pytest.mark.parametrize("method", ["ewc", "mas"])
def test_penalty_gradient_moves_parameters_by_lr_strength_importance_displacement(method, tiny_config, tmp_path):
  # One plain SGD step from the same parameters on the same batch: the method's parameters minus fine-tuning's are
  # -lr * gradient of the penalty = -lr * 2 FACTOR strength F (params - anchor).
  lr = 0.1
  run, state, tasks = _setup(method, tiny_config, tmp_path, learning_rate=lr)
  plain, _, _ = _setup("ewc", tiny_config, tmp_path / "plain", learning_rate=lr)
  plain_fn = steps.make_epoch_fn(plain.model.apply, plain.tx, penalty_fn=None, use_si=False)
  data, n = task_arrays(tasks, [1], "train", run.train_size)
  idx, valid = jnp.arange(16, dtype=jnp.int32)[None], jnp.ones((1,), bool)
  carry = steps.Carry(state["params"], state["batch_stats"], state["opt_state"], state["si_path"])
  args = (data, idx, valid, jax.random.key(0), state["anchors"], state["importance"], jnp.float32(STRENGTH))
  with_penalty = run.epoch_fn(carry, *args)[0].params
  without = plain_fn(carry, *args)[0].params
  anchor = jax.tree.map(lambda a: a[0], state["anchors"])
  importance = jax.tree.map(lambda i: i[0], state["importance"])
  if method == "ewc":  # every slot holds a pair: the gradient sums them
    anchor_term = sum(_flat(jax.tree.map(lambda i, a, p, s=s: i[s] * (p - a[s]), state["importance"],
                                         state["anchors"], state["params"])) for s in range(run.num_slots))
  else:
    anchor_term = _flat(jax.tree.map(lambda i, a, p: i * (p - a), importance, anchor, state["params"]))
  expected = -lr * 2 * FACTOR[method] * STRENGTH * anchor_term
  np.testing.assert_allclose(_flat(with_penalty) - _flat(without), expected, rtol=1e-3, atol=1e-6)
