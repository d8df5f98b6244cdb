"""Train one method over a task stream: epochs under jit, evaluation after each task, consolidation, checkpoints.

`run_method(config, tasks, method, workdir) -> dict` trains `method` on `tasks` (a list of `data.tasks.Task`) and
writes into `workdir`: `metrics.jsonl` + `tensorboard/` (per epoch: train/loss, train/penalty, train/grad_norm,
train/update_norm, train/param_norm; per task: eval/task_j/accuracy, eval/avg_accuracy_seen, importance/*),
`accuracy_matrix.csv`, `summary.json`, `per_task.csv` and the plots, and `checkpoints/` (per epoch or per task:
`checkpoint.every`).

Accuracy matrix: R[i][j] = test accuracy on task j after training tasks 0..i. After each task EVERY task is
evaluated, the unseen ones too (j > i), so R is full and forward transfer is available; the metrics of
`continual.metrics` read what they need. `baseline[j]` is the untrained model's accuracy on task j.

Methods (strength per method in `config.strength`, or given as '<method>@<strength>', e.g. 'ewc@1e4'):
- finetune: no penalty. joint: no penalty, and task t trains on the union of tasks 0..t (upper bound).
- l2: importance 1, anchor = parameters after the previous task.
- ewc: one (anchor, Fisher) pair per earlier task (Kirkpatrick et al.: a penalty per task), all kept.
- online_ewc: one running Fisher F* <- gamma F* + F_t (Schwarz et al.) with the latest anchor.
- mas: Omega (Aljundi et al.) with `importance.mas_accumulation`: 'sum' (Omega += Omega_t, the reference's
  accumulation), 'replace' (only the last task), 'recompute_all' (recompute Omega on every earlier task's
  training data with its own head, summed: the reference's MAS_sequence). `importance.mas_estimator='batch'` with
  `importance.mas_batch_size` B reproduces the reference's per-batch estimate (|gradient of the norm summed over
  a batch of B|, averaged over the task's batches in order).
- mas_local: the MAS paper's local (Hebbian) importance, Omega_ij = mean |a_i a_j| over the task's data
  (`importance.mas_local_importance`; ReLU after hidden layers, identity after the heads; only the task's own head
  gets an importance), accumulated and penalised as `mas`. Models without BatchNorm only (the activation after a
  BatchNorm is not the Dense layer's output).
- si: Zenke et al. path integral: during task t, w += -g * delta theta (g = the task-loss gradient); at its end
  Omega += w / (Delta^2 + xi), Delta = parameter change over the task; the penalty uses max(Omega, 0) (a
  negative path integral, possible with momentum or noise, would otherwise reward moving away from the anchor).
The penalty of each method is the one of `nas_forgetting.penalties.METHOD_PENALTIES` at its strength (ewc_penalty:
strength/2 sum F (theta - anchor)^2, likewise online EWC and L2; mas_penalty / si_penalty: strength sum Omega
(theta - anchor)^2, their papers' conventions), summed over the consolidation slots.

Divergence: each epoch returns its per-step loss, penalty, gradient and update norms and whether the parameters are
finite; they are read once per epoch, and a NaN or infinity stops the run with a `DivergenceError` naming the
quantity, the step (counted over the whole run, from 0) and the task (before the epoch is logged or checkpointed).

Optimiser state is re-initialised at the start of every task when `train.reset_optimizer` (as the references,
which build a new optimiser per task). Frozen layers (`model.frozen`) get zero updates.

Checkpoint/resume: the checkpoint holds params, BatchNorm statistics, optimiser state, the SI path integral, anchors,
importance, the parameters at the task's start, R and the baseline so far, the next (task, epoch) and the run's PRNG
key. It is saved after every epoch (`checkpoint.every='epoch'`) or after each task's last epoch ('task'), and in both
at a `train.stop_after_epochs` stop. Epoch e of task t draws its batches from fold_in(fold_in(key, t), e), so a
resumed run replays exactly the epochs an uninterrupted run would: the final numbers are identical ('task': a run
killed mid-task redoes that task's epochs from its start). `train.stop_after_epochs` > 0 stops after that many
epochs of this call (as if killed; the checkpoint remains). Each epoch logs its records (step = epochs trained so
far) and then saves checkpoint `step` when one is due (written in the background while the next epoch trains; a
save in flight when the run is killed is discarded, and the run resumes from the one before); a resumed run drops
the records logged after its checkpoint (`MetricsLogger(purge_step=...)`, TensorBoard included), so its logs equal
an uninterrupted run's. `summary.json`
is written last of the outputs: a method whose checkpoint is at the end of the stream and whose summary.json exists
is finished, and a relaunch says so and writes nothing. The checkpoint also carries the seconds spent training so
far, so "seconds" is the run's total over all its launches.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_forgetting import importance as imp
from nas_forgetting import numerics
from nas_forgetting import penalties
from nas_forgetting.continual import metrics as cm
from nas_forgetting.continual import steps
from nas_forgetting.continual import stream_model as sm
from nas_forgetting.continual.methods import CHECKPOINT_EVERY, MAS_ACCUMULATIONS, make_optimizer, parse_method
from nas_forgetting.data import batching
from nas_forgetting.data.tasks import Task
from nas_forgetting.errors import CheckpointError, ConfigError
from nas_forgetting.io import plots
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.checkpoint import Checkpointer
from nas_forgetting.io.metrics import MetricsLogger, write_csv
from nas_forgetting.progress import progress
from nas_forgetting.models import trainable_mask

PyTree = Any

SUMMARY_FILE = "summary.json"  # written last of a method's outputs: its presence marks a finished method

def _identity(x):
  return x


def _tree_zeros(tree: PyTree, slots: int | None = None) -> PyTree:
  if slots is None:
    return jax.tree.map(jnp.zeros_like, tree)
  return jax.tree.map(lambda p: jnp.zeros((slots,) + p.shape, p.dtype), tree)


@jax.jit
def _set_slot(stack: PyTree, slot: jax.Array, tree: PyTree) -> PyTree:
  return jax.tree.map(lambda a, x: a.at[slot].set(x), stack, tree)


@jax.jit
def _get_slot(stack: PyTree, slot: jax.Array) -> PyTree:
  return jax.tree.map(lambda a: a[slot], stack)


@jax.jit
def _si_omega(omega: PyTree, path: PyTree, params: PyTree, start: PyTree, xi: jax.Array) -> PyTree:
  return jax.tree.map(lambda o, w, p, s: o + w / ((p - s) ** 2 + xi), omega, path, params, start)


def _importance_stats(tree: PyTree) -> dict[str, float]:
  leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
  flat = np.concatenate([x.ravel() for x in leaves]) if leaves else np.zeros(1)
  return {"importance/mean": float(flat.mean()), "importance/max": float(flat.max()),
          "importance/nonzero_fraction": float((flat > 0).mean())}


class MethodRun:
  """The state machine of one method's run; see the module docstring."""

  def __init__(self, config, tasks: Sequence[Task], method: str, workdir: str | pathlib.Path, *,
               max_traces: int | None = None):
    name, strength = parse_method(method)
    if not tasks:
      raise ConfigError("the task stream is empty")
    self.config, self.tasks, self.method, self.label = config, list(tasks), name, method
    self.workdir = pathlib.Path(workdir)
    self.num_tasks = len(self.tasks)
    self.model = sm.model_for(config, self.tasks)
    make_optimizer(config.train)  # checks train.optimizer
    if config.checkpoint.every not in CHECKPOINT_EVERY:
      raise ConfigError(f"checkpoint.every={config.checkpoint.every!r}; expected one of {', '.join(CHECKPOINT_EVERY)}")
    if strength is None:
      strength = 0.0 if name in ("finetune", "joint") else float(config.strength[name])
    self.strength = strength
    self.penalty_fn = penalties.METHOD_PENALTIES.get(name)  # None: finetune / joint
    if name == "mas_local" and config.model.batch_norm:
      raise ConfigError("method 'mas_local' (local Hebbian MAS) needs model.batch_norm=False: after a BatchNorm the "
                        "activation of a unit is not its Dense/Conv layer's output")
    self.num_slots = self.num_tasks if name == "ewc" else 1
    tc = config.train
    self.batch_size = tc.batch_size
    for t in self.tasks:
      batching.check_batch_size(len(t.train.labels), tc.batch_size, what=f"task {t.name} training split")
    self.epochs = [tc.first_task_epochs if (i == 0 and tc.first_task_epochs > 0) else tc.epochs
                   for i in range(self.num_tasks)]
    if min(self.epochs) < 1:
      raise ConfigError(f"train.epochs must be >= 1; got {tc.epochs} (first task: {self.epochs[0]})")
    sizes = [len(t.train.labels) for t in self.tasks]
    self.train_size = sum(sizes) if name == "joint" else max(sizes)
    self.max_batches = self.train_size // self.batch_size
    # Training steps of one epoch of each task, and the run's step index of each (task, epoch 0).
    per_epoch = [(sum(sizes[:t + 1]) if name == "joint" else sizes[t]) // self.batch_size for t in range(len(sizes))]
    self.steps_per_epoch = per_epoch
    self.first_steps = np.concatenate([[0], np.cumsum(np.multiply(per_epoch, self.epochs))]).astype(int)
    eb = config.train.eval_batch_size
    test_max = max(len(t.test.labels) for t in self.tasks)
    self.test_size = -(-test_max // eb) * eb
    self.test = [sm.task_arrays(self.tasks, [j], "test", self.test_size) for j in range(self.num_tasks)]
    self.max_traces = max_traces

  # -- state -----------------------------------------------------------------------------------------------------

  def fresh_state(self) -> dict:
    """The state before the first task (built under one jit: eager per-leaf initialisation compiles per op)."""
    rng = jax.random.key(self.config.seed)
    example = jnp.asarray(self.tasks[0].train.images[:1])
    model, num_slots, tc = self.model, self.num_slots, self.config.train
    shapes = jax.eval_shape(lambda k: model.init(k, example)[0], rng)
    self.mask = trainable_mask(shapes, tuple(self.config.model.frozen))
    self.tx_key = model.key + (example.shape, tc.optimizer, float(tc.learning_rate), float(tc.momentum),
                               tuple(self.config.model.frozen))

    def build():
      labels = jax.tree.map(lambda m: "train" if m else "frozen", self.mask)
      tx = optax.multi_transform({"train": make_optimizer(tc), "frozen": optax.set_to_zero()}, labels)

      @jax.jit
      def make(key, example):
        params, batch_stats = model.init(jax.random.fold_in(key, 1), example)
        return {"params": params, "batch_stats": batch_stats, "opt_state": tx.init(params),
                "si_path": _tree_zeros(params), "si_omega": _tree_zeros(params), "start_params": params}

      @functools.partial(jax.jit, static_argnums=1)
      def slots(params, num_slots):
        return {"anchors": _tree_zeros(params, num_slots), "importance": _tree_zeros(params, num_slots)}

      return tx, make, slots, jax.jit(tx.init)

    self.tx, make, slots, self._opt_init = sm.cached(("tx",) + self.tx_key, build)
    state = make(rng, example)
    state.update(slots(state["params"], num_slots))
    state.update(accuracy=np.zeros((self.num_tasks, self.num_tasks), np.float32),
                 baseline=np.zeros((self.num_tasks,), np.float32), task=np.int32(0), epoch=np.int32(0), rng=rng,
                 seconds=np.float64(0.0))
    return state

  def _checkpointer(self):
    # written in the background while the next epoch trains (each save first waits for the one before it)
    return Checkpointer(self.workdir / "checkpoints", max_to_keep=self.config.checkpoint.max_to_keep,
                        asynchronous=True)

  # -- pieces ----------------------------------------------------------------------------------------------------

  def _evaluate_all(self, params, batch_stats) -> np.ndarray:
    return np.array([float(self.eval_fn(params, batch_stats, data, n)) for data, n in self.test], np.float32)

  def _importance_tree(self, state: dict, t: int) -> tuple[dict, dict]:
    task = self.tasks[t]
    tree = {"params": state["params"], "batch_stats": state["batch_stats"],
            "head": jnp.float32(task.head), "num_outputs": jnp.float32(task.num_outputs)}
    mask = {"params": self.mask, "batch_stats": jax.tree.map(lambda _: False, state["batch_stats"]),
            "head": False, "num_outputs": False}
    return tree, mask

  def _importance_data(self, t: int) -> tuple[np.ndarray, np.ndarray]:
    train = self.tasks[t].train
    n = self.config.importance.num_examples
    if n and n < len(train.labels):
      order = np.random.default_rng([self.config.seed, 7, t]).permutation(len(train.labels))[:n]
      return train.images[np.sort(order)], train.labels[np.sort(order)]
    return train.images, train.labels

  def _fisher(self, state: dict, t: int, data: tuple | None = None) -> PyTree:
    """Fisher of task t at the state's params, on `data` (images, labels) or the task's `_importance_data(t)`."""
    ic = self.config.importance
    tree, mask = self._importance_tree(state, t)
    images, labels = self._importance_data(t) if data is None else data
    rng = jax.random.fold_in(jax.random.fold_in(state["rng"], 1000 + t), 0)
    out = imp.fisher_diagonal(self.model.importance_apply, tree, images, labels, estimator=ic.fisher_estimator,
                              path=ic.path, chunk_size=ic.chunk_size, rng=rng, mask=mask)
    return out["params"]

  def _mas(self, state: dict, t: int, data: tuple | None = None) -> PyTree:
    """MAS Omega of task t at the state's params, on `data` (images, labels) or the task's `_importance_data(t)`."""
    ic = self.config.importance
    tree, mask = self._importance_tree(state, t)
    images, _ = self._importance_data(t) if data is None else data
    out = imp.mas_importance(self.model.importance_apply, tree, images, norm=ic.mas_norm,
                             estimator=ic.mas_estimator, path=ic.path, chunk_size=ic.chunk_size, mask=mask,
                             batch_size=ic.mas_batch_size)
    return out["params"]

  def _mas_local(self, state: dict, t: int) -> PyTree:
    """Local (Hebbian) MAS importance on task t's data; heads other than the task's, and frozen layers, get zero."""
    ic = self.config.importance
    tree, _ = self._importance_tree(state, t)
    images, _ = self._importance_data(t)
    head_names = {f"heads/head_{h}": _identity for h in range(self.model.num_heads)}
    out = imp.mas_local_importance(self.model.importance_apply, tree, images, activation=jax.nn.relu,
                                   activations=head_names, chunk_size=ic.chunk_size, strict=False)["params"]
    own = f"head_{self.tasks[t].head}"
    keep = dict(self.mask)
    keep["heads"] = {h: jax.tree.map(lambda m, h=h: m and h == own, sub) for h, sub in self.mask["heads"].items()}
    return jax.tree.map(lambda o, k: o if k else jnp.zeros_like(o), out, keep)

  def task_importance_fn(self):
    """`fn(state, t, data) -> importance of task t` for the methods whose consolidation takes one importance
    computed on task t's data (ewc, online_ewc: Fisher; mas with 'sum'/'replace': Omega), else None. The sweep
    computes it vmapped over its members and hands each member's to `_consolidate`."""
    if self.method in ("ewc", "online_ewc"):
      return self._fisher
    if self.method == "mas" and self.config.importance.mas_accumulation in ("sum", "replace"):
      return self._mas
    return None

  def _consolidate(self, state: dict, t: int, task_importance: PyTree | None = None) -> dict:
    """Importance and anchors after task t (the state's params are the trained ones). `task_importance`: task t's
    importance when computed by the caller (see `task_importance_fn`), else computed here."""
    if task_importance is None and self.task_importance_fn() is not None:
      task_importance = self.task_importance_fn()(state, t)
    method, params = self.method, state["params"]
    anchors, importance = state["anchors"], state["importance"]
    set_slot = lambda stack, s, tree: _set_slot(stack, jnp.int32(s), tree)
    get_slot = lambda stack, s: _get_slot(stack, jnp.int32(s))
    if method in ("finetune", "joint"):
      return state
    if method == "l2":
      new = jax.tree.map(lambda p, m: jnp.full_like(p, 1.0 if m else 0.0), params, self.mask)
      importance = set_slot(importance, 0, new)
    elif method == "ewc":
      importance = set_slot(importance, t, task_importance)
    elif method == "online_ewc":
      new = imp.accumulate(get_slot(importance, 0), task_importance, mode="ema",
                           gamma=self.config.importance.online_ewc_gamma)
      importance = set_slot(importance, 0, new)
    elif method in ("mas", "mas_local"):
      mode = self.config.importance.mas_accumulation
      omega = self._mas if method == "mas" else self._mas_local
      if mode == "recompute_all":
        new = None
        for j in range(t + 1):
          new = imp.accumulate(new, omega(state, j), mode="sum")
      elif mode in ("sum", "replace"):
        new = imp.accumulate(get_slot(importance, 0), omega(state, t) if task_importance is None else task_importance,
                             mode=mode)
      else:
        raise ConfigError(f"unknown importance.mas_accumulation {mode!r}; valid: {', '.join(MAS_ACCUMULATIONS)}")
      importance = set_slot(importance, 0, new)
    elif method == "si":
      xi = self.config.importance.si_xi
      omega = _si_omega(state["si_omega"], state["si_path"], params, state["start_params"], jnp.float32(xi))
      state = dict(state, si_omega=omega, si_path=_tree_zeros(params))
      importance = set_slot(importance, 0, jax.tree.map(lambda o: jnp.maximum(o, 0.0), omega))
    slot = t if method == "ewc" else 0
    anchors = set_slot(anchors, slot, params)
    return dict(state, anchors=anchors, importance=importance)

  def _batch_indices(self, key, n: int) -> tuple[jax.Array, jax.Array]:
    """This epoch's batch-index matrix padded to `max_batches` rows, and the rows' validity."""
    return steps.padded_batch_indices(key, n, self.batch_size, self.max_batches)

  # -- main loop -------------------------------------------------------------------------------------------------

  def build_steps(self) -> None:
    """The jitted epoch (`self.epoch_fn`, with this method's penalty) and evaluation (`self.eval_fn`); after
    `fresh_state`, which builds the optimiser."""
    make_epoch = lambda: steps.make_epoch_fn(self.model.apply, self.tx, penalty_fn=self.penalty_fn,
                                             use_si=self.method == "si", max_traces=self.max_traces)
    if self.max_traces is None:
      self.epoch_fn = sm.cached(("epoch",) + self.tx_key + (self.penalty_fn, self.method == "si"), make_epoch)
    else:  # counting traces needs a function of its own
      self.epoch_fn = make_epoch()
    eb = self.config.train.eval_batch_size
    self.eval_fn = sm.cached(("eval",) + self.model.key + (eb,), lambda: steps.make_eval_fn(self.model.apply, eb))

  def train_epoch(self, state: dict, t: int, e: int, data: steps.TaskData, n: int) -> tuple[dict, dict]:
    """Epoch e of task t (data: the task's padded training arrays, n real examples): the new state and the epoch's
    metrics (means over its steps; see `steps.make_epoch_fn`). A non-finite loss, penalty, gradient or update norm
    or parameter raises `DivergenceError` naming it, the step (of the whole run) and the task."""
    k_batches, k_steps = steps.epoch_keys(state["rng"], jnp.int32(t), jnp.int32(e))
    idx, valid = self._batch_indices(k_batches, n)
    carry = steps.Carry(state["params"], state["batch_stats"], state["opt_state"], state["si_path"])
    carry, metrics, checks = self.epoch_fn(carry, data, idx, valid, k_steps, state["anchors"], state["importance"],
                                           jnp.float32(self.strength))
    first = int(self.first_steps[t] + e * self.steps_per_epoch[t])
    self._check_finite(checks, first, f"task {t} ({self.tasks[t].name}), epoch {e} of method {self.label!r}")
    state = dict(state, params=carry.params, batch_stats=carry.batch_stats, opt_state=carry.opt_state,
                 si_path=carry.si_path)
    return state, {k: float(v) for k, v in metrics.items()}

  @staticmethod
  def _check_finite(checks: dict, first_step: int, context: str) -> None:
    """DivergenceError at the epoch's earliest non-finite step (its first bad quantity in STEP_QUANTITIES order)."""
    per_step = {f"train/{name}": np.asarray(checks[name]) for name in steps.STEP_QUANTITIES}
    bad = ~np.isfinite(np.stack(list(per_step.values())))
    if bad.any():
      i = int(np.argmax(bad.any(axis=0)))
      numerics.check_finite({k: v[i:i + 1] for k, v in per_step.items()}, context=context, first_step=first_step + i)
    numerics.check_finite({"the parameters": np.asarray(checks["params_finite"])},
                          context=f"the end of {context}")

  def run(self) -> dict:
    self.workdir.mkdir(parents=True, exist_ok=True)
    state = self.fresh_state()
    self.build_steps()
    checkpointer = self._checkpointer()
    latest = checkpointer.latest_step()
    if latest is not None:
      try:
        state = checkpointer.restore(latest, like=state)
      except CheckpointError:
        raise
      except Exception as e:  # a tree that does not match this config
        raise CheckpointError(f"checkpoint {latest} in {self.workdir / 'checkpoints'} does not match this run "
                              f"(method {self.method!r}): {e}") from e
    start_task, start_epoch = int(state["task"]), int(state["epoch"])
    if start_task >= self.num_tasks and (self.workdir / SUMMARY_FILE).exists():
      logging.info("method %s in %s is already finished (all %d tasks trained, outputs written): nothing to do",
                   self.label, self.workdir, self.num_tasks)
      summary = json.loads((self.workdir / SUMMARY_FILE).read_text())
      return {**summary, "method": self.label, "stopped": False, "epochs_run": 0, "already_finished": True,
              "seconds": float(state["seconds"]), "params": state["params"], "anchors": state["anchors"],
              "accuracy": np.asarray(state["accuracy"]), "baseline": np.asarray(state["baseline"])}
    if latest is None:
      state["baseline"] = self._evaluate_all(state["params"], state["batch_stats"])
    offsets = np.concatenate([[0], np.cumsum(self.epochs)]).astype(int)
    total_epochs = int(offsets[-1])
    done_before = int(offsets[start_task] + start_epoch) if start_task < self.num_tasks else total_epochs
    stop_after = self.config.train.stop_after_epochs
    every_epoch = self.config.checkpoint.every == "epoch"
    ran, stopped, t0, seconds_before = 0, False, time.time(), float(state["seconds"])

    # Records logged after the restored checkpoint (a run killed between logging and saving) are dropped.
    with MetricsLogger(self.workdir, purge_step=0 if latest is None else latest + 1) as logger:
      bar = progress(total=total_epochs - done_before, desc=f"{self.label}", unit="epoch")
      for t in range(start_task, self.num_tasks):
        indices = list(range(t + 1)) if self.method == "joint" else [t]
        data, n = sm.task_arrays(self.tasks, indices, "train", self.train_size)
        first = start_epoch if t == start_task else 0
        if first == 0:
          state["start_params"] = state["params"]
          if self.config.train.reset_optimizer:
            state["opt_state"] = self._opt_init(state["params"])
        for e in range(first, self.epochs[t]):
          state, m = self.train_epoch(state, t, e, data, n)
          step = int(offsets[t] + e + 1)
          logger.log(step, {"task": t, "epoch": e, **{f"train/{k}": v for k, v in m.items()}})
          if e + 1 == self.epochs[t]:
            row = self._evaluate_all(state["params"], state["batch_stats"])
            state["accuracy"] = state["accuracy"].copy()
            state["accuracy"][t] = row
            state = self._consolidate(state, t)
            record = {f"eval/task_{j}/accuracy": float(row[j]) for j in range(self.num_tasks)}
            record["eval/avg_accuracy_seen"] = float(row[:t + 1].mean())
            if self.method not in ("finetune", "joint"):
              stats = _importance_stats(state["importance"])
              numerics.check_finite(stats, context=f"the importance after task {t} of method {self.label!r}")
              record.update(stats)
            logger.log(step, record)
            state["task"], state["epoch"] = np.int32(t + 1), np.int32(0)
          else:
            state["task"], state["epoch"] = np.int32(t), np.int32(e + 1)
          bar.update(1)
          bar.set_postfix(task=t, loss=f"{m['loss']:.3f}")
          ran += 1
          stopped = bool(stop_after) and ran >= stop_after
          if every_epoch or e + 1 == self.epochs[t] or stopped:
            state["seconds"] = np.float64(seconds_before + time.time() - t0)
            checkpointer.save(step, state)
          if stopped:
            break
        if stopped:
          break
      bar.close()
    checkpointer.wait()
    seconds = float(state["seconds"])  # training time over all launches, up to the last checkpoint
    result = {"method": self.label, "stopped": stopped, "epochs_run": ran, "seconds": seconds,
              "already_finished": False, "params": state["params"], "anchors": state["anchors"],
              "accuracy": np.asarray(state["accuracy"]), "baseline": np.asarray(state["baseline"])}
    if not stopped:
      result.update(write_method_outputs(self.workdir, self.label, result["accuracy"], result["baseline"],
                                         [t.name for t in self.tasks], seconds=seconds))
    return result


def write_method_outputs(workdir: pathlib.Path, method: str, accuracy: np.ndarray, baseline: np.ndarray,
                         task_names: Sequence[str], *, seconds: float) -> dict:
  """accuracy_matrix.csv, per_task.csv, the heatmap/curves PNGs, then summary.json (last: it marks the method
  finished; `seconds` is the training time over all launches); returns the summary."""
  t = accuracy.shape[0]
  rows = [{"after_task": i, **{f"task_{j}": float(accuracy[i, j]) for j in range(t)}} for i in range(t)]
  write_csv(workdir / "accuracy_matrix.csv", rows, ["after_task"] + [f"task_{j}" for j in range(t)])
  drop = cm.final_drop_per_task(accuracy)
  f = list(cm.forgetting_per_task(accuracy)) + [0.0]
  write_csv(workdir / "per_task.csv",
            [{"task": j, "name": task_names[j], "accuracy_when_learned": float(accuracy[j, j]),
              "final_accuracy": float(accuracy[-1, j]), "final_drop": float(drop[j]), "forgetting": float(f[j]),
              "untrained_accuracy": float(baseline[j])} for j in range(t)])
  names = [f"T{j}" for j in range(t)]
  plots.accuracy_matrix_heatmap(accuracy, workdir / "accuracy_matrix.png", task_names=names,
                                title=f"{method}: accuracy on task j after task i")
  plots.accuracy_curves(accuracy, workdir / "accuracy_curves.png", task_names=names,
                        title=f"{method}: accuracy of each task during the stream")
  summary = {"method": method, **cm.summary(accuracy, baseline), "seconds": float(seconds)}
  atomic_write_text(workdir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
  return summary
