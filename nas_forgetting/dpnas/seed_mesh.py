"""Seeds over devices: a one-axis device mesh, arrays placed on it, results gathered from it.

Seeds are spread over a one-axis device mesh (`jax.shard_map`; the evaluator pads seeds to a multiple of the number
of devices); the seeds of one device are vmapped on accelerators and mapped one after another on the CPU
(`over_seeds`). The mesh may span several processes after `jax.distributed.initialize`: data and seeds are placed
and results gathered by `nas_forgetting.distributed` (`place`, `to_host`), so every process gets every seed's
result.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nas_forgetting import distributed
from nas_forgetting.stacked import over_leading_axis

AXIS = "seeds"


def default_mesh() -> Mesh:
  """A one-axis mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def shard_jit(fn, mesh: Mesh, in_specs, out_specs=P(AXIS)):
  """`fn` jitted as a `shard_map` over `mesh` (per-seed arguments and results split along `AXIS`)."""
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False))


def replicate(x: np.ndarray, mesh: Mesh) -> jax.Array:
  return distributed.place(np.asarray(x), NamedSharding(mesh, P()))


def shard_seeds(seeds: np.ndarray, mesh: Mesh) -> jax.Array:
  return distributed.place(seeds, NamedSharding(mesh, P(AXIS)))


def gather(x: jax.Array) -> np.ndarray:
  return np.asarray(distributed.to_host(x))


def over_seeds(fn, in_axes: tuple, mode: str):
  """`fn` applied to every seed of a device's shard: vmapped, or one seed after another (`lax.map`).

  XLA:CPU turns convolutions vmapped over per-seed weights into grouped convolutions, which it runs far slower
  than the same convolutions one seed at a time; accelerators prefer the vmapped form.
  """
  return over_leading_axis(fn, in_axes, 0 if mode == "vmap" else 1)
