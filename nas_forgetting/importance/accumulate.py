"""Accumulating importance across tasks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nas_forgetting.errors import ConfigError

PyTree = Any

MODES = ("replace", "sum", "ema")


def accumulate(old: PyTree | None, new: PyTree, *, mode: str = "replace", gamma: float = 1.0) -> PyTree:
  """Combines the importance kept so far (`old`, None before the first task) with a new task's (`new`).

  * ``replace``: new (EWC with a single previous task, plain MAS).
  * ``sum``: old + new (MAS Omega accumulation; EWC with one penalty per task is the same quadratic form).
  * ``ema``: gamma * old + new, the online-EWC running Fisher of Schwarz et al. (2018), F* <- gamma F* + F_t
    (gamma = 1 is ``sum``, gamma = 0 is ``replace``). Note it is a *decayed sum*, not the convex average
    gamma * old + (1 - gamma) * new: that is the form the online-EWC results are reported with.

  ``recompute_all`` (MAS_sequence: recompute Omega on every earlier task's data with its head and sum) needs the
  data and heads, so the caller does it with ``sum`` over fresh importances.
  Works under jit (gamma may be a traced scalar); the trees must have the same structure and shapes.
  """
  if mode not in MODES:
    raise ConfigError(f"accumulate: unknown mode {mode!r}; expected one of {MODES} (recompute_all is done by the "
                      "caller: sum fresh importances over the earlier tasks)")
  if old is None or mode == "replace":
    return new
  old_def, new_def = jax.tree.structure(old), jax.tree.structure(new)
  if old_def != new_def:
    raise ConfigError(f"accumulate: the old importance's tree {old_def} does not match the new one's {new_def}")
  for (path, o), nw in zip(jax.tree_util.tree_leaves_with_path(old), jax.tree.leaves(new)):
    if jnp.shape(o) != jnp.shape(nw):
      raise ConfigError(f"accumulate: importance at {jax.tree_util.keystr(path)} has shape {jnp.shape(o)} before and "
                        f"{jnp.shape(nw)} now")
  if mode == "sum":
    return jax.tree.map(lambda o, nw: o + nw, old, new)
  if not isinstance(gamma, jax.Array) and not 0.0 <= float(gamma) <= 1.0:
    raise ConfigError(f"accumulate: gamma must lie in [0, 1]; got {gamma!r}")
  return jax.tree.map(lambda o, nw: gamma * o + nw, old, new)
