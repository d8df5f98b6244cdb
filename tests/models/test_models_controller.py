"""The controller's policy (models/controller.py): log-probabilities against a hand computation; sampling follows
the policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
