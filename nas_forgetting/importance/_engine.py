"""The machinery shared by every importance measure: chunking, and sums of per-example gradient functions.

Every per-example importance here has the form

    sum over examples i, sum over k of  w_ik * phi(J_i^T v_ik)

where J_i is the Jacobian of example i's model output with respect to the parameters, v_ik a cotangent on that
output (one per class for the exact Fisher, one sampled label, the true label, the gradient of an output norm...),
w_ik a weight and phi an element-wise square or absolute value. A *rule* maps one example's output (and label and
PRNG key) to its cotangents (K, *output) and weights (K,).

Two implementations of that sum:

* ``vmap``: `jax.vmap` over the examples of a chunk of `jax.vjp` of the model on one example. Works for any
  `apply_fn`; it materialises the per-example gradients of the chunk (memory: chunk_size x number of parameters).
* ``per_layer``: one batched forward pass in which every Flax Linen `nn.Dense` and `nn.Conv` call is intercepted
  (`flax.linen.intercept_methods`): its input is recorded and a zero perturbation is added to its output, so one
  batched VJP with respect to the perturbations yields every example's gradient with respect to that layer's
  output. Then, for a Dense layer on (examples, features) inputs, the per-example kernel gradient is the outer
  product x_i g_i^T and phi(x_i g_i^T) = phi(x_i) phi(g_i)^T for phi in {square, abs}, so the sum over examples is
  ONE matrix product phi(X)^T phi(G) and no per-example gradient is formed. A Conv layer (or a Dense layer on
  inputs with extra axes, whose per-example gradient sums over positions before phi is applied) gets its
  per-example kernel gradients from `jax.vmap` of the layer's own VJP (a batched convolution), chunk by chunk.
  Parameters that no eligible layer call owns (BatchNorm scale/bias, embeddings, parameters used outside Flax
  modules or by a layer called more than once) fall back to the vmap path, restricted to those leaves.

Assumptions of both paths: `apply_fn(params, x)` treats the examples of a batch independently (no batch
statistics, no dropout), and in the per-layer path a parameter leaf enters the model only through the one layer
call that owns it (leaves reached in other ways, e.g. cast to another dtype first, are simply not matched and go
to the fallback).

Chunking: the examples are padded to a multiple of `chunk_size` and a validity mask zeroes the padding's weights,
so the sums do not depend on the chunk size and every call with the same number of chunks reuses one compilation.
The chunks are visited by `jax.lax.scan` with the running sums as carry, so memory stays bounded by one chunk.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
from flax.linen import linear
import jax
import jax.numpy as jnp
import numpy as np

from nas_forgetting.errors import ConfigError, DataError

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
# rule(output_i, label_i, key_i) -> (cotangents (K, *output_i.shape), weights (K,))
Rule = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

PATHS = ("vmap", "per_layer")
PHIS = {"square": jnp.square, "abs": jnp.abs}


# ----------------------------------------------------------------------------------------------------------------
# Chunking
# ----------------------------------------------------------------------------------------------------------------


def check_chunk_size(chunk_size: int) -> int:
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ConfigError(f"chunk_size must be a positive int; got {chunk_size!r}")
  return int(chunk_size)


def num_examples(images: Any) -> int:
  shape = np.shape(images)
  if len(shape) < 1 or shape[0] < 1:
    raise DataError(f"images must have a leading examples axis with at least one example; got shape {shape}")
  return int(shape[0])


def pad_to_chunks(array: Any, chunk_size: int) -> jax.Array:
  """(N, ...) -> (num_chunks, chunk_size, ...), zero-padded at the end (the padding is masked out later)."""
  n = np.shape(array)[0]
  num_chunks = -(-n // chunk_size)
  pad = num_chunks * chunk_size - n
  if isinstance(array, np.ndarray) and array.dtype.kind in "iu":
    array = array.astype(np.int32)
  xp = np if isinstance(array, np.ndarray) else jnp
  if pad:
    array = xp.concatenate([array, xp.zeros((pad,) + tuple(np.shape(array)[1:]), dtype=array.dtype)], axis=0)
  return jnp.asarray(array).reshape((num_chunks, chunk_size) + tuple(np.shape(array)[1:]))


def chunk_weights(num_chunks: int, chunk_size: int, n: jax.Array) -> jax.Array:
  """(num_chunks, chunk_size) float32: 1 for real examples, 0 for padding (n traced: no recompile per n)."""
  index = jnp.arange(num_chunks * chunk_size).reshape(num_chunks, chunk_size)
  return (index < n).astype(jnp.float32)


def example_keys(rng: jax.Array | None, num_chunks: int, chunk_size: int) -> jax.Array:
  """One key per (padded) example, folded from its global index so sampling does not depend on chunking."""
  if rng is None:
    rng = jax.random.key(0)  # never consumed by rules that do not sample
  index = jnp.arange(num_chunks * chunk_size, dtype=jnp.uint32)
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index)
  return keys.reshape((num_chunks, chunk_size) + keys.shape[1:])


def scan_chunks(body: Callable[[Any], list[jax.Array]], chunks: Any, init: list[jax.Array]) -> list[jax.Array]:
  """sum over chunks of body(chunk) with `jax.lax.scan` (the carry holds the running sums)."""

  def step(acc, chunk):
    return [a + b for a, b in zip(acc, body(chunk))], None

  out, _ = jax.lax.scan(step, init, chunks)
  return out


# ----------------------------------------------------------------------------------------------------------------
# Leaf selection helpers
# ----------------------------------------------------------------------------------------------------------------


def with_leaves(treedef, leaves: list, index: tuple[int, ...], values: list) -> PyTree:
  out = list(leaves)
  for i, v in zip(index, values):
    out[i] = v
  return jax.tree_util.tree_unflatten(treedef, out)


def check_outputs(out: jax.Array, n: int, what: str) -> None:
  if not hasattr(out, "shape") or out.ndim < 1 or out.shape[0] != n:
    raise ConfigError(f"apply_fn(params, x) must return an array with the batch axis first ({n} examples) for the "
                      f"{what}; got {getattr(out, 'shape', type(out))}")


def _weighted_phi_sum(vjp_fn: Callable, cots: jax.Array, weights: jax.Array, phi: Callable,
                      like: list[jax.Array]) -> list[jax.Array]:
  """sum_k w_k phi(vjp_fn(cot_k)) for one example, one VJP per k (a scan when K > 1, to bound memory)."""
  if cots.shape[0] == 1:
    grads = vjp_fn(cots[0])[0]
    return [weights[0] * phi(g) for g in grads]

  def step(acc, kw):
    cot, w = kw
    grads = vjp_fn(cot)[0]
    return [a + w * phi(g) for a, g in zip(acc, grads)], None

  out, _ = jax.lax.scan(step, [jnp.zeros(l.shape, jnp.float32) for l in like], (cots, weights))
  return out


# ----------------------------------------------------------------------------------------------------------------
# vmap path
# ----------------------------------------------------------------------------------------------------------------


def vmap_chunk_sums(apply_fn: ApplyFn, params: PyTree, index: tuple[int, ...], x: jax.Array, labels: jax.Array,
                    keys: jax.Array, valid: jax.Array, rule: Rule, phi: Callable) -> list[jax.Array]:
  """sum_i valid_i sum_k w_ik phi(per-example gradient) for the leaves `index` of `params`, over one chunk."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  sel = [leaves[i] for i in index]

  def one(x_i, y_i, key_i, v_i):
    def f(s):
      return apply_fn(with_leaves(treedef, leaves, index, s), x_i[None])[0]

    out, vjp_fn = jax.vjp(f, sel)
    cots, w = rule(out, y_i, key_i)
    if cots.shape[0] == 1:  # weight applied below, as a contraction over the chunk
      return [phi(g) for g in vjp_fn(cots[0].astype(out.dtype))[0]], w[0] * v_i
    return _weighted_phi_sum(vjp_fn, cots.astype(out.dtype), w * v_i, phi, sel), jnp.ones_like(v_i)

  per_example, weights = jax.vmap(one)(x, labels, keys, valid)
  # A contraction (not a fused multiply-and-reduce, which XLA:CPU runs very slowly over the batch axis).
  return [jnp.tensordot(weights.astype(jnp.float32), g.astype(jnp.float32), axes=1) for g in per_example]


# ----------------------------------------------------------------------------------------------------------------
# per-layer path
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerCall:
  """One intercepted Dense/Conv call whose parameters are leaves of `params` (indices into the flat leaves)."""
  order: int                     # position among eligible calls in the forward pass
  name: str                      # module path, e.g. "Dense_0" or "encoder/Conv_1"
  leaves: tuple[tuple[str, int], ...]  # (param name, leaf index), e.g. (("bias", 0), ("kernel", 1))
  formula: bool                  # Dense on (examples, features): phi(X)^T phi(G), no per-example gradients
  output: jax.ShapeDtypeStruct   # the layer's output for the traced chunk


def _eligible(module: nn.Module, args: tuple, kwargs: dict, leaf_ids: dict[int, int], n: int):
  """Returns (leaves, formula) if this call can be handled per layer, else None."""
  if type(module) not in (nn.Dense, nn.Conv) or kwargs or len(args) != 1:
    return None
  x = args[0]
  if not hasattr(x, "shape") or x.ndim < 2 or x.shape[0] != n:
    return None
  variables = module.variables
  if set(variables) != {"params"} or not set(variables["params"]) <= {"kernel", "bias"}:
    return None
  found = []
  for pname, value in sorted(variables["params"].items()):
    i = leaf_ids.get(id(value))
    if i is None:
      return None
    found.append((pname, i))
  formula = (type(module) is nn.Dense and x.ndim == 2 and module.dot_general is None
             and module.dot_general_cls is None)
  return tuple(found), formula


def _module_name(module: nn.Module) -> str:
  return "/".join(str(p) for p in module.scope.path) if module.scope is not None else type(module).__name__


def discover_layers(apply_fn: ApplyFn, params: PyTree, x: jax.Array) -> tuple[LayerCall, ...]:
  """The eligible layer calls of `apply_fn(params, x)`, found by tracing it once (no computation).

  A leaf used by more than one eligible call (a layer applied twice, tied weights) is left out of all of them.
  """
  n = x.shape[0]
  found: list[tuple[str, tuple, bool, Any]] = []

  def trace(p, xx):
    leaf_ids = {id(l): i for i, l in enumerate(jax.tree_util.tree_leaves(p))}

    def interceptor(next_fun, args, kwargs, context):
      e = _eligible(context.module, args, kwargs, leaf_ids, n) if context.method_name == "__call__" else None
      y = next_fun(*args, **kwargs)
      if e is not None:
        found.append((_module_name(context.module), e[0], e[1], jax.ShapeDtypeStruct(y.shape, y.dtype)))
      return y

    with nn.intercept_methods(interceptor):
      return apply_fn(p, xx)

  jax.eval_shape(trace, params, x)
  counts: dict[int, int] = {}
  for _, leaves, _, _ in found:
    for _, i in leaves:
      counts[i] = counts.get(i, 0) + 1
  return tuple(LayerCall(order=k, name=name, leaves=leaves, formula=formula, output=y)
               for k, (name, leaves, formula, y) in enumerate(found)
               if all(counts[i] == 1 for _, i in leaves))


def forward_with_taps(apply_fn: ApplyFn, params: PyTree, x: jax.Array, calls: tuple[LayerCall, ...],
                      perturbations: list[jax.Array] | None):
  """apply_fn(params, x), recording (module, input, output) of `calls` and adding `perturbations` to their outputs."""
  n = x.shape[0]
  wanted = {c.order: j for j, c in enumerate(calls)}
  records: list[Any] = [None] * len(calls)
  leaf_ids = {id(l): i for i, l in enumerate(jax.tree_util.tree_leaves(params))}
  counter = [0]

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name != "__call__" or _eligible(context.module, args, kwargs, leaf_ids, n) is None:
      return next_fun(*args, **kwargs)
    order = counter[0]
    counter[0] += 1
    y = next_fun(*args, **kwargs)
    j = wanted.get(order)
    if j is None:
      return y
    if perturbations is not None:
      y = y + perturbations[j].astype(y.dtype)
    records[j] = (context.module.clone(parent=None), args[0], y)
    return y

  with nn.intercept_methods(interceptor):
    out = apply_fn(params, x)
  if any(r is None for r in records):
    raise ConfigError("apply_fn(params, x) called its layers differently in two traces; the per-layer path needs a "
                      "deterministic model (use path='vmap')")
  return out, records


def _layer_params(call: LayerCall, leaves: list[jax.Array]) -> dict[str, jax.Array]:
  return {pname: leaves[i] for pname, i in call.leaves}


def per_layer_chunk_sums(apply_fn: ApplyFn, params: PyTree, calls: tuple[LayerCall, ...], x: jax.Array,
                         labels: jax.Array, keys: jax.Array, valid: jax.Array, rule: Rule,
                         phi: Callable) -> dict[int, jax.Array]:
  """{leaf index: sum_i valid_i sum_k w_ik phi(per-example gradient)} for the leaves owned by `calls`, one chunk."""
  leaves = jax.tree_util.tree_leaves(params)
  zeros = [jnp.zeros(c.output.shape, c.output.dtype) for c in calls]
  modules: list[nn.Module] = []

  def forward(perturbations):
    out, records = forward_with_taps(apply_fn, params, x, calls, perturbations)
    modules[:] = [r[0] for r in records]
    return out, [r[1] for r in records]

  out, vjp_fn, inputs = jax.vjp(forward, zeros, has_aux=True)
  check_outputs(out, x.shape[0], "per-layer importance")
  cots, weights = jax.vmap(rule)(out, labels, keys)            # (n, K, *out), (n, K)
  cots = jnp.swapaxes(cots, 0, 1).astype(out.dtype)            # (K, n, *out)
  weights = jnp.swapaxes(weights * valid[:, None], 0, 1)       # (K, n)
  # Gradients with respect to every tapped layer's output, for every k: [(K, n, *layer_out)].
  out_grads = jax.vmap(lambda c: vjp_fn(c)[0])(cots)

  result: dict[int, jax.Array] = {}
  for call, module, x_in, g in zip(calls, modules, inputs, out_grads):
    lp = _layer_params(call, leaves)
    if call.formula:
      # Dense on (n, features): sum_i sum_k w_ik phi(x_i)^T phi(g_ik)  =  phi(X)^T H,  H = sum_k w_k phi(G_k).
      h = jnp.einsum("kn,kno->no", weights, phi(g).astype(jnp.float32))
      sums = {"kernel": phi(x_in).astype(jnp.float32).T @ h, "bias": jnp.sum(h, axis=0)}
    elif _patchable_conv(module, x_in):
      sums = _conv_patch_sums(module, lp, x_in, g, weights, phi)
    else:
      sums = _materialised_layer_sums(module, lp, x_in, g, weights, phi)
    for pname, i in call.leaves:
      result[i] = sums[pname].reshape(leaves[i].shape).astype(jnp.float32)
  return result


def _kernel_size(module: nn.Conv) -> tuple[int, ...]:
  return (module.kernel_size,) if isinstance(module.kernel_size, int) else tuple(module.kernel_size)


def _broadcast(value, n: int) -> tuple[int, ...]:
  value = 1 if value is None else value
  return (value,) * n if isinstance(value, int) else tuple(value)


def _patchable_conv(module: nn.Module, x: jax.Array) -> bool:
  """An nn.Conv whose per-example kernel gradient is a product of input patches and output gradients."""
  if type(module) is not nn.Conv:
    return False
  k = _kernel_size(module)
  padding = linear.canonicalize_padding(module.padding, len(k))
  return (x.ndim == len(k) + 2 and module.feature_group_count == 1 and module.mask is None
          and module.conv_general_dilated is None and module.conv_general_dilated_cls is None
          and all(d == 1 for d in _broadcast(module.input_dilation, len(k)))
          and not (isinstance(padding, str) and padding in ("CIRCULAR", "REFLECT", "CAUSAL")))


def _conv_patch_sums(module: nn.Conv, layer_params: dict[str, jax.Array], x: jax.Array, g: jax.Array,
                     weights: jax.Array, phi: Callable) -> dict[str, jax.Array]:
  """Per-example conv gradients as (input patches)^T (output gradients), one batched matrix product per chunk.

  kernel grad of example i = sum over output positions p of patch_i(p) g_i(p)^T (patch = the receptive field,
  (C_in, *window)); the sum over positions comes before phi, so each example's (window*C_in, C_out) gradient is
  formed (small for convolutions), then phi and the weighted sum over the chunk.
  """
  k = _kernel_size(module)
  nd = len(k)
  padding = linear.canonicalize_padding(module.padding, nd)
  patches = jax.lax.conv_general_dilated_patches(
      x, filter_shape=k, window_strides=_broadcast(module.strides, nd), padding=padding,
      rhs_dilation=_broadcast(module.kernel_dilation, nd), dimension_numbers=linear._conv_dimension_numbers(x.shape),
      precision=jax.lax.Precision.HIGHEST)
  n, c = x.shape[0], x.shape[-1]
  patches = patches.reshape(n, -1, c, int(np.prod(k))).astype(jnp.float32)   # (n, P, C_in, window)
  kernel_shape = layer_params["kernel"].shape                                  # (*window, C_in, C_out)

  def step(acc, gw):
    g_k, w_k = gw
    g_k = g_k.reshape(n, -1, g_k.shape[-1]).astype(jnp.float32)                # (n, P, C_out)
    grads = jnp.einsum("npcf,npo->nfco", patches, g_k).reshape((n,) + kernel_shape)
    out = {"kernel": acc["kernel"] + jnp.tensordot(w_k, phi(grads), axes=1)}
    if "bias" in acc:
      out["bias"] = acc["bias"] + w_k @ phi(jnp.sum(g_k, axis=1))
    return out, None

  init = {name: jnp.zeros(v.shape, jnp.float32) for name, v in layer_params.items()}
  out, _ = jax.lax.scan(step, init, (g, weights))
  return out


def _materialised_layer_sums(module: nn.Module, layer_params: dict[str, jax.Array], x: jax.Array, g: jax.Array,
                             weights: jax.Array, phi: Callable) -> dict[str, jax.Array]:
  """Per-example parameter gradients of one layer from its own VJP, vmapped over the chunk (a batched conv)."""

  def per_example(x_i, g_i):
    _, vjp_fn = jax.vjp(lambda p: module.apply({"params": p}, x_i[None]), layer_params)
    return vjp_fn(g_i[None].astype(g.dtype))[0]

  def step(acc, gw):
    g_k, w_k = gw
    grads = jax.vmap(per_example)(x, g_k)
    return {k: acc[k] + jnp.tensordot(w_k, phi(grads[k]).astype(jnp.float32), axes=1) for k in acc}, None

  init = {k: jnp.zeros(v.shape, jnp.float32) for k, v in layer_params.items()}
  out, _ = jax.lax.scan(step, init, (g, weights))
  return out
