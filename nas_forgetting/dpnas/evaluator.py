"""The deep-prior evaluator: many random initialisations of one architecture at once, over all devices and hosts.

For a net string and a list of integer seeds, each seed gives one random deep prior (encoder weights and classifier
initialisation). Deep-prior mode (default):

1. **Embed once per architecture, on device.** One jitted function per architecture initialises the encoder of
   every seed, estimates BatchNorm statistics (see `bn_mode`), and embeds train/val/test in chunks whose size comes
   from the free device memory (`free_device_memory`; where a device reports none, as the CPU does,
   `cpu_memory_budget` bytes are assumed). Embeddings are zero-padded to a *bucket* width (`bucket`), and the
   classifier is initialised on the true width and zero-padded, so padding changes neither the initialisation nor
   training (zero features get zero gradients and Adam leaves them at zero).
2. **Train the linear classifier entirely under jit**: Adam (lr 1e-3, L2 weight decay as PyTorch's `weight_decay`),
   batches of 128 from a fresh seeded permutation per epoch (the last partial batch is kept and masked, a batch of
   one is skipped as in the reference), one `lax.scan` over epochs of `lax.scan`s over batches. The compiled
   function depends only on the bucket width, so architectures whose embeddings fall into the same bucket reuse it
   (`TRACES['train']` counts compilations). The compiled functions live in a process-wide cache, so a second
   `Evaluator` with the same data shapes and training settings (e.g. task 2 after a search) compiles nothing new.
3. **Early stopping** as the reference: after the validation of epoch index `early_stopping_epoch - 1`, a seed whose
   mean of the last `reward_window` validation accuracies is below `100 * early_stopping_thresh` stops
   (`train_flag` False, test accuracy 0). The epochs before and after that point are two calls of the compiled
   function; the second is skipped when every seed stopped.
4. **Reward** = mean of the last `reward_window` (5) validation accuracies / 100, so in [0, 1].

**Nothing silently wrong.** Before anything is allocated, the memory of an evaluation (embeddings, activations of
one chunk, parameters with their Adam moments, per seed on a device) is estimated and compared with the device's
free memory (on the CPU, the host's available RAM shared by its devices); a net that does not fit raises
`TooLargeForMemory` (an `ArchitectureError`). Inside the compiled functions the embeddings, every training loss,
the parameters after every epoch and the accuracies are checked for finiteness (traced flags, no host sync per
step); they are read on the host once per evaluation, and a non-finite value raises `EvaluationDiverged` (a
`DivergenceError` naming the quantity, the epoch, the net and the seed; a search marks the net diverged instead).

Seeds are spread over a one-axis device mesh (`jax.shard_map`; seeds are padded to a multiple of the number of
devices); the seeds of one device are vmapped on accelerators and mapped one after another on the CPU
(`seed_batching`). The mesh may span several processes after `jax.distributed.initialize`: data are replicated
with `jax.make_array_from_process_local_data` and results gathered with `process_allgather`, so every process gets
every seed's result.

`full_training=True` (hypothesis 3) trains encoder and classifier together with Adam on the images (BatchNorm in
training mode with batch statistics, running averages for validation/test); that function is compiled per
architecture.

BatchNorm of the frozen encoder (`bn_mode`):
* `calibrate` (default): statistics of the first `bn_calibration_size` training examples (the training split is a
  seeded random split, so this is a random sample), then train, val and test are all embedded in inference mode
  with the same statistics.
* `reference`: as the reference: the training split is embedded in training mode, batch by batch
  (`batch_size`), each batch normalised by its own statistics while running averages (momentum 0.1 in PyTorch's
  convention, from mean 0 / variance 1) accumulate; val and test are embedded in inference mode with those running
  averages. Each training embedding then depends on its batch mates.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nas_forgetting.models import net_string as ns
from nas_forgetting.errors import ArchitectureError, ConfigError, DataError, DivergenceError
from nas_forgetting.models import deep_prior as dp
from nas_forgetting.numerics import all_finite, check_finite

BN_MODES = ("calibrate", "reference")
BUCKETS = ("geometric", "exact")
SEED_BATCHING = ("auto", "vmap", "map")
AXIS = "seeds"
# EvalConfig fields that change only speed and memory, not what is computed (up to floating-point summation order)
SPEED_FIELDS = ("embed_chunk_size", "memory_fraction", "cpu_memory_budget", "eval_batch_size", "bucket",
                "seed_batching")
# Compile caches shared by every Evaluator of this process, keyed on the frozen EvalConfig as a whole (with the
# data shapes, devices and, for the embedding functions, the net), so no setting can be left out of a key.
_TRAIN_FNS: dict = {}  # compiled classifier-training functions
_PREPARE_FNS: collections.OrderedDict = collections.OrderedDict()  # per-architecture embedding functions (LRU)
TRACES = collections.Counter()  # traces (= compilations) of "train" and per-architecture "prepare" functions


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

  def __post_init__(self):
    if self.bn_mode not in BN_MODES:
      raise ConfigError(f"bn_mode={self.bn_mode!r}; expected one of {BN_MODES}")
    if self.seed_batching not in SEED_BATCHING:
      raise ConfigError(f"seed_batching={self.seed_batching!r}; expected one of {SEED_BATCHING}")
    if self.bucket not in BUCKETS:
      raise ConfigError(f"bucket={self.bucket!r}; expected one of {BUCKETS}")
    dp.weight_initializer(self.weight_init)
    for name in ("epochs", "batch_size", "reward_window", "bn_calibration_size", "eval_batch_size"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
    if self.early_stopping_epoch < 0:
      raise ConfigError(f"early_stopping_epoch={self.early_stopping_epoch} must be >= 0 (0 disables)")
    if self.embed_chunk_size < 0 or self.cpu_memory_budget < 1:
      raise ConfigError(f"embed_chunk_size={self.embed_chunk_size} must be >= 0 (0 = automatic) and "
                        f"cpu_memory_budget={self.cpu_memory_budget} >= 1")
    ranges = {"learning_rate": (0.0, math.inf, False), "weight_decay": (0.0, math.inf, True),
              "early_stopping_thresh": (0.0, math.inf, True), "bn_epsilon": (0.0, math.inf, True),
              "dropout_rate": (0.0, 1.0, True), "memory_fraction": (0.0, 1.0, False)}
    for name, (low, high, low_included) in ranges.items():
      value = float(getattr(self, name))
      ok = math.isfinite(value) and (value >= low if low_included else value > low) and value <= high
      if not ok or (name == "dropout_rate" and value >= 1.0):
        bound = "[" if low_included else "("
        raise ConfigError(f"{name}={getattr(self, name)}; expected a finite number in {bound}{low:g}, {high:g}"
                          f"{')' if name == 'dropout_rate' else ']'}")

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



def stripe_data(n_train: int, n_val: int, n_test: int, *, seed: int = 0) -> SplitData:
  """A seeded synthetic four-class set of 8x8 grayscale images, easy to learn from a deep prior: noise in [0, 0.5),
  and class c brightens rows 2c and 2c+1 by 1 (for tests and benchmarks of the machinery, not of accuracy).
  The three splits are drawn one after another from one generator seeded by `seed`."""
  rng = np.random.default_rng(seed)

  def make(n):
    y = rng.integers(0, 4, n).astype(np.int32)
    x = 0.5 * rng.random((n, 8, 8, 1)).astype(np.float32)
    for i, c in enumerate(y):
      x[i, 2 * c:2 * c + 2, :, 0] += 1.0
    return x, y

  return SplitData(*make(n_train), *make(n_val), *make(n_test), 4)

@dataclasses.dataclass
class EvalResult:
  """One seed's outcome (accuracies in percent, as the reference logs them)."""

  seed: int
  reward: float
  train_flag: bool
  acc_best_val: float
  acc_val_all_epochs: list
  acc_train_all_epochs: list
  acc_test_all_epochs: list
  acc_test_last: float


class EvaluationDiverged(DivergenceError):
  """An evaluation produced NaN or infinite values: `quantity` (embeddings, training loss, parameters, accuracies)
  of architecture `net` with initialisation `seed`. A search marks the architecture diverged; elsewhere it stops."""

  def __init__(self, message: str, *, net: str, seed: int, quantity: str):
    super().__init__(message)
    self.net, self.seed, self.quantity = net, int(seed), quantity


def _raise_if_diverged(net: str, seeds: Sequence[int], embeddings_ok: np.ndarray | None,
                       per_epoch: dict, first_epoch: int = 0) -> None:
  """Host-side check, once per evaluation: raises `EvaluationDiverged` for the first seed with non-finite embeddings
  (`embeddings_ok`, one flag per seed) or a non-finite per-epoch quantity (`per_epoch`: name -> (seeds, epochs)
  flags, or (seeds, epochs, k) values); the message names the quantity, the epoch, the net and the seed."""
  def fail(quantity: str, value: np.ndarray, where: str, seed: int) -> None:
    try:
      check_finite({quantity: value}, context=where)
    except DivergenceError as error:
      raise EvaluationDiverged(str(error), net=net, seed=seed, quantity=quantity) from None

  for i, seed in enumerate(seeds):
    seed = int(seed)
    context = f"architecture {net}, seed {seed}"
    if embeddings_ok is not None and not bool(embeddings_ok[i]):
      fail("embeddings", np.asarray(False), context, seed)
    for quantity, values in per_epoch.items():
      values = np.asarray(values[i])
      flat = values.reshape(values.shape[0], -1)
      bad = ~flat if flat.dtype == bool else ~np.isfinite(flat.astype(np.float64))
      epochs = bad.any(axis=1)
      if epochs.any():
        e = int(np.argmax(epochs))
        shown = np.asarray(False) if flat.dtype == bool else flat[e][bad[e]][0]
        fail(quantity, shown, f"epoch {first_epoch + e}, {context}", seed)


def bucket_width(width: int, mode: str = "geometric") -> int:
  """Embedding width rounded up to the next 2^k or 3*2^(k-1) (at most 1.5x), at least 8; or unchanged ('exact')."""
  if mode == "exact":
    return width
  best = 8
  while best < width:
    best = best * 3 // 2 if best & (best - 1) == 0 else best * 4 // 3
  return best


def free_device_memory(device: jax.Device, fallback: int) -> int:
  """Free bytes reported by the device (`bytes_limit - bytes_in_use`), or `fallback` where none are reported."""
  try:
    stats = device.memory_stats()
  except Exception:  # some backends raise instead of returning None
    stats = None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  return int(fallback)


def available_host_memory() -> int | None:
  """Bytes of RAM the host can still give (MemAvailable of /proc/meminfo, else free pages), None if unknown."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    import os
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
  except (ValueError, OSError, AttributeError):
    return None


def memory_available_per_device(device: jax.Device, num_local_devices: int) -> tuple[int | None, str]:
  """(bytes, where): the device's free memory, or on devices without memory statistics (the CPU) the host's
  available RAM shared by its `num_local_devices` devices; (None, ...) when neither is known."""
  free = free_device_memory(device, -1)
  if free >= 0:
    return free, f"free memory of {device.platform} device {device.id}"
  host = available_host_memory()
  if host is None:
    return None, "unknown"
  share = host // max(num_local_devices, 1)
  return share, (f"available host RAM / {num_local_devices} devices" if num_local_devices > 1
                 else "available host RAM")


def parameter_count(net: str, in_channels: int, image_size: int) -> int:
  """Weights (and BatchNorm scale/bias/mean/variance) of the whole net of a string, classifier included."""
  shapes = ns.check_feasible(net, image_size=image_size, in_channels=in_channels, max_fc_input=0,
                             max_image_size=0)
  layers = ns.as_net(net)
  count, channels = 0, in_channels
  width = shapes.embedding_dim
  for layer in layers:
    if isinstance(layer, ns.Conv):
      if layer.residual:
        count += 4 * channels + 9 * channels * layer.features + 4 * layer.features + 9 * layer.features ** 2
        count += channels * layer.features if channels != layer.features else 0
      else:
        count += layer.kernel ** 2 * channels * layer.features + 4 * layer.features
      channels = layer.features
    elif isinstance(layer, ns.FC):
      count += width * layer.units + 4 * layer.units
      width = layer.units
    elif isinstance(layer, ns.SM):
      count += width * layer.classes
  return count


class TooLargeForMemory(ArchitectureError):
  """The estimated memory of an evaluation exceeds what the device (or the host, on the CPU) has free."""


def activation_bytes_per_example(net: str, image_size: int, in_channels: int) -> int:
  """A generous estimate of the float32 activation memory one example needs in the encoder's forward pass."""
  shapes = ns.check_feasible(net, image_size=image_size, in_channels=in_channels, max_fc_input=0,
                             max_image_size=0).shapes
  total = image_size * image_size * in_channels
  for layer, shape in zip(ns.as_net(net), shapes):
    if isinstance(layer, (ns.Conv, ns.Pool)):
      factor = 4 if isinstance(layer, ns.Conv) and layer.residual else 2
      total += factor * shape.size * shape.size * shape.channels
  return 4 * total


# Images one device embeds per call (chunk x seeds), at most. Past this a GPU is already busy, and XLA's working
# memory for the convolutions grows beyond the activation estimate: on an H200 with 139 GB free, 8 seeds x 10,000
# images (a 59 GB estimate) compiled to a 117 GB program that did not fit.
MAX_IMAGES_PER_CALL = 8192


def embed_chunk_size(net: str, image_size: int, in_channels: int, *, num_examples: int, seeds_per_device: int,
                     free_bytes: int, fraction: float, reserved_bytes: int = 0) -> int:
  """Examples per embedding chunk: `fraction` of the free memory (less `reserved_bytes`) over the per-example need,
  and at most `MAX_IMAGES_PER_CALL` images over all the seeds of a device."""
  seeds = max(seeds_per_device, 1)
  per_example = activation_bytes_per_example(net, image_size, in_channels) * seeds
  budget = max(free_bytes - reserved_bytes, 0) * fraction
  chunk = min(int(budget // per_example), MAX_IMAGES_PER_CALL // seeds)
  if chunk >= 8:
    chunk -= chunk % 8
  return int(min(max(chunk, 1), num_examples))


def _replicate(x: np.ndarray, mesh: Mesh) -> jax.Array:
  sharding = NamedSharding(mesh, P())
  if jax.process_count() > 1:
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))
  return jax.device_put(np.asarray(x), sharding)


def _shard_seeds(seeds: np.ndarray, mesh: Mesh) -> jax.Array:
  sharding = NamedSharding(mesh, P(AXIS))
  if jax.process_count() > 1:
    return jax.make_array_from_callback(seeds.shape, sharding, lambda index: seeds[index])
  return jax.device_put(seeds, sharding)


def _gather(x: jax.Array) -> np.ndarray:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _over_seeds(fn, in_axes: tuple, mode: str):
  """`fn` applied to every seed of a device's shard: vmapped, or one seed after another (`lax.map`).

  XLA:CPU turns convolutions vmapped over per-seed weights into grouped convolutions, which it runs far slower
  than the same convolutions one seed at a time; accelerators prefer the vmapped form.
  """
  if mode == "vmap":
    return jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    per_seed = [a for a, axis in zip(args, in_axes) if axis == 0]

    def one(sliced):
      it = iter(sliced)
      return fn(*[next(it) if axis == 0 else a for a, axis in zip(args, in_axes)])

    return jax.lax.map(one, tuple(per_seed))

  return mapped


def default_mesh() -> Mesh:
  """A one-axis mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (AXIS,))


class _TrainGeometry(NamedTuple):
  n_train: int
  num_batches: int  # batches per epoch (a final batch of one example is skipped)
  used: int  # examples used per epoch


def _geometry(n_train: int, batch_size: int) -> _TrainGeometry:
  full, rest = divmod(n_train, batch_size)
  if rest == 1:  # the reference skips mini-batches of size 1
    rest = 0
  return _TrainGeometry(n_train, full + (1 if rest else 0), full * batch_size + rest)


def _optimizer(config: EvalConfig) -> optax.GradientTransformation:
  adam = optax.adam(config.learning_rate)
  if config.weight_decay:
    return optax.chain(optax.add_decayed_weights(config.weight_decay), adam)  # PyTorch Adam's (coupled) L2
  return adam


def _accuracy(apply_fn, variables, x, y, eval_batch_size: int) -> jax.Array:
  """Percent correct over a whole split, forward passes in chunks."""
  def predict(example):  # lax.map(batch_size=...) vmaps this over chunks of examples
    return jnp.argmax(apply_fn(variables, example[None], False, None)[0], axis=-1)
  predictions = jax.lax.map(predict, x, batch_size=min(eval_batch_size, x.shape[0]))
  return 100.0 * jnp.mean(predictions == y)


class TrainState(NamedTuple):
  """One seed's training state. `best` holds the variables {"params", "batch_stats"} of the first epoch with the
  highest validation accuracy so far, `best_val` that accuracy in percent (-1 before the first epoch)."""

  params: dict
  batch_stats: dict
  opt_state: optax.OptState
  best: dict
  best_val: jax.Array


def _train_state(params: dict, batch_stats: dict, tx: optax.GradientTransformation) -> TrainState:
  """The state before the first epoch."""
  return TrainState(params, batch_stats, tx.init(params), {"params": params, "batch_stats": batch_stats},
                    jnp.float32(-1.0))


def _make_run_epochs(apply_fn, tx, config: EvalConfig, geometry: _TrainGeometry, num_epochs: int):
  """Per-seed function: `num_epochs` epochs from `first_epoch`; returns (TrainState, (accuracies, finite)): per epoch
  the (train, val, test) accuracies and two flags, every training loss of the epoch finite and the parameters
  (and BatchNorm statistics) finite at its end."""
  batch = config.batch_size
  slots = geometry.num_batches * batch

  def run(state, seed, x_tr, y_tr, x_va, y_va, x_te, y_te, first_epoch):
    key = jax.random.fold_in(jax.random.key(seed), 1)  # 0 = initialisation, 1 = training

    def epoch(state, e):
      ekey = jax.random.fold_in(key, e)
      perm = jax.random.permutation(ekey, geometry.n_train)
      index = jnp.zeros((slots,), jnp.int32).at[:geometry.used].set(perm[:geometry.used].astype(jnp.int32))
      mask = (jnp.arange(slots) < geometry.used).astype(jnp.float32)

      def step(carry, inputs):
        params, batch_stats, opt_state, correct, finite = carry
        b, bidx, bmask = inputs
        x, y = x_tr[bidx], y_tr[bidx]
        dkey = jax.random.fold_in(ekey, b)

        def loss_fn(params):
          logits, new_stats = apply_fn({"params": params, "batch_stats": batch_stats}, x, True, dkey)
          ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
          loss = jnp.sum(ce * bmask) / jnp.sum(bmask)
          return loss, (loss, logits, new_stats)

        grads, (loss, logits, new_stats) = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = correct + jnp.sum((jnp.argmax(logits, -1) == y) * bmask)
        return (params, new_stats, opt_state, correct, finite & jnp.isfinite(loss)), None

      inputs = (jnp.arange(geometry.num_batches), index.reshape(-1, batch), mask.reshape(-1, batch))
      (params, batch_stats, opt_state, correct, loss_ok), _ = jax.lax.scan(
          step, (state.params, state.batch_stats, state.opt_state, jnp.zeros((), jnp.float32), jnp.asarray(True)),
          inputs)
      variables = {"params": params, "batch_stats": batch_stats}
      val = _accuracy(apply_fn, variables, x_va, y_va, config.eval_batch_size)
      test = _accuracy(apply_fn, variables, x_te, y_te, config.eval_batch_size)
      better = val > state.best_val  # strict: the first epoch reaching the best accuracy is kept
      best = jax.tree.map(lambda new, old: jnp.where(better, new, old), variables, state.best)
      state = TrainState(params, batch_stats, opt_state, best, jnp.maximum(val, state.best_val))
      finite = jnp.stack([loss_ok, all_finite(variables)])  # read on the host once per evaluation
      return state, (jnp.stack([100.0 * correct / geometry.used, val, test]), finite)

    return jax.lax.scan(epoch, state, first_epoch + jnp.arange(num_epochs))

  return run


def _module_apply(module):
  """apply(variables, x, train, dropout_key) -> (logits, batch_stats) for a Linen module with optional BatchNorm."""
  def apply(variables, x, train, key):
    rngs = {"dropout": key} if (train and key is not None) else None
    if train:
      logits, state = module.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
      return logits, state.get("batch_stats", {})
    return module.apply(variables, x, train=False), variables.get("batch_stats", {})

  def apply_logits(variables, x, train, key):
    return apply(variables, x, train, key) if train else apply(variables, x, False, key)[0]

  return apply_logits


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
    self._images = _replicate(np.concatenate([data.train_x, data.val_x, data.test_x]).astype(np.float32), self.mesh)
    self._labels = tuple(_replicate(np.asarray(y, np.int32), self.mesh) for y in
                         (data.train_y, data.val_y, data.test_y))
    self._image_splits = None
    self._geometry = _geometry(self.sizes[0], config.batch_size)
    platform = self.mesh.devices.flat[0].platform
    self._seed_batching = (("map" if platform == "cpu" else "vmap") if config.seed_batching == "auto"
                           else config.seed_batching)
    self._tx = _optimizer(config)

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
    _raise_if_diverged(ns.format_net(ns.as_net(net)), seeds_arr, _gather(prepared[4])[:len(seeds)], {})
    return tuple(_gather(e)[:len(seeds), :, :width] for e in prepared[:3])

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
      embeddings_ok = _gather(embeddings_ok)[:len(seeds)]
      inputs = (x_tr, self._labels[0], x_va, self._labels[1], x_te, self._labels[2])
      classifier = self._classifier(net)
      key = ("bucket", x_tr.shape[-1], classifier.hidden, classifier.num_classes)
      train_fn_for = lambda n: self._train_fn(key, _module_apply(classifier), True, n)
    sharded = _shard_seeds(seeds_arr, self.mesh)
    stop_at = min(config.early_stopping_epoch, config.epochs) if config.early_stopping_epoch else config.epochs
    n = len(seeds)
    first_state, (first, first_ok) = train_fn_for(stop_at)(state, sharded, *inputs, jnp.int32(0))
    final_state = first_state
    history = [_gather(first)]
    _raise_if_diverged(net, seeds_arr[:n], embeddings_ok,
                       {"training loss": _gather(first_ok)[:n, :, 0], "parameters": _gather(first_ok)[:n, :, 1],
                        "accuracies": history[0][:n]})
    stopped = np.zeros(len(seeds_arr), bool)
    if config.early_stopping_epoch and stop_at == config.early_stopping_epoch:
      val = history[0][:, :, 1]
      stopped = val[:, -config.reward_window:].mean(axis=1) < 100.0 * config.early_stopping_thresh
    if stop_at < config.epochs and not stopped.all():
      final_state, (rest, rest_ok) = train_fn_for(config.epochs - stop_at)(first_state, sharded, *inputs,
                                                                           jnp.int32(stop_at))
      history.append(_gather(rest))
      going = ~stopped[:n]  # a seed that stopped early keeps its results from before the stop
      rest_ok = _gather(rest_ok)[:n]
      _raise_if_diverged(net, seeds_arr[:n][going], None,
                         {"training loss": rest_ok[going, :, 0], "parameters": rest_ok[going, :, 1],
                          "accuracies": history[1][:n][going]}, first_epoch=stop_at)
    results = [self._result(int(seeds_arr[i]), [h[i] for h in history], bool(stopped[i])) for i in range(n)]
    if not return_params:
      return results
    take = lambda state: jax.tree.map(lambda x: _gather(x)[:n], state.best)
    early, late = take(first_state), take(final_state)  # an early-stopped seed keeps its best before the stop
    mask = stopped[:n]
    variables = jax.tree.map(lambda a, b: np.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), early, late)
    if not config.full_training:
      variables["params"] = _cut_first_kernel(variables["params"], self._width(net))
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

  def _shard(self, fn, in_specs, out_specs=P(AXIS)):
    return jax.jit(jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False))

  def _train_fn(self, key, apply_fn, per_seed_inputs: bool, num_epochs: int):
    devices = tuple(d.id for d in self.mesh.devices.flat)
    cache_key = key + (num_epochs, self._geometry, self.config, self.sizes, devices, self.mesh.axis_names,
                       self._seed_batching)
    if cache_key not in _TRAIN_FNS:
      run = _make_run_epochs(apply_fn, self._tx, self.config, self._geometry, num_epochs)

      mode = self._seed_batching

      def traced(*args):
        TRACES["train"] += 1
        data_axis = 0 if per_seed_inputs else None
        in_axes = (0, 0, data_axis, None, data_axis, None, data_axis, None, None)
        return _over_seeds(run, in_axes, mode)(*args)

      data_spec = P(AXIS) if per_seed_inputs else P()
      _TRAIN_FNS[cache_key] = self._shard(
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
    key = (net, chunk, len(seeds_arr), padded, self.sizes, self._images.shape, self.config,
           tuple(d.id for d in self.mesh.devices.flat), self._seed_batching)
    if key not in _PREPARE_FNS:
      _PREPARE_FNS[key] = self._shard(self._make_prepare(net, width, padded, chunk), (P(AXIS), P()))
      while len(_PREPARE_FNS) > 16:
        _PREPARE_FNS.popitem(last=False)
    return _PREPARE_FNS[key](_shard_seeds(seeds_arr, self.mesh), self._images)

  def _make_prepare(self, net: str, width: int, padded: int, chunk: int):
    config = self.config
    encoder = dp.DeepPriorEncoder(net, config.bn_epsilon, config.weight_init)
    calibrator = dp.DeepPriorEncoder(net, config.bn_epsilon, config.weight_init, bn_momentum=0.0)
    classifier = self._classifier(net)
    n_train, n_val, n_test = self.sizes
    total = n_train + n_val + n_test
    tx = self._tx
    batch = config.batch_size

    def embed_range(variables, images, out, start_index, count, size):
      """Embeds images[start_index : start_index + count] in inference mode, `size` at a time, into `out`."""
      steps = math.ceil(count / size)

      def body(i, out):
        start = start_index + jnp.minimum(i * size, count - size)
        x = jax.lax.dynamic_slice_in_dim(images, start, size)
        e = encoder.apply(variables, x, train=False)
        return jax.lax.dynamic_update_slice_in_dim(out, jnp.pad(e, ((0, 0), (0, padded - width))), start, 0)

      return jax.lax.fori_loop(0, steps, body, out)

    def per_seed(seed, images):
      TRACES["prepare"] += 1
      init_key, cls_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), 0))
      variables = encoder.init(init_key, images[:1])
      out = jnp.zeros((total, padded), jnp.float32)
      if config.bn_epsilon > 0 and config.bn_mode == "calibrate":
        calib = images[:min(config.bn_calibration_size, n_train)]
        _, stats = calibrator.apply(variables, calib, train=True, mutable=["batch_stats"])
        variables = {**variables, **stats}
        out = embed_range(variables, images, out, 0, total, min(chunk, total))
      elif config.bn_epsilon > 0:  # reference: train split in training mode batch by batch, running averages
        full, rest = divmod(n_train, batch)

        def train_batch(carry, start):
          variables, out = carry
          x = jax.lax.dynamic_slice_in_dim(images, start, batch)
          e, stats = encoder.apply(variables, x, train=True, mutable=["batch_stats"])
          out = jax.lax.dynamic_update_slice_in_dim(out, jnp.pad(e, ((0, 0), (0, padded - width))), start, 0)
          return ({**variables, **stats}, out), None

        (variables, out), _ = jax.lax.scan(train_batch, (variables, out), jnp.arange(full) * batch)
        if rest:
          x = images[full * batch:n_train]
          e, stats = encoder.apply(variables, x, train=True, mutable=["batch_stats"])
          out = out.at[full * batch:n_train].set(jnp.pad(e, ((0, 0), (0, padded - width))))
          variables = {**variables, **stats}
        out = embed_range(variables, images, out, n_train, n_val + n_test, min(chunk, n_val + n_test))
      else:
        out = embed_range(variables, images, out, 0, total, min(chunk, total))
      cls = classifier.init(cls_key, jnp.zeros((1, width), jnp.float32))
      params = _pad_first_kernel(cls["params"], padded - width)
      state = _train_state(params, cls.get("batch_stats", {}), tx)
      return out[:n_train], out[n_train:n_train + n_val], out[n_train + n_val:], state, all_finite(out)

    return _over_seeds(per_seed, (0, None), self._seed_batching)

  def _prepare_full(self, net: str, seeds_arr: np.ndarray):
    """Full training: per-seed (params, batch_stats, opt_state) and the per-architecture training function."""
    config = self.config
    self._memory_full(net, seeds_arr)
    model = dp.DeepPriorNet(net, config.bn_epsilon, config.weight_init, config.dropout_rate)
    tx = self._tx
    sample = self._images[:1]

    def init(seed, images):
      variables = model.init(jax.random.fold_in(jax.random.key(seed), 0), images[:1])
      return _train_state(variables["params"], variables.get("batch_stats", {}), tx)

    key = ("full", net, len(seeds_arr), sample.shape, config, tuple(d.id for d in self.mesh.devices.flat),
           self._seed_batching)
    if key not in _PREPARE_FNS:
      _PREPARE_FNS[key] = self._shard(_over_seeds(init, (0, None), self._seed_batching), (P(AXIS), P()))
    state = _PREPARE_FNS[key](_shard_seeds(seeds_arr, self.mesh), sample)
    if self._image_splits is None:
      self._image_splits = tuple(_replicate(x, self.mesh) for x in (self.data.train_x, self.data.val_x,
                                                                     self.data.test_x))
    x_tr, x_va, x_te = self._image_splits
    inputs = (x_tr, self._labels[0], x_va, self._labels[1], x_te, self._labels[2])
    apply_fn = _module_apply(model)
    return state, inputs, lambda n: self._train_fn(("full", net), apply_fn, False, n)


def _pad_first_kernel(params: dict, extra: int) -> dict:
  """Zero rows appended to the kernel that reads the embedding (the first Dense layer)."""
  if not extra:
    return params
  name = "Dense_0" if "Dense_0" in params else "logits"
  kernel = params[name]["kernel"]
  return {**params, name: {**params[name], "kernel": jnp.pad(kernel, ((0, extra), (0, 0)))}}


def _cut_first_kernel(params: dict, width: int) -> dict:
  """Inverse of `_pad_first_kernel` on seed-stacked params (kernel shape (seeds, padded width, out))."""
  name = "Dense_0" if "Dense_0" in params else "logits"
  return {**params, name: {**params[name], "kernel": params[name]["kernel"][:, :width]}}
