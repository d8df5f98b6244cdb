"""Step numbers given as Python, numpy or jax integers."""

import operator
from typing import Any


def as_step(value: Any, what: str = "step") -> int:
  """`value` as a Python int (int, numpy integer, 0-d integer array); TypeError naming `what` otherwise."""
  try:
    if isinstance(value, bool):
      raise TypeError
    return operator.index(value)
  except TypeError:
    raise TypeError(f"{what} {value!r}; expected an integer") from None
