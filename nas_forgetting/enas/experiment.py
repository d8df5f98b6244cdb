"""ENAS experiment: `run(config, workdir)` for the recurrent (PTB, WikiText-2) and micro-CNN (CIFAR-10) searches.

Modes (`config.mode`):
  train                alternate shared-weight and controller phases for `train.max_epoch` epochs (resumes from the
                       latest checkpoint in <workdir>/checkpoints), then derive and evaluate.
  derive               sample `train.derive_num_sample` architectures, score each on the first reward batch, keep
                       the best; evaluate it on the reward split and the test split.
  evaluate             evaluate one architecture (`dag_path`, else the derived one) with the trained shared weights.
  train_scratch        derive the best cell, re-initialise the shared weights and train that cell alone.
  single               train the cell of a JSON DAG file (`dag_path`) alone, without a controller.
  ablation_activation  replace every activation of the cell by each activation in turn (RNN only).
  ablation_node        remove one node at a time (RNN only).
  rank_correlation     sample `train.rank_num_archs` architectures, score each with the shared weights and after
                       training it alone for `train.rank_epochs` epochs; Kendall tau between the two rankings.
Modes other than train/single read the trained run from `load_workdir` ('' = this workdir).

Outputs under the workdir: metrics.jsonl and tensorboard/ on the shared-step axis (shared loss and perplexity or
accuracy, WPL and forgetting statistics, evaluations of derived cells), controller/metrics.jsonl and
controller/tensorboard/ on the controller-step axis (reward, entropy, advantage, baseline), checkpoints/,
networks/*.png (sampled cells) and networks.gif, derived/{dag.json, arch.txt, cell.png}, ablations/<kind>.{csv,png},
rank/rank.{csv,png}, summary.json ("seconds": the run's total over its launches, up to the checkpoint each resumed
from), forgetting.csv (per-epoch forgetting of the search's architectures, `wpl.measure_forgetting`); cells trained
alone (single, scratch, rank/arch_<k>) keep their own metrics, checkpoints and result.json in their folder. Every
run ends with a result block in the terminal (data, network, derived cell and its numbers).

Resuming: a relaunch restores the latest checkpoint and drops whatever was logged after it (metrics.jsonl lines,
TensorBoard steps, on both step axes), so a resumed run's outputs equal an uninterrupted run's. The last epoch's
derive and summary.json come before its checkpoint: a search whose last checkpoint is the final epoch's has
finished, and relaunching it says so and writes nothing. `train.max_epoch` may be raised on a relaunch
(RESUME_SAFE_FIELDS): the search continues exactly as a run launched with the longer schedule (the shorter run's
final derive stays in the logs). Divergence: every step's losses and metrics and a traced "parameters and optimizer
state are finite" flag are checked on the host once per logging interval; a NaN or infinity stops the run with a
DivergenceError naming the quantity, the step, the epoch and phase and the step's architecture.
WPL (`config.wpl`, see `nas_forgetting.wpl.state.default_wpl_config`; off in the plain ENAS configs): the penalty
over each architecture's active shared weights in the shared step, the Fisher update and anchor refresh after each
burst of `wpl.num_batch_per_iter` steps (the Fisher of the cross-entropy, or with `wpl.shared_ce_fisher=False` of the
full training loss: cross-entropy, regularisers, L2 and the WPL penalty), the WPL state in the checkpoint.
Offline text data (train.txt missing) train on valid.txt and evaluate on test.txt; every summary says so in
`data_note`.

The references' deviations from the papers are available as named options, all off by default:
`controller.derive_reference_logits` (derive, and the best-of-samples pick of train_scratch, sample from
decoder(h) / temperature without the tanh_c squashing, as the reference's derive mode; the search always samples
from the squashed training policy), `rnn.next_hidden='last_node'` (the next hidden state is the last node, not the
average of the loose ends), `cnn.sep_conv='depthwise'` (conv ops without the pointwise convolution) and
`cnn.cell_output='last_node'` (the micro cell outputs its last node alone; see `nas_forgetting.models.enas_cnn`).
"""

from __future__ import annotations

import functools
import json
import math
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nas_forgetting.data.datasets import load_dataset
from nas_forgetting.data.text import batchify, load_corpus
from nas_forgetting.enas import config as enas_config
from nas_forgetting.enas import drawing
from nas_forgetting.enas import reinforce
from nas_forgetting.enas import search_space as ss
from nas_forgetting.enas import trainer as tr
from nas_forgetting.errors import CheckpointError, ConfigError, DataError
from nas_forgetting.io import plots
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.checkpoint import Checkpointer
from nas_forgetting.io.metrics import MetricsLogger, read_csv, read_jsonl, write_csv
from nas_forgetting.io.progress import progress
from nas_forgetting.io.report import print_result_block
from nas_forgetting.models import controller as ctl
from nas_forgetting.models.enas_cnn import EnasCnn
from nas_forgetting.models.enas_rnn import EnasRnn
from nas_forgetting.numerics import check_finite
from nas_forgetting.wpl import enas_fisher
from nas_forgetting.wpl import forgetting as forgetting_lib
from nas_forgetting.wpl import masks as wpl_masks
from nas_forgetting.wpl import state as wpl_lib

MODES = enas_config.MODES
NETWORKS = enas_config.NETWORKS
CONTROLLER_DIR = "controller"  # the controller's metrics.jsonl and tensorboard/ (its own step axis)

# Fields a relaunch into an existing workdir may change: a longer (or equal) schedule continues the search exactly
# as a run launched with it from the start would (same numbers; the shorter run's final derive stays logged).
RESUME_SAFE_FIELDS = ("train.max_epoch",)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every field of a resolved ENAS config before any work (ConfigError naming the field); see
  `nas_forgetting.enas.config.validate`."""
  enas_config.validate(config)


# ----------------------------------------------------------------------------------------------------------------
# Jitted functions, cached by their (hashable) static arguments: modes run one after another in a process
# (derive after train, ablations, tests) reuse the compiled code instead of recompiling it.
# ----------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _rnn_functions(model, bptt, ar_alpha, tar_beta, grad_clip, l2_reg, momentum, nesterov, reward_c, ppl_square,
                   wpl_hp=None, wpl_estimator="empirical", wpl_ce_fisher=True):
  optimizer = tr.shared_optimizer(grad_clip, l2_reg, momentum, nesterov)
  step = jax.jit(functools.partial(tr.rnn_shared_step, model=model, optimizer=optimizer, bptt=bptt,
                                   ar_alpha=ar_alpha, tar_beta=tar_beta, wpl_hp=wpl_hp), donate_argnums=(0,))
  reward_fn = functools.partial(tr.rnn_reward_fn, model=model, bptt=bptt, reward_c=reward_c, ppl_square=ppl_square)
  score_fn = functools.partial(tr.rnn_score_fn, model=model, bptt=bptt)

  def end_burst(wpl_state, params, data, start, arch):
    """Fisher of the architecture's cross-entropy (or, `wpl_ce_fisher` False, of its full training loss) on the
    window at `start`, then Fisher update and anchor refresh."""
    inputs, targets = tr.lm_window(data, start, bptt)
    fisher = enas_fisher.rnn_fisher(params, inputs, targets, arch, wpl_state, model=model, estimator=wpl_estimator,
                                    shared_ce_fisher=wpl_ce_fisher, ar_alpha=ar_alpha, tar_beta=tar_beta,
                                    l2_reg=l2_reg, wpl_hp=wpl_hp)
    return wpl_lib.end_burst(wpl_state, wpl_masks.rnn_monitored(params), fisher,
                             wpl_masks.rnn_active_mask(arch, model.num_blocks), wpl_hp)

  return optimizer, step, reward_fn, score_fn, (jax.jit(end_burst) if wpl_hp is not None else None)


@functools.lru_cache(maxsize=None)
def _cnn_functions(model, pad, flip, cutout, grad_clip, l2_reg, momentum, nesterov, reward_c, wpl_hp=None,
                   wpl_estimator="empirical", wpl_ce_fisher=True):
  optimizer = tr.shared_optimizer(grad_clip, l2_reg, momentum, nesterov)
  step = jax.jit(functools.partial(tr.cnn_shared_step, model=model, optimizer=optimizer, pad=pad, flip=flip,
                                   cutout=cutout, wpl_hp=wpl_hp), donate_argnums=(0,))
  reward_fn = functools.partial(tr.cnn_reward_fn, model=model, reward_c=reward_c)
  score_fn = functools.partial(tr.cnn_score_fn, model=model)

  def end_burst(wpl_state, params, images, labels, arch):
    fisher = enas_fisher.cnn_fisher(params, images, labels, arch, wpl_state, model=model, estimator=wpl_estimator,
                                    shared_ce_fisher=wpl_ce_fisher, l2_reg=l2_reg, wpl_hp=wpl_hp)
    # The view holds the parameter leaves themselves; copy them so that the anchors never alias the shared
    # weights' buffers, which the next shared step donates.
    view = jax.tree.map(lambda x: x + jnp.zeros((), x.dtype), wpl_masks.cnn_monitored(params))
    return wpl_lib.end_burst(wpl_state, view, fisher, wpl_masks.cnn_active_mask(arch, view), wpl_hp)

  return optimizer, step, reward_fn, score_fn, (jax.jit(end_burst) if wpl_hp is not None else None)


def wpl_settings(config: ml_collections.ConfigDict) -> tuple[wpl_lib.WPLHyperParams | None, str]:
  """(hyper-parameters or None when WPL is off, Fisher estimator) from the `wpl` group, validated."""
  w = config.wpl
  hp = wpl_lib.WPLHyperParams.from_config(w)
  if not w.enabled:
    return None, w.estimator
  if w.estimator not in enas_fisher.ENAS_ESTIMATORS:
    raise ConfigError(f"wpl.estimator={w.estimator!r} is not available for the ENAS supernets; expected one of "
                      f"{', '.join(enas_fisher.ENAS_ESTIMATORS)}")
  return hp, w.estimator


@functools.lru_cache(maxsize=None)
def _search_functions(controller, space, reward_fn, score_fn, lr, grad_clip, num_samples, ema_decay, entropy_coeff,
                      entropy_mode):
  optimizer = reinforce.controller_optimizer(lr, grad_clip)
  controller_step = jax.jit(functools.partial(
      tr.controller_step, controller=controller, optimizer=optimizer, decisions_to_arch=space.decisions_to_arch,
      decision_mask=space.decision_mask, reward_fn=reward_fn, num_samples=num_samples, ema_decay=ema_decay,
      entropy_coeff=entropy_coeff, entropy_mode=entropy_mode))
  return optimizer, controller_step, jax.jit(reward_fn), jax.jit(score_fn)


@functools.lru_cache(maxsize=None)
def _sampler(controller, space):
  """Jitted `(controller params, rng, num_samples) -> archs`; `controller` None samples uniformly at random."""
  return jax.jit(functools.partial(tr.sample_archs, controller=controller, num_choices=space.num_choices,
                                   decisions_to_arch=space.decisions_to_arch), static_argnames=("num_samples",))


_rows = jax.jit(lambda x, start, n: jax.lax.dynamic_slice_in_dim(x, start, n), static_argnums=2)  # traced start


def _uncommitted(tree: Any) -> Any:
  """Restored arrays come back committed to a device, fresh ones are not; jit keys its compilations on that, so a
  resumed run (and every mode that reads a trained run) would compile each step function again. Uncommitted copies
  keep one compilation per process."""
  def copy(x):
    if isinstance(x, jax.Array) and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jnp.asarray(np.asarray(x))
    return x
  return jax.tree.map(copy, tree)


@functools.lru_cache(maxsize=None)
def _init_fn(model, *shapes):
  """Jitted `rng -> params` of a supernet for example inputs of `shapes` (zeros) and an all-zero architecture, the
  last shape; cached, so runs and modes in one process share its compilation."""
  def init(rng):
    zeros = [jnp.zeros(shape, dtype) for shape, dtype in shapes]
    return model.init(rng, *zeros, train=False)["params"]
  return jax.jit(init)


# ----------------------------------------------------------------------------------------------------------------
# Network-specific parts: data, model, steps, evaluation
# ----------------------------------------------------------------------------------------------------------------


class _RnnTask:
  """Language modelling with the recurrent supernet."""

  metric = "perplexity"
  higher_is_better = False

  def __init__(self, config: ml_collections.ConfigDict):

    c = config
    corpus = load_corpus(c.data.path, allow_missing_train=True)
    train, valid, test = np.asarray(corpus.train), np.asarray(corpus.valid), np.asarray(corpus.test)
    if corpus.train_file_missing:  # train is then a copy of valid: split valid into training and reward parts
      if not 0 < c.data.reward_fraction < 1:
        raise ConfigError(f"data.reward_fraction={c.data.reward_fraction} must lie in (0, 1) when {c.data.path} "
                          "has no train.txt")
      cut = int(round(len(valid) * (1 - c.data.reward_fraction)))
      train, reward = valid[:cut], valid[cut:]
      self.data_tag = f"{c.data.name}: trained on valid.txt (no train.txt), tested on test.txt"
      self.data_note = (f"{c.data.name}: train.txt unavailable; shared weights trained on the first "
                        f"{1 - c.data.reward_fraction:.0%} of valid.txt, controller reward on the rest of valid.txt, "
                        "evaluation on test.txt")
    else:
      reward = valid
      self.data_tag = f"{c.data.name}: train.txt / valid.txt / test.txt"
      self.data_note = f"{c.data.name}: train.txt for training, valid.txt for rewards, test.txt for evaluation"
    self.vocab_size = len(corpus.vocab)
    self.bptt = c.shared.bptt
    self.train = jnp.asarray(batchify(train, c.shared.batch_size))
    self.reward = jnp.asarray(batchify(reward, c.shared.batch_size))
    self.reward_eval = jnp.asarray(batchify(reward, c.train.eval_batch_size))
    if c.data.eval_max_tokens > 0:  # evaluate on a prefix of the test split (smoke runs); 0 = all of it
      test = test[:c.data.eval_max_tokens]
      self.data_note += f" (first {len(test)} tokens)"
    self.test = jnp.asarray(batchify(test, c.train.eval_batch_size))
    for name, arr in (("training", self.train), ("reward", self.reward)):
      if arr.shape[0] < self.bptt + 1:
        raise DataError(f"{c.data.path}: the {name} split has {arr.shape[0]} steps per column at batch size "
                        f"{c.shared.batch_size}; need at least bptt + 1 = {self.bptt + 1}")
    self.space = ss.RnnSearchSpace(num_blocks=c.search.num_blocks, mode=c.search.mode,
                                   topology=c.search.topology, min_nodes=c.search.min_nodes)
    r = c.rnn
    self.model = EnasRnn(vocab_size=self.vocab_size, num_blocks=c.search.num_blocks, hidden_size=r.hidden_size,
                         dropout_embedding=r.dropout_embedding, dropout_input=r.dropout_input,
                         dropout_output=r.dropout_output, weight_drop=r.weight_drop,
                         max_hidden_norm=r.max_hidden_norm, init_range=r.init_range, next_hidden=r.next_hidden)
    self.batch_size = c.shared.batch_size
    self.wpl_hp, estimator = wpl_settings(c)
    self.optimizer, self._step, self.reward_fn, self.score_fn, self._end_burst = _rnn_functions(
        self.model, self.bptt, r.ar_alpha, r.tar_beta, c.shared.grad_clip, c.shared.l2_reg, c.shared.momentum,
        c.shared.nesterov, c.controller.reward_c, c.controller.ppl_square, self.wpl_hp, estimator,
        c.wpl.shared_ce_fisher)
    self.windows_train = (self.train.shape[0] - 1) // self.bptt
    self.windows_reward = (self.reward.shape[0] - 1) // self.bptt
    self.cursor = 0  # next training window; checkpointed, so a resumed run reads the same data
    self._hidden = None

  def init_params(self, rng):
    return _init_fn(self.model, ((self.bptt, self.batch_size), jnp.int32),
                    ((self.batch_size, self.model.hidden_size), jnp.float32),
                    ((self.space.num_blocks, 2), jnp.int32))(rng)

  def start_epoch(self):
    self._hidden = jnp.zeros((self.batch_size, self.model.hidden_size))

  def shared_step(self, state, arch, rng, lr, wpl_state=None):
    if self.cursor >= self.windows_train:
      self.cursor = 0
      self._hidden = jnp.zeros_like(self._hidden)
    start = jnp.asarray(self.cursor * self.bptt, jnp.int32)
    self._last_start = start
    self.cursor += 1
    state, self._hidden, metrics = self._step(state, self.train, start, self._hidden, arch, rng, lr, wpl_state)
    return state, metrics

  def end_burst(self, wpl_state, params, arch, valid_batch: int | None):
    """WPL update after an architecture's burst: Fisher on reward window `valid_batch`, or (None) on the last
    training window."""
    if valid_batch is None:
      return self._end_burst(wpl_state, params, self.train, self._last_start, arch)
    data, start = self.reward_batch(valid_batch)
    return self._end_burst(wpl_state, params, data, start, arch)

  def monitored(self, params):
    return wpl_masks.rnn_monitored(params)

  @property
  def steps_per_pass(self) -> int:
    return self.windows_train

  def reward_batch(self, k: int):
    return (self.reward, jnp.asarray((k % self.windows_reward) * self.bptt, jnp.int32))

  def evaluate(self, params, arch, split: str) -> float:
    data = self.reward_eval if split == "reward" else self.test
    return tr.rnn_evaluate(params, data, jnp.asarray(arch), model=self.model, bptt=self.bptt)[1]


class _CnnTask:
  """Image classification with the micro-CNN supernet."""

  metric = "accuracy"
  higher_is_better = True

  def __init__(self, config: ml_collections.ConfigDict):

    c = config
    splits = load_dataset(c.data.image)
    train, test = splits.train, splits.test
    n_reward = int(round(len(train.labels) * c.data.reward_fraction))
    if not 0 < n_reward < len(train.labels):
      raise ConfigError(f"data.reward_fraction={c.data.reward_fraction} leaves no reward or no training images "
                        f"out of {len(train.labels)}")
    perm = np.random.default_rng(c.seed).permutation(len(train.labels))
    train_idx, reward_idx = perm[n_reward:], perm[:n_reward]
    self.data_tag = f"{train.name}: {len(train_idx)} train images, {len(test.labels)} test images"
    self.data_note = (f"{train.name}: shared weights on {len(train_idx)} training images, controller reward on "
                      f"{len(reward_idx)} held-out training images, evaluation on {len(test.labels)} test images")
    self.images = jnp.asarray(train.images[train_idx])
    self.labels = jnp.asarray(train.labels[train_idx])
    self.reward_images = jnp.asarray(train.images[reward_idx])
    self.reward_labels = jnp.asarray(train.labels[reward_idx])
    self.test_images, self.test_labels = jnp.asarray(test.images), jnp.asarray(test.labels)
    self.batch_size = c.shared.batch_size
    self.reward_batch_size = min(c.controller.reward_batch_size, len(reward_idx))
    if len(train_idx) < self.batch_size:
      raise DataError(f"{len(train_idx)} training images are fewer than one batch of {self.batch_size}")
    self.space = ss.CnnSearchSpace(num_blocks=c.search.num_blocks)
    m = c.cnn
    self.model = EnasCnn(num_classes=train.num_classes, num_blocks=c.search.num_blocks, features=m.features,
                         num_modules=m.num_modules, num_repeat_normal=m.num_repeat_normal,
                         sep_conv_stacks=m.sep_conv_stacks, dropout=m.dropout, sep_conv=m.sep_conv,
                         cell_output=m.cell_output)
    self.eval_batch_size = c.train.eval_batch_size
    self.wpl_hp, estimator = wpl_settings(c)
    self.optimizer, self._step, self.reward_fn, self.score_fn, self._end_burst = _cnn_functions(
        self.model, m.pad, m.flip, m.cutout, c.shared.grad_clip, c.shared.l2_reg, c.shared.momentum,
        c.shared.nesterov, c.controller.reward_c, self.wpl_hp, estimator, c.wpl.shared_ce_fisher)
    self._seed = c.seed
    self.cursor = 0  # batches drawn so far (over all passes); checkpointed, so a resumed run reads the same data

  def init_params(self, rng):
    return _init_fn(self.model, ((2,) + self.images.shape[1:], jnp.float32),
                    ((2, self.space.num_blocks, 4), jnp.int32))(rng)

  def start_epoch(self):
    pass

  @property
  def steps_per_pass(self) -> int:
    return len(self.labels) // self.batch_size

  def shared_step(self, state, arch, rng, lr, wpl_state=None):
    epoch_pass, k = divmod(self.cursor, self.steps_per_pass)
    order = np.random.default_rng([self._seed, epoch_pass]).permutation(len(self.labels))  # a fresh order per pass
    idx = jnp.asarray(order[k * self.batch_size:(k + 1) * self.batch_size], jnp.int32)
    self._last_idx = idx
    self.cursor += 1
    return self._step(state, self.images, self.labels, idx, arch, rng, lr, wpl_state)

  def end_burst(self, wpl_state, params, arch, valid_batch: int | None):
    """WPL update after an architecture's burst: Fisher on reward batch `valid_batch`, or (None) on the last
    training batch (without augmentation)."""
    if valid_batch is None:
      images, labels = self.images[self._last_idx], self.labels[self._last_idx]
    else:
      images, labels = self.reward_batch(valid_batch)
    return self._end_burst(wpl_state, params, images, labels, arch)

  def monitored(self, params):
    return wpl_masks.cnn_monitored(params)

  def reward_batch(self, k: int):
    n = len(self.reward_labels)
    start = np.int32((k * self.reward_batch_size) % max(n - self.reward_batch_size + 1, 1))
    return (_rows(self.reward_images, start, self.reward_batch_size),
            _rows(self.reward_labels, start, self.reward_batch_size))

  def evaluate(self, params, arch, split: str) -> float:
    images, labels = ((self.reward_images, self.reward_labels) if split == "reward"
                      else (self.test_images, self.test_labels))
    return tr.cnn_evaluate(params, images, labels, jnp.asarray(arch), model=self.model,
                           batch_size=min(self.eval_batch_size, len(labels)))


# ----------------------------------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------------------------------


class _Run:
  """Everything one invocation needs: task, controller, jitted functions, outputs."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: pathlib.Path):
    validate_config(config)
    self.config = config
    self.workdir = workdir
    self.task = _RnnTask(config) if config.network == "rnn" else _CnnTask(config)
    self.space = self.task.space
    c = config.controller
    self.use_controller = not (config.network == "rnn" and config.search.mode == "random")
    self.controller = ctl.Controller(self.space.num_choices, hidden_size=c.hidden_size, temperature=c.temperature,
                                     tanh_c=c.tanh_c, init_range=c.init_range)
    (self.controller_optimizer, self._controller_step, self._score,
     self._metric) = _search_functions(self.controller, self.space, self.task.reward_fn, self.task.score_fn, c.lr,
                                       c.grad_clip, c.num_samples, c.ema_decay, c.entropy_coeff, c.entropy_mode)
    self._sample = _sampler(self.controller if self.use_controller else None, self.space)
    # derive_reference_logits: derive samples from decoder(h) / temperature without the tanh_c squashing (the
    # reference's derive mode); the search itself always samples from the training policy.
    derive_controller = self.controller.clone(tanh_c=0.0) if c.derive_reference_logits else self.controller
    self._derive_sample = _sampler(derive_controller if self.use_controller else None, self.space)
    self.trains_controller = self.use_controller and c.steps_per_epoch > 0
    # Metrics: the shared weights' (and evaluations') on the shared-step axis in <workdir>, the controller's on its
    # own step axis in <workdir>/controller; each resumes with the records after its checkpoint dropped.
    self.logger = None
    self.ctl_logger = None
    self.started = time.time()
    self.seconds_before = 0.0  # seconds of earlier launches, up to the checkpoint this launch resumed from
    self.restored_seconds = 0.0
    self.wpl_hp = self.task.wpl_hp
    self.wpl_state = None  # WPLState over the monitored shared weights when WPL is on (set by restore)
    self.forgetting = forgetting_lib.ForgettingTracker(higher_is_better=self.task.higher_is_better)

  # --- states and checkpoints -----------------------------------------------------------------------------------
  def fresh_states(self, rng):
    k_shared, k_ctl = jax.random.split(rng)
    shared = tr.init_shared(self.task.init_params(k_shared), self.task.optimizer)
    cparams = ctl.init_controller(self.controller, k_ctl)
    self.wpl_state = (wpl_lib.init_wpl_state(self.task.monitored(shared.params)) if self.wpl_hp is not None
                      else None)
    return shared, reinforce.init_reinforce(self.controller, cparams, self.controller_optimizer)

  def _tree(self, shared, cstate, epoch, rng, seconds: float = 0.0):
    tree = {"shared": shared, "controller": cstate, "epoch": np.int32(epoch),
            "rng": np.asarray(jax.random.key_data(rng)), "data_cursor": np.int64(self.task.cursor),
            "seconds": np.float64(seconds)}
    if self.wpl_state is not None:  # importance and anchors: a resumed run continues with the same penalty
      tree["wpl"] = self.wpl_state
    return tree

  def restore(self, directory: pathlib.Path, rng):
    """(shared, controller, next epoch, rng) from the latest checkpoint in `directory`, or fresh ones."""

    ckpt = Checkpointer(str(directory), max_to_keep=self.config.train.max_to_keep)
    shared, cstate = self.fresh_states(rng)
    self.restored_seconds = 0.0
    if ckpt.latest_step() is None:
      self.task.cursor = 0
      return ckpt, shared, cstate, 0, rng
    tree = _uncommitted(ckpt.restore(None, self._tree(shared, cstate, 0, rng)))
    rng = jax.random.wrap_key_data(jnp.asarray(tree["rng"]))
    self.task.cursor = int(tree["data_cursor"])
    self.wpl_state = tree.get("wpl")
    self.restored_seconds = float(tree["seconds"])
    return ckpt, tree["shared"], tree["controller"], int(tree["epoch"]) + 1, rng

  def elapsed(self) -> float:
    """Seconds of this run: earlier launches up to the checkpoint resumed from, plus this launch so far."""
    return self.seconds_before + time.time() - self.started

  # --- metrics loggers ------------------------------------------------------------------------------------------
  def open_logs(self, *, shared_step: int | None = None, controller_step: int | None = None,
                folder: pathlib.Path | None = None, controller: bool = False) -> None:
    """Opens the metrics logger of `folder` (default the workdir) and, with `controller`, the controller's.

    `shared_step` / `controller_step`: the steps of the checkpoint a resumed run starts from (None for a fresh
    start). Whatever was logged after them (by a launch that stopped before its next checkpoint) is dropped from
    metrics.jsonl and hidden in TensorBoard, so the resumed run's logs equal an uninterrupted run's."""

    def purge(where: pathlib.Path, step: int | None) -> int | None:
      if step is None and not (where / "metrics.jsonl").exists():
        return None  # a fresh run in a fresh folder: nothing to drop
      return 0 if step is None else step + 1

    folder = folder or self.workdir
    self.logger = MetricsLogger(str(folder), purge_step=purge(folder, shared_step))
    if controller and self.trains_controller:
      where = folder / CONTROLLER_DIR
      self.ctl_logger = MetricsLogger(str(where), purge_step=purge(where, controller_step))

  def close(self) -> None:
    for logger in (self.logger, self.ctl_logger):
      if logger is not None:
        logger.close()

  def load_trained(self):
    """Shared and controller states of the trained run in `load_workdir`."""

    source = pathlib.Path(self.config.load_workdir) if self.config.load_workdir else self.workdir
    ckpt, shared, cstate, next_epoch, _ = self.restore(source / "checkpoints", jax.random.key(self.config.seed))
    ckpt.close()
    if next_epoch == 0:
      raise CheckpointError(f"{source / 'checkpoints'} holds no checkpoint; mode {self.config.mode!r} needs a "
                            "trained run (set load_workdir to a run folder of mode 'train')")
    return source, shared, cstate

  # --- logging and drawing ---------------------------------------------------------------------------------------
  def log(self, step: int, history: list[dict[str, jax.Array]], extra: dict[str, float] | None = None, *,
          where: str, logger=None, archs: list[jax.Array] | None = None):
    """Checks and logs the steps of `history` (ending at `step`) as their means, plus `extra`.

    The per-step values come to the host here, once per logging interval: a non-finite loss or metric, or a
    `*/params_finite` flag that is False, stops the run with a DivergenceError naming the quantity, the step and
    `where` (and the step's architecture, `archs`)."""
    host = jax.device_get(history)
    self.check_steps(host, step - len(host) + 1, where, archs)
    means = {}
    for k in host[0] if host else {}:
      if k in tr.PARAMS_FINITE:
        continue
      values = np.asarray([h[k] for h in host], np.float64)
      # Perplexities are averaged geometrically (= exp of the mean cross-entropy), everything else arithmetically.
      means[k] = float(np.exp(np.mean(np.log(values)))) if k.endswith("perplexity") else float(values.mean())
    if extra:
      check_finite(extra, context=f"the end of {where}")
    if not means and not any(k != "epoch" for k in (extra or {})):
      return {}
    means.update(extra or {})
    (logger or self.logger).log(step, means)
    return means

  def check_steps(self, host: list[dict[str, Any]], first_step: int, where: str,
                  archs: list[jax.Array] | None = None) -> None:
    """DivergenceError for the earliest step of `host` (per-step metrics on the host, the first one being step
    `first_step`) with a non-finite value or a False `*/params_finite` flag."""
    if not host:
      return
    first_bad = {}
    for k in host[0]:
      values = np.asarray([h[k] for h in host])
      bad = ~values.astype(bool) if k in tr.PARAMS_FINITE else ~np.isfinite(values.astype(np.float64))
      if bad.any():
        first_bad[k] = (int(np.argmax(bad)), values)
    if not first_bad:
      return
    index = min(i for i, _ in first_bad.values())
    # At one step, name a quantity of the step before the parameters it produced.
    name = min((k for k, (i, _) in first_bad.items() if i == index), key=lambda k: k in tr.PARAMS_FINITE)
    values = first_bad[name][1]
    if name in tr.PARAMS_FINITE:
      name = f"{name.split('/')[0]} parameters or optimizer state after the step"
      values = values.astype(bool)
    context = where
    if archs is not None and index < len(archs) and archs[index] is not None:
      context += f", architecture {self.space.to_string(np.asarray(archs[index]))}"
    check_finite({name: values}, context=context, first_step=first_step)

  def draw(self, arch, name: str, title: str, tag: str, step: int, logger=None) -> pathlib.Path:
    path = self.workdir / "networks" / f"{name}.png"
    png = drawing.draw_architecture(np.asarray(arch), self.space, path, title=title,
                                    backend=self.config.train.draw_backend)
    (logger or self.logger).image(tag, png, step)
    return path

  def write_gif(self):
    frames = sorted((self.workdir / "networks").glob("*.png"))
    frames = [f for f in frames if not f.stem.endswith("best")]
    if frames:
      drawing.make_gif(frames, self.workdir / "networks.gif", labels=[f"step: {f.stem}" for f in frames],
                       max_frames=self.config.train.gif_max_frames)

  # --- phases ---------------------------------------------------------------------------------------------------
  def train_shared_epoch(self, shared, cstate, rng, epoch: int, lr: float, fixed_arch=None, desc="shared"):
    """One epoch of shared training. A search samples one architecture per burst of `wpl.num_batch_per_iter`
    steps; with WPL on, each step adds the penalty and each burst ends with the Fisher update and anchor refresh
    (`wpl.state.end_burst`). With `wpl.measure_forgetting`, every architecture is scored on a fixed reward batch
    right after its burst and again at the end of the epoch (forgetting/* metrics, forgetting.csv)."""

    c = self.config
    steps = c.shared.steps_per_epoch or self.task.steps_per_pass
    search = fixed_arch is None
    burst = c.wpl.num_batch_per_iter if search else 1
    self.task.start_epoch()
    lr = jnp.asarray(lr, jnp.float32)
    history = []
    measure = c.wpl.measure_forgetting and search
    update_wpl = self.wpl_hp is not None and search  # a cell trained alone keeps a zero Fisher: no penalty
    if update_wpl:
      self.wpl_state = wpl_lib.begin_epoch(self.wpl_state, epoch, self.wpl_hp)
    if measure:
      self.forgetting.begin_epoch(epoch)
    fixed_batch = self.task.reward_batch(0)
    step = int(shared.step)  # counted on the host: no device synchronisation per step
    arch = fixed_arch
    archs = []  # each step's architecture (device arrays), named when a step diverges
    where = f"epoch {epoch}, {'shared training' if search else f'training {desc}'}"
    for k in progress(range(steps), total=steps, desc=f"{desc} epoch {epoch}", unit="step"):
      rng, k_arch, k_step = jax.random.split(rng, 3)
      if search and k % burst == 0:
        arch = self._sample(cstate.params, k_arch, num_samples=1)[0]
      shared, metrics = self.task.shared_step(shared, arch, k_step, lr, self.wpl_state)
      if search and ((k + 1) % burst == 0 or k == steps - 1):  # the end of this architecture's burst
        if update_wpl:
          valid = step // burst if c.wpl.shared_valid_fisher else None
          self.wpl_state = self.task.end_burst(self.wpl_state, shared.params, arch, valid)
        if measure:  # score right after this architecture's training burst, on a fixed validation batch
          self.forgetting.record_after_burst(arch, float(self._metric(shared.params, fixed_batch, arch[None])[0]))
      history.append(metrics)
      archs.append(arch)
      step += 1
      if step % c.train.log_every == 0:
        self.log(step, history, {"epoch": epoch}, where=where, archs=archs)
        history, archs = [], []
    extra = {"epoch": epoch}
    if update_wpl:
      extra.update({k: float(v) for k, v in wpl_lib.fisher_statistics(self.wpl_state).items()})
      extra["wpl/alpha"] = float(wpl_lib.penalty_strength(self.wpl_state, self.wpl_hp))
    if measure:
      after = self.scores(shared.params, fixed_batch, jnp.stack(self.forgetting.architectures))
      row = self.forgetting.end_epoch(list(after))
      extra.update({f"forgetting/{k}": float(row[k]) for k in forgetting_lib.SUMMARY_KEYS})
      check_finite({f"forgetting/{k}": row[k] for k in forgetting_lib.SUMMARY_KEYS}, context=where)
      forgetting_lib.write_forgetting_csv(self.workdir / "forgetting.csv", self.forgetting.rows)
    self.log(step, history, extra, where=where, archs=archs)
    return shared, rng

  def restore_forgetting_rows(self, next_epoch: int) -> None:
    """The forgetting rows of the epochs before `next_epoch` from forgetting.csv (a resumed search)."""

    path = self.workdir / "forgetting.csv"
    if next_epoch == 0 or not path.exists():
      return
    counts = ("epoch", "num_architectures")
    self.forgetting.rows = [{k: int(float(v)) if k in counts else float(v) for k, v in r.items()}
                            for r in read_csv(path) if int(float(r["epoch"])) < next_epoch]

  def scores(self, params, batch, archs) -> np.ndarray:
    """Scores of many architectures on one batch, in chunks of a fixed size (one compilation)."""
    chunk = self.config.train.derive_num_sample
    n = len(archs)
    pad = (-n) % chunk
    archs = jnp.concatenate([archs, jnp.repeat(archs[:1], pad, axis=0)]) if pad else archs
    out = [np.asarray(self._metric(params, batch, archs[i:i + chunk])) for i in range(0, len(archs), chunk)]
    return np.concatenate(out)[:n]

  def train_controller_epoch(self, shared, cstate, rng, epoch: int):

    c = self.config
    history = []
    where = f"epoch {epoch}, controller training"
    global_step = int(cstate.step)  # counted on the host: no device synchronisation per step
    for k in progress(range(c.controller.steps_per_epoch), desc=f"controller epoch {epoch}", unit="step"):
      rng, key = jax.random.split(rng)
      cstate, metrics = self._controller_step(cstate, shared.params, self.task.reward_batch(global_step), key)
      history.append(metrics)
      global_step += 1
      if global_step % c.train.log_every == 0:
        self.log(global_step, history, {"epoch": epoch}, where=where, logger=self.ctl_logger)
        history = []
      if c.train.draw_every and global_step % c.train.draw_every == 0:
        rng, key = jax.random.split(rng)
        arch = self._sample(cstate.params, key, num_samples=1)[0]
        self.draw(arch, f"{epoch:03d}-{global_step:06d}",
                  f"epoch {epoch}, controller step {global_step}, reward {float(metrics['controller/reward']):.4f}",
                  "controller/sample", global_step, logger=self.ctl_logger)
    self.log(global_step, history, {"epoch": epoch}, where=where, logger=self.ctl_logger)
    return cstate, rng

  def best_of_samples(self, shared, cstate, rng) -> tuple[np.ndarray, float]:
    """(architecture, reward) of the best of `train.derive_num_sample` candidates on the first reward batch,
    sampled from the derive policy (`controller.derive_reference_logits`)."""
    archs = self._derive_sample(cstate.params, rng, num_samples=self.config.train.derive_num_sample)
    rewards, _ = self._score(shared.params, self.task.reward_batch(0), archs)
    check_finite({"derive/candidate_reward": np.asarray(rewards)},
                 context=f"derive: the {len(archs)} candidates scored on the first reward batch")
    best, reward, _ = tr.pick_best(archs, rewards)
    return best, reward

  def derive(self, shared, cstate, rng, step: int) -> dict[str, Any]:
    """Samples candidates, keeps the best on the first reward batch, evaluates it, writes derived/."""
    best, reward = self.best_of_samples(shared, cstate, rng)
    return self.report_arch(shared, best, step, "derived", extra={"derive/best_reward": reward})

  def report_arch(self, shared, arch, step: int, folder: str, extra: dict | None = None) -> dict[str, Any]:

    m = self.task.metric
    result = {f"eval/reward_split_{m}": self.task.evaluate(shared.params, arch, "reward"),
              f"eval/test_{m}": self.task.evaluate(shared.params, arch, "test"), **(extra or {})}
    check_finite(result, context=f"evaluation of the {folder} architecture {self.space.to_string(arch)}")
    self.logger.log(step, result)
    out = self.workdir / folder
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "dag.json", ss.dag_json(arch, self.space))
    atomic_write_text(out / "arch.txt", self.space.to_string(arch) + "\n")
    png = drawing.draw_architecture(np.asarray(arch), self.space, out / "cell.png",
                                    title=f"{folder}: test {m} {result[f'eval/test_{m}']:.4g} ({self.task.data_tag})",
                                    backend=self.config.train.draw_backend)
    self.logger.image(f"{folder}/best", png, step)
    return {"arch": self.space.to_string(arch), **result}

  def lr(self, epoch: int) -> float:
    s = self.config.shared
    return tr.shared_learning_rate(epoch, lr=s.lr, decay=s.decay, decay_after=s.decay_after)

  def fixed_arch(self, source: pathlib.Path | None = None) -> np.ndarray:
    if self.config.dag_path:
      return ss.load_dag_file(self.config.dag_path, self.space)
    path = (source or self.workdir) / "derived" / "dag.json"
    if not path.exists():
      raise ConfigError(f"mode {self.config.mode!r} needs an architecture: set dag_path, or run mode 'derive' first "
                        f"({path} does not exist)")
    return ss.load_dag_file(path, self.space)


# ----------------------------------------------------------------------------------------------------------------
# Modes
# ----------------------------------------------------------------------------------------------------------------


def _train(run: _Run) -> dict[str, Any]:
  """The search: shared and controller phases for train.max_epoch epochs, then derive and evaluate.

  The last epoch's derive, drawings and summary.json come before its checkpoint, so a run whose last checkpoint
  is the final epoch's has finished: relaunching it only says so. A run resumed from an earlier checkpoint drops
  the records logged after it and ends with outputs equal to an uninterrupted run's."""
  c = run.config
  ckpt, shared, cstate, start, rng = run.restore(run.workdir / "checkpoints", jax.random.key(c.seed))
  if start > c.train.max_epoch:
    raise ConfigError(f"train.max_epoch={c.train.max_epoch}, but the search in {run.workdir} has already trained "
                      f"{start} epochs; launch it with train.max_epoch >= {start}")
  if start == c.train.max_epoch:
    return _finished(run, start)
  run.seconds_before = run.restored_seconds
  resumed = start > 0
  run.open_logs(shared_step=int(shared.step) if resumed else None,
                controller_step=int(cstate.step) if resumed else None, controller=True)
  run.restore_forgetting_rows(start)
  summary = {}
  for epoch in range(start, c.train.max_epoch):
    shared, rng = run.train_shared_epoch(shared, cstate, rng, epoch, run.lr(epoch))
    if run.trains_controller:
      cstate, rng = run.train_controller_epoch(shared, cstate, rng, epoch)
    elif c.train.draw_every:
      rng, key = jax.random.split(rng)
      run.draw(run._sample(cstate.params, key, num_samples=1)[0], f"{epoch:03d}-{int(shared.step):06d}",
               f"epoch {epoch} (random)", "shared/sample", int(shared.step))
    last = epoch == c.train.max_epoch - 1
    derive_now = bool(c.train.derive_every) and (epoch + 1) % c.train.derive_every == 0
    if last:
      # The final derive takes the key a longer run's derive at this epoch would take, and advances the stored rng
      # only where that derive would: a relaunch with a larger train.max_epoch continues like the longer run.
      if derive_now:
        rng, key = jax.random.split(rng)
      else:
        key = jax.random.split(rng)[1]
      summary = _finish_search(run, shared, cstate, key)
    elif derive_now:
      rng, key = jax.random.split(rng)
      run.derive(shared, cstate, key, int(shared.step))
    if (epoch + 1) % c.train.save_every == 0 or last:  # after everything that draws from rng: exact resume
      ckpt.save(epoch, run._tree(shared, cstate, epoch, rng, run.elapsed()))
  ckpt.wait()
  ckpt.close()
  return summary


def _summary(run: _Run, results: dict[str, Any]) -> dict[str, Any]:
  """The summary.json record of a run: mode, network, data, total seconds, then the mode's results."""
  return {"mode": run.config.mode, "network": run.config.network, "data_note": run.task.data_note,
          "seconds": round(run.elapsed(), 1), **results}


def _finish_search(run: _Run, shared, cstate, key) -> dict[str, Any]:
  """The end of the last epoch: derive and evaluate, the GIF and curves, summary.json (before the checkpoint)."""

  results = run.derive(shared, cstate, key, int(shared.step))
  if run.config.wpl.measure_forgetting and run.forgetting.rows:
    rows = run.forgetting.rows
    results["forgetting/mean_diff_last_epoch"] = float(rows[-1]["mean_diff"])
    results["forgetting/mean_diff_all_epochs"] = float(np.mean([r["mean_diff"] for r in rows]))
  run.write_gif()
  _plot_curves(run)
  summary = _summary(run, results)
  atomic_write_text(run.workdir / SUMMARY_FILE, json.dumps(summary, indent=2, default=float))
  return summary


SUMMARY_FILE = "summary.json"


def _finished(run: _Run, epochs: int) -> dict[str, Any]:
  """A relaunch of a finished search: says so, writes nothing, returns the stored summary."""
  path = run.workdir / SUMMARY_FILE
  if not path.exists():
    raise CheckpointError(f"the search in {run.workdir} has finished all {epochs} epochs (its last checkpoint is "
                          f"the final one) but {path} is missing; run mode 'derive' with load_workdir={run.workdir} "
                          "in another workdir to derive its cell again")
  summary = json.loads(path.read_text(encoding="utf-8"))
  print(f"The ENAS search in {run.workdir} has finished all {epochs} epochs; nothing to do (its results are in "
        f"{path}; launch with a larger train.max_epoch to continue it).", flush=True)
  return dict(summary, finished_before=True)


def _plot_curves(run: _Run) -> None:
  """curves_shared.png (training perplexity or accuracy of the sampled cells, and the derived cells' evaluations on
  the reward and test splits at their shared steps) and curves_controller.png (reward, baseline) from metrics."""

  rows = read_jsonl(run.workdir / "metrics.jsonl")
  ctl_path = run.workdir / CONTROLLER_DIR / "metrics.jsonl"
  ctl_rows = read_jsonl(ctl_path) if ctl_path.exists() else []
  m = run.task.metric
  keys = ("shared/perplexity" if run.config.network == "rnn" else "shared/accuracy", f"eval/reward_split_{m}",
          f"eval/test_{m}")
  series = {k: tuple(zip(*[(r["step"], r[k]) for r in rows if k in r])) for k in keys}
  series = {k: v for k, v in series.items() if v}
  if keys[0] in series:
    plots.line_plot(run.workdir / "curves_shared.png", series, xlabel="shared step", ylabel=m,
              logy=run.config.network == "rnn", markers=True,
              title=f"shared weights: sampled cells (training) and derived cells (evaluation) ({run.task.data_tag})")
  ctrl = {k: [(r["step"], r[k]) for r in ctl_rows if k in r] for k in ("controller/reward", "controller/baseline")}
  ctrl = {k: tuple(zip(*v)) for k, v in ctrl.items() if v}
  if ctrl:
    plots.line_plot(run.workdir / "curves_controller.png", ctrl, xlabel="controller step", ylabel="reward",
              title=f"controller ({run.task.data_tag})")


def _derive(run: _Run) -> dict[str, Any]:
  _, shared, cstate = run.load_trained()
  return run.derive(shared, cstate, jax.random.key(run.config.seed + 7), int(shared.step))


def _evaluate(run: _Run) -> dict[str, Any]:
  source, shared, _ = run.load_trained()
  arch = run.fixed_arch(source)
  return run.report_arch(shared, arch, int(shared.step), "evaluated")


def _train_fixed(run: _Run, arch: np.ndarray, folder: str, epochs: int | None = None) -> dict[str, Any]:
  """Trains `arch` alone from fresh shared weights for `epochs` (default train.max_epoch); metrics, checkpoints
  and result.json go to <workdir>/<folder>. As the search: the report comes before the last checkpoint, a
  resumed training drops the records logged after its checkpoint, and a finished one returns its result.json."""

  c = run.config
  epochs = c.train.max_epoch if epochs is None else epochs
  out = run.workdir / folder
  out.mkdir(parents=True, exist_ok=True)
  ckpt, shared, cstate, start, rng = run.restore(out / "checkpoints", jax.random.key(c.seed + 1))
  if folder in ("single", "scratch"):  # the mode's own training: its seconds count toward the run's total
    run.seconds_before = run.restored_seconds
  if start >= epochs and (out / "result.json").exists():
    ckpt.close()
    return json.loads((out / "result.json").read_text(encoding="utf-8"))
  if start >= epochs:
    raise CheckpointError(f"{out} holds a finished training of {start} epochs but no result.json; remove {out} to "
                          "train the cell again")
  atomic_write_text(out / "dag.json", ss.dag_json(arch, run.space))
  drawing.draw_architecture(arch, run.space, out / "dag.png", title=run.space.to_string(arch)[:80],
                            backend=c.train.draw_backend)
  search_logger = run.logger
  run.open_logs(shared_step=int(shared.step) if start > 0 else None, folder=out)
  result = {}
  try:
    arch_j = jnp.asarray(arch)
    for epoch in range(start, epochs):
      shared, rng = run.train_shared_epoch(shared, cstate, rng, epoch, run.lr(epoch), fixed_arch=arch_j, desc=folder)
      last = epoch == epochs - 1
      if last:
        result = run.report_arch(shared, arch, int(shared.step), folder)
        atomic_write_text(out / "result.json", json.dumps(result, indent=2, default=float))
      if (epoch + 1) % c.train.save_every == 0 or last:
        ckpt.save(epoch, run._tree(shared, cstate, epoch, rng, run.elapsed()))
    ckpt.wait()
    ckpt.close()
    return result
  finally:
    run.logger.close()
    run.logger = search_logger


def _rank_correlation(run: _Run) -> dict[str, Any]:
  """Kendall tau between weight-sharing scores and stand-alone scores of sampled architectures."""

  c = run.config
  source, shared, cstate = run.load_trained()
  archs = np.asarray(run._sample(cstate.params, jax.random.key(c.seed + 11), num_samples=c.train.rank_num_archs))
  m = run.task.metric
  rows = []
  for k, arch in enumerate(archs):
    shared_score = run.task.evaluate(shared.params, arch, "reward")
    alone = _train_fixed(run, arch, f"rank/arch_{k:02d}", epochs=c.train.rank_epochs)
    rows.append({"arch": run.space.to_string(arch), f"shared_{m}": shared_score,
                 f"alone_{m}": alone[f"eval/reward_split_{m}"]})
  tau = forgetting_lib.kendall_tau_b([r[f"shared_{m}"] for r in rows], [r[f"alone_{m}"] for r in rows])
  write_csv(str(run.workdir / "rank" / "rank.csv"), rows)
  plots.scatter_plot(run.workdir / "rank" / "rank.png", [r[f"shared_{m}"] for r in rows],
                     [r[f"alone_{m}"] for r in rows],
                     xlabel=f"{m} with shared weights", ylabel=f"{m} trained alone ({c.train.rank_epochs} epochs)",
                     title=f"Kendall tau {tau:.3f} over {len(rows)} architectures. {run.task.data_note}")
  run.logger.log(int(shared.step), {"rank/kendall_tau": tau})
  return {"kendall_tau": tau, "rows": rows}


def _train_scratch(run: _Run) -> dict[str, Any]:
  _, shared, cstate = run.load_trained()
  best, _ = run.best_of_samples(shared, cstate, jax.random.key(run.config.seed + 7))
  return _train_fixed(run, best, "scratch")


def _single(run: _Run) -> dict[str, Any]:
  return _train_fixed(run, ss.load_dag_file(run.config.dag_path, run.space), "single")


def _ablation(run: _Run, kind: str) -> dict[str, Any]:

  source, shared, _ = run.load_trained()
  arch = run.fixed_arch(source)
  m = run.task.metric
  variants = [("original", arch)]
  if kind == "activation":
    variants += [(f"all_{name}", tr.replace_activations(arch, a)) for a, name in enumerate(run.space.activations)]
  else:
    variants += [(f"without_node_{j}", tr.remove_node(arch, j)) for j in range(1, run.space.count_nodes(arch))]
  rows = []
  for name, variant in variants:
    value = run.task.evaluate(shared.params, variant, "test")
    rows.append({"variant": name, f"test_{m}": value,
                 "arch": json.dumps(np.asarray(variant).tolist())})
  out = run.workdir / "ablations"
  out.mkdir(parents=True, exist_ok=True)
  write_csv(str(out / f"{kind}.csv"), rows)
  plots.bar_plot(out / f"{kind}.png", [r["variant"] for r in rows], [r[f"test_{m}"] for r in rows],
                 ylabel=f"test {m}", title=f"{kind} ablation of {run.space.to_string(arch)[:60]}. {run.task.data_note}")
  return {"ablation": kind, "rows": rows}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs `config.mode`; returns (and writes to <workdir>/summary.json) a summary of the results, and prints a
  result block. The config is validated first (`validate_config`)."""

  validate_config(config)
  path = pathlib.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  r = _Run(config, pathlib.Path(path))
  try:
    mode = config.mode
    if mode == "train":
      summary = _train(r)
    else:
      r.open_logs()
      if mode == "derive":
        summary = _derive(r)
      elif mode == "evaluate":
        summary = _evaluate(r)
      elif mode == "train_scratch":
        summary = _train_scratch(r)
      elif mode == "single":
        summary = _single(r)
      elif mode == "rank_correlation":
        summary = _rank_correlation(r)
      else:
        summary = _ablation(r, mode.split("_", 1)[1])
      summary = _summary(r, summary)
      atomic_write_text(str(pathlib.Path(path) / SUMMARY_FILE), json.dumps(summary, indent=2, default=float))
  finally:
    r.close()
  print_result(r, summary)
  return summary


def _network_description(run: _Run) -> str:
  c = run.config
  if c.network == "rnn":
    return (f"ENAS recurrent cell supernet: {c.search.num_blocks} nodes ({c.search.mode} search space), hidden "
            f"size {c.rnn.hidden_size}, vocabulary {run.task.vocab_size}, next hidden = {c.rnn.next_hidden}")
  return (f"ENAS micro-CNN supernet: {c.search.num_blocks} nodes per cell, {c.cnn.num_modules} modules x "
          f"{c.cnn.num_repeat_normal} normal cells, {c.cnn.features} filters, {c.cnn.sep_conv} convolutions, cell "
          f"output = {c.cnn.cell_output}")


def print_result(run: _Run, summary: dict[str, Any]) -> str:
  """Prints the result block of a run: data, network, schedule and the headline numbers."""

  c = run.config
  m = run.task.metric
  wpl = "with WPL" if c.wpl.enabled else "without WPL"
  title = {"train": f"ENAS search ({wpl})", "derive": "ENAS derive", "evaluate": "ENAS evaluation",
           "train_scratch": "ENAS derived cell trained from scratch", "single": "ENAS cell trained alone",
           "rank_correlation": "ENAS rank correlation (shared weights vs trained alone)",
           "ablation_activation": "ENAS activation ablation", "ablation_node": "ENAS node ablation"}[c.mode]
  rows = {"data": summary.get("data_note", run.task.data_note), "network": _network_description(run)}
  if c.mode == "train":
    rows["schedule"] = (f"{c.train.max_epoch} epochs of {c.shared.steps_per_epoch or run.task.steps_per_pass} "
                        f"shared steps and {c.controller.steps_per_epoch if run.trains_controller else 0} "
                        "controller steps")
  if "arch" in summary:
    rows["derived cell" if c.mode in ("train", "derive", "train_scratch") else "cell"] = summary["arch"]
  names = {f"eval/reward_split_{m}": f"reward-split {m}", f"eval/test_{m}": f"test {m}",
           "derive/best_reward": "best candidate reward", "kendall_tau": "Kendall tau",
           "forgetting/mean_diff_last_epoch": "forgetting, last epoch (mean diff)",
           "forgetting/mean_diff_all_epochs": "forgetting, mean over epochs"}
  rows.update({label: summary[key] for key, label in names.items() if key in summary})
  if "rows" in summary:
    rows["table"] = {"rank_correlation": "rank/rank.csv"}.get(c.mode, f"ablations/{c.mode.split('_', 1)[-1]}.csv")
  if "seconds" in summary:
    rows["seconds"] = summary["seconds"]
  if summary.get("finished_before"):
    rows["status"] = "finished earlier; nothing was run"
  rows["outputs"] = str(run.workdir)
  return print_result_block(f"{title} on {c.data.name}", rows)
