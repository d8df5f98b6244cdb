"""REINFORCE (enas/reinforce.py) on a bandit: gradient sign, learning the best arm, masked decisions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.enas import reinforce
from nas_forgetting.models import controller as ctl


_evaluate = jax.jit(ctl.evaluate, static_argnums=0)  # one compilation per controller (hashable) and shape


def _log_prob(model, params, decisions):
  return _evaluate(model, params, decisions)[0][0, 0]


BANDIT = ctl.Controller((3,), hidden_size=4, temperature=1.0, tanh_c=0.0)
BANDIT_OPT = reinforce.controller_optimizer(0.05)


@functools.lru_cache(maxsize=None)
def _bandit_step(entropy_mode):
  return jax.jit(functools.partial(reinforce.reinforce_step, controller=BANDIT, optimizer=BANDIT_OPT, ema_decay=0.9,
                                   entropy_coeff=1e-4, entropy_mode=entropy_mode))


def _bandit(entropy_mode):
  model = BANDIT
  state = reinforce.init_reinforce(model, ctl.init_controller(model, jax.random.key(0)), BANDIT_OPT)
  step = _bandit_step(entropy_mode)
  return model, state, step


@pytest.mark.parametrize("entropy_mode", ["reward", "regularizer"])
def test_reinforce_gradient_sign_on_a_bandit(entropy_mode):
  model, state, step = _bandit(entropy_mode)
  # Baseline 0.5 already set; arm 2 pays 1 (advantage +0.5), arm 0 pays 0 (advantage -0.5).
  state = state._replace(baseline=jnp.array([0.5]), baseline_ready=jnp.array(True))
  decisions, mask = jnp.array([[2]]), jnp.ones((1, 1), bool)
  before = _log_prob(model, state.params, decisions)
  up, _ = step(state, decisions, jnp.array([1.0]), mask)
  down, _ = step(state, jnp.array([[0]]), jnp.array([0.0]), mask)
  assert _log_prob(model, up.params, decisions) > before  # rewarded arm more likely
  assert _log_prob(model, down.params, jnp.array([[0]])) < _log_prob(model, state.params, jnp.array([[0]]))


def test_reinforce_learns_the_best_arm_and_first_baseline():
  model, state, step = _bandit("reward")
  rng = jax.random.key(5)
  payout = jnp.array([0.1, 0.2, 1.0])
  sample = jax.jit(lambda params, key: ctl.sample(model, params, key, 16))
  for t in range(100):
    rng, key = jax.random.split(rng)
    s = sample(state.params, key)
    rewards = payout[s.decisions[:, 0]]
    state, metrics = step(state, s.decisions, rewards, jnp.ones_like(s.decisions, bool))
    if t == 0:  # first update: the baseline is the first batch's mean per-decision reward
      np.testing.assert_allclose(state.baseline[0], rewards.mean() + 1e-4 * s.entropies[:, 0].mean(), rtol=1e-4)
  p_best = float(jnp.exp(_log_prob(model, state.params, jnp.array([[2]]))))
  assert p_best > 0.9
  assert set(metrics) >= {"controller/loss", "controller/reward", "controller/entropy", "controller/advantage",
                          "controller/baseline"}


def test_masked_decisions_carry_no_gradient():
  model = ctl.Controller((2, 3, 3), hidden_size=4)
  opt = reinforce.controller_optimizer(0.1)
  state = reinforce.init_reinforce(model, ctl.init_controller(model, jax.random.key(0)), opt)
  state = state._replace(baseline=jnp.zeros(3), baseline_ready=jnp.array(True))
  mask = jnp.array([[True, True, False]])
  step = jax.jit(functools.partial(reinforce.reinforce_step, controller=model, optimizer=opt, ema_decay=0.9,
                                   entropy_coeff=0.0, entropy_mode="reward"))
  new, _ = step(state, jnp.array([[1, 2, 2]]), jnp.array([1.0]), mask)
  np.testing.assert_array_equal(new.params["decoder_kernel"][2], state.params["decoder_kernel"][2])
  assert not np.allclose(new.params["decoder_kernel"][1], state.params["decoder_kernel"][1])
