"""The two ENAS tasks: language modelling with the recurrent supernet and image classification with the micro-CNN.

A task holds what never changes during a run: the data splits on the device, the supernet, the search space and the
compiled steps (cached by their static arguments, so modes run one after another in a process reuse them). It holds
no position in the data: where the shared training reads next (and the RNN's hidden state between windows) is a
`DataCursor` in the search state, passed into `shared_step` and returned by it; `end_burst` computes the WPL update
on the batch the cursor last read, or on a reward batch.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nas_forgetting.data.datasets import load_dataset
from nas_forgetting.data.text import batchify, load_corpus
from nas_forgetting.enas import search_space as ss
from nas_forgetting.enas import trainer as tr
from nas_forgetting.errors import ConfigError, DataError
from nas_forgetting.models.enas_cnn import EnasCnn
from nas_forgetting.models.enas_rnn import EnasRnn
from nas_forgetting.wpl import enas_fisher
from nas_forgetting.wpl import masks as wpl_masks
from nas_forgetting.wpl import state as wpl_lib


class DataCursor(NamedTuple):
  """Where the shared training reads next. `position`: RNN, the next training window (back to 0, with a zero
  hidden state, at the end of the split); CNN, the training batches drawn so far over all passes (a fresh order per
  pass). Checkpointed, so a resumed run reads the same data. `hidden`: the RNN's hidden state carried from window to
  window within an epoch (None for the CNN; zeros at the start of every epoch, so it is not checkpointed)."""

  position: int
  hidden: jax.Array | None = None


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
                                    l2_reg=l2_reg, wpl_hp=wpl_hp, monitor=wpl_hp.monitor)
    view = wpl_masks.rnn_monitored(params, wpl_hp.monitor)
    return wpl_lib.end_burst(wpl_state, view, fisher, wpl_masks.rnn_active_mask(arch, model.num_blocks, view), wpl_hp)

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


_rows = jax.jit(lambda x, start, n: jax.lax.dynamic_slice_in_dim(x, start, n), static_argnums=2)  # traced start


@functools.lru_cache(maxsize=None)
def _init_fn(model, *shapes):
  """Jitted `rng -> params` of a supernet for example inputs of `shapes` (zeros) and an all-zero architecture, the
  last shape; cached, so runs and modes in one process share its compilation."""
  def init(rng):
    zeros = [jnp.zeros(shape, dtype) for shape, dtype in shapes]
    return model.init(rng, *zeros, train=False)["params"]
  return jax.jit(init)


class RnnTask:
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
    self.reward_tokens = np.asarray(reward)
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

  def init_params(self, rng):
    return _init_fn(self.model, ((self.bptt, self.batch_size), jnp.int32),
                    ((self.batch_size, self.model.hidden_size), jnp.float32),
                    ((self.space.num_blocks, 2), jnp.int32))(rng)

  def epoch_cursor(self, position: int) -> DataCursor:
    """The cursor an epoch starts from: the window at `position`, a zero hidden state."""
    return DataCursor(position, jnp.zeros((self.batch_size, self.model.hidden_size)))

  def shared_step(self, state, cursor: DataCursor, arch, rng, lr, wpl_state=None):
    """One shared step on the window at the cursor: (state, next cursor, metrics)."""
    position, hidden = cursor
    if position >= self.windows_train:  # the end of the split: back to its start with a zero hidden state
      position, hidden = 0, jnp.zeros_like(hidden)
    start = jnp.asarray(position * self.bptt, jnp.int32)
    state, hidden, metrics = self._step(state, self.train, start, hidden, arch, rng, lr, wpl_state)
    return state, DataCursor(position + 1, hidden), metrics

  def end_burst(self, wpl_state, params, arch, cursor: DataCursor, valid_batch: int | None):
    """WPL update after an architecture's burst: Fisher on reward window `valid_batch`, or (None) on the training
    window the last step read (the one before `cursor`)."""
    if valid_batch is None:
      data, start = self.train, jnp.asarray((cursor.position - 1) * self.bptt, jnp.int32)
    else:
      data, start = self.reward_batch(valid_batch)
    return self._end_burst(wpl_state, params, data, start, arch)

  def monitored(self, params):
    return wpl_masks.rnn_monitored(params, self.wpl_hp.monitor)

  @property
  def steps_per_pass(self) -> int:
    return self.windows_train

  def score_batch(self, width: int):
    """A validation batch `width` reward batches wide, for scores on more data in one evaluation: the first window
    of the reward split cut into `width` x shared.batch_size columns (the pooled data of mode 'multi_model')."""
    columns = width * self.batch_size
    if len(self.reward_tokens) // columns < self.bptt + 1:
      raise ConfigError(f"a validation batch {width} reward batches wide ({columns} columns) leaves "
                        f"{len(self.reward_tokens) // columns} tokens per column of the {len(self.reward_tokens)}-token"
                        f" reward split; need at least bptt + 1 = {self.bptt + 1}")
    return (jnp.asarray(batchify(self.reward_tokens, columns)), jnp.asarray(0, jnp.int32))

  def reward_batch(self, k: int):
    return (self.reward, jnp.asarray((k % self.windows_reward) * self.bptt, jnp.int32))

  def evaluate(self, params, arch, split: str) -> float:
    data = self.reward_eval if split == "reward" else self.test
    return tr.rnn_evaluate(params, data, jnp.asarray(arch), model=self.model, bptt=self.bptt)[1]


class CnnTask:
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

  def init_params(self, rng):
    return _init_fn(self.model, ((2,) + self.images.shape[1:], jnp.float32),
                    ((2, self.space.num_blocks, 4), jnp.int32))(rng)

  def epoch_cursor(self, position: int) -> DataCursor:
    """The cursor an epoch starts from (batch `position` of the run; no hidden state)."""
    return DataCursor(position)

  @property
  def steps_per_pass(self) -> int:
    return len(self.labels) // self.batch_size

  def batch_indices(self, position: int) -> jax.Array:
    """Indices of training batch `position` (counted over all passes; a fresh order per pass)."""
    epoch_pass, k = divmod(position, self.steps_per_pass)
    order = np.random.default_rng([self._seed, epoch_pass]).permutation(len(self.labels))
    return jnp.asarray(order[k * self.batch_size:(k + 1) * self.batch_size], jnp.int32)

  def shared_step(self, state, cursor: DataCursor, arch, rng, lr, wpl_state=None):
    """One shared step on the batch at the cursor: (state, next cursor, metrics)."""
    state, metrics = self._step(state, self.images, self.labels, self.batch_indices(cursor.position), arch, rng,
                                lr, wpl_state)
    return state, DataCursor(cursor.position + 1), metrics

  def end_burst(self, wpl_state, params, arch, cursor: DataCursor, valid_batch: int | None):
    """WPL update after an architecture's burst: Fisher on reward batch `valid_batch`, or (None) on the training
    batch the last step read (the one before `cursor`; without augmentation)."""
    if valid_batch is None:
      idx = self.batch_indices(cursor.position - 1)
      images, labels = self.images[idx], self.labels[idx]
    else:
      images, labels = self.reward_batch(valid_batch)
    return self._end_burst(wpl_state, params, images, labels, arch)

  def monitored(self, params):
    return wpl_masks.cnn_monitored(params)

  def score_batch(self, width: int):
    """A validation batch `width` reward batches wide (the first width x reward_batch_size held-out images), for
    scores on more data in one evaluation (mode 'multi_model')."""
    n = width * self.reward_batch_size
    if n > len(self.reward_labels):
      raise ConfigError(f"a validation batch {width} reward batches wide needs {n} images; the reward split holds "
                        f"{len(self.reward_labels)}")
    return self.reward_images[:n], self.reward_labels[:n]

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


def make_task(config: ml_collections.ConfigDict) -> RnnTask | CnnTask:
  """The task of `config.network`."""
  return RnnTask(config) if config.network == "rnn" else CnnTask(config)
