"""The initial variables of a deep prior (its random encoder and its classifier), drawn without compiling a
random-number program per architecture.

`module.init` under jit compiles, for every new architecture, a threefry program per weight shape. `variables` gives
the same arrays, bit for bit, with programs shared by every architecture of a search:

1. the variables' structure comes from `jax.eval_shape(module.init)` (tracing only, nothing compiled);
2. each kernel's key is derived as Flax derives it (`LazyRng`: the root key folded with the hash of the kernel's
   module path and the scope's parameter counter; the kernel is the first and only parameter of its `Conv`/`Dense`);
3. each kernel is drawn by one compiled program per size bucket (a power of two >= its element count): the
   standard-normal draw of `jax.random.normal` before its factor sqrt(2), `erf_inv(uniform(-1, 1))`. With JAX's
   partitionable threefry (`jax_threefry_partitionable`, the default) the first n values of a longer draw are the
   draw of n values. The prefix, reshaped and multiplied on the host by sqrt(2) * sqrt(variance) in float32 (the
   single constant XLA folds `variance_scaling`'s two factors into), is the kernel `module.init` draws under jit;
4. BatchNorm scales and running variances are ones, biases and running means zeros (Flax's defaults).

So a search compiles a dozen draw programs in all instead of one threefry program per kernel of every architecture
(the search space repeats sizes but rarely whole architectures). `tests/dpnas/test_dpnas_prior_init.py` compares
the result with `module.init` under jit bit for bit. Initialisers without such a draw (uniform, orthogonal) and a
non-partitionable threefry use `module.init`, jitted per architecture.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core.scope import LazyRng

# weight_init name -> (scale, mode) of its variance-scaling normal draw
NORMAL_SCALING = {"kaiming-normal": (2.0, "fan_in"), "xavier-normal": (1.0, "fan_avg")}
# (collection, variable name) -> the constant Flax initialises it with (BatchNorm's scale, bias and statistics)
CONSTANTS = {("params", "scale"): 1.0, ("params", "bias"): 0.0, ("batch_stats", "mean"): 0.0,
             ("batch_stats", "var"): 1.0}
MIN_BUCKET = 1024
MAX_ARCHITECTURES = 16  # per-architecture entries kept (structures, fallback inits), the oldest dropped first
PROGRAMS: dict[Any, Any] = {}  # compiled draws per size bucket; structures and fallback inits per (module, shape)


def _cached(key: tuple, make) -> Any:
  """PROGRAMS[key], made on first use; draws are kept for good, per-architecture entries only the newest
  `MAX_ARCHITECTURES` (a search visits thousands of architectures, each once)."""
  if key not in PROGRAMS:
    PROGRAMS[key] = make()
    per_architecture = [k for k in PROGRAMS if k[0] != "draw"]
    for old in per_architecture[:-MAX_ARCHITECTURES]:
      del PROGRAMS[old]
  return PROGRAMS[key]


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """(encoder key, classifier key) of a deep prior's integer seed."""
  encoder_key, classifier_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), 0))
  return encoder_key, classifier_key


def shared_draws(weight_init: str) -> bool:
  """Whether `weight_init` kernels are drawn by the shared programs (else `module.init`, jitted per architecture)."""
  return weight_init in NORMAL_SCALING and bool(jax.config.jax_threefry_partitionable)


def _standard_draw(size: int):
  """jitted key -> erf_inv(uniform(key, (size,), -1, 1)): `jax.random.normal`'s draw before its factor sqrt(2)."""
  low = np.nextafter(np.float32(-1.0), np.float32(0.0))
  return _cached(("draw", size), lambda: jax.jit(
      lambda key: jax.lax.erf_inv(jax.random.uniform(key, (size,), jnp.float32, low, 1.0))))


def bucket(count: int) -> int:
  return max(MIN_BUCKET, 1 << (count - 1).bit_length())


def normal_factor(shape: tuple[int, ...], scale: float, mode: str) -> np.float32:
  """The float32 factor of a standard draw for `variance_scaling(scale, mode, 'normal')` on a kernel of `shape`
  (input and output on the last two axes): sqrt(2) * sqrt(variance), each rounded to float32 as in that
  initialiser, then multiplied in float32, as XLA folds them."""
  receptive = math.prod(shape) / shape[-2] / shape[-1]  # Flax's float arithmetic (`_compute_fans`)
  fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
  denominator = fan_in if mode == "fan_in" else (fan_in + fan_out) / 2
  return np.float32(np.sqrt(2)) * np.sqrt(np.float32(scale / denominator))


def _kernel(key: jax.Array, scope: tuple[str, ...], shape: tuple[int, ...], weight_init: str) -> np.ndarray:
  kernel_key = LazyRng.create(key, *scope, 1).as_jax_rng()  # the first parameter of its scope
  count = math.prod(shape)
  draw = np.asarray(_standard_draw(bucket(count))(kernel_key))[:count]
  return (draw * normal_factor(shape, *NORMAL_SCALING[weight_init])).reshape(shape)


def _init(module: nn.Module, input_shape: tuple[int, ...]):
  return lambda key: module.init(key, jnp.zeros(input_shape, jnp.float32))


def _structure(module: nn.Module, input_shape: tuple[int, ...]):
  return _cached(("structure", module, input_shape),
                 lambda: jax.eval_shape(_init(module, input_shape), jax.random.key(0)))


def variables(module: nn.Module, key: jax.Array, input_shape: tuple[int, ...]) -> Any:
  """`module.init(key, zeros(input_shape))` as it comes out under jit, as numpy arrays; `module` is a
  `deep_prior` encoder or classifier (kernels without biases, BatchNorm)."""
  if not shared_draws(module.weight_init):
    init = _cached(("init", module, input_shape), lambda: jax.jit(_init(module, input_shape)))
    return jax.tree.map(np.asarray, init(key))

  def leaf(path, spec):
    names = tuple(entry.key for entry in path)
    collection, scope, name = names[0], names[1:-1], names[-1]
    if (collection, name) == ("params", "kernel"):
      return _kernel(key, scope, spec.shape, module.weight_init)
    if (collection, name) in CONSTANTS:
      return np.full(spec.shape, CONSTANTS[(collection, name)], spec.dtype)
    raise ValueError(f"prior_init: no rule for variable {'/'.join(names)} of {type(module).__name__}")

  return jax.tree_util.tree_map_with_path(leaf, _structure(module, input_shape))


def stacked_variables(module: nn.Module, keys: list[jax.Array], input_shape: tuple[int, ...]) -> Any:
  """`variables` of every key, stacked on a leading axis."""
  return jax.tree.map(lambda *xs: np.stack(xs), *(variables(module, key, input_shape) for key in keys))
