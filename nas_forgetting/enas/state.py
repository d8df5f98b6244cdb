"""The ENAS run's context (what a launch never changes) and its search state (what every phase takes and returns).

`Run` holds the config, the workdir, the task (`nas_forgetting.enas.tasks`: data, supernet, compiled shared steps),
the controller with its compiled REINFORCE step and samplers, and the launch's clock; nothing in it changes during
the search but the clock's seconds of earlier launches, set once when a mode restores its state. `SearchState` is
everything the phases change, passed into each phase and returned by it, as a TrainState in flax's examples:
shared weights, controller, WPL state, data cursor, rng, the next epoch, and the values the run's figures and
forgetting.csv are drawn from. `restore` gives the state of a fresh run or of the latest checkpoint; a checkpoint
holds `checkpoint_tree(state, seconds)`.
"""

from __future__ import annotations

import functools
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nas_forgetting.enas import reinforce
from nas_forgetting.enas import search_space as ss
from nas_forgetting.enas import tasks
from nas_forgetting.enas import trainer as tr
from nas_forgetting.errors import CheckpointError, ConfigError
from nas_forgetting.io.checkpoint import Checkpointer
from nas_forgetting.models import controller as ctl
from nas_forgetting.wpl import state as wpl_lib

Curve = tuple[tuple[int, float], ...]  # (step, value) points of one logged quantity


class SearchState(NamedTuple):
  """Everything an ENAS phase reads and changes. Checkpointed: shared, controller, wpl, data.position, rng, epoch
  (`checkpoint_tree`); the RNN hidden state restarts at zero every epoch, and `forgetting` and `curves` are read
  back once from forgetting.csv and the metrics files when a search resumes."""

  shared: tr.SharedState  # shared weights, their optimizer state and the shared step
  controller: reinforce.ReinforceState  # controller weights, Adam state, reward baseline and the controller step
  wpl: wpl_lib.WPLState | None  # importance and anchors over the monitored shared weights (None: WPL off)
  data: tasks.DataCursor  # where shared training reads next (and the RNN hidden state within an epoch)
  rng: jax.Array
  epoch: int  # the next epoch to train (0: nothing trained yet)
  seconds: float  # seconds of the launches before this one, up to the checkpoint restored (0 for a fresh state)
  forgetting: tuple[dict[str, float], ...] = ()  # forgetting.csv rows, one per finished epoch
  curves: dict[str, Curve] = {}  # the points of curves_shared.png and curves_controller.png, by metric key


class Clock:
  """Seconds of a run over its launches: `before` (earlier launches up to the checkpoint this launch resumed from)
  plus this launch so far."""

  def __init__(self):
    self.started = time.time()
    self.before = 0.0

  def elapsed(self) -> float:
    return self.before + time.time() - self.started


@functools.lru_cache(maxsize=None)
def _controller_functions(controller, space, reward_fn, score_fn, lr, grad_clip, num_samples, ema_decay,
                          entropy_coeff, entropy_mode):
  """(controller optimizer, jitted REINFORCE step, jitted reward_fn, jitted score_fn), cached: modes run one after
  another in a process reuse the compiled code."""
  optimizer = reinforce.controller_optimizer(lr, grad_clip)
  controller_step = jax.jit(functools.partial(
      tr.controller_step, controller=controller, optimizer=optimizer, decisions_to_arch=space.decisions_to_arch,
      decision_mask=space.decision_mask, reward_fn=reward_fn, num_samples=num_samples, ema_decay=ema_decay,
      entropy_coeff=entropy_coeff, entropy_mode=entropy_mode))
  return optimizer, controller_step, jax.jit(reward_fn), jax.jit(score_fn)


@functools.lru_cache(maxsize=None)
def sampler(controller, space):
  """Jitted `(controller params, rng, num_samples) -> archs`; `controller` None samples uniformly at random."""
  return jax.jit(functools.partial(tr.sample_archs, controller=controller, num_choices=space.num_choices,
                                   decisions_to_arch=space.decisions_to_arch), static_argnames=("num_samples",))


class Run:
  """What one launch needs and never changes: config, workdir, task, controller, compiled functions, clock."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: pathlib.Path):
    self.config = config
    self.workdir = workdir
    self.task = tasks.make_task(config)
    self.space = self.task.space
    c = config.controller
    self.use_controller = not (config.network == "rnn" and config.search.mode == "random")
    self.controller = ctl.Controller(self.space.num_choices, hidden_size=c.hidden_size, temperature=c.temperature,
                                     tanh_c=c.tanh_c, init_range=c.init_range)
    (self.controller_optimizer, self.controller_step, self.score,
     self.metric) = _controller_functions(self.controller, self.space, self.task.reward_fn, self.task.score_fn,
                                          c.lr, c.grad_clip, c.num_samples, c.ema_decay, c.entropy_coeff,
                                          c.entropy_mode)
    self.sample = sampler(self.controller if self.use_controller else None, self.space)
    # derive_reference_logits: derive samples from decoder(h) / temperature without the tanh_c squashing (the
    # reference's derive mode); the search itself always samples from the training policy.
    derive_controller = self.controller.clone(tanh_c=0.0) if c.derive_reference_logits else self.controller
    self.derive_sample = sampler(derive_controller if self.use_controller else None, self.space)
    self.trains_controller = self.use_controller and c.steps_per_epoch > 0
    self.clock = Clock()

  def lr(self, epoch: int) -> float:
    s = self.config.shared
    return tr.shared_learning_rate(epoch, lr=s.lr, decay=s.decay, decay_after=s.decay_after)

  def fixed_arch(self, source: pathlib.Path | None = None) -> np.ndarray:
    """The architecture of `dag_path`, else the one derived in `source` (default the workdir)."""
    if self.config.dag_path:
      return ss.load_dag_file(self.config.dag_path, self.space)
    path = (source or self.workdir) / "derived" / "dag.json"
    if not path.exists():
      raise ConfigError(f"mode {self.config.mode!r} needs an architecture: set dag_path, or run mode 'derive' first "
                        f"({path} does not exist)")
    return ss.load_dag_file(path, self.space)


def fresh_state(run: Run, rng: jax.Array) -> SearchState:
  """A new search: fresh shared weights and controller, a zero WPL state (WPL on), the data at their start."""
  k_shared, k_ctl = jax.random.split(rng)
  shared = tr.init_shared(run.task.init_params(k_shared), run.task.optimizer)
  controller = reinforce.init_reinforce(run.controller, ctl.init_controller(run.controller, k_ctl),
                                        run.controller_optimizer)
  wpl = wpl_lib.init_wpl_state(run.task.monitored(shared.params)) if run.task.wpl_hp is not None else None
  return SearchState(shared, controller, wpl, tasks.DataCursor(0), rng, epoch=0, seconds=0.0)


def checkpoint_tree(state: SearchState, seconds: float) -> dict[str, Any]:
  """What a checkpoint holds: the state after its last finished epoch (`state.epoch - 1`) and the run's seconds."""
  tree = {"shared": state.shared, "controller": state.controller, "epoch": np.int32(state.epoch - 1),
          "rng": np.asarray(jax.random.key_data(state.rng)), "data_cursor": np.int64(state.data.position),
          "seconds": np.float64(seconds)}
  if state.wpl is not None:  # importance and anchors: a resumed run continues with the same penalty
    tree["wpl"] = state.wpl
  return tree


def uncommitted(tree: Any) -> Any:
  """Restored arrays come back committed to a device, fresh ones are not; jit keys its compilations on that, so a
  resumed run (and every mode that reads a trained run) would compile each step function again. Uncommitted copies
  keep one compilation per process."""
  def copy(x):
    if isinstance(x, jax.Array) and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jnp.asarray(np.asarray(x))
    return x
  return jax.tree.map(copy, tree)


def restore(run: Run, directory: pathlib.Path, rng: jax.Array) -> tuple[Checkpointer, SearchState]:
  """(checkpointer of `directory`, the state of its latest checkpoint, or a fresh state from `rng`)."""
  ckpt = Checkpointer(str(directory), max_to_keep=run.config.train.max_to_keep)
  state = fresh_state(run, rng)
  if ckpt.latest_step() is None:
    return ckpt, state
  tree = uncommitted(ckpt.restore(None, checkpoint_tree(state, 0.0)))
  return ckpt, state._replace(shared=tree["shared"], controller=tree["controller"], wpl=tree.get("wpl"),
                              data=tasks.DataCursor(int(tree["data_cursor"])),
                              rng=jax.random.wrap_key_data(jnp.asarray(tree["rng"])), epoch=int(tree["epoch"]) + 1,
                              seconds=float(tree["seconds"]))


def load_trained(run: Run) -> tuple[pathlib.Path, SearchState]:
  """(folder, state) of the trained run in `load_workdir` ('' = this workdir)."""
  source = pathlib.Path(run.config.load_workdir) if run.config.load_workdir else run.workdir
  ckpt, state = restore(run, source / "checkpoints", jax.random.key(run.config.seed))
  ckpt.close()
  if state.epoch == 0:
    raise CheckpointError(f"{source / 'checkpoints'} holds no checkpoint; mode {run.config.mode!r} needs a "
                          "trained run (set load_workdir to a run folder of mode 'train')")
  return source, state
