"""Controller log-probabilities against a hand computation; REINFORCE on a bandit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.enas import reinforce
from nas_forgetting.enas.search_space import RnnSearchSpace
from nas_forgetting.models import controller as ctl


_evaluate = jax.jit(ctl.evaluate, static_argnums=0)  # one compilation per controller (hashable) and shape


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def hand_log_probs(p, num_choices, decisions, temperature, tanh_c):
  """The controller written out in numpy, step by step."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  hsz = p["w_hidden"].shape[0]
  h, c, x = np.zeros(hsz), np.zeros(hsz), np.zeros(hsz)
  offset, out_lp, out_h = 0, [], []
  for i, n in enumerate(num_choices):
    g = x @ p["w_input"] + h @ p["w_hidden"] + p["b_lstm"]
    gi, gf, gg, go = g[:hsz], g[hsz:2 * hsz], g[2 * hsz:3 * hsz], g[3 * hsz:]
    c = _sigmoid(gf) * c + _sigmoid(gi) * np.tanh(gg)
    h = _sigmoid(go) * np.tanh(c)
    logits = (h @ p["decoder_kernel"][i] + p["decoder_bias"][i])[:n] / temperature
    if tanh_c > 0:
      logits = tanh_c * np.tanh(logits)
    logp = logits - np.log(np.sum(np.exp(logits)))
    out_lp.append(logp[decisions[i]])
    out_h.append(-np.sum(np.exp(logp) * logp))
    x = p["embedding"][offset + decisions[i]]
    offset += n
  return np.array(out_lp), np.array(out_h)


@pytest.mark.parametrize("tanh_c", [2.5, 0.0])  # 0: the reference's derive-mode logits (no squashing)
def test_log_probs_match_hand_computation(tanh_c):
  space = RnnSearchSpace(num_blocks=4)
  model = ctl.Controller(space.num_choices, hidden_size=8, temperature=1.5, tanh_c=tanh_c, init_range=0.5)
  params = ctl.init_controller(model, jax.random.key(1))
  params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape), params)  # non-zero biases
  sample = jax.jit(lambda p, k: ctl.sample(model, p, k, 5))(params, jax.random.key(3))
  assert sample.decisions.shape == (5, space.num_decisions)
  lp, ent = _evaluate(model, params, sample.decisions)
  np.testing.assert_allclose(lp, sample.log_probs, rtol=1e-5, atol=1e-6)
  for b in range(5):
    d = np.asarray(sample.decisions[b])
    assert all(0 <= d[i] < n for i, n in enumerate(space.num_choices))
    want_lp, want_h = hand_log_probs(params, space.num_choices, d, 1.5, tanh_c)
    np.testing.assert_allclose(lp[b], want_lp, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ent[b], want_h, rtol=1e-4, atol=1e-5)


def test_sampling_follows_the_policy():
  """Frequencies of the first decision over many vmapped samples match its softmax."""
  model = ctl.Controller((3, 2), hidden_size=4, temperature=1.0, tanh_c=0.0, init_range=1.0)
  params = ctl.init_controller(model, jax.random.key(0))
  params["decoder_bias"] = params["decoder_bias"].at[0].set(jnp.array([1.0, 0.0, -1.0]))
  s = jax.jit(lambda p, k: ctl.sample(model, p, k, 20000))(params, jax.random.key(1))
  freq = np.bincount(np.asarray(s.decisions[:, 0]), minlength=3) / 20000
  probs = np.exp(np.asarray(s.log_probs[:, 0]))
  want = np.array([probs[np.asarray(s.decisions[:, 0]) == k][0] for k in range(3)])
  np.testing.assert_allclose(freq, want, atol=0.015)
  assert want.sum() == pytest.approx(1.0, abs=1e-5)


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
