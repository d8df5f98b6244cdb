"""The random encoder of a deep-prior evaluation, drawn without compiling a random-number program per architecture.

`encoder.init` under jit compiles, for every new architecture, one threefry program per weight shape; on the CPU
that took 1.3-2.2 s of a sampled net's compilation, ten times its 500-image forward pass (`benchmarks/` notes in
BENCHMARKS.md). `encoder_variables` gives the same weights bit for bit at a fraction of that:

1. the module is initialised with a recording initializer that keeps the key Flax hands each weight and returns the
   weight filled with its number (1, 2, ...; a cheap compiled program per architecture: no random numbers);
2. each weight is drawn by one compiled program per size bucket and variance (`_normal_program`: the draw of
   `jax.nn.initializers.variance_scaling`, the same expression, for a power of two >= the kernel's element count and
   every seed's key at once), reused by every architecture whose kernels share them (the search space repeats kernel
   sizes and channel counts). With JAX's partitionable threefry (`jax_threefry_partitionable`, the default), the
   first n values of a draw of a longer vector are the draw of n values, so the prefix reshaped is the kernel
   `encoder.init` draws under jit, bit for bit (`tests/dpnas/test_dpnas_prior_init.py` compares them).

Initialisers without such a draw (uniform, orthogonal) and a non-partitionable threefry fall back to `encoder.init`
under jit, vmapped over the seeds.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_forgetting.models import deep_prior as dp

# weight_init name -> (scale, mode) of its variance-scaling normal draw
NORMAL_SCALING = {"kaiming-normal": (2.0, "fan_in"), "xavier-normal": (1.0, "fan_avg")}
_MIN_BUCKET = 1024
_PROGRAMS: dict[Any, Any] = {}  # compiled per architecture (key recording) and per size bucket (draws)


def init_keys(seeds: np.ndarray) -> jax.Array:
  """Each seed's key for its encoder's weights (the first of `split(fold_in(key(seed), 0))`, the classifier taking
  the second)."""
  return jax.vmap(lambda s: jax.random.split(jax.random.fold_in(jax.random.key(s), 0))[0])(jnp.asarray(seeds))


def _fast(weight_init: str) -> bool:
  return weight_init in NORMAL_SCALING and bool(jax.config.jax_threefry_partitionable)


def _recording_program(encoder: dp.DeepPriorEncoder, sample: jax.Array):
  """jitted keys -> (variables whose kernels are filled with their number k = 1, 2, ..., [key data of kernel k]),
  per seed."""
  cache_key = ("record", encoder, sample.shape, sample.dtype)
  if cache_key not in _PROGRAMS:
    def one(key):
      keys = []

      def record(k, shape, dtype=jnp.float32):
        keys.append(jax.random.key_data(k))
        return jnp.full(shape, len(keys), dtype)

      variables = encoder.clone(kernel_init=record).init(key, sample)
      return variables, keys

    _PROGRAMS[cache_key] = jax.jit(jax.vmap(one))
  return _PROGRAMS[cache_key]


def _normal_program(size: int, variance: float):
  """jitted key data (seeds, ...) -> `variance_scaling`'s draw for that variance, (seeds, size): the same
  expression, so that XLA simplifies it the same way (the scale is a constant of the program, as it is there), one
  program per (size, variance)."""
  if ("normal", size, variance) not in _PROGRAMS:
    draw = lambda k: (jax.random.normal(jax.random.wrap_key_data(k), (size,), jnp.float32)
                      * jnp.sqrt(jnp.array(variance, dtype=jnp.float32)))
    _PROGRAMS[("normal", size, variance)] = jax.jit(jax.vmap(draw))
  return _PROGRAMS[("normal", size, variance)]


def _bucket(count: int) -> int:
  return max(_MIN_BUCKET, 1 << (count - 1).bit_length())


def _variance(shape: tuple[int, ...], scale: float, mode: str) -> float:
  """The variance `variance_scaling(scale, mode, 'normal')` gives a kernel whose last two axes are input and output
  (the same Python arithmetic)."""
  receptive = math.prod(shape[:-2])
  fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
  denominator = fan_in if mode == "fan_in" else (fan_in + fan_out) / 2
  return scale / denominator


def encoder_variables(encoder: dp.DeepPriorEncoder, seeds: np.ndarray, sample: jax.Array) -> Any:
  """The initial variables of `encoder` for every seed (stacked on a leading axis), equal to
  `encoder.init(init_keys(seeds)[i], sample)` for each seed i; `sample` is one input example batch (1, H, W, C)."""
  keys = init_keys(seeds)
  if not _fast(encoder.weight_init):
    cache_key = ("init", encoder, sample.shape, sample.dtype)
    if cache_key not in _PROGRAMS:
      _PROGRAMS[cache_key] = jax.jit(jax.vmap(lambda k: encoder.init(k, sample)))
    return _PROGRAMS[cache_key](keys)
  variables, kernel_keys = _recording_program(encoder, sample)(keys)
  scale, mode = NORMAL_SCALING[encoder.weight_init]
  used = set()

  def draw(leaf):
    shape = leaf.shape[1:]
    if len(shape) < 2:  # BatchNorm scale and bias: not drawn
      return leaf
    number = int(np.asarray(leaf[(0,) * leaf.ndim]))
    used.add(number)
    count = math.prod(shape)
    drawn = _normal_program(_bucket(count), _variance(shape, scale, mode))(kernel_keys[number - 1])
    return drawn[:, :count].reshape((len(seeds), *shape))

  params = jax.tree.map(draw, variables["params"])
  if used != set(range(1, len(kernel_keys) + 1)):
    raise AssertionError(f"prior_init: kernels {sorted(used)} drawn of {len(kernel_keys)} recorded")
  return {**variables, "params": params}
