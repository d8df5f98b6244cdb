"""The per-architecture function of a deep-prior evaluation: one seed's random encoder, its BatchNorm statistics, the
embeddings of train/val/test, and its classifier's initial training state.

The images (train, val and test concatenated) are embedded in chunks (`chunk` examples at a time, sized by
`memory.embed_chunk_size`) into one buffer zero-padded to the bucket width `padded`. BatchNorm of the frozen
encoder (`bn_mode` of the `EvalConfig`):

* `calibrate` (default): statistics of the first `bn_calibration_size` training examples (the training split is a
  seeded random split, so this is a random sample), then train, val and test are all embedded in inference mode
  with the same statistics. The calibration pass normalises its images by exactly the statistics it stores
  (momentum 0), so its output is their inference embedding: only the other images are embedded again.
* `reference`: as the reference: the training split is embedded in training mode, batch by batch
  (`batch_size`), each batch normalised by its own statistics while running averages (momentum 0.1 in PyTorch's
  convention, from mean 0 / variance 1) accumulate; val and test are embedded in inference mode with those running
  averages. Each training embedding then depends on its batch mates.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from nas_forgetting.dpnas import classifier_training as ct
from nas_forgetting.models import deep_prior as dp
from nas_forgetting.numerics import all_finite


def encoder_module(net: str, config, conv: str) -> dp.DeepPriorEncoder:
  """The frozen encoder of `net` under the `EvalConfig` `config` (`conv`: its convolution, `deep_prior.CONVS`)."""
  return dp.DeepPriorEncoder(net, config.bn_epsilon, config.weight_init, conv=conv)


def make_prepare(net: str, config, tx: optax.GradientTransformation, *, sizes: tuple[int, int, int], width: int,
                 padded: int, chunk: int, conv: str):
  """`per_seed(images, encoder variables, classifier variables) -> (train, val, test embeddings, TrainState,
  embeddings finite)` for `net` under the `EvalConfig` `config`; `images` are the train, val and test images
  (`sizes` of each) concatenated; the variables are the seed's initial ones (`prior_init.variables`); `conv` is the
  encoder's convolution (`deep_prior.CONVS`)."""
  encoder = encoder_module(net, config, conv)
  calibrator = encoder.clone(bn_momentum=0.0)
  n_train, n_val, n_test = sizes
  total = n_train + n_val + n_test
  batch = config.batch_size
  pad = lambda e: jnp.pad(e, ((0, 0), (0, padded - width)))

  def embed_range(variables, images, out, start_index, count, size):
    """Embeds images[start_index : start_index + count] in inference mode, at most `size` at a time (in equal
    chunks, the last one overlapping its predecessor by less than a chunk), into `out`."""
    if count <= 0:
      return out
    steps = math.ceil(count / size)
    size = math.ceil(count / steps)

    def body(i, out):
      start = start_index + jnp.minimum(i * size, count - size)
      x = jax.lax.dynamic_slice_in_dim(images, start, size)
      return jax.lax.dynamic_update_slice_in_dim(out, pad(encoder.apply(variables, x, train=False)), start, 0)

    return jax.lax.fori_loop(0, steps, body, out)

  def per_seed(images, variables, cls):
    out = jnp.zeros((total, padded), jnp.float32)
    if config.bn_epsilon > 0 and config.bn_mode == "calibrate":
      calibrated = min(config.bn_calibration_size, n_train)
      e, stats = calibrator.apply(variables, images[:calibrated], train=True, mutable=["batch_stats"])
      variables = {**variables, **stats}
      # normalised by the statistics it stores, the calibration pass is already those images' inference embedding
      out = out.at[:calibrated].set(pad(e))
      rest = total - calibrated
      out = embed_range(variables, images, out, calibrated, rest, min(chunk, rest))
    elif config.bn_epsilon > 0:  # reference: train split in training mode batch by batch, running averages
      full, rest = divmod(n_train, batch)

      def train_batch(carry, start):
        variables, out = carry
        x = jax.lax.dynamic_slice_in_dim(images, start, batch)
        e, stats = encoder.apply(variables, x, train=True, mutable=["batch_stats"])
        out = jax.lax.dynamic_update_slice_in_dim(out, pad(e), start, 0)
        return ({**variables, **stats}, out), None

      (variables, out), _ = jax.lax.scan(train_batch, (variables, out), jnp.arange(full) * batch)
      if rest:
        x = images[full * batch:n_train]
        e, stats = encoder.apply(variables, x, train=True, mutable=["batch_stats"])
        out = out.at[full * batch:n_train].set(pad(e))
        variables = {**variables, **stats}
      out = embed_range(variables, images, out, n_train, n_val + n_test, min(chunk, n_val + n_test))
    else:
      out = embed_range(variables, images, out, 0, total, min(chunk, total))
    params = ct.pad_first_kernel(cls["params"], padded - width)
    state = ct.initial_train_state(params, cls.get("batch_stats", {}), tx)
    return out[:n_train], out[n_train:n_train + n_val], out[n_train + n_val:], state, all_finite(out)

  return per_seed
