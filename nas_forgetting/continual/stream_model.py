"""The model of a task stream and the compiled pieces the runs of one process share.

`model_for` builds (once per model config and head layout) the Flax module with its apply functions; `cached` keeps
compiled pieces (optimiser, epoch and evaluation functions) keyed on the config values they depend on, so that a
relaunch, a sweep or the next method with equal settings reuses them instead of compiling again; `task_arrays` puts
a split of some tasks on the device, padded to a fixed size so that one compilation serves every task.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nas_forgetting.continual import steps
from nas_forgetting.data.tasks import Task
from nas_forgetting.errors import ConfigError
from nas_forgetting.models import build_model

PyTree = Any


def _pad_rows(array: np.ndarray, size: int) -> np.ndarray:
  pad = size - array.shape[0]
  return np.concatenate([array, np.zeros((pad,) + array.shape[1:], array.dtype)]) if pad else array


def task_arrays(tasks: Sequence[Task], indices: Sequence[int], split: str, size: int) -> tuple[steps.TaskData, int]:
  """The union of `split` of tasks[indices], padded to `size` rows, and its real size."""
  images = np.concatenate([getattr(tasks[t], split).images for t in indices])
  labels = np.concatenate([getattr(tasks[t], split).labels for t in indices])
  heads = np.concatenate([np.full(len(getattr(tasks[t], split).labels), tasks[t].head, np.int32) for t in indices])
  outs = np.concatenate([np.full(len(getattr(tasks[t], split).labels), tasks[t].num_outputs, np.int32)
                         for t in indices])
  n = len(labels)
  data = steps.TaskData(*(jnp.asarray(_pad_rows(a, size)) for a in (images, labels.astype(np.int32), heads, outs)))
  return data, n


# Compiled pieces (model functions, optimiser, jitted steps) shared by the runs of one process whose settings are
# equal, so that a relaunch (or the next test) reuses them instead of compiling again. Keys are built from the
# config values the piece depends on; the cache keeps the most recent few.
_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 32


def cached(key: tuple, build):
  if key in _CACHE:
    _CACHE.move_to_end(key)
    return _CACHE[key]
  value = build()
  _CACHE[key] = value
  while len(_CACHE) > _CACHE_SIZE:
    _CACHE.popitem(last=False)
  return value


def model_for(config, tasks: Sequence[Task]) -> "StreamModel":
  """The (cached) `StreamModel` of `config.model` for this stream's heads."""
  num_heads = len(tasks) if config.stream.scenario == "task" else 1
  num_outputs = max(t.num_outputs for t in tasks)
  heads = sorted({t.head for t in tasks})
  if heads[-1] >= num_heads:
    raise ConfigError(f"task heads {heads} do not fit the model's {num_heads} heads (scenario "
                      f"{config.stream.scenario!r})")
  key = ("model", config.model.to_json(sort_keys=True), num_outputs, num_heads)
  return cached(key, lambda: StreamModel(config.model, num_outputs, num_heads))


class StreamModel:
  """The Flax module and its apply functions (training/evaluation and importance)."""

  def __init__(self, model_config, num_outputs: int, num_heads: int):
    self.num_heads = num_heads
    self.num_outputs = num_outputs
    self.key = (model_config.to_json(sort_keys=True), num_outputs, num_heads)
    self.module = build_model(model_config, num_outputs=self.num_outputs, num_heads=num_heads)
    module = self.module

    def apply(variables, x, heads, train, rng):
      if train:
        out, updates = module.apply(variables, x, heads, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": rng})
        return out, updates.get("batch_stats", variables["batch_stats"])
      return module.apply(variables, x, heads, train=False), variables["batch_stats"]

    def importance_apply(tree, x):
      """Logits of head `tree['head']` (a float leaf, so the importance code sees one pytree of floats)."""
      variables = {"params": tree["params"], "batch_stats": tree["batch_stats"]}
      head = tree["head"].astype(jnp.int32)
      logits = module.apply(variables, x, head, train=False)
      n = jnp.broadcast_to(tree["num_outputs"].astype(jnp.int32), (x.shape[0],))
      return steps.mask_logits(logits, n)

    self.apply = apply
    self.importance_apply = importance_apply

  def init(self, rng, example: jax.Array) -> tuple[PyTree, PyTree]:
    """(params, batch_stats) of a fresh model (batch_stats = {} without BatchNorm)."""
    variables = self.module.init({"params": rng, "dropout": rng}, example, 0)
    return variables["params"], variables.get("batch_stats", {})
