"""On-device batching: epoch indices are a permutation (drop remainder); too-small splits are rejected."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.data import batching, datasets
from nas_forgetting.errors import DataError


def test_epoch_indices_are_a_permutation_prefix():
  idx = batching.epoch_batch_indices(jax.random.key(0), 103, 10)
  assert idx.shape == (10, 10) and idx.dtype == jnp.int32
  flat = np.asarray(idx).ravel()
  assert len(set(flat.tolist())) == 100 and flat.min() >= 0 and flat.max() < 103
  exact = np.asarray(batching.epoch_batch_indices(jax.random.key(1), 40, 8)).ravel()
  assert sorted(exact.tolist()) == list(range(40))


def test_fresh_permutation_per_key_and_reproducible():
  a = batching.epoch_batch_indices(jax.random.key(0), 64, 8)
  b = batching.epoch_batch_indices(jax.random.key(0), 64, 8)
  c = batching.epoch_batch_indices(jax.random.key(1), 64, 8)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_works_under_jit_with_static_sizes():
  fn = jax.jit(batching.epoch_batch_indices, static_argnums=(1, 2))
  np.testing.assert_array_equal(fn(jax.random.key(3), 50, 7), batching.epoch_batch_indices(jax.random.key(3), 50, 7))


def test_fewer_examples_than_a_batch():
  with pytest.raises(DataError, match="mnist/test has 30 examples, fewer than one batch of 64"):
    batching.epoch_batch_indices(jax.random.key(0), 30, 64, what="mnist/test")
  with pytest.raises(DataError, match="batch size must be >= 1"):
    batching.check_batch_size(10, 0)


def test_to_device_keeps_values_and_dtypes():
  ds = datasets.make_array_dataset(np.arange(24, dtype=np.uint8).reshape(2, 3, 4, 1), np.array([1, 0]), 2, "t")
  images, labels = batching.to_device(ds)
  assert isinstance(images, jax.Array) and images.dtype == jnp.float32 and labels.dtype == jnp.int32
  np.testing.assert_allclose(np.asarray(images), ds.images)
  np.testing.assert_array_equal(np.asarray(labels), [1, 0])
