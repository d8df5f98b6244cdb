"""Fisher diagonal: analytic oracles, estimator relations, chunking invariance, no recompilation, errors."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting import importance
from nas_forgetting.errors import ConfigError, DataError

RTOL = 2e-5
ATOL = 1e-7


class Linear(nn.Module):
  """Softmax regression: logits = x W + b."""
  classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.classes)(x)


def _linear_problem(n=37, d=5, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.integers(0, classes, size=n).astype(np.int32)
  model = Linear(classes)
  params = model.init(jax.random.key(seed), x[:1])["params"]
  params = jax.tree.map(lambda p: p + 0.5 * jax.random.normal(jax.random.key(seed + 1), p.shape), params)
  return model, params, x, y


def _apply(model):
  return lambda p, x: model.apply({"params": p}, x)


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _numpy_scores(params, x):
  """g[i, c] = d log p_c(x_i) / d (W, b) = (x_i (e_c - p_i)^T, e_c - p_i), explicitly."""
  w, b = np.asarray(params["Dense_0"]["kernel"], np.float64), np.asarray(params["Dense_0"]["bias"], np.float64)
  p = _softmax(x.astype(np.float64) @ w + b)                       # (n, C)
  classes = w.shape[1]
  delta = np.eye(classes)[None, :, :] - p[:, None, :]              # (n, c, k) = e_c - p
  g_w = x.astype(np.float64)[:, None, :, None] * delta[:, :, None, :]  # (n, c, d, k)
  return p, g_w, delta


# ----------------------------------------------------------------------------------------------------------------
# Oracles
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["vmap", "per_layer"])
def test_logistic_regression_exact_fisher_is_mean_p_one_minus_p_x_squared(path):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(50, 6)).astype(np.float32)
  w = rng.normal(size=(6,)).astype(np.float32)

  def apply_fn(w, x):  # 2-class softmax with logits (0, x.w) == sigmoid(x.w)
    z = x @ w
    return jnp.stack([jnp.zeros_like(z), z], axis=-1)

  fisher = importance.fisher_diagonal(apply_fn, w, x, path=path, chunk_size=16)
  p = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ w)))
  expected = np.mean((p * (1 - p))[:, None] * x.astype(np.float64) ** 2, axis=0)
  np.testing.assert_allclose(np.asarray(fisher), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("path", ["vmap", "per_layer"])
def test_softmax_exact_fisher_matches_explicit_numpy_sum_over_classes(path):
  model, params, x, y = _linear_problem()
  fisher = importance.fisher_diagonal(_apply(model), params, x, path=path, chunk_size=8)
  p, g_w, delta = _numpy_scores(params, x)
  expected_w = np.einsum("nc,ncdk->dk", p, g_w ** 2) / len(x)
  expected_b = np.einsum("nc,nck->k", p, delta ** 2) / len(x)
  np.testing.assert_allclose(fisher["Dense_0"]["kernel"], expected_w, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(fisher["Dense_0"]["bias"], expected_b, rtol=RTOL, atol=ATOL)
  # and the closed form sum_c p_c (delta_ck - p_k)^2 = p_k (1 - p_k)
  np.testing.assert_allclose(expected_w, np.einsum("nd,nk->dk", x.astype(np.float64) ** 2, p * (1 - p)) / len(x),
                             rtol=1e-10)


@pytest.mark.parametrize("path", ["vmap", "per_layer"])
def test_empirical_fisher_uses_true_labels(path):
  model, params, x, y = _linear_problem()
  fisher = importance.fisher_diagonal(_apply(model), params, x, y, estimator="empirical", path=path, chunk_size=8)
  _, g_w, delta = _numpy_scores(params, x)
  idx = np.arange(len(x))
  np.testing.assert_allclose(fisher["Dense_0"]["kernel"], np.mean(g_w[idx, y] ** 2, axis=0), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(fisher["Dense_0"]["bias"], np.mean(delta[idx, y] ** 2, axis=0), rtol=RTOL, atol=ATOL)


def test_batch_estimator_is_square_of_mean_gradient():
  model, params, x, y = _linear_problem()
  fisher = importance.fisher_diagonal(_apply(model), params, x, y, estimator="batch", chunk_size=8)
  _, g_w, delta = _numpy_scores(params, x)
  idx = np.arange(len(x))
  np.testing.assert_allclose(fisher["Dense_0"]["kernel"], np.mean(g_w[idx, y], axis=0) ** 2, rtol=1e-4, atol=1e-8)
  # the same through jax.grad of the batch-mean log-likelihood
  mean_ll = lambda p: jnp.mean(jax.nn.log_softmax(_apply(model)(p, x))[jnp.arange(len(x)), y])
  chex.assert_trees_all_close(fisher, jax.tree.map(jnp.square, jax.grad(mean_ll)(params)), rtol=1e-4, atol=1e-8)
  # and it is not the per-example (empirical) estimator
  emp = importance.fisher_diagonal(_apply(model), params, x, y, estimator="empirical")
  assert float(jnp.sum(emp["Dense_0"]["kernel"])) > 2 * float(jnp.sum(fisher["Dense_0"]["kernel"]))


def test_sampled_estimator_converges_to_exact():
  model, params, x, _ = _linear_problem(n=20)
  exact = importance.fisher_diagonal(_apply(model), params, x)
  few = importance.fisher_diagonal(_apply(model), params, x, estimator="sampled", rng=jax.random.key(7))
  many = importance.fisher_diagonal(_apply(model), params, x, estimator="sampled", rng=jax.random.key(7),
                                    num_samples=1000)
  err = lambda a: float(jnp.max(jnp.abs(a["Dense_0"]["kernel"] - exact["Dense_0"]["kernel"])))
  scale = float(jnp.max(exact["Dense_0"]["kernel"]))
  # Monte-Carlo error with 1000 draws per example: a few percent of the largest entry (seeded).
  assert err(many) < 0.06 * scale
  assert err(many) < err(few)
  # different keys give different draws; the same key the same draws
  other = importance.fisher_diagonal(_apply(model), params, x, estimator="sampled", rng=jax.random.key(8))
  again = importance.fisher_diagonal(_apply(model), params, x, estimator="sampled", rng=jax.random.key(7))
  assert not np.allclose(other["Dense_0"]["kernel"], few["Dense_0"]["kernel"])
  chex.assert_trees_all_equal(again, few)


# ----------------------------------------------------------------------------------------------------------------
# Invariances
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["exact", "empirical", "sampled", "batch"])
def test_one_batch_equals_four_chunks_and_ragged_chunks(estimator):
  model, params, x, y = _linear_problem(n=40)
  kw = dict(estimator=estimator, rng=jax.random.key(1))
  one = importance.fisher_diagonal(_apply(model), params, x, y, chunk_size=40, **kw)
  four = importance.fisher_diagonal(_apply(model), params, x, y, chunk_size=10, **kw)
  ragged = importance.fisher_diagonal(_apply(model), params, x, y, chunk_size=7, **kw)  # 6 chunks, 2 padded rows
  chex.assert_trees_all_close(one, four, rtol=1e-5, atol=1e-8)
  chex.assert_trees_all_close(one, ragged, rtol=1e-5, atol=1e-8)


def test_importance_tree_equals_params_tree():
  model, params, x, y = _linear_problem()
  for estimator in importance.ESTIMATORS:
    fisher = importance.fisher_diagonal(_apply(model), params, x, y, estimator=estimator, rng=jax.random.key(0))
    chex.assert_trees_all_equal_structs(fisher, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(fisher, params)
    chex.assert_tree_all_finite(fisher)


def test_mask_skips_leaves_and_multiplies_array_masks():
  model, params, x, y = _linear_problem()
  full = importance.fisher_diagonal(_apply(model), params, x)
  kernel_mask = np.zeros(params["Dense_0"]["kernel"].shape, bool)
  kernel_mask[0] = True
  masked = importance.fisher_diagonal(_apply(model), params, x, mask={"Dense_0": {"bias": False,
                                                                                  "kernel": kernel_mask}})
  np.testing.assert_array_equal(masked["Dense_0"]["bias"], 0.0)
  np.testing.assert_allclose(masked["Dense_0"]["kernel"], np.where(kernel_mask, full["Dense_0"]["kernel"], 0.0))


def test_no_recompilation_for_new_values_or_sizes_with_same_chunk_count():
  model, params, x, y = _linear_problem(n=40)
  traces = []

  def apply_fn(p, xx):
    traces.append(1)
    return model.apply({"params": p}, xx)

  for est in ("exact", "batch"):
    importance.fisher_diagonal(apply_fn, params, x, y, estimator=est, chunk_size=16)
    first = len(traces)
    assert first > 0
    params2 = jax.tree.map(lambda p: p * 2.0, params)
    importance.fisher_diagonal(apply_fn, params2, x[::-1] * 3.0, y[::-1], estimator=est, chunk_size=16)
    importance.fisher_diagonal(apply_fn, params2, x[:35], y[:35], estimator=est, chunk_size=16)  # 3 chunks again
    assert len(traces) == first, f"{est}: apply_fn retraced for new values / a ragged last chunk"
    traces.clear()


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


def test_bad_input_gives_named_errors():
  model, params, x, y = _linear_problem()
  f = _apply(model)
  with pytest.raises(ConfigError, match="unknown estimator 'fisher'"):
    importance.fisher_diagonal(f, params, x, estimator="fisher")
  with pytest.raises(ConfigError, match="unknown path"):
    importance.fisher_diagonal(f, params, x, path="fast")
  with pytest.raises(ConfigError, match="needs the true labels"):
    importance.fisher_diagonal(f, params, x, estimator="empirical")
  with pytest.raises(ConfigError, match="needs rng"):
    importance.fisher_diagonal(f, params, x, estimator="sampled")
  with pytest.raises(DataError, match=r"labels must lie in \[0, 4\)"):
    importance.fisher_diagonal(f, params, x, y + 4, estimator="empirical")
  with pytest.raises(DataError, match=r"shape \(37,\)"):
    importance.fisher_diagonal(f, params, x, y[:3], estimator="empirical")
  with pytest.raises(ConfigError, match="chunk_size"):
    importance.fisher_diagonal(f, params, x, chunk_size=0)
  with pytest.raises(ConfigError, match="mask tree"):
    importance.fisher_diagonal(f, params, x, mask={"Dense_0": {"kernel": True}})
  with pytest.raises(ConfigError, match=r"logits of shape \(batch, num_classes\)"):
    importance.fisher_diagonal(lambda p, xx: f(p, xx)[:, 0], params, x)
