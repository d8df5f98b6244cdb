"""MAS (Memory Aware Synapses) importance: global (gradient of the output norm) and local (Hebbian).

Global, for `apply_fn(params, x) -> f(x)` (unnormalised outputs, any shape per example; the norm runs over all of
an example's outputs):

* ``per_example`` (default): Omega = mean_i |d N(f(x_i)) / d theta|, the MAS paper's definition.
* ``batch``: Omega = |d sum_i N(f(x_i)) / d theta| / N over ALL the examples given: the reference code's
  |gradient of the batch-summed norm|, equal to ``per_example`` only for one example. With ``batch_size`` B > 0
  the examples are cut, in order, into batches of B (the last may be smaller) and Omega = sum over batches
  |d sum_{i in batch} N(f(x_i)) / d theta| / N: the reference's per-batch running mean (its MAS demo uses
  B = 200), except that a smaller last batch is weighted by its size (the reference over-weights it).

N is the squared L2 norm sum_k f_k^2 (``l2``, default; no factor 1/2, as the reference) or the L1 norm
sum_k |f_k| (``l1``, subgradient sign(0) = 0).

Local (Hebbian), `mas_local_importance`: for a weight between input unit i and output unit j of a layer,
Omega_ij = mean over the data of |a_i * a_j|, a_i the layer's input (the previous layer's activated output) and
a_j the layer's *activated* output (post-nonlinearity, the activation of neuron j in the paper's sense). The
nonlinearity lives outside Flax's Dense/Conv modules, so it is passed in: `activation` (default ReLU) for hidden
layers and `output_activation` (default identity) for a layer whose output is returned by `apply_fn` itself;
`activations` maps layer names ("Dense_0", "encoder/Conv_1") to callables and overrides both. A bias connects a
constant unit a_i = 1 to unit j, so its importance is mean |a_j|. For a convolution the pairs (input position,
output position) that one kernel entry connects are averaged: Omega = mean over examples and output positions of
the sum over the kernel window of |x| |a| (a Dense layer on inputs with extra axes is treated the same way).
Only Flax `nn.Dense` / `nn.Conv` leaves get a local importance; other leaves raise ConfigError unless
`strict=False`, which gives them zeros.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_forgetting.errors import ConfigError
from nas_forgetting.importance import _driver, _engine

PyTree = Any

MAS_ESTIMATORS = ("per_example", "batch")
NORMS = ("l2", "l1")
DEFAULT_CHUNK_SIZE = 256


def _norm(out: jax.Array, norm: str) -> jax.Array:
  out = out.astype(jnp.float32)
  return jnp.sum(jnp.square(out)) if norm == "l2" else jnp.sum(jnp.abs(out))


@dataclasses.dataclass(frozen=True)
class NormRule:
  """Cotangent dN/df of the output norm for one example (2f for squared L2, sign(f) for L1), weight 1."""
  norm: str

  def check_outputs(self, out_shape) -> None:
    pass

  def __call__(self, out: jax.Array, label: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    del label, key
    out = out.astype(jnp.float32)
    cot = 2.0 * out if self.norm == "l2" else jnp.sign(out)
    return cot[None], jnp.ones((1,), jnp.float32)


@dataclasses.dataclass(frozen=True)
class NormObjective:
  norm: str

  def check_outputs(self, out_shape) -> None:
    pass

  def __call__(self, out: jax.Array, label: jax.Array) -> jax.Array:
    del label
    return _norm(out, self.norm)


def mas_importance(apply_fn: Callable[[PyTree, jax.Array], jax.Array], params: PyTree, images: Any, *,
                   norm: str = "l2", estimator: str = "per_example", path: str = "per_layer",
                   chunk_size: int = DEFAULT_CHUNK_SIZE, mask: PyTree | None = None, batch_size: int = 0) -> PyTree:
  """MAS importance Omega of `params` on `images`, a float32 tree like `params` (see the module docstring).

  `apply_fn`, `path`, `chunk_size` and `mask` as in `fisher_diagonal`. `batch_size` (estimator 'batch' only):
  0 = one batch of all the examples, B > 0 = the reference's per-batch estimate over batches of B.
  """
  what = f"mas_importance(estimator={estimator!r}, norm={norm!r})"
  if norm not in NORMS:
    raise ConfigError(f"mas_importance: unknown norm {norm!r}; expected one of {NORMS}")
  if estimator not in MAS_ESTIMATORS:
    raise ConfigError(f"mas_importance: unknown estimator {estimator!r}; expected one of {MAS_ESTIMATORS}")
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
    raise ConfigError(f"mas_importance: batch_size={batch_size!r}; expected an integer >= 0 (0 = one batch)")
  if batch_size and estimator != "batch":
    raise ConfigError(f"mas_importance: batch_size={batch_size} applies to estimator='batch' only (the per-example "
                      "estimate does not depend on batches)")
  if estimator == "batch":
    n = _engine.num_examples(images)
    if batch_size == 0 or batch_size >= n:
      return _driver.batch_gradient_sum(apply_fn, params, images, None, objective=NormObjective(norm),
                                        finalize=_abs_over_n, chunk_size=chunk_size, mask=mask, what=what)
    total = None
    for start in range(0, n, batch_size):
      batch = jax.tree.map(lambda a: a[start:start + batch_size], images)
      part = _driver.batch_gradient_sum(apply_fn, params, batch, None, objective=NormObjective(norm),
                                        finalize=_abs_sum, chunk_size=min(chunk_size, batch_size), mask=mask,
                                        what=what)
      total = part if total is None else jax.tree.map(jnp.add, total, part)
    return jax.tree.map(lambda t: t / n, total)
  return _driver.per_example_mean(apply_fn, params, images, None, rule=NormRule(norm), phi="abs", path=path,
                                  chunk_size=chunk_size, rng=None, mask=mask, what=what)


def _abs_over_n(total: jax.Array, n: jax.Array) -> jax.Array:
  return jnp.abs(total) / n


def _abs_sum(total: jax.Array, n: jax.Array) -> jax.Array:
  del n
  return jnp.abs(total)


# ----------------------------------------------------------------------------------------------------------------
# Local (Hebbian) MAS
# ----------------------------------------------------------------------------------------------------------------


def _identity(x):
  return x


@dataclasses.dataclass(frozen=True)
class _Activations:
  """Hashable description of which nonlinearity follows which layer (a static argument of the jitted sum)."""
  default: Callable
  output: Callable
  by_name: tuple[tuple[str, Callable], ...]

  def get(self, name: str, is_output: bool) -> Callable:
    named = dict(self.by_name)
    if name in named:
      return named[name]
    return self.output if is_output else self.default


@functools.partial(jax.jit, static_argnames=("apply_fn", "activations", "strict"))
def _local_sums(apply_fn, params, x_chunks, n, *, activations, strict):
  num_chunks, chunk_size = x_chunks.shape[:2]
  valid = _engine.chunk_weights(num_chunks, chunk_size, n)
  leaves = jax.tree_util.tree_leaves(params)
  calls = _engine.discover_layers(apply_fn, params, x_chunks[0])
  covered = {i for c in calls for _, i in c.leaves}
  missing = [jax.tree_util.keystr(p) for i, (p, _) in enumerate(jax.tree_util.tree_leaves_with_path(params))
             if i not in covered]
  if missing and strict:
    raise ConfigError("mas_local_importance: the local (Hebbian) importance is defined for the weights and biases "
                      f"of Flax nn.Dense / nn.Conv layers called once; these parameters are not: {missing} "
                      "(pass strict=False to give them zero importance)")
  names = {c.name for c in calls}
  unknown = sorted(set(dict(activations.by_name)) - names)
  if unknown:
    raise ConfigError(f"mas_local_importance: activations given for unknown layers {unknown}; layers: {sorted(names)}")

  def body(chunk):
    x, v = chunk
    out, records = _engine.forward_with_taps(apply_fn, params, x, calls, None)
    sums = {}
    for call, (module, x_in, y) in zip(calls, records):
      act = activations.get(call.name, y is out)
      a = jnp.abs(act(y)).astype(jnp.float32)
      positions = max(1, int(jnp.size(y) // (y.shape[0] * y.shape[-1])))
      a = a * v.reshape((-1,) + (1,) * (a.ndim - 1)) / positions
      lp = {pname: leaves[i] for pname, i in call.leaves}
      # sum_i sum_positions |x|^T |a| is the layer's weight gradient at input |x| with output cotangent |a|.
      _, vjp_fn = jax.vjp(lambda p: module.apply({"params": p}, jnp.abs(x_in)), lp)
      grads = vjp_fn(a.astype(y.dtype))[0]
      for pname, i in call.leaves:
        sums[i] = grads[pname].astype(jnp.float32)
    return [sums.get(i, jnp.zeros(l.shape, jnp.float32)) for i, l in enumerate(leaves)]

  init = [jnp.zeros(l.shape, jnp.float32) for l in leaves]
  total = _engine.scan_chunks(body, (x_chunks, valid), init)
  return [t / n for t in total]


def mas_local_importance(apply_fn: Callable[[PyTree, jax.Array], jax.Array], params: PyTree, images: Any, *,
                         activation: Callable = jax.nn.relu, output_activation: Callable = _identity,
                         activations: Mapping[str, Callable] | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                         strict: bool = True) -> PyTree:
  """Local (Hebbian) MAS importance mean |a_i a_j| for the Dense/Conv layers of `apply_fn` (module docstring).

  Pass module-level functions (not fresh lambdas) as activations: they are static arguments of the jitted sum.
  """
  chunk_size = _engine.check_chunk_size(chunk_size)
  n = _engine.num_examples(images)
  _driver.selected_leaves(params, None, "mas_local_importance")
  acts = _Activations(activation, output_activation, tuple(sorted((activations or {}).items())))
  values = _local_sums(apply_fn, params, _engine.pad_to_chunks(images, chunk_size), jnp.int32(n), activations=acts,
                       strict=bool(strict))
  leaves, treedef = jax.tree_util.tree_flatten(params)
  return jax.tree_util.tree_unflatten(treedef, [v.astype(jnp.result_type(l)) for v, l in zip(values, leaves)])
