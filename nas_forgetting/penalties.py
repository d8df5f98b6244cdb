"""Quadratic consolidation penalties, as pure functions and as an optax-style gradient transformation.

Every penalty here is `strength * quadratic_penalty(params, anchor, importance, mask)` with

    quadratic_penalty = 1/2 * sum over (masked) entries of importance * (params - anchor)^2,

whose gradient is importance * (params - anchor). Factor conventions, explicitly:

=============== ============================================== =================================================
name            value                                          gradient
=============== ============================================== =================================================
ewc_penalty     lambda/2 sum F (p - p*)^2    (EWC paper)        lambda F (p - p*)
online_ewc      same form; F accumulated with                   lambda F* (p - p*)
                `importance.accumulate(mode="ema", gamma)`
mas_penalty     lambda sum Omega (p - p*)^2  (MAS paper, no 1/2) 2 lambda Omega (p - p*)  (as the MAS reference)
si_penalty      c sum Omega (p - p*)^2  (SI, as mas_penalty)      2 c Omega (p - p*)
l2_penalty      lambda/2 sum (p - p*)^2      (importance = 1)    lambda (p - p*)
wpl_penalty     alpha/2 sum F (p - p*)^2     (WPL)               alpha F (p - p*)
=============== ============================================== =================================================

`mask` (None or a tree like params of booleans / boolean arrays broadcastable to each leaf) restricts the sum to a
subset of the parameters (e.g. the shared layers, or the edges of the current architecture); masked-out entries
contribute neither value nor gradient. Anchor and importance are arguments, never closed over, so one jitted step
serves every task.

`METHOD_PENALTIES` gives the continual runner's methods their penalty with one signature,
`(params, anchor, importance, strength)`, so the runner holds no factor of its own.

`add_consolidation_penalty(strength)` is the same gradient as an optax transformation: it adds
strength * importance * (params - anchor) (masked) to the incoming updates (put it before the optimiser in
`optax.chain`, so the penalty gradient is treated like the loss gradient, as the MAS reference does). The anchor,
importance and mask are passed as extra arguments of `update` (`optax.GradientTransformationExtraArgs`), not kept
in its state: they live in the caller's training state and checkpoint, and a jitted step that receives them as
arguments compiles once for all tasks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nas_forgetting.errors import ConfigError

PyTree = Any


def _check_like(tree: PyTree, params: PyTree, name: str, what: str) -> None:
  pdef, tdef = jax.tree.structure(params), jax.tree.structure(tree)
  if pdef != tdef:
    raise ConfigError(f"{what}: {name} tree {tdef} does not match the params tree {pdef}")
  for (path, p), t in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(tree)):
    try:
      jnp.broadcast_shapes(jnp.shape(t), jnp.shape(p))
    except ValueError as e:
      raise ConfigError(f"{what}: {name} at {jax.tree_util.keystr(path)} has shape {jnp.shape(t)}; expected one "
                        f"broadcastable to the parameter's {jnp.shape(p)}") from e


def _weights(params: PyTree, importance: PyTree | None, mask: PyTree | None, what: str) -> PyTree:
  """importance (ones if None) times mask (ones if None), a tree like params."""
  if importance is None:
    importance = jax.tree.map(lambda p: jnp.ones((), jnp.result_type(p)), params)
  else:
    _check_like(importance, params, "importance", what)
  if mask is None:
    return importance
  _check_like(mask, params, "mask", what)
  return jax.tree.map(lambda w, m: jnp.where(m, w, jnp.zeros((), jnp.result_type(w))), importance, mask)


def quadratic_penalty(params: PyTree, anchor: PyTree, importance: PyTree | None, *,
                      mask: PyTree | None = None) -> jax.Array:
  """1/2 sum importance * (params - anchor)^2 over the entries selected by `mask` (all if None); float32 scalar.

  importance=None means ones (a plain L2 pull towards the anchor). The gradient w.r.t. params is
  importance * (params - anchor) on masked-in entries; anchor and importance receive no gradient.
  """
  what = "quadratic_penalty"
  _check_like(anchor, params, "anchor", what)
  weights = jax.lax.stop_gradient(_weights(params, importance, mask, what))
  anchor = jax.lax.stop_gradient(anchor)
  terms = jax.tree.map(
      lambda p, a, w: jnp.sum(w.astype(jnp.float32) * jnp.square(p.astype(jnp.float32) - a.astype(jnp.float32))),
      params, anchor, weights)
  return 0.5 * sum(jax.tree.leaves(terms), jnp.float32(0.0))


def ewc_penalty(params: PyTree, anchor: PyTree, fisher: PyTree, strength: float | jax.Array, *,
                mask: PyTree | None = None) -> jax.Array:
  """EWC (Kirkpatrick et al. 2017): strength/2 * sum F (params - anchor)^2."""
  return strength * quadratic_penalty(params, anchor, fisher, mask=mask)


def online_ewc_penalty(params: PyTree, anchor: PyTree, running_fisher: PyTree, strength: float | jax.Array, *,
                       mask: PyTree | None = None) -> jax.Array:
  """Online EWC (Schwarz et al. 2018): strength/2 * sum F* (params - anchor)^2, with F* the running Fisher
  (`importance.accumulate(old, new, mode="ema", gamma=gamma)`) and anchor the latest task's solution."""
  return strength * quadratic_penalty(params, anchor, running_fisher, mask=mask)


def mas_penalty(params: PyTree, anchor: PyTree, omega: PyTree, strength: float | jax.Array, *,
                mask: PyTree | None = None) -> jax.Array:
  """MAS (Aljundi et al. 2018): strength * sum Omega (params - anchor)^2 (no 1/2: gradient 2 strength Omega d)."""
  return 2.0 * strength * quadratic_penalty(params, anchor, omega, mask=mask)


def si_penalty(params: PyTree, anchor: PyTree, omega: PyTree, strength: float | jax.Array, *,
               mask: PyTree | None = None) -> jax.Array:
  """SI (Zenke et al. 2017): c * sum Omega (params - anchor)^2, the convention of `mas_penalty` (no 1/2)."""
  return mas_penalty(params, anchor, omega, strength, mask=mask)


def l2_penalty(params: PyTree, anchor: PyTree, strength: float | jax.Array, *, mask: PyTree | None = None) -> jax.Array:
  """strength/2 * sum (params - anchor)^2 (importance = ones)."""
  return strength * quadratic_penalty(params, anchor, None, mask=mask)


def l2_penalty_on_support(params: PyTree, anchor: PyTree, support: PyTree, strength: float | jax.Array, *,
                          mask: PyTree | None = None) -> jax.Array:
  """`l2_penalty` on the entries where `support` (a tree like params) is nonzero: the L2 method's penalty in the
  slot form of `METHOD_PENALTIES` (its stored "importance" marks the pulled entries; an empty slot is all zero)."""
  selected = jax.tree.map(lambda s: s != 0, support)
  if mask is not None:
    selected = jax.tree.map(jnp.logical_and, selected, mask)
  return l2_penalty(params, anchor, strength, mask=selected)


def wpl_penalty(params: PyTree, anchor: PyTree, fisher: PyTree, alpha: float | jax.Array, *,
                mask: PyTree | None = None) -> jax.Array:
  """Weight-plasticity loss: alpha/2 * sum F (params - anchor)^2 over the parameters selected by `mask` (e.g. the
  current architecture's edges). `nas_forgetting.wpl` keeps F, the anchors and alpha(epoch)."""
  return alpha * quadratic_penalty(params, anchor, fisher, mask=mask)


# The continual methods' penalties, each `(params, anchor, importance, strength) -> value` (see the module docstring).
METHOD_PENALTIES = {"l2": l2_penalty_on_support, "ewc": ewc_penalty, "online_ewc": online_ewc_penalty,
                    "mas": mas_penalty, "mas_local": mas_penalty, "si": si_penalty}


# ----------------------------------------------------------------------------------------------------------------
# optax-style transform
# ----------------------------------------------------------------------------------------------------------------


class ConsolidationPenaltyState(NamedTuple):
  """Empty: anchor and importance are extra arguments of `update` (they belong to the caller's state)."""


def add_consolidation_penalty(strength: float | jax.Array) -> optax.GradientTransformationExtraArgs:
  """updates <- updates + strength * importance * (params - anchor), on masked-in entries.

  `update(updates, state, params, *, anchor, importance, mask=None, **extra)`: params is required; importance may
  be None (L2 towards the anchor). This equals the gradient of `strength * quadratic_penalty(...)`: use
  strength = lambda for EWC / online EWC / L2 / WPL (alpha) and strength = 2 * lambda for MAS (see the module
  docstring). Inside `optax.chain` the extra keyword arguments reach this transform; place it first so the
  following optimiser sees loss gradient + penalty gradient.
  """

  def init_fn(params):
    del params
    return ConsolidationPenaltyState()

  def update_fn(updates, state, params=None, *, anchor=None, importance=None, mask=None, **extra_args):
    del extra_args
    what = "add_consolidation_penalty"
    if params is None:
      raise ConfigError(f"{what}: update needs params (the current parameters)")
    if anchor is None:
      raise ConfigError(f"{what}: update needs anchor=... (the consolidated parameters) as an extra argument")
    _check_like(anchor, params, "anchor", what)
    weights = _weights(params, importance, mask, what)
    new = jax.tree.map(
        lambda u, p, a, w: (u + strength * w * (p - a)).astype(jnp.result_type(u)),
        updates, params, anchor, weights)
    return new, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
