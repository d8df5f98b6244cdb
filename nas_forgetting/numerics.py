"""Finiteness checks: computed inside compiled steps, read on the host once per epoch (never a sync per step).

Inside a jitted step or scan, `all_finite(tree)` gives a traced boolean (every leaf finite); carry it, or the
per-step values themselves, out of the compiled function. After the epoch, on the host, `check_finite` raises a
`DivergenceError` naming the first non-finite quantity, the step at which it went bad and where in the run
(task, epoch, architecture), so a diverged run stops with a clear message instead of finishing with numbers.
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nas_forgetting.errors import DivergenceError


def all_finite(tree: Any) -> jax.Array:
  """A traced scalar bool: True when every floating-point leaf of `tree` is finite (integer leaves are ignored)."""
  flags = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
           if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def check_finite(values: Mapping[str, Any], *, context: str, first_step: int | None = None) -> None:
  """Raises `DivergenceError` if any value is NaN or infinite.

  Args:
    values: quantity name -> a scalar, or an array whose leading axis is the step (e.g. the per-step losses
      a scanned epoch returns). Booleans are read as "finite" flags (False = not finite).
    context: where the values come from, e.g. "task 1, epoch 3" or "architecture [C(8,3,1,1,1), SM(10)]".
    first_step: the step number of index 0 of the leading axis; when given, the message names the step.
  """
  for name, value in values.items():
    array = np.asarray(value)
    bad = ~array if array.dtype == bool else ~np.isfinite(array.astype(np.float64, copy=False))
    if not bad.any():
      continue
    where = context
    if array.ndim >= 1:
      index = int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))
      step = index if first_step is None else first_step + index
      where = f"step {step}, {context}" if first_step is not None else f"index {step}, {context}"
      shown = array.reshape(array.shape[0], -1)[index]
      shown = shown[bad.reshape(bad.shape[0], -1)[index]][0]
    else:
      shown = array
    what = "not finite" if array.dtype == bool else f"{shown!s}"
    raise DivergenceError(f"the run diverged: {name} is {what} at {where}; "
                          "lower the learning rate or penalty strength, or check the input data")
