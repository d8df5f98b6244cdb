"""The per-layer path equals the vmap path (MLP, strided/padded ConvNet, fallbacks), on synthetic and real data."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting import importance
from nas_forgetting.data import idx
from nas_forgetting.models.mlp import MLP

TOL = dict(rtol=1e-4, atol=1e-9)


class SmallMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = nn.tanh(nn.Dense(7)(x))
    x = nn.relu(nn.Dense(6)(x))
    return nn.Dense(4)(x)


class SmallConvNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2), padding="SAME")(x))
    x = nn.relu(nn.Conv(6, (3, 2), strides=(1, 2), padding=((1, 0), (0, 1)), kernel_dilation=(1, 1))(x))
    x = nn.relu(nn.Conv(6, (2, 2), padding="VALID", feature_group_count=2, use_bias=False)(x))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(3)(x)


class SequenceDense(nn.Module):
  """A Dense layer on (examples, positions, features): the per-example gradient sums over positions."""

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(5)(x))           # (n, T, 5)
    return nn.Dense(3)(h.mean(axis=1))


class SharedDense(nn.Module):
  """One Dense layer applied twice (tied weights) and a BatchNorm in eval mode: both go to the vmap fallback."""

  @nn.compact
  def __call__(self, x):
    shared = nn.Dense(x.shape[-1])
    h = nn.relu(shared(nn.relu(shared(x))))
    h = nn.BatchNorm(use_running_average=True)(h)
    return nn.Dense(3)(h)


def _setup(model, shape, n=13, seed=0):
  x = jax.random.normal(jax.random.key(seed), (n,) + shape)
  variables = model.init(jax.random.key(seed + 1), x[:2])
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k != "params"}
  y = np.arange(n, dtype=np.int32) % 3

  def apply_fn(p, xx):
    return model.apply({"params": p, **rest}, xx)

  return apply_fn, params, x, y


def _both_paths(fn, **kw):
  a = fn(path="vmap", **kw)
  b = fn(path="per_layer", **kw)
  chex.assert_trees_all_equal_structs(a, b)
  chex.assert_tree_all_finite(a)
  assert max(float(jnp.max(l)) for l in jax.tree.leaves(a)) > 0
  chex.assert_trees_all_close(b, a, **TOL)


def _assert_all_covered(apply_fn, params, x):
  calls = importance.discover_layers(apply_fn, params, x)
  covered = {i for c in calls for _, i in c.leaves}
  assert covered == set(range(len(jax.tree.leaves(params)))), "the per-layer path would not cover every leaf"
  return calls


@pytest.mark.parametrize("model,shape", [(SmallMLP(), (3, 3)), (SmallConvNet(), (9, 8, 2))], ids=["mlp", "convnet"])
def test_per_layer_equals_vmap_for_every_estimator(model, shape):
  apply_fn, params, x, y = _setup(model, shape)
  calls = _assert_all_covered(apply_fn, params, x[:5])
  assert any(c.formula for c in calls)
  # exact: a VJP per class on both paths (K = num_classes); sampled (MLP only, to keep compile time down): labels
  # drawn from the model; MAS: one cotangent (K = 1) and |.| instead of square.
  for estimator in ("exact", "sampled") if isinstance(model, SmallMLP) else ("exact",):
    _both_paths(lambda **kw: importance.fisher_diagonal(apply_fn, params, x, y, estimator=estimator,
                                                        rng=jax.random.key(3), chunk_size=5, **kw))
  _both_paths(lambda **kw: importance.mas_importance(apply_fn, params, x, norm="l1", chunk_size=5, **kw))


def test_per_layer_materialised_dense_on_sequences_and_fallbacks():
  apply_fn, params, x, y = _setup(SequenceDense(), (4, 3))
  calls = _assert_all_covered(apply_fn, params, x[:4])
  assert [c.formula for c in calls] == [False, True]
  _both_paths(lambda **kw: importance.fisher_diagonal(apply_fn, params, x, y, chunk_size=4, **kw))

  apply_fn, params, x, y = _setup(SharedDense(), (5,))
  calls = importance.discover_layers(apply_fn, params, x[:4])
  assert [c.name for c in calls] == ["Dense_1"]  # the tied layer and the BatchNorm are left to the fallback
  _both_paths(lambda **kw: importance.fisher_diagonal(apply_fn, params, x, y, estimator="empirical", chunk_size=4,
                                                      **kw))


def test_per_layer_path_on_a_plain_function_falls_back_to_vmap():
  w = jax.random.normal(jax.random.key(0), (4, 3))
  x = jax.random.normal(jax.random.key(1), (9, 4))
  apply_fn = lambda w, x: jnp.tanh(x @ w)
  assert importance.discover_layers(apply_fn, w, x) == ()
  _both_paths(lambda **kw: importance.fisher_diagonal(apply_fn, w, x, chunk_size=4, **kw))


def test_per_layer_equals_vmap_on_real_mnist_with_batch_norm_mlp(shared_data):
  images, labels = idx.load_idx_pair(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz",
                                     shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
  x = jnp.asarray(images[:64].reshape(64, -1), jnp.float32) / 255.0
  y = np.asarray(labels[:64], np.int32)
  model = MLP(hidden=(32, 16), num_outputs=10, num_heads=2, batch_norm=True)
  variables = model.init(jax.random.key(0), x[:2])
  apply_fn = lambda p, xx: model.apply({"params": p, "batch_stats": variables["batch_stats"]}, xx, 1)
  params = variables["params"]
  calls = importance.discover_layers(apply_fn, params, x[:16])
  assert [c.name for c in calls] == ["dense_0", "dense_1", "heads/head_0", "heads/head_1"]
  assert all(c.formula for c in calls)  # BatchNorm scale/bias go to the vmap fallback
  _both_paths(lambda **kw: importance.fisher_diagonal(apply_fn, params, x, y, estimator="empirical", chunk_size=16,
                                                      **kw))
  fisher = importance.fisher_diagonal(apply_fn, params, x, y, estimator="empirical", chunk_size=16)
  assert float(jnp.max(fisher["heads"]["head_0"]["kernel"])) == 0.0  # the unused head gets no importance
  assert float(jnp.max(fisher["heads"]["head_1"]["kernel"])) > 0.0
  assert float(jnp.max(fisher["bn_0"]["scale"])) > 0.0
