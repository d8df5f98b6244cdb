"""Many seeds and penalty strengths of one method in one compiled program (`config.sweep`).

`GridRun(config, tasks, method, members)` trains `method` over the whole task stream for every grid member
(seed, strength) at once: parameters, BatchNorm statistics, optimiser states, SI path integrals, anchors and
importance carry a leading grid axis, and the runner's epoch function (`steps.make_epoch_fn`, the same one a single
run compiles) runs over it inside one compiled program: `config.sweep.members_at_once` members at a time
(`members_at_once`, `nas_forgetting.stacked.over_leading_axis`: automatically one after another on the CPU, where a
member's state then stays in the cache, and all at once, vmapped, on a GPU or TPU; BENCHMARKS.md). The data
are shared (one device copy of each task); each member draws its own initialisation, batch order and importance
subset from its own seed, exactly as the single run `MethodRun(member_config(config, seed), tasks,
'<method>@<strength>')` does on the same task stream. So member i of the grid equals that single run up to float
rounding (vmapped matrix products and the vmapped importance may round differently), which
`tests/continual/test_continual_sweep.py` checks. One trace of the grid epoch serves every task and every member
(`max_traces`).

The task stream itself comes from `config.seed` (the permutations or class split are the same for every member):
the sweep measures the variance due to initialisation and batch order on one stream, and compares strengths on
identical data.

Evaluation runs over the members in the same way (one call per task for the whole grid). The importance of a task
(Fisher for EWC and online EWC, Omega for MAS with 'sum'/'replace' accumulation) is vmapped over all members
(`MethodRun.task_importance_fn` under `jax.vmap`, each member on its own importance subset with its own key);
accumulation, slots and anchors then go through the single run's own `MethodRun._consolidate` per member, so every
method, estimator and accumulation mode is the one definition a single run uses (mas_local and MAS 'recompute_all'
compute their importance per member).

Devices: with `config.sweep.shard` the grid axis of a chunk is sharded over the devices (`grid_mesh`: the most devices
that divide the chunk evenly; `jax.sharding.NamedSharding`, data replicated), so each device trains its members; the
compiled epoch is then the vmapped grid (`members_at_once`), partitioned by XLA. Consolidation gathers the members on
the host and places the result back. In a run of several processes (`nas_forgetting.distributed`) the mesh spans the
devices of every process (the same number from each) and every process runs this same code: each trains the members on
its devices, evaluation results, finiteness checks and consolidation inputs are gathered on every host
(`distributed.to_host`), consolidation runs on every process alike, checkpoints are saved collectively (each process
writes its shards) and the returned parameters are host arrays.

Memory: `grid_chunk(...)` bounds the number of members trained together (`config.sweep.chunk`, 0 = sized from the
free device memory, or `sweep.cpu_memory_budget` bytes on devices that report none): the members are trained chunk
after chunk, each chunk one program of the same shapes (one trace per chunk size).

`nas_forgetting.continual.sweep_report.run_sweep` runs the grid of every method of a config and writes and prints
what a sweep reports (per-member and per-strength tables, the best strength, a plot).
"""

from __future__ import annotations

import functools
import pathlib
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nas_forgetting import distributed
from nas_forgetting.continual import runner as rn
from nas_forgetting.continual import steps
from nas_forgetting.continual import stream_model as sm
from nas_forgetting.continual.methods import parse_method
from nas_forgetting.data.tasks import Task
from nas_forgetting.device_memory import free_device_memory
from nas_forgetting.errors import ConfigError
from nas_forgetting.io.checkpoint import Checkpointer
from nas_forgetting.stacked import over_leading_axis

# State entries stacked on the grid axis (the rest of a single run's state is host bookkeeping).
GRID_KEYS = ("params", "batch_stats", "opt_state", "si_path", "si_omega", "start_params", "anchors", "importance")


def member_config(config, seed: int):
  """The single-run config of grid member `seed`: `config` with `seed` set and no sweep."""
  member = config.copy_and_resolve_references()
  member.seed = int(seed)
  member.sweep.seeds = ()
  return member


def member_label(method: str, strength: float) -> str:
  """'<method>@<strength>' (the runner's form; exact: repr of a float parses back to it); finetune/joint bare."""
  return method if method in ("finetune", "joint") else f"{method}@{float(strength)!r}"


def grid(config, method: str) -> list[tuple[int, float]]:
  """The (seed, strength) members of `method`'s sweep, seed-major: `sweep.seeds` x `sweep.strengths.<method>`
  (empty: the method's one strength, from '<method>@<strength>' or `config.strength`; finetune/joint: 0)."""
  name, strength = parse_method(method)
  if name in ("finetune", "joint"):
    strengths = (0.0,)
  else:
    strengths = tuple(float(s) for s in config.sweep.strengths[name])
    if strength is not None and strengths:
      raise ConfigError(f"method {method!r} names its strength and sweep.strengths.{name}={strengths} sweeps it: "
                        f"give one or the other")
    if not strengths:
      strengths = (float(strength if strength is not None else config.strength[name]),)
  return [(int(s), l) for s in config.sweep.seeds for l in strengths]


def member_bytes(state: dict, test_rows: int, num_outputs: int) -> int:
  """Bytes one grid member holds on the device: its stacked state (parameters, optimiser state, slots...) twice
  (the epoch's input and output) plus the gradient-sized temporaries of a step, and its evaluation logits."""
  size = sum(int(np.prod(x.shape)) * x.dtype.itemsize for k in GRID_KEYS for x in jax.tree.leaves(state[k]))
  params = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state["params"]))
  return 2 * size + 4 * params + test_rows * num_outputs * 4


def grid_chunk(num_members: int, per_member: int, *, chunk: int, memory_fraction: float, cpu_budget: int,
               device: jax.Device | None = None) -> int:
  """Members trained together: at most `chunk` when > 0, else at most as many as fit in `memory_fraction` of the
  device's free memory (`cpu_budget` bytes where the device reports none, as the CPU does); at least 1. The chunks
  are balanced (16 members at most 15 together: two chunks of 8), so that every chunk has the same shapes and the
  grid epoch compiles once."""
  if chunk <= 0:
    device = device or jax.local_devices()[0]
    free = free_device_memory(device, -1)
    budget = cpu_budget if free < 0 else int(free * memory_fraction)
    chunk = budget // max(per_member, 1)
  chunk = int(max(1, min(num_members, chunk)))
  parts = -(-num_members // chunk)
  return -(-num_members // parts)


def grid_mesh(num_members: int, devices: Sequence[jax.Device] | None = None) -> Mesh | None:
  """A one-axis mesh ('grid') over the most of `devices` (default: every device of every process) that divide
  `num_members` evenly, taking the same number from each process (None: one device, or in a run of several
  processes no such split; every process then trains the whole chunk on its own first device)."""
  devices = list(devices or jax.devices())
  by_process: dict[int, list[jax.Device]] = {}
  for d in devices:
    by_process.setdefault(d.process_index, []).append(d)
  processes, per = len(by_process), min(len(v) for v in by_process.values())
  count = max((processes * k for k in range(1, per + 1) if num_members % (processes * k) == 0), default=1)
  if count == 1:
    return None
  return Mesh(np.array([d for v in by_process.values() for d in v[:count // processes]]), ("grid",))


def _stack(trees: Sequence) -> object:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree, i: int):
  return jax.tree.map(lambda a: a[i], tree)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _grid_batch_indices(rngs, task, epoch, n: int, batch_size: int, max_batches: int):
  """Per member: the epoch's step key and its padded batch-index matrix (the single run's `_epoch_keys` and
  `_padded_batch_indices`); the rows' validity, the same for every member."""
  def one(rng):
    k_batches, k_steps = steps.epoch_keys(rng, task, epoch)
    idx, valid = steps.padded_batch_indices(k_batches, n, batch_size, max_batches)
    return idx, valid, k_steps
  idx, valid, k_steps = jax.vmap(one)(rngs)
  return idx, valid[0], k_steps


def members_at_once(setting: int, num_members: int, mesh: Mesh | None, backend: str | None = None) -> int:
  """How many members the grid's compiled epoch and evaluation compute together (0 = all of the chunk, vmapped):
  `setting` (`config.sweep.members_at_once`) when > 0 (all when >= `num_members`), else automatic: 1 on the CPU,
  where one member's parameters, optimiser state, anchors and importance stay in the cache while its epoch runs (the
  vmapped grid streams every member's through memory at every step), all on a GPU or TPU, which computes them in
  parallel. A grid sharded over several devices (`mesh`) computes each device's members together; a setting > 0 is
  refused there."""
  if mesh is not None:
    if setting > 0:
      raise ConfigError(f"sweep.members_at_once={setting} applies to a grid on one device; this one is sharded over "
                        f"{mesh.size} devices, each computing its members together (set sweep.members_at_once=0, "
                        "or sweep.shard=False)")
    return 0
  if setting == 0:
    setting = 1 if (backend or jax.default_backend()) == "cpu" else num_members
  return 0 if setting >= num_members else setting


def make_grid_epoch(epoch_fn, at_once: int, max_traces: int | None = None):
  """The single run's jitted epoch over the grid axis of (carry, batch indices, step key, anchors, importance,
  strength), `at_once` members at a time (`stacked.over_leading_axis`); data and the batch rows' validity are
  shared."""
  over_grid = over_leading_axis(epoch_fn, (0, None, 0, None, 0, 0, 0, 0), at_once)

  def grid_epoch(carry, data, idx, valid, k_steps, anchors, importance, strengths):  # a plain function for chex
    return over_grid(carry, data, idx, valid, k_steps, anchors, importance, strengths)
  fn = grid_epoch if max_traces is None else chex.assert_max_traces(grid_epoch, n=max_traces)
  return jax.jit(fn)


def make_grid_eval(eval_fn, at_once: int):
  """The single run's jitted evaluation over the grid axis of (params, batch_stats), `at_once` members at a time."""
  return jax.jit(over_leading_axis(eval_fn, (0, 0, None, None), at_once))


class GridRun:
  """`method` over `tasks` for every (seed, strength) of `members` in one compiled program; see the module
  docstring. `run() -> dict` with 'accuracy' (G, T, T), 'baseline' (G, T), 'params' (stacked), 'members'."""

  def __init__(self, config, tasks: Sequence[Task], method: str, members: Sequence[tuple[int, float]], *,
               validation: Sequence[Task] | None = None, max_traces: int | None = None):
    if not members:
      raise ConfigError(f"the sweep of method {method!r} has no members (sweep.seeds is empty)")
    name, _ = parse_method(method)
    self.method, self.members = name, list(members)
    self.runs = [rn.MethodRun(member_config(config, seed), tasks, member_label(name, strength), "",
                              max_traces=None) for seed, strength in self.members]
    first = self.runs[0]
    for r in self.runs[1:]:
      r.test = first.test  # one device copy of the test data
    self.first, self.max_traces = first, max_traces
    # the grid axis sharded over the local devices (each holds its members' state; data replicated)
    self.mesh = grid_mesh(len(self.members)) if config.sweep.shard else None
    self.at_once = members_at_once(config.sweep.members_at_once, len(self.members), self.mesh)
    self.num_tasks = first.num_tasks
    self.validation = None  # the validation splits (as each task's `test`), evaluated like the test splits
    if validation is not None:
      eb = config.train.eval_batch_size
      size = -(-max(len(v.test.labels) for v in validation) // eb) * eb
      self.validation = [sm.task_arrays(validation, [j], "test", size)
                         for j in range(self.num_tasks)]

  def _place(self, tree, *, replicated: bool = False):
    """`tree` sharded on its leading (grid) axis over the mesh, or replicated (no mesh: unchanged)."""
    if self.mesh is None:
      return tree
    return distributed.place(tree, NamedSharding(self.mesh, PartitionSpec() if replicated else PartitionSpec("grid")))

  def _gather(self, tree):
    """`tree` on the first local device (the members' consolidation runs there; no mesh: unchanged)."""
    return tree if self.mesh is None else jax.device_put(distributed.to_host(tree), jax.local_devices()[0])

  def fresh_state(self) -> dict:
    """The stacked state before the first task (each member's single-run initial state), placed on the mesh."""
    states = [r.fresh_state() for r in self.runs]
    state = {k: _stack([s[k] for s in states]) for k in GRID_KEYS}
    state["rng"] = jnp.stack([s["rng"] for s in states])
    state["strength"] = jnp.asarray([r.strength for r in self.runs], jnp.float32)
    state = self._place(state)
    g, t = len(self.runs), self.num_tasks
    state.update(accuracy=np.zeros((g, t, t), np.float32), baseline=np.zeros((g, t), np.float32),
                 validation=np.zeros((g, t, t), np.float32))
    return state

  def build_steps(self) -> None:
    self.first.build_steps()
    f = self.first
    if self.max_traces is None:
      key = ("grid_epoch",) + f.tx_key + (f.penalty_fn, f.method == "si", self.at_once)
      self.epoch_fn = sm.cached(key, lambda: make_grid_epoch(f.epoch_fn, self.at_once))
    else:
      self.epoch_fn = make_grid_epoch(f.epoch_fn, self.at_once, self.max_traces)
    key = ("grid_eval",) + f.model.key + (f.config.train.eval_batch_size, self.at_once)
    self.eval_fn = sm.cached(key, lambda: make_grid_eval(f.eval_fn, self.at_once))
    self.opt_init = sm.cached(("grid_opt_init",) + f.tx_key,
                               lambda: jax.jit(jax.vmap(f._opt_init)))
    self.test = [(self._place(d, replicated=True), n) for d, n in f.test]
    if self.validation is not None:
      self.validation = [(self._place(d, replicated=True), n) for d, n in self.validation]

  def _evaluate_all(self, state: dict, splits=None) -> np.ndarray:
    """(G, T) accuracies of every member on every task's test split (or `splits`)."""
    splits = self.test if splits is None else splits
    cols = [np.asarray(distributed.to_host(self.eval_fn(state["params"], state["batch_stats"], data, n)))
            for data, n in splits]
    return np.stack(cols, axis=1).astype(np.float32)

  def _train_epoch(self, state: dict, t: int, e: int, data: steps.TaskData, n: int) -> dict:
    f = self.first
    idx, valid, k_steps = _grid_batch_indices(state["rng"], jnp.int32(t), jnp.int32(e), n, f.batch_size,
                                              f.max_batches)
    carry = steps.Carry(state["params"], state["batch_stats"], state["opt_state"], state["si_path"])
    carry, _, checks = self.epoch_fn(carry, data, idx, valid, k_steps, state["anchors"], state["importance"],
                                     state["strength"])
    checks = jax.device_get(distributed.to_host(checks))
    first_step = int(f.first_steps[t] + e * f.steps_per_epoch[t])
    for i, (r, (seed, _)) in enumerate(zip(self.runs, self.members)):
      r._check_finite(_member(checks, i), first_step,
                      f"task {t} ({f.tasks[t].name}), epoch {e} of method {r.label!r}, seed {seed} (sweep member {i})")
    return dict(state, params=carry.params, batch_stats=carry.batch_stats, opt_state=carry.opt_state,
                si_path=carry.si_path)

  def _consolidate(self, state: dict, t: int) -> dict:
    """Each member's importance and anchors after task t, by the single run's `_consolidate`."""
    new, stacked = [], self._gather({k: state[k] for k in GRID_KEYS + ("rng",)})
    fn = self.first.task_importance_fn()
    task_importance = None
    if fn is not None:  # vmapped: each member on its own importance subset, with its own key
      data = [r._importance_data(t) for r in self.runs]
      data = tuple(jnp.stack([np.asarray(d[k]) for d in data]) for k in (0, 1))
      task_importance = jax.device_get(jax.vmap(lambda member, d: fn(member, t, d))(stacked, data))
    # The members are sliced from, and stacked back into, host arrays: slicing a device array dispatches one
    # operation per leaf and member, which cost more than the consolidation itself.
    host = jax.device_get({k: stacked[k] for k in GRID_KEYS})
    for i, r in enumerate(self.runs):
      member = {k: _member(host[k], i) for k in GRID_KEYS}
      member["rng"] = stacked["rng"][i]
      own = None if task_importance is None else _member(task_importance, i)
      new.append(r._consolidate(member, t, own))
    stack = lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs]))
    return dict(state, **self._place({k: jax.tree.map(stack, *[s[k] for s in new]) for k in GRID_KEYS}))

  def run(self, checkpoint_dir=None) -> dict:
    """The whole stream for every member. With `checkpoint_dir`, the stacked state (with R, the baseline, the next
    (task, epoch) and every member's PRNG key) is saved after every epoch and a run restores the latest checkpoint
    there: epoch e of task t draws from the members' own fold_in(fold_in(key, t), e), so a resumed grid ends with
    the numbers of an uninterrupted one."""
    f = self.first
    state = self.fresh_state()
    state.update(task=np.int32(0), epoch=np.int32(0))
    self.build_steps()
    checkpointer, latest = None, None
    if checkpoint_dir is not None:
      # the stacked grid is large: written in the background while the next epoch trains
      checkpointer = Checkpointer(checkpoint_dir, max_to_keep=f.config.checkpoint.max_to_keep, asynchronous=True)
      latest = checkpointer.latest_step()
      if latest is not None:
        state = checkpointer.restore(latest, like=state)
    if latest is None:
      state["baseline"] = self._evaluate_all(state)
    start_task, start_epoch = int(state["task"]), int(state["epoch"])
    offsets = np.concatenate([[0], np.cumsum(f.epochs)]).astype(int)
    for t in range(start_task, self.num_tasks):
      indices = list(range(t + 1)) if self.method == "joint" else [t]
      data, n = sm.task_arrays(f.tasks, indices, "train", f.train_size)
      data = self._place(data, replicated=True)
      first = start_epoch if t == start_task else 0
      if first == 0:
        state["start_params"] = state["params"]
        if f.config.train.reset_optimizer:
          state["opt_state"] = self.opt_init(state["params"])
      for e in range(first, f.epochs[t]):
        state = self._train_epoch(state, t, e, data, n)
        if e + 1 == f.epochs[t]:
          state["accuracy"] = state["accuracy"].copy()
          state["accuracy"][:, t] = self._evaluate_all(state)
          if self.validation is not None:
            state["validation"] = state["validation"].copy()
            state["validation"][:, t] = self._evaluate_all(state, self.validation)
          state = self._consolidate(state, t)
          state["task"], state["epoch"] = np.int32(t + 1), np.int32(0)
        else:
          state["task"], state["epoch"] = np.int32(t), np.int32(e + 1)
        if checkpointer is not None:
          checkpointer.save(int(offsets[t] + e + 1), state)
    if checkpointer is not None:
      checkpointer.wait()
    return {"method": self.method, "members": self.members, "accuracy": state["accuracy"],
            "baseline": state["baseline"], "validation": state["validation"],
            "params": distributed.to_host(state["params"])}


def split_validation(tasks: Sequence[Task], fraction: float, seed: int) -> tuple[list[Task], list[Task]]:
  """(training tasks, validation tasks): a seeded `fraction` of each task's training split (at least one example)
  becomes its validation split (the `test` of the validation task); the test splits are never touched."""
  train, valid = [], []
  for t, task in enumerate(tasks):
    n = len(task.train.labels)
    k = max(1, int(round(fraction * n)))
    if k >= n:
      raise ConfigError(f"sweep.validation_fraction={fraction} leaves no training data in task {task.name} "
                        f"({n} examples)")
    order = np.random.default_rng([seed, 11, t]).permutation(n)
    keep, held = np.sort(order[k:]), np.sort(order[:k])
    pick = lambda idx: task.train._replace(images=task.train.images[idx], labels=task.train.labels[idx])
    train.append(task._replace(train=pick(keep)))
    valid.append(task._replace(test=pick(held)))
  return train, valid


def run_method(config, tasks: Sequence[Task], method: str, *, validation: Sequence[Task] | None = None,
               max_traces: int | None = None, checkpoint_dir=None) -> dict:
  """Every member of `method`'s grid, chunk after chunk (`grid_chunk`); the members' results concatenated:
  'members', 'accuracy' (G, T, T), 'validation' (G, T, T), 'baseline' (G, T), 'params', 'chunk'. With
  `checkpoint_dir`, each chunk checkpoints into `<checkpoint_dir>/members_<first>-<last>` (see `GridRun.run`)."""
  members = grid(config, method)
  sw = config.sweep
  probe = GridRun(config, tasks, method, members[:1])
  state = probe.fresh_state()
  f = probe.first
  per = member_bytes(state, f.test_size * f.num_tasks, f.model.num_outputs)
  chunk = grid_chunk(len(members), per, chunk=sw.chunk, memory_fraction=sw.memory_fraction,
                     cpu_budget=sw.cpu_memory_budget)
  folder = lambda i: (None if checkpoint_dir is None else
                      pathlib.Path(checkpoint_dir) / f"members_{i}-{min(i + chunk, len(members)) - 1}")
  parts = [GridRun(config, tasks, method, members[i:i + chunk], validation=validation,
                   max_traces=max_traces).run(folder(i)) for i in range(0, len(members), chunk)]
  out = {k: np.concatenate([p[k] for p in parts]) for k in ("accuracy", "validation", "baseline")}
  out["params"] = jax.tree.map(lambda *xs: jnp.concatenate(xs), *[p["params"] for p in parts])
  return {"method": method, "members": members, "chunk": chunk, **out}
