"""WPL state: Fisher EMA, clipping, masks, alpha schedule, resets, anchors and the penalty, against hand oracles."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.errors import ArchitectureError, ConfigError
from nas_forgetting.wpl import state as wpl

HP = wpl.WPLHyperParams(alpha_fisher=3.0, alpha_decay=1.0, alpha_decay_after=2, lambda_fisher=0.5, momentum=True,
                        fisher_clip_by_norm=0.0, set_fisher_zero_per_iter=-1, start_using_fisher=0)


def _params(seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {"edges": jax.random.normal(k1, (4, 3, 2)), "dense": {"w": jax.random.normal(k2, (3, 5)),
                                                                "b": jax.random.normal(k3, (5,))}}


def _mask(active_edges, dense=True):
  return {"edges": jnp.asarray(active_edges, bool), "dense": {"w": jnp.asarray(dense), "b": jnp.asarray(dense)}}


def _drift(params, seed=1, scale=0.1):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def _fisher_like(params, seed=2):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [jax.random.uniform(k, p.shape, minval=0.1, maxval=2.0)
                                   for p, k in zip(leaves, keys)])


def test_penalty_zero_after_anchor_refresh_and_grows_with_drift():
  params = _params()
  state = wpl.init_wpl_state(params)
  state = wpl.end_burst(state, params, _fisher_like(params), None, HP)
  assert float(wpl.penalty(state, params, None, HP)) == 0.0
  values = [float(wpl.penalty(state, _drift(params, scale=s), None, HP)) for s in (0.01, 0.1, 1.0)]
  assert 0.0 < values[0] < values[1] < values[2]
  # Quadratic in the displacement: scaling the drift by 10 scales the penalty by 100.
  np.testing.assert_allclose(values[1] / values[0], 100.0, rtol=1e-4)


def test_penalty_value_and_gradient_oracle_on_active_params():
  params = _params()
  state = wpl.init_wpl_state(params)._replace(fisher=_fisher_like(params))
  moved = _drift(params)
  mask = _mask([True, False, True, False], dense=False)
  value, grad = jax.value_and_grad(lambda p: wpl.penalty(state, p, mask, HP))(moved)
  alpha = HP.alpha_fisher
  full = wpl.expand_mask(mask, params)
  expected_grad = jax.tree.map(lambda f, p, a, m: jnp.where(m, alpha * f * (p - a), 0.0),
                               state.fisher, moved, state.anchor, full)
  chex.assert_trees_all_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(grad["dense"]["w"]).max()) == 0.0 and float(jnp.abs(grad["edges"][1]).max()) == 0.0
  expected_value = sum(jnp.sum(jnp.where(m, 0.5 * alpha * f * (p - a) ** 2, 0.0)) for f, p, a, m in zip(
      jax.tree.leaves(state.fisher), jax.tree.leaves(moved), jax.tree.leaves(state.anchor), jax.tree.leaves(full)))
  np.testing.assert_allclose(float(value), float(expected_value), rtol=1e-5)


def test_fisher_ema_momentum_and_plain_forms_on_active_only():
  params = _params()
  f0, g2 = _fisher_like(params, 3), _fisher_like(params, 4)
  state = wpl.init_wpl_state(params)._replace(fisher=f0)
  mask = _mask([False, True, False, True], dense=True)
  lam = HP.lambda_fisher
  out = wpl.update_fisher(state, g2, mask, HP).fisher
  full = wpl.expand_mask(mask, params)
  chex.assert_trees_all_close(out, jax.tree.map(lambda f, g, m: jnp.where(m, (1 - lam) * f + lam * g, f), f0, g2, full),
                              rtol=1e-6)
  np.testing.assert_array_equal(out["edges"][0], f0["edges"][0])  # inactive edge keeps its Fisher exactly
  plain = wpl.update_fisher(state, g2, mask, HP._replace(momentum=False)).fisher
  chex.assert_trees_all_close(plain, jax.tree.map(lambda f, g, m: jnp.where(m, f + lam * g, f), f0, g2, full),
                              rtol=1e-6)


def test_clipping_bounds_each_tensor_norm():
  params = _params()
  hp = HP._replace(fisher_clip_by_norm=1.0, momentum=False, lambda_fisher=1.0)
  big = jax.tree.map(lambda p: 10.0 * jnp.ones_like(p), params)
  small = {"edges": jnp.zeros((4, 3, 2)).at[2].set(0.01), "dense": {"w": jnp.zeros((3, 5)), "b": jnp.zeros(5)}}
  state = wpl.init_wpl_state(params)
  out = wpl.update_fisher(state, big, _mask([True] * 4), hp).fisher
  # Per-edge tensors (mask (4,)) each clipped to norm 1, direction kept (all entries equal).
  np.testing.assert_allclose(jnp.sqrt(jnp.sum(out["edges"] ** 2, axis=(1, 2))), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out["edges"], 1.0 / np.sqrt(6.0), rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(out["dense"]["w"]), 1.0, rtol=1e-5)  # scalar mask: whole tensor
  np.testing.assert_allclose(jnp.linalg.norm(out["dense"]["b"]), 1.0, rtol=1e-5)
  # A tensor below the bound is left as is.
  out_small = wpl.update_fisher(state, small, _mask([True] * 4), hp).fisher
  np.testing.assert_allclose(out_small["edges"][2], 0.01, rtol=1e-6)


def test_alpha_schedule_follows_flags():
  hp = wpl.WPLHyperParams(alpha_fisher=60.0, alpha_decay=1.0, alpha_decay_after=15)
  got = [float(wpl.alpha_at(e, hp)) for e in (0, 14, 15, 16, 74, 75, 200)]
  assert got == [60.0, 60.0, 59.0, 58.0, 0.0, 0.0, 0.0]
  jitted = jax.jit(wpl.alpha_at, static_argnums=1)
  assert float(jitted(jnp.int32(20), hp)) == 54.0
  assert float(wpl.alpha_at(100, hp._replace(alpha_decay=0.0))) == 60.0


def test_reset_every_k_epochs_and_start_using_fisher():
  params = _params()
  hp = HP._replace(set_fisher_zero_per_iter=2, start_using_fisher=1)
  state = wpl.init_wpl_state(params)
  g2 = _fisher_like(params)
  # Epoch 0: before start_using_fisher, no update and no penalty.
  state = wpl.begin_epoch(state, 0, hp)
  state = wpl.update_fisher(state, g2, None, hp)
  assert int(state.num_updates) == 0 and float(jnp.sum(state.fisher["edges"])) == 0.0
  state = state._replace(fisher=g2)
  assert float(wpl.penalty(state, _drift(params), None, hp)) == 0.0
  # Epoch 1: switched on, 1 % 2 != 0 -> no reset.
  state = wpl.begin_epoch(state, 1, hp)
  chex.assert_trees_all_equal(state.fisher, g2)
  assert float(wpl.penalty(state, _drift(params), None, hp)) > 0.0
  state = wpl.update_fisher(state, g2, None, hp)
  assert int(state.num_updates) == 1
  # Epoch 2: reset.
  state = wpl.begin_epoch(state, 2, hp)
  assert all(float(jnp.abs(f).max()) == 0.0 for f in jax.tree.leaves(state.fisher))
  # k <= 0 never resets.
  kept = wpl.begin_epoch(state._replace(fisher=g2), 4, HP)
  chex.assert_trees_all_equal(kept.fisher, g2)


def test_reference_scaling_compounds_alpha():
  params = {"w": jnp.zeros((2,))}
  hp = wpl.WPLHyperParams(alpha_fisher=2.0, alpha_decay=0.0, lambda_fisher=1.0, momentum=False,
                          reference_scaling=True)
  state = wpl.init_wpl_state(params)
  g2 = {"w": jnp.ones((2,))}
  for _ in range(3):
    state = wpl.update_fisher(state, g2, None, hp)
  # F_t = alpha * (F_{t-1} + g2): 2, 6, 14.
  np.testing.assert_allclose(state.fisher["w"], 14.0)
  moved = {"w": jnp.ones((2,))}
  # The penalty uses the stored value without alpha: 1/2 * 14 * 1 * 2 entries.
  np.testing.assert_allclose(float(wpl.penalty(state, moved, None, hp)), 14.0)
  default = wpl.init_wpl_state(params)
  for _ in range(3):
    default = wpl.update_fisher(default, g2, None, hp._replace(reference_scaling=False))
  np.testing.assert_allclose(default.fisher["w"], 3.0)  # raw accumulation, alpha applied at penalty time
  np.testing.assert_allclose(float(wpl.penalty(default, moved, None, hp._replace(reference_scaling=False))), 6.0)


def test_one_trace_for_all_masks_and_epochs():
  params = _params()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(state, params, mask):
    loss, grads = jax.value_and_grad(lambda p: wpl.penalty(state, p, mask, HP))(params)
    new_params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    state = wpl.end_burst(state, new_params, jax.tree.map(jnp.square, grads), mask, HP)
    return state, new_params, loss

  state = wpl.init_wpl_state(params)._replace(fisher=_fisher_like(params))
  rng = np.random.default_rng(0)
  for epoch in range(4):
    state = jax.jit(wpl.begin_epoch, static_argnums=2)(state, epoch, HP)
    for _ in range(3):
      mask = _mask(rng.random(4) < 0.5, dense=bool(rng.random() < 0.5))
      state, params, _ = step(state, _drift(params, seed=epoch), mask)
  chex.assert_tree_all_finite(state)


def test_bad_masks_and_configs_raise_named_errors():
  params = _params()
  state = wpl.init_wpl_state(params)
  with pytest.raises(ArchitectureError, match=r"\['edges'\].*shape \(3,\)"):
    wpl.penalty(state, params, _mask([True] * 3), HP)
  with pytest.raises(ArchitectureError, match="dtype"):
    wpl.update_fisher(state, params, {"edges": jnp.ones(4), "dense": {"w": True, "b": True}}, HP)
  with pytest.raises(ArchitectureError, match="tree"):
    wpl.update_fisher(state, {"edges": params["edges"]}, None, HP)
  with pytest.raises(ConfigError, match="unknown wpl config field 'alpha'"):
    wpl.default_wpl_config(alpha=3.0)
  with pytest.raises(ConfigError, match="wpl.estimator"):
    wpl.default_wpl_config(estimator="mean")
  with pytest.raises(ConfigError, match=r"^wpl.lambda_fisher=1.5; expected a finite number > 0 and <= 1$"):
    wpl.default_wpl_config(lambda_fisher=1.5)  # the momentum form is an average
  assert wpl.default_wpl_config(lambda_fisher=1.5, momentum=False).lambda_fisher == 1.5
  with pytest.raises(ConfigError, match=r"^wpl.momentum=1; expected True or False$"):
    wpl.WPLHyperParams(momentum=1).validate()


def test_reference_presets():
  rnn = wpl.WPLHyperParams.from_config(wpl.reference_rnn_wpl_config())
  assert (rnn.alpha_fisher, rnn.fisher_clip_by_norm, rnn.alpha_decay, rnn.alpha_decay_after,
          rnn.set_fisher_zero_per_iter, rnn.momentum) == (60.0, 10.0, 1.0, 15, 2, True)
  cnn_config = wpl.reference_cnn_wpl_config()
  cnn = wpl.WPLHyperParams.from_config(cnn_config)
  assert (cnn.alpha_fisher, cnn.fisher_clip_by_norm, cnn.momentum, cnn.set_fisher_zero_per_iter,
          cnn.alpha_decay) == (60.0, 10.0, False, 3, 0.0)
  assert cnn_config.num_batch_per_iter == 7 and wpl.reference_rnn_wpl_config().num_batch_per_iter == 7
  assert not wpl.default_wpl_config().reference_scaling and wpl.default_wpl_config().estimator != "batch"


def test_checkpoint_resume_restores_fisher_anchor_and_penalty(tmp_path):
  from nas_forgetting.io.checkpoint import Checkpointer
  params = _params()
  state = wpl.init_wpl_state(params)
  state = wpl.begin_epoch(state, 3, HP)
  state = wpl.end_burst(state, _drift(params, seed=5), _fisher_like(params), _mask([True, False, True, True]), HP)
  moved = _drift(params, seed=6)
  ckpt = Checkpointer(tmp_path / "checkpoints")
  ckpt.save(7, {"wpl": state})
  ckpt.wait()
  like = {"wpl": wpl.init_wpl_state(params)}
  restored = Checkpointer(tmp_path / "checkpoints").restore(None, like)["wpl"]
  assert isinstance(restored, wpl.WPLState)
  chex.assert_trees_all_equal(restored, state)
  assert int(restored.epoch) == 3 and int(restored.num_updates) == 1
  assert float(wpl.penalty(restored, moved, None, HP)) == float(wpl.penalty(state, moved, None, HP))


@pytest.mark.parametrize("momentum", [True, False])
def test_reset_fisher_without_gradient_is_the_references_option(momentum):
  """Edge 1 is active but gets no gradient (an all-zero estimate). Ours (default): the ordinary update with g2 = 0,
  i.e. (1 - lambda) F in the momentum form and F kept in the plain form. With `reset_fisher_without_gradient` (the
  reference's rule for a parameter whose gradient is absent): 0. Edges with a gradient, and inactive edges, are
  updated (kept) identically either way."""
  params = _params()
  fisher = _fisher_like(params)
  state = wpl.init_wpl_state(params)._replace(fisher=fisher)
  g2 = _fisher_like(params, seed=5)
  g2 = dict(g2, edges=g2["edges"].at[1].set(0.0))
  mask = _mask([True, True, False, True])
  ours_hp = HP._replace(momentum=momentum)
  ref_hp = ours_hp._replace(reset_fisher_without_gradient=True)
  ours, ref = wpl.update_fisher(state, g2, mask, ours_hp), wpl.update_fisher(state, g2, mask, ref_hp)
  f, g = np.asarray(fisher["edges"]), np.asarray(g2["edges"])
  kept = f[1] * (0.5 if momentum else 1.0)  # lambda 0.5: (1 - 0.5) F + 0.5 * 0, or F + 0.5 * 0
  np.testing.assert_allclose(ours.fisher["edges"][1], kept, rtol=1e-6)
  np.testing.assert_array_equal(ref.fisher["edges"][1], np.zeros_like(f[1]))
  for e in (0, 3):  # active, with a gradient
    want = 0.5 * f[e] + 0.5 * g[e] if momentum else f[e] + 0.5 * g[e]
    np.testing.assert_allclose(ours.fisher["edges"][e], want, rtol=1e-6)
    np.testing.assert_allclose(ref.fisher["edges"][e], want, rtol=1e-6)
  np.testing.assert_array_equal(ours.fisher["edges"][2], f[2])  # inactive: kept by both
  np.testing.assert_array_equal(ref.fisher["edges"][2], f[2])
  chex.assert_trees_all_close(ours.fisher["dense"], ref.fisher["dense"])


def test_reset_fisher_without_gradient_is_a_config_field_off_by_default():
  config = wpl.default_wpl_config()
  assert config.reset_fisher_without_gradient is False
  assert wpl.WPLHyperParams.from_config(config).reset_fisher_without_gradient is False
  config.reset_fisher_without_gradient = True
  assert wpl.WPLHyperParams.from_config(config).reset_fisher_without_gradient is True
  with pytest.raises(ConfigError, match="wpl.alpha_fisher=nan; expected a finite number"):
    wpl.default_wpl_config(alpha_fisher=float("nan"))


def test_sgd_stiffness_is_the_step_factor_of_gradient_descent_on_the_penalty():
  """One SGD step on alpha/2 F (theta - theta*)^2 multiplies theta - theta* by 1 - lr alpha F: |.| > 1 (overshoot
  growing) exactly when lr alpha F > 2, the stiffness of the largest F."""
  fisher = {"a": jnp.array([0.5, 4.0]), "b": jnp.array([[1.0]])}
  assert wpl.sgd_stiffness(fisher, alpha=2.0, learning_rate=0.3) == pytest.approx(0.3 * 2.0 * 4.0)
  state = wpl.init_wpl_state({"a": jnp.zeros(2), "b": jnp.zeros((1, 1))})._replace(fisher=fisher)
  hp = wpl.WPLHyperParams(alpha_fisher=2.0, alpha_decay=0.0)
  theta = {"a": jnp.array([1.0, 1.0]), "b": jnp.array([[1.0]])}  # distance 1 from the zero anchor
  for lr, grows in ((0.24, False), (0.26, True)):  # lr alpha max F = 1.92 < 2 and 2.08 > 2
    g = jax.grad(lambda p: wpl.penalty(state, p, None, hp))(theta)
    stepped = jax.tree.map(lambda p, d: p - lr * d, theta, g)
    assert (abs(float(stepped["a"][1])) > 1.0) == grows == (wpl.sgd_stiffness(fisher, 2.0, lr) > 2.0)


def test_proximal_step_solves_the_penalty_exactly():
  """theta = argmin |theta - p|^2 / (2 lr) + alpha/2 F (theta - a)^2 = a + (p - a) / (1 + lr alpha F) on active
  entries (checked by the zero gradient of that objective), p elsewhere; stable where a gradient step diverges."""
  fisher = {"w": jnp.array([0.0, 1.0, 100.0]), "v": jnp.array([2.0])}
  anchor = {"w": jnp.array([1.0, 1.0, 1.0]), "v": jnp.array([0.0])}
  state = wpl.init_wpl_state(anchor)._replace(fisher=fisher)
  hp = wpl.WPLHyperParams(alpha_fisher=3.0, alpha_decay=0.0, proximal=True)
  p = {"w": jnp.array([2.0, 2.0, 2.0]), "v": jnp.array([5.0])}
  lr = 0.5
  held = wpl.proximal_step(state, p, {"w": jnp.array([True, True, True]), "v": jnp.array(False)}, hp, lr)
  assert held["w"] == pytest.approx(jnp.array([2.0, 1.0 + 1.0 / 2.5, 1.0 + 1.0 / 151.0]))
  assert held["v"] == pytest.approx(jnp.array([5.0]))  # inactive: untouched
  objective = lambda t: (jnp.sum((t - p["w"]) ** 2) / (2 * lr)
                         + wpl.penalty(state, {"w": t, "v": anchor["v"]}, {"w": True, "v": False}, hp))
  assert jnp.max(jnp.abs(jax.grad(objective)(held["w"]))) < 1e-4  # float32, stiffness up to 150
  # Stiffness 150 on the last entry: within (anchor, p) instead of overshooting; the gradient step lands far beyond.
  grad_step = p["w"] - lr * 3.0 * fisher["w"] * (p["w"] - anchor["w"])
  assert 1.0 < float(held["w"][2]) < 2.0 and float(grad_step[2]) < -70
  off = wpl.proximal_step(state._replace(epoch=jnp.int32(0)), p, None, hp._replace(start_using_fisher=1), lr)
  chex.assert_trees_all_close(off, p)  # before WPL is on: nothing held
