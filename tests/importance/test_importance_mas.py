"""MAS importance (global and local/Hebbian) against hand-computed oracles; accumulation across tasks."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting import importance
from nas_forgetting.errors import ConfigError


def _linear(n=21, d=5, k=3, seed=0):
  model = nn.Dense(k, use_bias=False)
  x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
  params = model.init(jax.random.key(seed), x[:1])["params"]
  return (lambda p, xx: model.apply({"params": p}, xx)), params, x


@pytest.mark.parametrize("path", ["vmap", "per_layer"])
def test_mas_linear_layer_per_example_l2_and_l1(path):
  apply_fn, params, x = _linear()
  kernel = np.asarray(params["kernel"], np.float64)          # f = x K, K (in, out)
  f = x.astype(np.float64) @ kernel
  # d ||f||^2 / dK = 2 x f^T per example
  expected_l2 = np.mean(np.abs(2.0 * x[:, :, None] * f[:, None, :]), axis=0)
  omega = importance.mas_importance(apply_fn, params, x, path=path, chunk_size=4)
  np.testing.assert_allclose(omega["kernel"], expected_l2, rtol=2e-5)
  # d ||f||_1 / dK = x sign(f)^T per example
  expected_l1 = np.mean(np.abs(x[:, :, None] * np.sign(f)[:, None, :]), axis=0)
  omega1 = importance.mas_importance(apply_fn, params, x, norm="l1", path=path, chunk_size=4)
  np.testing.assert_allclose(omega1["kernel"], expected_l1, rtol=2e-5)


def test_mas_batch_estimator_is_abs_of_summed_gradient_over_n():
  apply_fn, params, x = _linear()
  f = x.astype(np.float64) @ np.asarray(params["kernel"], np.float64)
  expected = np.abs(np.sum(2.0 * x[:, :, None] * f[:, None, :], axis=0)) / len(x)
  omega = importance.mas_importance(apply_fn, params, x, estimator="batch", chunk_size=6)
  np.testing.assert_allclose(omega["kernel"], expected, rtol=2e-5)
  per_example = importance.mas_importance(apply_fn, params, x)
  assert np.all(np.asarray(omega["kernel"]) <= np.asarray(per_example["kernel"]) + 1e-6)  # |sum| <= sum |.|
  single = importance.mas_importance(apply_fn, params, x[:1], estimator="batch")
  chex.assert_trees_all_close(single, importance.mas_importance(apply_fn, params, x[:1]), rtol=1e-6)


def test_mas_batch_estimator_per_reference_batch():
  # n = 21 examples in batches of 8, 8, 5 (in order): Omega = sum_b |sum_{i in b} 2 x_i f_i^T| / n; the smaller last
  # batch weighs by its size (the reference's running mean over-weights it).
  apply_fn, params, x = _linear()
  f = x.astype(np.float64) @ np.asarray(params["kernel"], np.float64)
  g = 2.0 * x[:, :, None] * f[:, None, :]
  expected = sum(np.abs(g[s:s + 8].sum(axis=0)) for s in (0, 8, 16)) / len(x)
  omega = importance.mas_importance(apply_fn, params, x, estimator="batch", batch_size=8, chunk_size=6)
  np.testing.assert_allclose(omega["kernel"], expected, rtol=2e-5)
  # batches of one example: the per-example estimate; one batch of everything: the plain batch estimate
  chex.assert_trees_all_close(importance.mas_importance(apply_fn, params, x, estimator="batch", batch_size=1),
                              importance.mas_importance(apply_fn, params, x), rtol=1e-5)
  chex.assert_trees_all_close(importance.mas_importance(apply_fn, params, x, estimator="batch", batch_size=100),
                              importance.mas_importance(apply_fn, params, x, estimator="batch"), rtol=1e-6)
  with pytest.raises(ConfigError, match="applies to estimator='batch' only"):
    importance.mas_importance(apply_fn, params, x, batch_size=8)
  with pytest.raises(ConfigError, match="batch_size=-1"):
    importance.mas_importance(apply_fn, params, x, estimator="batch", batch_size=-1)


def test_mas_errors():
  apply_fn, params, x = _linear()
  with pytest.raises(ConfigError, match="unknown norm 'l3'"):
    importance.mas_importance(apply_fn, params, x, norm="l3")
  with pytest.raises(ConfigError, match="unknown estimator"):
    importance.mas_importance(apply_fn, params, x, estimator="vector")


# ----------------------------------------------------------------------------------------------------------------
# Local (Hebbian)
# ----------------------------------------------------------------------------------------------------------------


class TwoLayer(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(2, name="out")(nn.relu(nn.Dense(3, name="hidden")(x)))


def test_mas_local_hand_example():
  x = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
  params = {"hidden": {"kernel": np.array([[1.0, -1.0, 0.5], [0.5, 2.0, -1.0]], np.float32),
                       "bias": np.array([0.0, 1.0, -0.5], np.float32)},
            "out": {"kernel": np.array([[1.0, -2.0], [0.5, 1.0], [-1.0, 3.0]], np.float32),
                    "bias": np.array([0.1, -0.2], np.float32)}}
  model = TwoLayer()
  apply_fn = lambda p, xx: model.apply({"params": p}, xx)
  omega = importance.mas_local_importance(apply_fn, params, x, chunk_size=1)
  # By hand: a1 = relu(x W1 + b1), y = a1 W2 + b2 (the output layer's activation is the identity).
  w1, b1, w2, b2 = (params["hidden"]["kernel"], params["hidden"]["bias"], params["out"]["kernel"],
                    params["out"]["bias"])
  # pre-activations: row 0 (1-1, -1-4+1, 0.5+2-0.5) = (0, -4, 2); row 1 (0.5+1.5, -0.5+6+1, 0.25-3-0.5) = (2, 6.5, -3.25)
  a1 = np.maximum(x @ w1 + b1, 0.0)
  np.testing.assert_allclose(a1, [[0.0, 0.0, 2.0], [2.0, 6.5, 0.0]])
  y = a1 @ w2 + b2
  hebb = lambda a, b: np.mean([[[abs(a[n, i] * b[n, j]) for j in range(b.shape[1])] for i in range(a.shape[1])]
                               for n in range(len(a))], axis=0)
  np.testing.assert_allclose(omega["hidden"]["kernel"], hebb(x, a1), rtol=1e-6)
  np.testing.assert_allclose(omega["hidden"]["bias"], np.mean(np.abs(a1), axis=0), rtol=1e-6)
  np.testing.assert_allclose(omega["out"]["kernel"], hebb(a1, y), rtol=1e-6)
  np.testing.assert_allclose(omega["out"]["bias"], np.mean(np.abs(y), axis=0), rtol=1e-6)
  # an explicit activation per layer overrides the defaults
  omega_pre = importance.mas_local_importance(apply_fn, params, x, activations={"hidden": _identity})
  np.testing.assert_allclose(omega_pre["hidden"]["bias"], np.mean(np.abs(x @ w1 + b1), axis=0), rtol=1e-6)


def _identity(a):
  return a


class OneByOneConv(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Conv(2, (1, 1))(x)


def test_mas_local_conv_is_mean_over_examples_and_positions():
  x = np.random.default_rng(0).normal(size=(3, 4, 5, 2)).astype(np.float32)
  model = OneByOneConv()
  params = model.init(jax.random.key(0), x[:1])["params"]
  params = {"Conv_0": {"kernel": params["Conv_0"]["kernel"], "bias": jnp.array([0.3, -0.2])}}
  apply_fn = lambda p, xx: model.apply({"params": p}, xx)
  omega = importance.mas_local_importance(apply_fn, params, x, output_activation=jax.nn.relu)["Conv_0"]
  kernel, bias = np.asarray(params["Conv_0"]["kernel"][0, 0]), np.asarray(params["Conv_0"]["bias"])
  a = np.maximum(np.einsum("nhwi,io->nhwo", x, kernel) + bias, 0)
  expected = np.einsum("nhwi,nhwo->io", np.abs(x), np.abs(a)) / (3 * 4 * 5)
  np.testing.assert_allclose(omega["kernel"][0, 0], expected, rtol=1e-5)
  np.testing.assert_allclose(omega["bias"], np.abs(a).mean(axis=(0, 1, 2)), rtol=1e-5)


class WithNorm(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(2)(nn.LayerNorm()(x))


def test_mas_local_uncovered_leaves_raise_unless_not_strict():
  model = WithNorm()
  x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
  params = model.init(jax.random.key(0), x)["params"]
  apply_fn = lambda p, xx: model.apply({"params": p}, xx)
  with pytest.raises(ConfigError, match="LayerNorm_0"):
    importance.mas_local_importance(apply_fn, params, x)
  omega = importance.mas_local_importance(apply_fn, params, x, strict=False)
  np.testing.assert_array_equal(omega["LayerNorm_0"]["scale"], 0.0)
  assert float(jnp.max(omega["Dense_0"]["kernel"])) > 0
  with pytest.raises(ConfigError, match="unknown layers"):
    importance.mas_local_importance(apply_fn, params, x, strict=False, activations={"Dense_9": _identity})


# ----------------------------------------------------------------------------------------------------------------
# Accumulation
# ----------------------------------------------------------------------------------------------------------------


def test_accumulate_modes():
  old = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(4.0)}
  new = {"w": jnp.array([10.0, 20.0]), "b": jnp.array(40.0)}
  chex.assert_trees_all_close(importance.accumulate(old, new, mode="replace"), new)
  chex.assert_trees_all_close(importance.accumulate(old, new, mode="sum"),
                              {"w": jnp.array([11.0, 22.0]), "b": jnp.array(44.0)})
  chex.assert_trees_all_close(importance.accumulate(old, new, mode="ema", gamma=0.5),
                              {"w": jnp.array([10.5, 21.0]), "b": jnp.array(42.0)})
  chex.assert_trees_all_close(importance.accumulate(old, new, mode="ema", gamma=1.0),
                              importance.accumulate(old, new, mode="sum"))
  for mode in importance.MODES:
    chex.assert_trees_all_close(importance.accumulate(None, new, mode=mode), new)  # first task
  jitted = jax.jit(lambda o, nw, g: importance.accumulate(o, nw, mode="ema", gamma=g))
  chex.assert_trees_all_close(jitted(old, new, jnp.float32(0.0)), new)
  with pytest.raises(ConfigError, match="recompute_all"):
    importance.accumulate(old, new, mode="recompute_all")
  with pytest.raises(ConfigError, match="does not match"):
    importance.accumulate({"w": old["w"]}, new, mode="sum")
  with pytest.raises(ConfigError, match=r"\['w'\] has shape \(2,\) before and \(3,\) now"):
    importance.accumulate(old, {"w": jnp.zeros(3), "b": jnp.array(1.0)}, mode="sum")
  with pytest.raises(ConfigError, match="gamma"):
    importance.accumulate(old, new, mode="ema", gamma=1.5)
