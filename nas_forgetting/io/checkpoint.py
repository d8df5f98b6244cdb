"""Checkpoints of whole training states (params, optimizer states, importances, anchors, steps, PRNG keys).

A thin layer over orbax-checkpoint's `CheckpointManager` with `StandardSave`/`StandardRestore` that adds:
  * leaves orbax cannot store as such: typed PRNG keys (stored as `jax.random.key_data`, re-wrapped with the
    implementation of the matching leaf of `like`), Python `int`/`float`/`bool` and numpy scalars (stored as 0-d
    arrays, given back as the type found in `like`);
  * a strict check of the stored tree against `like` before reading (orbax would silently cast dtypes and cut or
    pad shapes): any missing or extra leaf, other shape or other dtype raises `CheckpointError`;
  * errors that name the checkpoint directory (missing folder, no checkpoint, unknown step, unreadable files);
  * synchronous saves by default (the files are complete when `save` returns); `asynchronous=True` writes in the
    background and `wait()` blocks until it is done.

Restored trees have exactly the structure of `like` (NamedTuples, optax states, flax structs stay what they are).
Saving a step that already exists replaces it.

Several processes (`nas_forgetting.distributed`): every process calls `save` and `restore` with the same tree, as
orbax's multi-process checkpointing requires (its saves and restores synchronise the processes), on a directory
every process sees. An array sharded over the devices of several processes is written by orbax shard by shard,
each process its own shards; an array a process holds whole (on its own devices: the same values on every process)
and every host value are stored as numpy arrays, which orbax writes from process 0 only. Such leaves are restored
from the numpy arrays and placed as the matching leaf of `like` is.
"""

import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from nas_forgetting import distributed
from nas_forgetting.errors import CheckpointError
from nas_forgetting.io._steps import as_step

_PYTHON_SCALARS = (bool, int, float)


def _is_prng_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _path_name(path) -> str:
  parts = []
  for entry in path:
    if isinstance(entry, jax.tree_util.DictKey):
      parts.append(str(entry.key))
    elif isinstance(entry, jax.tree_util.GetAttrKey):
      parts.append(entry.name)
    elif isinstance(entry, jax.tree_util.SequenceKey):
      parts.append(str(entry.idx))
    elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
      parts.append(str(entry.key))
    else:
      parts.append(str(entry))
  return "/".join(parts) or "<root>"


def _storable_leaf(path, x: Any) -> Any:
  """The leaf as orbax stores it: jax arrays as they are, everything else as a numpy array."""
  if _is_prng_key(x):
    return _storable_leaf(path, jax.random.key_data(x))
  if isinstance(x, jax.ShapeDtypeStruct):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      raise CheckpointError(f"leaf {_path_name(path)}: an abstract PRNG key cannot be a restore target; pass a key")
    sharding = x.sharding if x.sharding is not None else jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  if isinstance(x, jax.Array):
    # several processes: a whole array of this process is a host value (process 0 writes it), a global one is
    # written shard by shard by orbax
    return np.asarray(x) if distributed.is_distributed() and x.is_fully_addressable else x
  if isinstance(x, (*_PYTHON_SCALARS, np.generic, np.ndarray)):
    array = np.asarray(x)
    if array.dtype == object:
      raise CheckpointError(f"leaf {_path_name(path)} = {x!r} cannot be stored as a numeric array")
    return array
  raise CheckpointError(f"leaf {_path_name(path)} is a {type(x).__name__}; expected an array, a number or a PRNG key")


def _to_storable(tree: Any) -> Any:
  return jax.tree_util.tree_map_with_path(_storable_leaf, tree)


def _from_storable(like_leaf: Any, stored: Any) -> Any:
  """The restored leaf in the type of the `like` leaf."""
  if _is_prng_key(like_leaf):
    return jax.random.wrap_key_data(jnp.asarray(stored), impl=jax.random.key_impl(like_leaf))
  if isinstance(like_leaf, _PYTHON_SCALARS):
    return type(like_leaf)(np.asarray(stored).item())
  if isinstance(like_leaf, np.generic):
    return like_leaf.dtype.type(np.asarray(stored)[()])
  if isinstance(like_leaf, np.ndarray):
    return np.asarray(stored)
  if isinstance(like_leaf, jax.Array) and not isinstance(stored, jax.Array):  # stored as a host value
    return jax.device_put(stored, like_leaf.sharding)
  return stored


def _signature(x: Any) -> tuple[tuple[int, ...], np.dtype]:
  return tuple(x.shape), np.dtype(x.dtype)


class Checkpointer:
  """Saves and restores pytrees under `directory/<step>/`, keeping the newest `max_to_keep` steps.

  Reading methods never create `directory`; the first `save` does.
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, asynchronous: bool = False):
    if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1:
      raise CheckpointError(f"max_to_keep={max_to_keep!r} for {directory}; expected an integer >= 1")
    self.directory = pathlib.Path(directory).expanduser().absolute()
    self.max_to_keep = max_to_keep
    self.asynchronous = asynchronous
    self._manager: ocp.CheckpointManager | None = None

  def _get_manager(self, *, create: bool) -> ocp.CheckpointManager | None:
    if self._manager is None:
      if self.directory.exists() and not self.directory.is_dir():
        raise CheckpointError(f"checkpoint directory {self.directory} is a file; expected a folder")
      if not create and not self.directory.is_dir():
        return None
      options = ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True,
                                             enable_async_checkpointing=self.asynchronous)
      try:
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_handlers=ocp.StandardCheckpointHandler())
      except Exception as e:  # pylint: disable=broad-except
        raise CheckpointError(f"cannot open checkpoint directory {self.directory}: {type(e).__name__}: {e}") from e
    return self._manager

  # --- steps ---------------------------------------------------------------------------------------------------
  def all_steps(self) -> list[int]:
    """The saved steps, ascending ([] when the directory does not exist)."""
    manager = self._get_manager(create=False)
    if manager is None:
      return []
    manager.reload()
    return sorted(int(s) for s in manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest saved step, or None."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  # --- save ----------------------------------------------------------------------------------------------------
  def save(self, step: int, tree: Any) -> None:
    """Saves `tree` as checkpoint `step` (replacing an existing one), then drops all but the newest `max_to_keep`.

    Synchronous unless the Checkpointer was made with `asynchronous=True` (then call `wait()`).
    """
    try:
      number = as_step(step)
    except TypeError:
      number = -1
    if number < 0:
      raise CheckpointError(f"step {step!r} for {self.directory}; expected a non-negative integer")
    step = number
    storable = _to_storable(tree)
    manager = self._get_manager(create=True)
    try:
      manager.wait_until_finished()
      manager.reload()
      if step in manager.all_steps():
        manager.delete(step)
      saved = manager.save(step, args=ocp.args.StandardSave(storable), force=True)
      if not self.asynchronous:
        manager.wait_until_finished()
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"cannot save step {step} to {self.directory}: {type(e).__name__}: {e}") from e
    if not saved:
      raise CheckpointError(f"checkpoint step {step} was not saved to {self.directory}")

  def wait(self) -> None:
    """Blocks until every save has been written to disk."""
    if self._manager is not None:
      try:
        self._manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        raise CheckpointError(f"a save to {self.directory} failed: {type(e).__name__}: {e}") from e

  # --- restore -------------------------------------------------------------------------------------------------
  def _check_matches(self, manager: ocp.CheckpointManager, step: int, target: Any) -> None:
    try:
      metadata = manager.item_metadata(step)
      stored_tree = metadata.tree if hasattr(metadata, "tree") else metadata
      if stored_tree is None:
        raise ValueError("no metadata")
      stored = {_path_name(p): _signature(x) for p, x in jax.tree_util.tree_flatten_with_path(stored_tree)[0]}
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"checkpoint step {step} in {self.directory} is unreadable (corrupt or not written by "
                            f"this library): {type(e).__name__}: {e}") from e
    wanted = {_path_name(p): _signature(x) for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
    problems = [f"{name}: missing from the checkpoint" for name in wanted if name not in stored]
    problems += [f"{name}: in the checkpoint but not in the target" for name in stored if name not in wanted]
    for name in wanted.keys() & stored.keys():
      (want_shape, want_dtype), (have_shape, have_dtype) = wanted[name], stored[name]
      if want_shape != have_shape or want_dtype != have_dtype:
        problems.append(f"{name}: stored {have_dtype}{list(have_shape)}, target {want_dtype}{list(want_shape)}")
    if problems:
      shown = "; ".join(sorted(problems)[:8]) + (f"; ... ({len(problems)} in all)" if len(problems) > 8 else "")
      raise CheckpointError(f"checkpoint step {step} in {self.directory} does not match the target tree: {shown}")

  def restore(self, step: int | None, like: Any) -> Any:
    """Restores checkpoint `step` (None: the newest) into the structure, shapes and dtypes of `like`.

    Args:
      step: the step to read, or None for the latest.
      like: a pytree shaped like the saved one (e.g. a freshly initialised state). Its jax arrays give the
        shardings of the restored arrays; its numpy arrays, Python numbers and PRNG keys give those types back.

    Returns:
      The restored tree, with the tree structure of `like`.
    """
    manager = self._get_manager(create=False)
    if manager is None:
      raise CheckpointError(f"checkpoint directory {self.directory} does not exist")
    self.wait()
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise CheckpointError(f"checkpoint directory {self.directory} holds no checkpoint")
      step = steps[-1]
    elif int(step) not in steps:
      raise CheckpointError(f"checkpoint directory {self.directory} has no step {step}; steps present: {steps}")
    step = int(step)
    target = _to_storable(like)
    self._check_matches(manager, step, target)
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"cannot restore step {step} from {self.directory}: {type(e).__name__}: {e}") from e
    like_leaves, treedef = jax.tree_util.tree_flatten(like)
    restored_leaves = jax.tree_util.tree_leaves(restored)
    if len(restored_leaves) != len(like_leaves):
      raise CheckpointError(f"checkpoint step {step} in {self.directory}: restored {len(restored_leaves)} leaves, "
                            f"target has {len(like_leaves)}")
    return jax.tree_util.tree_unflatten(treedef, [_from_storable(l, r) for l, r in zip(like_leaves, restored_leaves)])

  # --- lifetime ------------------------------------------------------------------------------------------------
  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    if self._manager is not None:
      self.wait()
      self._manager.close()
      self._manager = None

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
