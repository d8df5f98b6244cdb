"""On-device batching: whole splits live on the device; an epoch is a matrix of example indices.

The training loop puts a split on the device once (`to_device`), draws `epoch_batch_indices(rng, n, batch_size)`
per epoch (a fresh permutation, the last incomplete batch dropped) and gathers `images[idx[b]]` inside its jitted
step, so there is no per-step host-to-device copy. Both functions take plain Python sizes, so
`epoch_batch_indices` can be called inside jit with `num_examples` and `batch_size` static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nas_forgetting.data.datasets import ArrayDataset
from nas_forgetting.errors import DataError


def check_batch_size(num_examples: int, batch_size: int, *, what: str = "data split") -> int:
  """The number of full batches; DataError when the split holds fewer examples than one batch."""
  if batch_size < 1:
    raise DataError(f"{what}: batch size must be >= 1, got {batch_size}")
  if num_examples < batch_size:
    raise DataError(f"{what} has {num_examples} examples, fewer than one batch of {batch_size}; expected at least "
                    f"{batch_size} (lower the batch size or use more data)")
  return num_examples // batch_size


def epoch_batch_indices(rng: jax.Array, num_examples: int, batch_size: int, *, what: str = "data split",
                        ) -> jax.Array:
  """int32 (num_examples // batch_size, batch_size): one shuffled epoch, every example at most once."""
  num_batches = check_batch_size(int(num_examples), int(batch_size), what=what)
  perm = jax.random.permutation(rng, num_examples)
  return perm[:num_batches * batch_size].reshape(num_batches, batch_size).astype(jnp.int32)


def to_device(dataset: ArrayDataset, device: jax.Device | jax.sharding.Sharding | None = None,
              ) -> tuple[jax.Array, jax.Array]:
  """(images float32, labels int32) of a split, placed on `device` (default: the default device) once."""
  return jax.device_put(dataset.images, device), jax.device_put(dataset.labels, device)
