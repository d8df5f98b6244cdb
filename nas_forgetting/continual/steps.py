"""Jitted pieces of the continual runner: one training epoch, whole-split evaluation, the consolidation penalty.

Everything a task changes is an argument, never closed over: the task's (padded) data, its batch-index matrix, the
head of every example, the anchors, the importance and the strength. So one compilation of the epoch function
serves every task of a run (`chex.assert_max_traces` in the tests proves it).

Shapes that stay fixed across tasks:
- training data: every task's split is padded to the largest task's size (joint training: to the size of the union
  of all tasks); padded rows are never indexed because the batch-index matrix only holds real examples;
- batch-index matrix (max_batches, batch_size) with a validity flag per row: a task with fewer batches than the
  largest has its extra rows flagged invalid, and those scan iterations leave the state untouched (`lax.cond`);
- consolidation slots: anchors and importance carry a leading axis of `num_slots` (EWC keeps one (anchor, Fisher)
  pair per earlier task, the other methods one); an empty slot has zero importance and adds nothing.

Penalty: value = sum over slots of penalty_fn(params, anchor_s, importance_s, strength), where `penalty_fn` is the
method's penalty from `nas_forgetting.penalties` (`penalties.METHOD_PENALTIES`: `ewc_penalty`, `mas_penalty`, ...):
one definition of every factor convention, shared with everything else that penalises.

Divergence: the epoch also returns, per step, the loss, the penalty and the gradient and update norms, and whether
the parameters are finite at its end; the runner reads them once per epoch (`nas_forgetting.numerics`) and stops
with a `DivergenceError` naming the quantity, the step and the task. No host synchronisation inside the epoch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from nas_forgetting import numerics
from nas_forgetting.data import batching

PyTree = Any
NEG_INF = -1e9


class Carry(NamedTuple):
  """What an epoch updates: parameters, BatchNorm statistics, optimiser state, SI path integral."""
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  si_path: PyTree


class TaskData(NamedTuple):
  """Examples of one training set or evaluation split, padded to a common size (device arrays)."""
  images: jax.Array  # (N, H, W, C) float32
  labels: jax.Array  # (N,) int32
  heads: jax.Array  # (N,) int32: the output head of each example
  num_outputs: jax.Array  # (N,) int32: valid logits of each example's head (the rest are masked)


def mask_logits(logits: jax.Array, num_outputs: jax.Array) -> jax.Array:
  """Logits beyond each example's `num_outputs` set to -1e9 (heads narrower than the widest one)."""
  valid = jnp.arange(logits.shape[-1])[None, :] < num_outputs[:, None]
  return jnp.where(valid, logits, NEG_INF)


PenaltyFn = Callable[[PyTree, PyTree, PyTree, jax.Array], jax.Array]
STEP_QUANTITIES = ("loss", "penalty", "grad_norm", "update_norm")  # per-step values an epoch returns


def consolidation_penalty(penalty_fn: PenaltyFn, params: PyTree, anchors: PyTree, importance: PyTree,
                          strength: jax.Array) -> jax.Array:
  """sum over slots s of penalty_fn(params, anchor_s, importance_s, strength) (anchors/importance: leading slot
  axis; an empty slot has zero importance and adds nothing). The slots are summed one after the other (the slot
  count is static): `vmap` over the slots made each training step's penalty and its gradient about 8x slower on
  XLA's CPU backend (MLP 784-256-256-10, 4 slots: 1.1 s vs 0.14 s per epoch of 63 steps)."""
  num_slots = jax.tree.leaves(anchors)[0].shape[0]
  total = jnp.float32(0.0)
  for s in range(num_slots):
    total = total + penalty_fn(params, jax.tree.map(lambda a: a[s], anchors), jax.tree.map(lambda i: i[s], importance),
                               strength)
  return total


def _global_norm(tree: PyTree) -> jax.Array:
  return optax.tree.norm(tree)


def make_epoch_fn(apply_fn: Callable, tx: optax.GradientTransformation, *, penalty_fn: PenaltyFn | None,
                  use_si: bool, max_traces: int | None = None) -> Callable:
  """A jitted `epoch(carry, data, batch_idx, batch_valid, rng, anchors, importance, strength)
  -> (carry, metrics, checks)`.

  `apply_fn(variables, x, heads, train, rng) -> (logits, new_batch_stats)`. `penalty_fn(params, anchor, importance,
  strength)`: the method's penalty from `nas_forgetting.penalties` (None: no penalty, finetune / joint).
  `batch_idx` (max_batches, batch_size) int32 rows of example indices, `batch_valid` (max_batches,) bool. Metrics are
  means over the valid batches: `loss` (cross-entropy), `penalty` (the consolidation term as added to the loss),
  `grad_norm` (of the total gradient), `update_norm`, and `param_norm` at the end of the epoch. `checks`: the
  per-step values of `STEP_QUANTITIES` (max_batches,) (0 on invalid rows) and `params_finite` (a bool) for the
  host's divergence check. `max_traces` wraps the Python function in `chex.assert_max_traces` (tests).
  """

  def epoch(carry: Carry, data: TaskData, batch_idx, batch_valid, rng, anchors, importance, strength):
    def task_loss(params, batch_stats, idx, key):
      x = data.images[idx]
      logits, new_stats = apply_fn({"params": params, "batch_stats": batch_stats}, x, data.heads[idx], True, key)
      logits = mask_logits(logits, data.num_outputs[idx])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, data.labels[idx]).mean()
      return loss, new_stats

    def total_penalty(params):
      if penalty_fn is None:
        return jnp.float32(0.0)
      return consolidation_penalty(penalty_fn, params, anchors, importance, strength)

    def step(c: Carry, inputs):
      idx, valid, key = inputs

      def do(c: Carry):
        (loss, new_stats), g_task = jax.value_and_grad(task_loss, has_aux=True)(c.params, c.batch_stats, idx, key)
        pen, g_pen = jax.value_and_grad(total_penalty)(c.params)
        grads = jax.tree.map(jnp.add, g_task, g_pen)
        updates, opt_state = tx.update(grads, c.opt_state, c.params)
        params = optax.apply_updates(c.params, updates)
        si_path = c.si_path
        if use_si:  # Zenke et al.: path integral of -g_task * delta theta
          si_path = jax.tree.map(lambda w, g, new, old: w - g * (new - old), si_path, g_task, params, c.params)
        m = jnp.stack([loss, pen, _global_norm(grads), _global_norm(updates), jnp.float32(1.0)])
        return Carry(params, new_stats, opt_state, si_path), m

      def skip(c: Carry):
        return c, jnp.zeros((5,), jnp.float32)

      return jax.lax.cond(valid, do, skip, c)

    keys = jax.random.split(rng, batch_idx.shape[0])
    carry, ms = jax.lax.scan(step, carry, (batch_idx, batch_valid, keys))
    count = jnp.maximum(ms[:, 4].sum(), 1.0)
    sums = ms[:, :4].sum(axis=0) / count
    metrics = {"loss": sums[0], "penalty": sums[1], "grad_norm": sums[2], "update_norm": sums[3],
               "param_norm": _global_norm(carry.params)}
    checks = {name: ms[:, i] for i, name in enumerate(STEP_QUANTITIES)}
    checks["params_finite"] = numerics.all_finite(carry.params)
    return carry, metrics, checks

  fn = epoch if max_traces is None else chex.assert_max_traces(epoch, n=max_traces)
  return jax.jit(fn)


def make_eval_fn(apply_fn: Callable, eval_batch_size: int) -> Callable:
  """A jitted `accuracy(params, batch_stats, data, n) -> float32`: the fraction of the first `n` examples of
  `data` (padded to a multiple of `eval_batch_size`) whose arg-max logit (within the head's valid outputs)
  equals the label. Evaluation mode: BatchNorm running statistics, no dropout."""

  def accuracy(params, batch_stats, data: TaskData, n):
    num = data.labels.shape[0]
    chunks = jax.tree.map(lambda a: a.reshape((num // eval_batch_size, eval_batch_size) + a.shape[1:]), data)
    index = jnp.arange(num).reshape(num // eval_batch_size, eval_batch_size)

    def one(args):
      d, i = args
      logits, _ = apply_fn({"params": params, "batch_stats": batch_stats}, d.images, d.heads, False, None)
      pred = jnp.argmax(mask_logits(logits, d.num_outputs), axis=-1)
      return jnp.sum((pred == d.labels) & (i < n))

    correct = jax.lax.map(one, (chunks, index))
    return jnp.sum(correct) / n

  return jax.jit(accuracy)


@jax.jit
def epoch_keys(rng: jax.Array, task: jax.Array, epoch: jax.Array) -> tuple[jax.Array, jax.Array]:
  key = jax.random.fold_in(jax.random.fold_in(rng, task), epoch)
  k_batches, k_steps = jax.random.split(key)
  return k_batches, k_steps


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def padded_batch_indices(key: jax.Array, n: int, batch_size: int, max_batches: int) -> tuple[jax.Array, jax.Array]:
  idx = batching.epoch_batch_indices(key, n, batch_size)
  rows = idx.shape[0]
  idx = jnp.concatenate([idx, jnp.zeros((max_batches - rows, batch_size), jnp.int32)])
  return idx, jnp.arange(max_batches) < rows
