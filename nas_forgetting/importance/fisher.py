"""Diagonal Fisher information of a classifier, four named estimators.

`apply_fn(params, x) -> logits` of shape (batch, num_classes) (a categorical model p(y|x) = softmax(logits)).
For one example with class probabilities p and score g_c = d log p_c / d theta = J^T (e_c - p):

* ``exact`` (default): sum_c p_c g_c^2, the expectation over the model's own labels. No sampling noise and no
  dependence on the data's labels: this is the diagonal of the Fisher information, hence the default.
  Cost: num_classes gradients per example (one batched VJP per class on the per-layer path).
* ``sampled``: g_y^2 with y ~ p(y|x) drawn with `rng` (`num_samples` draws per example, averaged). Unbiased for
  ``exact``; one key per example, folded from its index, so the draws do not depend on chunking.
* ``empirical``: g_y^2 with the true labels (the "empirical Fisher"; not the Fisher, but widely used).
* ``batch``: (mean_i g_{y_i})^2, the square of the gradient of the mean log-likelihood over ALL the examples given,
  with true labels. This is what several reference implementations compute (WPL: one validation batch; the EWC
  tutorial: two batches). It is offered for reproduction only and is never the default: pass exactly the batch
  the reference would use.

The per-example estimators are means over examples of squared per-example gradients: they do not depend on the
batch size or the chunking. See `_engine` for the two paths ("vmap", "per_layer") and their assumptions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from nas_forgetting.errors import ConfigError
from nas_forgetting.importance import _driver, _engine

PyTree = Any

ESTIMATORS = ("exact", "sampled", "empirical", "batch")
DEFAULT_CHUNK_SIZE = 256


def _check_logits(out_shape) -> None:
  if len(out_shape.shape) != 2:
    raise ConfigError("fisher_diagonal: apply_fn(params, x) must return logits of shape (batch, num_classes); got "
                      f"shape {out_shape.shape}")


@dataclasses.dataclass(frozen=True)
class FisherRule:
  """Cotangents on the logits for one example: e_c - p for the classes c the estimator averages over."""
  estimator: str
  num_samples: int = 1

  def check_outputs(self, out_shape) -> None:
    _check_logits(out_shape)

  def __call__(self, logits: jax.Array, label: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    p = jax.nn.softmax(logits)
    if self.estimator == "exact":
      return jnp.eye(num_classes, dtype=jnp.float32) - p[None, :], p
    if self.estimator == "sampled":
      ys = jax.random.categorical(key, logits, shape=(self.num_samples,))
      weights = jnp.full((self.num_samples,), 1.0 / self.num_samples, jnp.float32)
      return jax.nn.one_hot(ys, num_classes, dtype=jnp.float32) - p[None, :], weights
    if self.estimator == "empirical":
      return (jax.nn.one_hot(label, num_classes, dtype=jnp.float32) - p)[None, :], jnp.ones((1,), jnp.float32)
    raise ConfigError(f"no per-example rule for estimator {self.estimator!r}")


@dataclasses.dataclass(frozen=True)
class LogLikelihood:
  """log p(label | x) for one example (the objective whose batch-mean gradient the ``batch`` estimator squares)."""

  def check_outputs(self, out_shape) -> None:
    _check_logits(out_shape)

  def __call__(self, logits: jax.Array, label: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(logits.astype(jnp.float32))[label]


def fisher_diagonal(apply_fn: Callable[[PyTree, jax.Array], jax.Array], params: PyTree, images: Any,
                    labels: Any | None = None, *, estimator: str = "exact", path: str = "per_layer",
                    chunk_size: int = DEFAULT_CHUNK_SIZE, rng: jax.Array | None = None, num_samples: int = 1,
                    mask: PyTree | None = None) -> PyTree:
  """Diagonal Fisher information of `apply_fn` at `params` on `images`, a float32 tree like `params`.

  Args:
    apply_fn: `apply_fn(params, x) -> logits (batch, num_classes)`; examples must be independent (eval mode).
      Pass the same function object on every call: it is a static argument of the jitted computation.
    params: the parameters the Fisher is taken with respect to (any pytree of float arrays).
    images: (N, ...) inputs. labels: (N,) int labels, needed by ``empirical`` and ``batch``.
    estimator: ``exact`` (default), ``sampled``, ``empirical`` or ``batch`` (see the module docstring).
    path: ``per_layer`` (default; Flax Dense/Conv layers from layer inputs and output gradients, other leaves by
      vmap) or ``vmap`` (per-example `jax.vjp` under `jax.vmap`, any model). Both give the same numbers.
    chunk_size: examples per chunk (memory bound; the result does not depend on it).
    rng: PRNG key, required by ``sampled``. num_samples: labels drawn per example by ``sampled``.
    mask: None, or a tree like params of booleans (a False leaf is skipped and returns zeros) or boolean arrays.
  """
  what = f"fisher_diagonal(estimator={estimator!r})"
  if estimator not in ESTIMATORS:
    raise ConfigError(f"fisher_diagonal: unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
  n = _engine.num_examples(images)
  if estimator in ("empirical", "batch"):
    if labels is None:
      raise ConfigError(f"{what} needs the true labels; got labels=None")
  if estimator == "sampled":
    if rng is None:
      raise ConfigError(f"{what} draws labels from the model and needs rng (a PRNG key); got None")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
      raise ConfigError(f"{what}: num_samples must be a positive int; got {num_samples!r}")
  if estimator == "batch":
    return _driver.batch_gradient_sum(apply_fn, params, images, labels, objective=LogLikelihood(),
                                      finalize=_square_of_mean, chunk_size=chunk_size, mask=mask, what=what)
  rule = FisherRule(estimator, num_samples if estimator == "sampled" else 1)
  if labels is not None:
    _driver.check_labels(labels, n, what)
  return _driver.per_example_mean(apply_fn, params, images, labels if estimator == "empirical" else None, rule=rule,
                                  phi="square", path=path, chunk_size=chunk_size,
                                  rng=rng if estimator == "sampled" else None, mask=mask, what=what)


def _square_of_mean(total: jax.Array, n: jax.Array) -> jax.Array:
  return jnp.square(total / n)
