"""Fisher estimates of the ENAS supernets' monitored weights, for the WPL update after each architecture's burst.

Both return squared gradients over the monitored view (`nas_forgetting.wpl.masks`) of the cross-entropy of the
current architecture on one batch (the validation batch with `shared_valid_fisher`, else the burst's last training
batch), in evaluation mode (no dropout), ready for `wpl.state.update_fisher` / `end_burst`:

* ``empirical`` (default of `wpl.estimator`): the mean over examples of squared per-example gradients. An example
  is one sequence (one batch column, its mean token cross-entropy) for the language model, one image for the CNN.
  RNN columns are independent, so their gradients come from `vmap` over columns. The CNN's BatchNorm uses batch
  statistics, so its examples are coupled: each image's gradient is that of its own loss term through the shared
  batch statistics, one backward pass per image (`lax.scan`, memory of a single gradient).
* ``batch``: the square of the batch-mean gradient, (mean_i g_i)^2, what the reference computes; one backward pass.
  By Jensen's inequality it is <= ``empirical`` entry by entry (equal for a batch of one).

The gradients through `masks.*_monitored` are zero on the weights the architecture does not use, so inactive
entries of the estimate are zero (and `update_fisher` leaves the state's Fisher there unchanged anyway).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nas_forgetting.enas import trainer as tr
from nas_forgetting.errors import ConfigError
from nas_forgetting.models import enas_cnn
from nas_forgetting.models.enas_cnn import EnasCnn
from nas_forgetting.models.enas_rnn import EnasRnn
from nas_forgetting.wpl import masks

PyTree = Any
ENAS_ESTIMATORS = ("empirical", "batch")


def _check_estimator(estimator: str) -> None:
  if estimator not in ENAS_ESTIMATORS:
    raise ConfigError(f"wpl.estimator={estimator!r} is not available for the ENAS supernets; expected one of "
                      f"{', '.join(ENAS_ESTIMATORS)}")


def rnn_fisher(params: PyTree, inputs: jax.Array, targets: jax.Array, arch: jax.Array, *, model: EnasRnn,
               estimator: str = "empirical") -> dict[str, jax.Array]:
  """Fisher estimate over `masks.rnn_monitored(params)` from one window (inputs, targets: (T, B) token ids),
  each column starting from a zero hidden state."""
  _check_estimator(estimator)

  def column_ce(p, x, y):  # x, y: (T, b)
    hidden = jnp.zeros((x.shape[1], model.hidden_size), jnp.float32)
    return tr.rnn_batch_ce(p, x, y, hidden, arch, model=model)[0]

  if estimator == "batch":
    grads = jax.grad(column_ce)(params, inputs, targets)
    return jax.tree.map(jnp.square, masks.rnn_monitored(grads))
  per_column = jax.vmap(lambda x, y: masks.rnn_monitored(jax.grad(column_ce)(params, x[:, None], y[:, None])),
                        in_axes=(1, 1))(inputs, targets)
  return jax.tree.map(lambda g: jnp.mean(jnp.square(g), axis=0), per_column)


def cnn_fisher(params: PyTree, images: jax.Array, labels: jax.Array, arch: jax.Array, *, model: EnasCnn,
               estimator: str = "empirical") -> dict[str, dict[str, jax.Array]]:
  """Fisher estimate over `masks.cnn_monitored(params)` from one batch (images in [0, 1], int labels)."""
  _check_estimator(estimator)
  x = enas_cnn.normalize(images)

  def losses(p):  # per-example cross-entropy (B,), through the batch's shared BatchNorm statistics
    logits = model.apply({"params": p}, x, arch, train=False)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]

  n = images.shape[0]
  if estimator == "batch":
    grads = jax.grad(lambda p: jnp.mean(losses(p)))(params)
    return jax.tree.map(jnp.square, masks.cnn_monitored(grads))
  _, vjp = jax.vjp(losses, params)

  def add(acc, i):
    g = masks.cnn_monitored(vjp(jax.nn.one_hot(i, n, dtype=jnp.float32))[0])
    return jax.tree.map(lambda a, gi: a + jnp.square(gi), acc, g), None

  zeros = jax.tree.map(jnp.zeros_like, masks.cnn_monitored(params))
  total, _ = jax.lax.scan(add, zeros, jnp.arange(n))
  return jax.tree.map(lambda t: t / n, total)
