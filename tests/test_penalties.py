"""Consolidation penalties: values and gradients by hand, masks, the optax transform, one compile across tasks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_forgetting import penalties
from nas_forgetting.errors import ConfigError


def _trees(seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  params = {"dense": {"kernel": jax.random.normal(k[0], (3, 2)), "bias": jnp.array([0.5, -1.0])},
            "scale": jnp.asarray(np.float32(2.0))}
  anchor = jax.tree.map(lambda p: p + 0.3 * jnp.ones_like(p), params)
  fisher = jax.tree.map(lambda p: jnp.abs(jax.random.normal(k[1], p.shape)) + 0.1, params)
  return params, anchor, fisher


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(l, np.float64)) for l in jax.tree.leaves(tree)])


def test_ewc_penalty_is_zero_at_anchor_and_gradient_is_strength_f_delta():
  params, anchor, fisher = _trees()
  assert float(penalties.ewc_penalty(anchor, anchor, fisher, 100.0)) == 0.0
  chex.assert_trees_all_close(jax.grad(penalties.ewc_penalty)(anchor, anchor, fisher, 100.0),
                              jax.tree.map(jnp.zeros_like, params))
  strength = 7.0
  value = penalties.ewc_penalty(params, anchor, fisher, strength)
  d, f = _flat(params) - _flat(anchor), _flat(fisher)
  np.testing.assert_allclose(float(value), strength / 2 * np.sum(f * d ** 2), rtol=1e-5)
  grad = jax.grad(penalties.ewc_penalty)(params, anchor, fisher, strength)
  chex.assert_trees_all_close(grad, jax.tree.map(lambda p, a, F: strength * F * (p - a), params, anchor, fisher),
                              rtol=1e-5)
  # no gradient flows into anchor or importance
  chex.assert_trees_all_close(jax.grad(penalties.ewc_penalty, argnums=(1, 2))(params, anchor, fisher, 1.0),
                              (jax.tree.map(jnp.zeros_like, anchor), jax.tree.map(jnp.zeros_like, fisher)))


def test_factor_conventions_of_mas_l2_wpl_online_ewc():
  params, anchor, fisher = _trees(1)
  d, f = _flat(params) - _flat(anchor), _flat(fisher)
  np.testing.assert_allclose(float(penalties.mas_penalty(params, anchor, fisher, 3.0)), 3.0 * np.sum(f * d ** 2),
                             rtol=1e-5)
  chex.assert_trees_all_close(jax.grad(penalties.mas_penalty)(params, anchor, fisher, 3.0),
                              jax.tree.map(lambda p, a, F: 2 * 3.0 * F * (p - a), params, anchor, fisher), rtol=1e-5)
  np.testing.assert_allclose(float(penalties.l2_penalty(params, anchor, 4.0)), 2.0 * np.sum(d ** 2), rtol=1e-5)
  np.testing.assert_allclose(float(penalties.wpl_penalty(params, anchor, fisher, 0.5)), 0.25 * np.sum(f * d ** 2),
                             rtol=1e-5)
  np.testing.assert_allclose(float(penalties.online_ewc_penalty(params, anchor, fisher, 2.0)),
                             float(penalties.ewc_penalty(params, anchor, fisher, 2.0)), rtol=1e-6)


def test_mask_restricts_penalty_value_and_gradient():
  params, anchor, fisher = _trees(2)
  mask = {"dense": {"kernel": np.array([[True, False]] * 3), "bias": True}, "scale": False}
  value = penalties.quadratic_penalty(params, anchor, fisher, mask=mask)
  moved = {"dense": {"kernel": params["dense"]["kernel"].at[:, 1].add(5.0), "bias": params["dense"]["bias"]},
           "scale": params["scale"] + 9.0}
  np.testing.assert_allclose(float(penalties.quadratic_penalty(moved, anchor, fisher, mask=mask)), float(value))
  grad = jax.grad(penalties.quadratic_penalty)(params, anchor, fisher, mask=mask)
  assert float(grad["scale"]) == 0.0
  np.testing.assert_array_equal(grad["dense"]["kernel"][:, 1], 0.0)
  np.testing.assert_allclose(grad["dense"]["kernel"][:, 0],
                             (fisher["dense"]["kernel"] * (params["dense"]["kernel"] - anchor["dense"]["kernel"]))[:, 0],
                             rtol=1e-6)
  d = (params["dense"]["kernel"] - anchor["dense"]["kernel"])[:, 0]
  db = params["dense"]["bias"] - anchor["dense"]["bias"]
  expected = 0.5 * (np.sum(fisher["dense"]["kernel"][:, 0] * d ** 2) + np.sum(fisher["dense"]["bias"] * db ** 2))
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_optax_transform_matches_gradient_of_the_penalty():
  params, anchor, fisher = _trees(3)
  mask = {"dense": {"kernel": True, "bias": False}, "scale": True}
  loss_grads = jax.tree.map(lambda p: jnp.sin(p), params)
  strength, lr = 5.0, 0.1
  tx = optax.chain(penalties.add_consolidation_penalty(strength), optax.sgd(lr, momentum=0.9))
  state = tx.init(params)
  updates, state = tx.update(loss_grads, state, params, anchor=anchor, importance=fisher, mask=mask)
  penalty_grad = jax.grad(lambda p: strength * penalties.quadratic_penalty(p, anchor, fisher, mask=mask))(params)
  ref = optax.sgd(lr, momentum=0.9)
  ref_updates, _ = ref.update(jax.tree.map(jnp.add, loss_grads, penalty_grad), ref.init(params), params)
  chex.assert_trees_all_close(updates, ref_updates, rtol=1e-6)
  # importance=None is an L2 pull; missing anchor or params is an error naming what is missing
  plain = penalties.add_consolidation_penalty(2.0)
  u, _ = plain.update(jax.tree.map(jnp.zeros_like, params), plain.init(params), params, anchor=anchor)
  chex.assert_trees_all_close(u, jax.tree.map(lambda p, a: 2.0 * (p - a), params, anchor))
  with pytest.raises(ConfigError, match="anchor"):
    plain.update(loss_grads, plain.init(params), params)
  with pytest.raises(ConfigError, match="needs params"):
    plain.update(loss_grads, plain.init(params), anchor=anchor)


def test_one_compile_across_tasks_with_new_anchors_and_importance():
  params, anchor, fisher = _trees(4)
  tx = optax.chain(penalties.add_consolidation_penalty(10.0), optax.adam(1e-2))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, opt_state, x, anchor, importance):
    def loss(p):
      return jnp.sum((x @ p["dense"]["kernel"] + p["dense"]["bias"]) ** 2) * p["scale"]
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params, anchor=anchor, importance=importance)
    penalty = penalties.ewc_penalty(params, anchor, importance, 10.0)
    return optax.apply_updates(params, updates), opt_state, penalty

  chex.clear_trace_counter()
  opt_state = tx.init(params)
  x = jnp.ones((4, 3))
  penalties_seen = []
  for task in range(3):
    for _ in range(2):
      params, opt_state, pen = step(params, opt_state, x, anchor, fisher)
      penalties_seen.append(float(pen))
    anchor = params                                            # consolidate: new anchor and importance
    fisher = jax.tree.map(lambda f: f * (task + 2.0), fisher)
  assert penalties_seen[2] == 0.0 and penalties_seen[4] == 0.0  # first step after each consolidation
  assert penalties_seen[3] > 0.0


def test_penalty_errors_name_the_mismatch():
  params, anchor, fisher = _trees()
  with pytest.raises(ConfigError, match="anchor tree"):
    penalties.quadratic_penalty(params, {"dense": anchor["dense"]}, fisher)
  bad = {"dense": {"kernel": jnp.ones((2, 2)), "bias": fisher["dense"]["bias"]}, "scale": fisher["scale"]}
  with pytest.raises(ConfigError, match=r"importance at \['dense'\]\['kernel'\] has shape \(2, 2\)"):
    penalties.quadratic_penalty(params, anchor, bad)
  with pytest.raises(ConfigError, match="mask tree"):
    penalties.quadratic_penalty(params, anchor, fisher, mask={"scale": True})
