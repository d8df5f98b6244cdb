"""The ENAS micro-CNN supernet: shared weights for every normal/reduction cell pair of `CnnSearchSpace`.

Network (the ENAS paper's micro search network): stem conv 3x3 -> BN, then `num_modules` modules of
`num_repeat_normal` normal cells, with a reduction cell between consecutive modules. Each reduction doubles the
width and halves the spatial size: the previous output is first reduced by a factorized reduction (two offset
stride-2 1x1 convolutions, concatenated), so that the reduction cell's own operations all run at stride 1.
Head: ReLU -> global average pool -> dropout -> dense.

Cell with inputs (h_{i-2}, h_{i-1}): each input is calibrated to the cell width (factorized reduction when it is
spatially larger, otherwise ReLU -> 1x1 conv -> BN). Node b (id b + 2) = op_1(in_1) + op_2(in_2) with ops
identity, separable conv 3x3 / 5x5 (`sep_conv_stacks` x (ReLU -> depthwise -> pointwise -> BN)), avg pool 3x3,
max pool 3x3 (stride 1, SAME). Cell output = BN(sum over loose ends k of ReLU(node_k) @ W_k), i.e. a 1x1
convolution of the concatenated loose ends (paper).

The WPL reference's choices, offered as named options for comparison (`SEP_CONVS`, `CELL_OUTPUTS`; the defaults
are the paper's): `sep_conv='depthwise'` drops the pointwise convolution (each stack is ReLU -> depthwise -> BN, a
grouped conv without pointwise; with `sep_conv_stacks=1` exactly the reference's op), and `cell_output='last_node'`
makes the cell output the last node's value alone (no 1x1 convolution, no BN; loose ends other than the last
node are computed and discarded, as in the reference). Parameters an option does not use are not created.

Weights: every (node, slot, input id) has its own separable-conv weights, stacked in arrays indexed
[node, slot, input]; the architecture (traced int32 (2, num_blocks, 4)) picks rows by gathers and the op by
`lax.switch`, so one compilation serves every architecture and only the chosen op is computed.
BatchNorm uses batch statistics in training and evaluation alike (no running averages, no affine parameters
inside edge ops), as is usual for weight-sharing supernets (the WPL reference does the same).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_forgetting.errors import ConfigError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
SEP_CONVS = ("separable", "depthwise")  # depthwise -> pointwise (paper) | depthwise only (WPL reference)
CELL_OUTPUTS = ("loose_ends", "last_node")  # 1x1 conv of the concatenated loose ends (paper) | last node (reference)


def batch_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Normalisation by batch statistics over (N, H, W), no affine parameters."""
  mean = x.mean((0, 1, 2), keepdims=True)
  var = x.var((0, 1, 2), keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def depthwise_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """x (N, H, W, C), w (k, k, C) -> SAME depthwise convolution, stride 1."""
  c = x.shape[-1]
  return jax.lax.conv_general_dilated(x, w[:, :, None, :], (1, 1), "SAME", feature_group_count=c,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def sep_conv(x: jax.Array, dw: jax.Array, pw: jax.Array | None) -> jax.Array:
  """Stacks of ReLU -> depthwise (dw[s]: (k, k, C)) -> pointwise (pw[s]: (C, C)) -> BN; without the pointwise
  step when `pw` is None (the WPL reference's "depthwise" op)."""
  for s in range(dw.shape[0]):
    y = depthwise_conv(jax.nn.relu(x), dw[s])
    x = batch_norm(y if pw is None else y @ pw[s])
  return x


def pool3x3(x: jax.Array, kind: str) -> jax.Array:
  if kind == "max":
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
  return total / _valid_counts(x.shape[1], x.shape[2]).astype(x.dtype)  # average over the unpadded pixels


def _valid_counts(h: int, w: int) -> np.ndarray:
  """Pixels of each SAME 3x3 window inside an h x w image, (1, h, w, 1): a numpy constant (XLA would spend seconds
  constant-folding the same count computed by a reduce_window over ones)."""
  def per_axis(n):
    c = np.full(n, 3.0) if n > 1 else np.ones(1)
    if n > 1:
      c[0] = c[-1] = 2.0
    return c
  return np.outer(per_axis(h), per_axis(w))[None, :, :, None]


def apply_op(op: jax.Array, x: jax.Array, dw3: jax.Array, pw3: jax.Array | None, dw5: jax.Array,
             pw5: jax.Array | None) -> jax.Array:
  """CNN_OPS order: identity, sep_conv_3x3, sep_conv_5x5, avg_pool_3x3, max_pool_3x3 (only the chosen one runs).
  `pw3`/`pw5` None: the conv ops are depthwise only."""
  branches = [lambda x, *_: x, lambda x, a, b, c, d: sep_conv(x, a, b), lambda x, a, b, c, d: sep_conv(x, c, d),
              lambda x, *_: pool3x3(x, "avg"), lambda x, *_: pool3x3(x, "max")]
  return jax.lax.switch(op, branches, x, dw3, pw3, dw5, pw5)


def _he(fan_in_axes: Sequence[int]):
  def init(key, shape, dtype=jnp.float32):
    fan_in = 1
    for a in fan_in_axes:
      fan_in *= shape[a]
    size = 1
    for d in shape:
      size *= d
    # Drawn flat and reshaped: XLA compiles high-rank random draws very slowly on CPU.
    return jax.random.normal(key, (size,), dtype).reshape(shape) * jnp.sqrt(2.0 / fan_in)
  return init


class FactorizedReduce(nn.Module):
  """ReLU -> two stride-2 1x1 convs (the second shifted by one pixel) -> concat -> BN: halves H and W."""

  features: int

  @nn.compact
  def __call__(self, x):
    x = jax.nn.relu(x)
    half = self.features // 2
    w1 = self.param("w1", _he([0]), (x.shape[-1], half))
    w2 = self.param("w2", _he([0]), (x.shape[-1], self.features - half))
    a = x[:, ::2, ::2] @ w1
    shifted = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1::2, 1::2]
    b = shifted[:, :a.shape[1], :a.shape[2]] @ w2
    return batch_norm(jnp.concatenate([a, b], -1))


class Calibrate(nn.Module):
  """Brings a cell input to (size, features): factorized reduction when larger, else ReLU -> 1x1 conv -> BN."""

  features: int
  size: int

  @nn.compact
  def __call__(self, x):
    if x.shape[1] > self.size:
      return FactorizedReduce(self.features)(x)
    w = self.param("w", _he([0]), (x.shape[-1], self.features))
    return batch_norm(jax.nn.relu(x) @ w)


def check_options(sep_conv: str, cell_output: str) -> None:
  """Raises ConfigError for an unknown `sep_conv` or `cell_output`."""
  if sep_conv not in SEP_CONVS:
    raise ConfigError(f"cnn.sep_conv={sep_conv!r}; expected one of {', '.join(SEP_CONVS)}")
  if cell_output not in CELL_OUTPUTS:
    raise ConfigError(f"cnn.cell_output={cell_output!r}; expected one of {', '.join(CELL_OUTPUTS)}")


class EnasCell(nn.Module):
  """One cell of the supernet; `cell_arch` is int32 (num_blocks, 4). Options: see the module docstring."""

  num_blocks: int
  features: int
  sep_conv_stacks: int = 2
  sep_conv: str = "separable"
  cell_output: str = "loose_ends"

  @nn.compact
  def __call__(self, prev_prev, prev, cell_arch):
    check_options(self.sep_conv, self.cell_output)
    b_n, c, s = self.num_blocks, self.features, self.sep_conv_stacks
    size = prev.shape[1]
    x0 = Calibrate(c, size, name="calibrate_0")(prev_prev)
    x1 = Calibrate(c, size, name="calibrate_1")(prev)
    shape = (b_n, 2, b_n + 2, s)
    pointwise = self.sep_conv == "separable"
    dw3 = self.param("dw3", _he([4, 5]), shape + (3, 3, c))
    pw3 = self.param("pw3", _he([4]), shape + (c, c)) if pointwise else None
    dw5 = self.param("dw5", _he([4, 5]), shape + (5, 5, c))
    pw5 = self.param("pw5", _he([4]), shape + (c, c)) if pointwise else None
    row = lambda w, b, slot, inp: None if w is None else w[b, slot, inp]

    cell_arch = jnp.asarray(cell_arch, jnp.int32)
    states = jnp.zeros((b_n + 2,) + x1.shape, x1.dtype).at[0].set(x0).at[1].set(x1)

    def node_body(b, states):  # one compiled body for all nodes (weights are stacked per node)
      node = jnp.zeros_like(x1)
      for slot in range(2):
        inp = jnp.clip(cell_arch[b, 2 * slot], 0, b + 1)
        op = jnp.clip(cell_arch[b, 2 * slot + 1], 0, 4)
        x = jax.lax.dynamic_index_in_dim(states, inp, keepdims=False)
        node = node + apply_op(op, x, dw3[b, slot, inp], row(pw3, b, slot, inp), dw5[b, slot, inp],
                               row(pw5, b, slot, inp))
      return jax.lax.dynamic_update_index_in_dim(states, node, b + 2, 0)

    states = jax.lax.fori_loop(0, b_n, node_body, states)
    if self.cell_output == "last_node":
      return states[b_n + 1]
    w_out = self.param("w_out", _he([1]), (b_n, c, c))
    ids = jnp.arange(2, b_n + 2)
    used = jnp.zeros((b_n + 2,), bool).at[cell_arch[:, 0]].set(True).at[cell_arch[:, 2]].set(True)
    loose = (~used[2:]).astype(x1.dtype)
    out = jnp.einsum("k,knhwc,kcd->nhwd", loose, jax.nn.relu(states[ids]), w_out)
    return batch_norm(out)


class EnasCnn(nn.Module):
  """The micro search network. Call with images (N, H, W, C) normalised, arch (2, num_blocks, 4)."""

  num_classes: int = 10
  num_blocks: int = 5
  features: int = 20
  num_modules: int = 3
  num_repeat_normal: int = 2
  sep_conv_stacks: int = 2
  dropout: float = 0.0
  sep_conv: str = "separable"  # SEP_CONVS
  cell_output: str = "loose_ends"  # CELL_OUTPUTS

  @nn.compact
  def __call__(self, images: jax.Array, arch: jax.Array, *, train: bool) -> jax.Array:
    arch = jnp.asarray(arch, jnp.int32)
    c = self.features
    cell = functools.partial(EnasCell, self.num_blocks, sep_conv_stacks=self.sep_conv_stacks,
                             sep_conv=self.sep_conv, cell_output=self.cell_output)
    w = self.param("stem", _he([0, 1, 2]), (3, 3, images.shape[-1], c))
    x = batch_norm(jax.lax.conv_general_dilated(images, w, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC")))
    prev_prev, prev = x, x
    for m in range(self.num_modules):
      if m > 0:
        c *= 2
        reduced = FactorizedReduce(c, name=f"reduce_input_{m}")(prev)
        prev_prev, prev = prev, cell(c, name=f"reduction_{m}")(prev, reduced, arch[1])
      for r in range(self.num_repeat_normal):
        prev_prev, prev = prev, cell(c, name=f"normal_{m}_{r}")(prev_prev, prev, arch[0])
    x = jax.nn.relu(prev).mean((1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="head")(x)


def augment(rng: jax.Array, images: jax.Array, *, pad: int = 4, flip: bool = True, cutout: int = 0) -> jax.Array:
  """Per image: pad-`pad` random crop back to the original size, random horizontal flip, optional cutout square."""
  n, h, w, _ = images.shape
  k_crop, k_flip, k_cut = jax.random.split(rng, 3)
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * pad + 1)
  crop = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, im.shape[-1])))
  out = crop(padded, offsets)
  if flip:
    do_flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
    out = jnp.where(do_flip, out[:, :, ::-1], out)
  if cutout > 0:
    centre = jax.random.randint(k_cut, (n, 2), 0, jnp.array([h, w]))
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = ((jnp.abs(rows - centre[:, 0, None, None]) <= cutout // 2)
              & (jnp.abs(cols - centre[:, 1, None, None]) <= cutout // 2))
    out = jnp.where(inside[..., None], 0.0, out)
  return out


def normalize(images: jax.Array, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> jax.Array:
  """Per-channel normalisation of images in [0, 1]."""
  return (images - jnp.asarray(mean)) / jnp.asarray(std)
