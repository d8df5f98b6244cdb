"""JAX's multi-process runtime: joining it, and moving arrays between hosts and devices of every process.

`initialize(...)` joins the processes of one run (`jax.distributed.initialize`, before any other JAX call); after it
`jax.devices()` lists the devices of every process and each process drives its own (`jax.local_devices()`). Every
process runs the same program; arrays sharded over the global devices (`place`) hold on each process only its
shards, and `to_host` gathers them back (all processes take part). Without `initialize`, a single process, every
helper here is the plain single-process operation.

`is_writer()` says whether this process writes the workdir (process 0 only); the io modules consult it, so an
experiment's code is the same on every process.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from nas_forgetting.errors import ConfigError

# Read when a flag leaves the value unset (JAX itself reads JAX_COORDINATOR_ADDRESS too); what is still unset
# after them comes from JAX's own cluster detection (SLURM, Open MPI, Kubernetes, Cloud TPU).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
  text = os.environ.get(name, "").strip()
  if not text:
    return None
  try:
    return int(text)
  except ValueError:
    raise ConfigError(f"environment variable {name}={text!r} is not an integer") from None


def _cluster_detected() -> str | None:
  """The name of the cluster environment JAX detects (e.g. 'SlurmCluster'), or None."""
  from jax._src import clusters  # pylint: disable=import-outside-toplevel
  env = next((e for e in clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
              if not e.opt_in_only_method and e.is_env_present()), None)
  return None if env is None else env.__name__


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins this process to the run's others through `jax.distributed.initialize`; call it before any other JAX call.

  Each value left None comes from the environment (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
  `JAX_PROCESS_ID`), then from JAX's detection of the cluster (SLURM, Open MPI, Kubernetes, Cloud TPU). CPU
  devices exchange data over gloo. Raises ConfigError (one line) when a value is missing and no cluster is
  detected, when `process_id` is not in [0, num_processes), and on every process when the runtime joined a number
  of processes other than the `num_processes` of any process.
  """
  address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  count = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
  index = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
  missing = [name for name, value in (("coordinator address", address), ("number of processes", count),
                                      ("process id", index)) if value is None]
  if missing and _cluster_detected() is None:
    raise ConfigError(f"distributed launch: no {', '.join(missing)} given and no cluster detected; pass "
                           f"--coordinator_address, --num_processes and --process_id (or set {ENV_COORDINATOR}, "
                           f"{ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}), or launch under SLURM / Open MPI")
  if count is not None and count < 1:
    raise ConfigError(f"distributed launch: number of processes {count}; expected >= 1")
  if count is not None and index is not None and not 0 <= index < count:
    raise ConfigError(f"distributed launch: process id {index} is not in [0, {count}) ({count} processes)")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=index)
  except (RuntimeError, ValueError, TypeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(f"distributed launch failed: {first}") from e
  # every process compares every process's expected count with the count that joined, so all fail together
  expected = multihost_utils.process_allgather(np.asarray(-1 if count is None else count, np.int32))
  wrong = {k: int(n) for k, n in enumerate(np.ravel(expected)) if n not in (-1, jax.process_count())}
  if wrong:
    raise ConfigError(f"distributed launch: {jax.process_count()} processes joined, but "
                      + ", ".join(f"process {k} was launched for {n}" for k, n in wrong.items()))


def is_distributed() -> bool:
  """Whether this process has joined a run of several processes."""
  return jax.distributed.is_initialized() and jax.process_count() > 1


def process_index() -> int:
  """This process's index (0 without a distributed runtime; never starts a JAX backend by itself)."""
  return jax.process_index() if jax.distributed.is_initialized() else 0


def is_writer() -> bool:
  """Whether this process writes the workdir: process 0 of a distributed run, or the only process."""
  return process_index() == 0


def all_ok(ok: bool) -> bool:
  """Whether `ok` holds on every process (every process must call it; single process: `ok`)."""
  if not is_distributed():
    return bool(ok)
  return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(ok), np.int32))))


def same_as_process_0(text: str) -> bool:
  """Whether `text` equals process 0's (every process must call it; single process: True)."""
  if not is_distributed():
    return True
  digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
  return bool(np.array_equal(multihost_utils.broadcast_one_to_all(digest), digest))


def _put_leaf(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(_put_leaf(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """`tree`'s leaves (host or device arrays, PRNG keys; the same values on every process) laid out as `sharding`,
  which may span the devices of several processes (each process then holds only its own shards)."""
  return jax.tree.map(lambda x: _put_leaf(x, sharding), tree)


def _host_leaf(x: Any) -> Any:
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return x
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(_host_leaf(jax.random.key_data(x)), impl=jax.random.key_impl(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def to_host(tree: Any) -> Any:
  """`tree` with every array that spans several processes gathered whole onto this host (a numpy array; typed PRNG
  keys stay keys); arrays this process holds entirely stay as they are. Every process must call it."""
  return jax.tree.map(_host_leaf, tree)
