"""A function applied to every entry of arguments stacked on a leading axis (DP-NAS seeds, continual sweep members)."""

from __future__ import annotations

from typing import Callable, Sequence

import jax


def over_leading_axis(fn: Callable, in_axes: Sequence[int | None], at_once: int) -> Callable:
  """`fn` applied to every entry of the leading axis of the arguments whose `in_axes` entry is 0 (the others, None,
  are shared): `at_once` entries at a time (`jax.lax.map` with that batch size: the groups one after another, each
  vmapped), or all at once (`jax.vmap`) with 0. The results are stacked on the leading axis in either case."""
  if at_once == 0:
    return jax.vmap(fn, in_axes=tuple(in_axes))

  def mapped(*args):
    def one(entries):
      it = iter(entries)
      return fn(*(next(it) if axis == 0 else a for a, axis in zip(args, in_axes)))
    stacked = tuple(a for a, axis in zip(args, in_axes) if axis == 0)
    return jax.lax.map(one, stacked, batch_size=None if at_once == 1 else at_once)
  return mapped
