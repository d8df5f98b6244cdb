"""Jitted drivers: chunked sums of per-example (or batch) gradient functions over a data set.

`per_example_mean` and `batch_gradient_sum` validate their inputs on the host, pad the data to whole chunks and call
one jitted function whose static arguments are the model function, the rule, phi, the path and the selected leaves.
Same shapes (same number of chunks) and the same `apply_fn` object -> no new compilation, whatever the values of
params, data, labels, rng or the number of real examples in the last chunk.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nas_forgetting.errors import ConfigError, DataError
from nas_forgetting.importance import _engine as engine

PyTree = Any


def selected_leaves(params: PyTree, mask: PyTree | None, what: str) -> tuple[tuple[int, ...], list[Any]]:
  """(indices of leaves to compute, per-leaf array masks or None), from a mask tree like params (or None).

  A mask leaf that is a Python/NumPy boolean scalar selects or skips the whole leaf (skipped leaves are not computed
  at all); an array mask leaf is broadcast against the parameter and multiplies the result.
  """
  leaves, treedef = jax.tree_util.tree_flatten(params)
  if not leaves:
    raise ConfigError(f"{what}: params has no array leaves")
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise ConfigError(f"{what}: parameter {jax.tree_util.keystr(path)} has dtype {jnp.result_type(leaf)}; "
                        "expected a floating dtype")
  if mask is None:
    return tuple(range(len(leaves))), [None] * len(leaves)
  mask_leaves, mask_def = jax.tree_util.tree_flatten(mask)
  if mask_def != treedef:
    raise ConfigError(f"{what}: mask tree {mask_def} does not match the params tree {treedef}")
  index, arrays = [], []
  for i, (m, p) in enumerate(zip(mask_leaves, leaves)):
    if isinstance(m, (bool, np.bool_)) or (np.ndim(m) == 0 and not isinstance(m, jax.core.Tracer)):
      arrays.append(None)
      if bool(m):
        index.append(i)
    else:
      try:
        jnp.broadcast_shapes(np.shape(m), np.shape(p))
      except ValueError as e:
        raise ConfigError(f"{what}: mask leaf {i} of shape {np.shape(m)} does not broadcast to its parameter's "
                          f"shape {np.shape(p)}") from e
      arrays.append(m)
      index.append(i)
  return tuple(index), arrays


def check_labels(labels: Any, n: int, what: str) -> None:
  """Shape and dtype on the host; the range [0, num_classes) is checked inside the jitted sum (`raise_bad_labels`)."""
  shape = np.shape(labels)
  if shape != (n,):
    raise DataError(f"{what}: labels must have shape ({n},) (one per image); got {shape}")
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise DataError(f"{what}: labels must be integers; got dtype {jnp.result_type(labels)}")


def _bad_labels(y_chunks: jax.Array, valid: jax.Array, num_classes: int) -> jax.Array:
  """int32 scalar: 0 when every real label lies in [0, num_classes), else num_classes."""
  bad = jnp.any((valid > 0) & ((y_chunks < 0) | (y_chunks >= num_classes)))
  return jnp.where(bad, jnp.int32(num_classes), jnp.int32(0))


def raise_bad_labels(bad: jax.Array, labels: Any, what: str) -> None:
  num_classes = int(bad)
  if num_classes:
    lo, hi = int(jnp.min(jnp.asarray(labels))), int(jnp.max(jnp.asarray(labels)))
    raise DataError(f"{what}: labels must lie in [0, {num_classes}) (the model's number of outputs); "
                    f"found values in [{lo}, {hi}]")


def _full_leaves(params: PyTree, index: tuple[int, ...], values: list[jax.Array]) -> list[jax.Array]:
  """Inside jit: the computed leaves at `index` (cast to the parameter dtype), zeros elsewhere."""
  leaves = jax.tree_util.tree_leaves(params)
  out = [jnp.zeros(jnp.shape(l), jnp.result_type(l)) for l in leaves]
  for i, v in zip(index, values):
    out[i] = v.astype(jnp.result_type(leaves[i]))
  return out


def finish(params: PyTree, leaves: list[jax.Array], arrays: list[Any]) -> PyTree:
  """A tree like params from the jitted leaves, with array masks applied (if any)."""
  if any(a is not None for a in arrays):
    leaves = [l if a is None else l * jnp.asarray(a, l.dtype) for l, a in zip(leaves, arrays)]
  return jax.tree_util.tree_unflatten(jax.tree.structure(params), leaves)


@functools.partial(jax.jit, static_argnames=("apply_fn", "rule", "phi", "path", "index"))
def _per_example_sums(apply_fn, params, x_chunks, y_chunks, n, rng, *, rule, phi, path, index):
  num_chunks, chunk_size = x_chunks.shape[:2]
  valid = engine.chunk_weights(num_chunks, chunk_size, n)
  keys = engine.example_keys(rng, num_chunks, chunk_size)
  phi_fn = engine.PHIS[phi]
  leaves = jax.tree_util.tree_leaves(params)
  out_shape = jax.eval_shape(lambda p, x: apply_fn(p, x), params, x_chunks[0])
  engine.check_outputs(out_shape, chunk_size, "importance")
  rule.check_outputs(out_shape)

  calls: tuple[engine.LayerCall, ...] = ()
  if path == "per_layer":
    calls = tuple(c for c in engine.discover_layers(apply_fn, params, x_chunks[0])
                  if any(i in index for _, i in c.leaves))
  covered = {i for c in calls for _, i in c.leaves}
  fallback = tuple(i for i in index if i not in covered)

  def body(chunk):
    x, y, k, v = chunk
    sums = {}
    if calls:
      sums.update(engine.per_layer_chunk_sums(apply_fn, params, calls, x, y, k, v, rule, phi_fn))
    if fallback:
      sums.update(zip(fallback, engine.vmap_chunk_sums(apply_fn, params, fallback, x, y, k, v, rule, phi_fn)))
    return [sums[i] for i in index]

  init = [jnp.zeros(leaves[i].shape, jnp.float32) for i in index]
  total = engine.scan_chunks(body, (x_chunks, y_chunks, keys, valid), init)
  return _full_leaves(params, index, [t / n for t in total]), _bad_labels(y_chunks, valid, out_shape.shape[-1])


def _chunked_inputs(params: PyTree, images: Any, labels: Any | None, *, chunk_size: int, mask: PyTree | None,
                    what: str) -> tuple:
  """Checked inputs padded to whole chunks: (N, selected leaf indices, their arrays, image chunks, label chunks).

  Missing labels (objectives that do not read them) become zeros.
  """
  chunk_size = engine.check_chunk_size(chunk_size)
  n = engine.num_examples(images)
  index, arrays = selected_leaves(params, mask, what)
  if labels is None:
    labels = np.zeros((n,), np.int32)
  else:
    check_labels(labels, n, what)
  return n, index, arrays, engine.pad_to_chunks(images, chunk_size), engine.pad_to_chunks(labels, chunk_size)


def per_example_mean(apply_fn: Callable, params: PyTree, images: Any, labels: Any | None, *, rule: Any, phi: str,
                     path: str, chunk_size: int, rng: jax.Array | None, mask: PyTree | None, what: str) -> PyTree:
  """mean over examples of sum_k w_ik phi(per-example gradient), as a tree like params (see _engine)."""
  if path not in engine.PATHS:
    raise ConfigError(f"{what}: unknown path {path!r}; expected one of {engine.PATHS}")
  n, index, arrays, x_chunks, y_chunks = _chunked_inputs(params, images, labels, chunk_size=chunk_size, mask=mask,
                                                          what=what)
  leaves, bad = _per_example_sums(apply_fn, params, x_chunks, y_chunks, jnp.int32(n), rng, rule=rule, phi=phi,
                                  path=path, index=index)
  if labels is not None:
    raise_bad_labels(bad, labels, what)
  return finish(params, leaves, arrays)


@functools.partial(jax.jit, static_argnames=("apply_fn", "objective", "index", "finalize"))
def _batch_gradient_sum(apply_fn, params, x_chunks, y_chunks, n, *, objective, index, finalize):
  num_chunks, chunk_size = x_chunks.shape[:2]
  valid = engine.chunk_weights(num_chunks, chunk_size, n)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  out_shape = jax.eval_shape(lambda p, x: apply_fn(p, x), params, x_chunks[0])
  engine.check_outputs(out_shape, chunk_size, "importance")
  objective.check_outputs(out_shape)

  def body(chunk):
    x, y, v = chunk

    def total(sel):
      out = apply_fn(engine.with_leaves(treedef, leaves, index, sel), x)
      return jnp.sum(v * jax.vmap(objective)(out, y))

    return [g.astype(jnp.float32) for g in jax.grad(total)([leaves[i] for i in index])]

  init = [jnp.zeros(leaves[i].shape, jnp.float32) for i in index]
  sums = engine.scan_chunks(body, (x_chunks, y_chunks, valid), init)
  values = [finalize(s, n) for s in sums]
  bad = _bad_labels(y_chunks, valid, out_shape.shape[-1]) if out_shape.ndim == 2 else jnp.int32(0)
  return _full_leaves(params, index, values), bad


def batch_gradient_sum(apply_fn: Callable, params: PyTree, images: Any, labels: Any | None, *, objective: Any,
                       finalize: Callable[[jax.Array, jax.Array], jax.Array], chunk_size: int, mask: PyTree | None,
                       what: str) -> PyTree:
  """finalize(sum over examples of the gradient of objective(output_i, label_i), N), a tree like params.

  `finalize` must be a module-level function (a static argument of the jitted sum).
  """
  n, index, arrays, x_chunks, y_chunks = _chunked_inputs(params, images, labels, chunk_size=chunk_size, mask=mask,
                                                          what=what)
  leaves, bad = _batch_gradient_sum(apply_fn, params, x_chunks, y_chunks, jnp.int32(n), objective=objective,
                                    index=index, finalize=finalize)
  if labels is not None:
    raise_bad_labels(bad, labels, what)
  return finish(params, leaves, arrays)
