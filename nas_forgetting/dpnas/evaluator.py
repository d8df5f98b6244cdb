"""The deep-prior evaluator: many random initialisations of one architecture at once, over all devices and hosts.

For a net string and a list of integer seeds, each seed gives one random deep prior (encoder weights and classifier
initialisation). Deep-prior mode (default):

1. **Embed once per architecture, on device** (`prior_embedding`): every seed's random encoder and classifier are
   drawn by `prior_init` (Flax's initialisation under jit, bit for bit, with random-number programs shared by every
   architecture), then one jitted function per architecture estimates BatchNorm statistics (`bn_mode`) and embeds
   train/val/test in chunks whose size comes from the free device memory (`memory.embed_chunk_size`; where a device
   reports none, as the CPU does, `cpu_memory_budget` bytes are assumed). Embeddings are zero-padded to a *bucket*
   width (`bucket`).
2. **Train the linear classifier entirely under jit** (`classifier_training`). The compiled function depends only on
   the bucket width, so architectures whose embeddings fall into the same bucket reuse it (`TRACES['train']` counts
   compilations). The compiled functions live in a process-wide cache keyed on the frozen `EvalConfig` as a whole
   (with the data shapes and devices), so a second `Evaluator` with the same data shapes and settings (e.g. task 2
   after a search) compiles nothing new.
3. **Early stopping** as the reference: after the validation of epoch index `early_stopping_epoch - 1`, a seed whose
   mean of the last `reward_window` validation accuracies is below `100 * early_stopping_thresh` stops
   (`train_flag` False, test accuracy 0). The epochs before and after that point are two calls of the compiled
   function; the second is skipped when every seed stopped.
4. **Reward** = mean of the last `reward_window` (5) validation accuracies / 100, so in [0, 1].

**Nothing silently wrong.** A net whose evaluation would not fit in memory raises `memory.TooLargeForMemory` before
anything is allocated; a non-finite embedding, loss, parameter or accuracy raises `eval_result.EvaluationDiverged`.

Seeds are spread over a one-axis device mesh, possibly over several processes (`seed_mesh`): the seeds of one
device are vmapped on accelerators and mapped one after another on the CPU (`seed_batching`).

`full_training=True` (hypothesis 3) trains encoder and classifier together with Adam on the images (BatchNorm in
training mode with batch statistics, running averages for validation/test); that function is compiled per
architecture.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from nas_forgetting import config_schema as cc
from nas_forgetting.dpnas import classifier_training as ct
from nas_forgetting.dpnas import prior_embedding as prepare
from nas_forgetting.dpnas import prior_init
from nas_forgetting.dpnas.eval_result import EvalResult, raise_if_diverged
from nas_forgetting.dpnas.memory import (TooLargeForMemory, activation_bytes_per_example, bucket_width,
                                         embed_chunk_size, free_device_memory, memory_available_per_device,
                                         parameter_count)
from nas_forgetting.dpnas.seed_mesh import AXIS, default_mesh, gather, over_seeds, replicate, shard_jit, shard_seeds
from nas_forgetting.errors import ConfigError, DataError
from nas_forgetting.models import deep_prior as dp
from nas_forgetting.models import net_string as ns

BN_MODES = ("calibrate", "reference")
BUCKETS = ("geometric", "exact")
SEED_BATCHING = ("auto", "vmap", "map")
# EvalConfig fields that change only speed and memory, not what is computed (up to floating-point summation order)
SPEED_FIELDS = ("embed_chunk_size", "memory_fraction", "cpu_memory_budget", "eval_batch_size", "bucket",
                "seed_batching", "conv")
CONVS = ("auto",) + dp.CONVS
GROUP = "evaluator"  # the config group an `EvalConfig` is built from (named in its error messages)
# Compile caches shared by every Evaluator of this process, keyed on a `CompileScope` (the frozen EvalConfig as a
# whole, the data shapes and the devices) and what the function compiles (the net, the classifier's shapes), so no
# setting can be left out of a key.
_TRAIN_FNS: dict = {}  # compiled classifier-training functions
_PREPARE_FNS: collections.OrderedDict = collections.OrderedDict()  # per-architecture embedding functions (LRU)
TRACES = collections.Counter()  # traces (= compilations) of "train" and per-architecture "prepare" functions


class CompileScope(NamedTuple):
  """What every compiled function of an `Evaluator` depends on besides the net: the first element of every key of
  the compile caches, so a second evaluator with equal settings, data shapes and devices reuses them."""

  config: "EvalConfig"  # frozen: every field is part of the key
  sizes: tuple[int, int, int]
  image_shape: tuple[int, ...]  # train, val and test images concatenated
  devices: tuple[int, ...]
  axis_names: tuple[str, ...]
  seed_batching: str  # resolved: vmap | map
  conv: str  # resolved: one of deep_prior.CONVS


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Training and embedding settings (defaults: the reference's CLI defaults where it has one)."""

  epochs: int = 70
  batch_size: int = 128
  learning_rate: float = 1e-3
  weight_decay: float = 0.0
  early_stopping_epoch: int = 10  # 0 disables early stopping
  early_stopping_thresh: float = 0.15
  reward_window: int = 5
  bn_epsilon: float = 1e-4  # 0 disables BatchNorm
  weight_init: str = "kaiming-normal"
  dropout_rate: float = 0.0
  full_training: bool = False
  bn_mode: str = "calibrate"
  bn_calibration_size: int = 1024
  embed_chunk_size: int = 0  # 0 = sized from free device memory
  memory_fraction: float = 0.5  # share of the free device memory one embedding chunk may use
  cpu_memory_budget: int = 1 << 30  # bytes assumed free on devices that report no memory statistics
  eval_batch_size: int = 1024  # chunk for validation/test forward passes
  bucket: str = "geometric"  # embedding widths padded to 2^k or 3*2^(k-1) ('exact': no padding)
  seed_batching: str = "auto"  # seeds on one device: vmap | map (one after another) | auto (map on CPU, else vmap)
  conv: str = "auto"  # convolutions: xla | matmul | cpu (`deep_prior.CONVS`) | auto (cpu on the CPU, else xla)

  def __post_init__(self):
    """Every field checked here, so an object built directly is guarded as a config's `evaluator` group is."""
    g = GROUP
    for name in ("epochs", "batch_size", "reward_window", "bn_calibration_size", "eval_batch_size",
                 "cpu_memory_budget"):
      cc.integer(self, name, minimum=1, group=g)
    for name in ("early_stopping_epoch", "embed_chunk_size"):  # 0 disables early stopping / sizes chunks by memory
      cc.integer(self, name, minimum=0, group=g)
    cc.number(self, "learning_rate", above=0.0, group=g)
    for name in ("weight_decay", "early_stopping_thresh", "bn_epsilon"):
      cc.number(self, name, minimum=0.0, group=g)
    cc.number(self, "dropout_rate", minimum=0.0, below=1.0, group=g)
    cc.number(self, "memory_fraction", above=0.0, maximum=1.0, group=g)
    cc.choice(self, "weight_init", dp.WEIGHT_INITS, group=g)
    cc.boolean(self, "full_training", group=g)
    cc.choice(self, "bn_mode", BN_MODES, group=g)
    cc.choice(self, "seed_batching", SEED_BATCHING, group=g)
    cc.choice(self, "bucket", BUCKETS, group=g)
    cc.choice(self, "conv", CONVS, group=g)

  def result_fields(self) -> dict:
    """The settings that change results, as a dict (`SPEED_FIELDS` change only speed and memory)."""
    return {k: v for k, v in dataclasses.asdict(self).items() if k not in SPEED_FIELDS}

  @classmethod
  def from_config(cls, config) -> "EvalConfig":
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(config.keys()) - set(names))
    if unknown:
      raise ConfigError(f"unknown evaluator fields {unknown}; valid: {names}")
    return cls(**{k: config[k] for k in config.keys()})


class SplitData(NamedTuple):
  """Train / validation / test arrays (images float32 NHWC, labels int32)."""

  train_x: np.ndarray
  train_y: np.ndarray
  val_x: np.ndarray
  val_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int


def split_train_val(images: np.ndarray, labels: np.ndarray, *, val_fraction: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """A seeded random split (the reference's 90/10 `random_split`, but reproducible): train_x, train_y, val_x, val_y."""
  n = len(images)
  n_val = int(round(n * val_fraction))
  if not 0 < n_val < n:
    raise DataError(f"val_fraction={val_fraction} of {n} examples leaves an empty train or validation split")
  order = np.random.default_rng(seed).permutation(n)
  val, train = order[:n_val], order[n_val:]
  return images[train], labels[train], images[val], labels[val]


class Evaluator:
  """Evaluates architectures on fixed data; see the module docstring."""

  def __init__(self, data: SplitData, config: EvalConfig = EvalConfig(), *, mesh: Mesh | None = None):
    if data.train_x.ndim != 4 or data.train_x.shape[1] != data.train_x.shape[2]:
      raise DataError(f"train images must be square NHWC, got shape {data.train_x.shape}")
    for name in ("val_x", "test_x"):
      if getattr(data, name).shape[1:] != data.train_x.shape[1:]:
        raise DataError(f"{name} has shape {getattr(data, name).shape}; expected (N,) + {data.train_x.shape[1:]}")
    if len(data.train_x) < 2:
      raise DataError(f"the training split has {len(data.train_x)} examples; at least 2 are needed")
    self.data = data
    self.config = config
    self.mesh = mesh if mesh is not None else default_mesh()
    self.num_devices = self.mesh.devices.size
    self.image_size = data.train_x.shape[1]
    self.in_channels = data.train_x.shape[3]
    self.sizes = (len(data.train_x), len(data.val_x), len(data.test_x))
    self._images = replicate(np.concatenate([data.train_x, data.val_x, data.test_x]).astype(np.float32), self.mesh)
    self._labels = tuple(replicate(np.asarray(y, np.int32), self.mesh) for y in
                         (data.train_y, data.val_y, data.test_y))
    self._image_splits = None
    self._geometry = ct.train_geometry(self.sizes[0], config.batch_size)
    platform = self.mesh.devices.flat[0].platform
    self._seed_batching = (("map" if platform == "cpu" else "vmap") if config.seed_batching == "auto"
                           else config.seed_batching)
    self._conv = ("cpu" if platform == "cpu" else "xla") if config.conv == "auto" else config.conv
    self._tx = ct.optimizer(config)
    self._scope = CompileScope(config, self.sizes, self._images.shape, tuple(d.id for d in self.mesh.devices.flat),
                               self.mesh.axis_names, self._seed_batching, self._conv)

  # -- public -----------------------------------------------------------------------------------------------------

  def padded_seeds(self, seeds: Sequence[int]) -> np.ndarray:
    seeds = np.asarray(list(seeds), np.int32)
    if seeds.ndim != 1 or not len(seeds):
      raise ConfigError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    pad = (-len(seeds)) % self.num_devices
    return np.concatenate([seeds, np.repeat(seeds[-1:], pad)])

  def embed(self, net: str, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / val / test embeddings (seed, N, D) of the deep priors of `seeds` (not padded)."""
    width = self._width(net)
    prepared = self._prepare(net, seeds)
    seeds_arr = self.padded_seeds(seeds)[:len(seeds)]
    raise_if_diverged(ns.format_net(ns.as_net(net)), seeds_arr, gather(prepared[4])[:len(seeds)], {})
    return tuple(gather(e)[:len(seeds), :, :width] for e in prepared[:3])

  def evaluate(self, net: str, seeds: Sequence[int], *, return_params: bool = False):
    """Evaluates the deep priors (or, with `full_training`, the trained nets) of `seeds` on this data.

    Returns a list of `EvalResult` (one per seed); with `return_params`, also the trained variables
    {"params", "batch_stats"} with a leading seed axis, each seed's as they were after its best validation epoch
    (the first epoch whose validation accuracy equals `acc_best_val`; for an early-stopped seed, among the epochs
    it ran): the classifier's, first kernel cut back to the true embedding width, or with `full_training` the
    whole net's. A deep prior's encoder is re-created from its seed.
    """
    net = ns.format_net(ns.as_net(net))
    self._check_classes(net)
    config = self.config
    seeds_arr = self.padded_seeds(seeds)
    embeddings_ok = None
    if config.full_training:
      state, inputs, train_fn_for = self._prepare_full(net, seeds_arr)
    else:
      x_tr, x_va, x_te, state, embeddings_ok = self._prepare(net, seeds)
      embeddings_ok = gather(embeddings_ok)[:len(seeds)]
      inputs = (x_tr, self._labels[0], x_va, self._labels[1], x_te, self._labels[2])
      classifier = self._classifier(net)
      key = ("bucket", x_tr.shape[-1], classifier.hidden, classifier.num_classes)
      train_fn_for = lambda n: self._train_fn(key, ct.module_apply(classifier), True, n)
    sharded = shard_seeds(seeds_arr, self.mesh)
    stop_at = min(config.early_stopping_epoch, config.epochs) if config.early_stopping_epoch else config.epochs
    n = len(seeds)
    first_state, (first, first_ok) = train_fn_for(stop_at)(state, sharded, *inputs, jnp.int32(0))
    final_state = first_state
    history = [gather(first)]
    raise_if_diverged(net, seeds_arr[:n], embeddings_ok,
                       {"training loss": gather(first_ok)[:n, :, 0], "parameters": gather(first_ok)[:n, :, 1],
                        "accuracies": history[0][:n]})
    stopped = np.zeros(len(seeds_arr), bool)
    if config.early_stopping_epoch and stop_at == config.early_stopping_epoch:
      val = history[0][:, :, 1]
      stopped = val[:, -config.reward_window:].mean(axis=1) < 100.0 * config.early_stopping_thresh
    if stop_at < config.epochs and not stopped.all():
      final_state, (rest, rest_ok) = train_fn_for(config.epochs - stop_at)(first_state, sharded, *inputs,
                                                                           jnp.int32(stop_at))
      history.append(gather(rest))
      going = ~stopped[:n]  # a seed that stopped early keeps its results from before the stop
      rest_ok = gather(rest_ok)[:n]
      raise_if_diverged(net, seeds_arr[:n][going], None,
                         {"training loss": rest_ok[going, :, 0], "parameters": rest_ok[going, :, 1],
                          "accuracies": history[1][:n][going]}, first_epoch=stop_at)
    results = [self._result(int(seeds_arr[i]), [h[i] for h in history], bool(stopped[i])) for i in range(n)]
    if not return_params:
      return results
    take = lambda state: jax.tree.map(lambda x: gather(x)[:n], state.best)
    early, late = take(first_state), take(final_state)  # an early-stopped seed keeps its best before the stop
    mask = stopped[:n]
    variables = jax.tree.map(lambda a, b: np.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), early, late)
    if not config.full_training:
      variables["params"] = ct.cut_first_kernel(variables["params"], self._width(net))
    return results, variables

  # -- internals --------------------------------------------------------------------------------------------------

  def _check_classes(self, net: str) -> None:
    classes = ns.as_net(net)[-1].classes
    if classes != self.data.num_classes:
      raise ConfigError(f"net {net} ends with SM({classes}) but the data have {self.data.num_classes} classes")

  def _width(self, net: str) -> int:
    return ns.check_feasible(net, image_size=self.image_size, in_channels=self.in_channels, max_fc_input=0,
                             max_image_size=0).embedding_dim

  def _classifier(self, net: str) -> dp.DeepPriorClassifier:
    _, hidden, classes = dp.split_net(net)
    return dp.DeepPriorClassifier(classes, hidden, self.config.bn_epsilon, self.config.weight_init,
                                  self.config.dropout_rate)

  def _result(self, seed: int, history: list[np.ndarray], stopped: bool) -> EvalResult:
    acc = np.concatenate(history)  # (epochs run, 3)
    if stopped:
      acc = acc[:self.config.early_stopping_epoch]
    val = [float(v) for v in acc[:, 1]]
    return EvalResult(
        seed=seed,
        reward=float(np.mean(val[-self.config.reward_window:]) / 100.0),
        train_flag=not stopped,
        acc_best_val=float(max(val)),
        acc_val_all_epochs=val,
        acc_train_all_epochs=[float(v) for v in acc[:, 0]],
        acc_test_all_epochs=[float(v) for v in acc[:, 2]],
        acc_test_last=0.0 if stopped else float(acc[-1, 2]))

  def _jit(self, fn, in_specs):
    return shard_jit(fn, self.mesh, in_specs)

  def _train_fn(self, key, apply_fn, per_seed_inputs: bool, num_epochs: int):
    cache_key = (self._scope, key, num_epochs)
    if cache_key not in _TRAIN_FNS:
      run = ct.make_run_epochs(apply_fn, self._tx, self.config, self._geometry, num_epochs)

      mode = self._seed_batching

      def traced(*args):
        TRACES["train"] += 1
        data_axis = 0 if per_seed_inputs else None
        in_axes = (0, 0, data_axis, None, data_axis, None, data_axis, None, None)
        return over_seeds(run, in_axes, mode)(*args)

      data_spec = P(AXIS) if per_seed_inputs else P()
      _TRAIN_FNS[cache_key] = self._jit(
          traced, (P(AXIS), P(AXIS), data_spec, P(), data_spec, P(), data_spec, P(), P()))
    return _TRAIN_FNS[cache_key]

  def _chunk(self, net: str, seeds_per_device: int, reserved: int) -> int:
    if self.config.embed_chunk_size:
      return min(self.config.embed_chunk_size, sum(self.sizes))
    free = free_device_memory(self.mesh.devices.flat[0], self.config.cpu_memory_budget)
    return embed_chunk_size(net, self.image_size, self.in_channels, num_examples=sum(self.sizes),
                            seeds_per_device=seeds_per_device, free_bytes=free, fraction=self.config.memory_fraction,
                            reserved_bytes=reserved)

  def check_memory(self, net: str, seeds: Sequence[int]) -> None:
    """Raises `TooLargeForMemory` when evaluating `net` with `seeds` would not fit (see `_check_memory`)."""
    net = ns.format_net(ns.as_net(net))
    seeds_arr = self.padded_seeds(seeds)
    if self.config.full_training:
      self._memory_full(net, seeds_arr)
    else:
      self._memory_deep_prior(net, len(seeds_arr) // self.num_devices)

  def _memory_deep_prior(self, net: str, per_device: int) -> int:
    """Checks the memory of a deep-prior evaluation; returns the embedding chunk size."""
    width = self._width(net)
    padded = bucket_width(width, self.config.bucket)
    reserved = 4 * per_device * sum(self.sizes) * padded
    chunk = self._chunk(net, per_device, reserved)
    classes = ns.as_net(net)[-1].classes
    self._check_memory(net, per_device, {
        "embeddings": 2 * 4 * sum(self.sizes) * padded,  # the embedding buffer and its three splits
        "activations": chunk * activation_bytes_per_example(net, self.image_size, self.in_channels),
        # parameters, two Adam moments and the best epoch's copy (an over-estimate for the frozen encoder)
        "parameters": 4 * 4 * (parameter_count(net, self.in_channels, self.image_size) + (padded - width) * classes)})
    return chunk

  def _memory_full(self, net: str, seeds_arr: np.ndarray) -> None:
    per_example = activation_bytes_per_example(net, self.image_size, self.in_channels)
    self._check_memory(net, len(seeds_arr) // self.num_devices, {
        "activations": per_example * (3 * self.config.batch_size + min(self.config.eval_batch_size, max(self.sizes))),
        "parameters": 4 * 4 * parameter_count(net, self.in_channels, self.image_size)})  # params, Adam, best

  def _check_memory(self, net: str, per_device: int, parts: dict) -> None:
    """Raises `TooLargeForMemory` before anything is allocated when the estimated bytes per device (`parts`: what
    -> bytes for one seed) times the seeds per device exceed the memory available per device."""
    need = per_device * sum(parts.values())
    local = len(jax.local_devices())
    available, where = memory_available_per_device(self.mesh.devices.flat[0], min(local, self.num_devices))
    if available is None or need <= available:
      return
    gb = lambda b: f"{b / 2 ** 30:.3g} GB"
    detail = ", ".join(f"{k} {gb(v)}" for k, v in parts.items())
    raise TooLargeForMemory(
        f"net {net} is too large to evaluate here: about {gb(need)} per device ({per_device} seed(s) per device x "
        f"[{detail}]) against {gb(available)} ({where}); use a smaller net, fewer seeds or fewer examples")

  def _prepare(self, net: str, seeds: Sequence[int]):
    """(train, val, test embeddings, classifier state, embeddings finite), all sharded over seeds (padded)."""
    net = ns.format_net(ns.as_net(net))
    self._check_classes(net)
    seeds_arr = self.padded_seeds(seeds)
    per_device = len(seeds_arr) // self.num_devices
    width = self._width(net)
    padded = bucket_width(width, self.config.bucket)
    chunk = self._memory_deep_prior(net, per_device)
    key = (self._scope, net, chunk, len(seeds_arr))
    if key not in _PREPARE_FNS:
      per_seed = prepare.make_prepare(net, self.config, self._tx, sizes=self.sizes, width=width, padded=padded,
                                      chunk=chunk, conv=self._conv)

      def traced(*args):
        TRACES["prepare"] += 1
        return over_seeds(per_seed, (None, 0, 0), self._seed_batching)(*args)

      _PREPARE_FNS[key] = self._jit(traced, (P(), P(AXIS), P(AXIS)))
      while len(_PREPARE_FNS) > 16:
        _PREPARE_FNS.popitem(last=False)
    keys = [prior_init.seed_keys(int(seed)) for seed in seeds_arr]
    encoder = prior_init.stacked_variables(prepare.encoder_module(net, self.config, self._conv), [k[0] for k in keys],
                                           (1, *self._images.shape[1:]))
    classifier = prior_init.stacked_variables(self._classifier(net), [k[1] for k in keys], (1, width))
    place = lambda tree: jax.tree.map(lambda x: shard_seeds(x, self.mesh), tree)
    return _PREPARE_FNS[key](self._images, place(encoder), place(classifier))

  def _prepare_full(self, net: str, seeds_arr: np.ndarray):
    """Full training: per-seed (params, batch_stats, opt_state) and the per-architecture training function."""
    config = self.config
    self._memory_full(net, seeds_arr)
    model = dp.DeepPriorNet(net, config.bn_epsilon, config.weight_init, config.dropout_rate, self._conv)
    tx = self._tx
    sample = self._images[:1]

    def init(seed, images):
      variables = model.init(jax.random.fold_in(jax.random.key(seed), 0), images[:1])
      return ct.initial_train_state(variables["params"], variables.get("batch_stats", {}), tx)

    key = (self._scope, "full", net, len(seeds_arr))
    if key not in _PREPARE_FNS:
      _PREPARE_FNS[key] = self._jit(over_seeds(init, (0, None), self._seed_batching), (P(AXIS), P()))
    state = _PREPARE_FNS[key](shard_seeds(seeds_arr, self.mesh), sample)
    if self._image_splits is None:
      self._image_splits = tuple(replicate(x, self.mesh) for x in (self.data.train_x, self.data.val_x,
                                                                     self.data.test_x))
    x_tr, x_va, x_te = self._image_splits
    inputs = (x_tr, self._labels[0], x_va, self._labels[1], x_te, self._labels[2])
    apply_fn = ct.module_apply(model)
    return state, inputs, lambda n: self._train_fn(("full", net), apply_fn, False, n)
