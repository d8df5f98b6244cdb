"""EnasRnn options added for WPL and reference comparisons: zero edge probes (per-layer Fisher) and the output
BatchNorm (`batchnorm_output`, the reference's quirk), against hand-computed oracles."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.models.enas_rnn import BN_EPSILON, BN_MOMENTUM, EnasRnn

ARCH = jnp.array([[-1, 3], [0, 2], [1, 0], [1, 1], [2, 0]], jnp.int32)  # node 1 read twice, leaves 3 and 4
T, B, H, V = 3, 4, 4, 7


def _case(**options):
  model = EnasRnn(vocab_size=V, num_blocks=5, hidden_size=H, init_range=0.6, **options)
  tokens = jax.random.randint(jax.random.key(1), (T, B), 0, V)
  variables = model.init(jax.random.key(2), tokens, jnp.zeros((B, H)), ARCH, train=False)
  return model, variables, tokens


def test_edge_probes_leave_the_outputs_unchanged():
  model, variables, tokens = _case()
  hidden = jnp.zeros((B, H))
  plain = model.apply(variables, tokens, hidden, ARCH, train=False)
  probed = model.apply(variables, tokens, hidden, ARCH, train=False, edge_probes=jnp.zeros((T, 4, B, 2 * H)))
  chex.assert_trees_all_close(plain[:2], probed[:2])
  chex.assert_shape(probed[2]["edge_inputs"], (T, 4, B, H))
  assert "edge_inputs" not in plain[2]
  with pytest.raises(ValueError, match="edge_probes has shape"):
    model.apply(variables, tokens, hidden, ARCH, train=False, edge_probes=jnp.zeros((T, 4, B, H)))


def test_batchnorm_output_is_off_by_default():
  _, variables, _ = _case()
  assert set(variables) == {"params"}
  assert not any(k.startswith("output_bn") for k in variables["params"])


def test_batchnorm_output_normalises_each_step_and_tracks_torch_running_averages():
  """Training: every step's output is standardised over the batch (then scale/bias), the recurrence and the
  unnormalised output are those of the model without BatchNorm, and the running averages follow torch's update
  r <- (1 - m) r + m s_t once per step (unbiased variance). Evaluation: the running averages are used."""
  no_dropout = dict(dropout_embedding=0.0, dropout_input=0.0, dropout_output=0.0, weight_drop=0.0)
  model, variables, tokens = _case(batchnorm_output=True, **no_dropout)
  assert set(variables["batch_stats"]) == {"output_bn_mean", "output_bn_var"}
  plain_model, _, _ = _case(**no_dropout)
  plain_params = {k: v for k, v in variables["params"].items() if not k.startswith("output_bn")}
  scale = jnp.linspace(0.5, 2.0, H)
  bias = jnp.linspace(-1.0, 1.0, H)
  params = dict(variables["params"], output_bn_scale=scale, output_bn_bias=bias)
  r0 = {"output_bn_mean": jnp.full((H,), 0.3), "output_bn_var": jnp.full((H,), 2.0)}
  hidden = jnp.zeros((B, H))

  (_, new_hidden, extras), updated = model.apply({"params": params, "batch_stats": r0}, tokens, hidden, ARCH,
                                                 train=True, mutable=["batch_stats"])
  y = np.asarray(plain_model.apply({"params": plain_params}, tokens, hidden, ARCH, train=False)[2]["raw_outputs"],
                 np.float64)
  chex.assert_trees_all_close(new_hidden, model.apply({"params": params, "batch_stats": r0}, tokens, hidden, ARCH,
                                                      train=False)[1])  # BatchNorm does not touch the recurrence
  expected = (y - y.mean(1, keepdims=True)) / np.sqrt(y.var(1, keepdims=True) + BN_EPSILON) * scale + bias
  np.testing.assert_allclose(extras["raw_outputs"], expected, rtol=1e-4, atol=1e-5)
  mean, var = np.asarray(r0["output_bn_mean"], np.float64), np.asarray(r0["output_bn_var"], np.float64)
  for t in range(T):  # torch.nn.BatchNorm1d, called once per time step
    mean = (1 - BN_MOMENTUM) * mean + BN_MOMENTUM * y[t].mean(0)
    var = (1 - BN_MOMENTUM) * var + BN_MOMENTUM * y[t].var(0, ddof=1)
  np.testing.assert_allclose(updated["batch_stats"]["output_bn_mean"], mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(updated["batch_stats"]["output_bn_var"], var, rtol=1e-5, atol=1e-6)

  _, _, eval_extras = model.apply({"params": params, **updated}, tokens, hidden, ARCH, train=False)
  np.testing.assert_allclose(eval_extras["raw_outputs"], (y - mean) / np.sqrt(var + BN_EPSILON) * scale + bias,
                             rtol=1e-4, atol=1e-5)
