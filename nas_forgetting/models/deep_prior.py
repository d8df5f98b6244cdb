"""Deep-prior networks built from DP-NAS net strings (Flax Linen).

* `DeepPriorEncoder(net)`: the conv / residual / pooling stack of a net string, flattened in channel-major order
  (C, H, W), as PyTorch's `view(N, -1)` on NCHW, so stored embeddings have the reference's feature order.
  - `C(f,k,s,p,1)`: convolution without bias, BatchNorm, ReLU.
  - `C(f,3,1,p,0)`: pre-activation residual block: o = ReLU(BN(x)); h = conv3x3(o); h = ReLU(BN(h)); h = conv3x3(h);
    output = h + x when the channel count is unchanged, else h + conv1x1(o) (the shortcut sees the pre-activated
    input). Always padding 1, stride 1.
  - `P(k,s,p,0)`: max pooling (padding counts as -inf).
  `bn_epsilon` is BatchNorm's epsilon; 0 disables BatchNorm everywhere (the reference's `--batch-norm`). BatchNorm
  starts at scale 1, bias 0; running statistics use momentum 0.9 (PyTorch's 0.1).
* `DeepPriorClassifier`: the hidden `FC(n)` layers of the string (Linear without bias, BatchNorm, ReLU), optional
  dropout, then a Linear layer to the classes without bias (the `SM(c)` token).
* `DeepPriorNet`: encoder then classifier, for `full_training` (the encoder is trained too).

`conv` chooses how convolutions are computed, with the same parameters and the same result up to float rounding:
`"xla"` (`lax.conv_general_dilated`), `"matmul"` (`matmul_conv`: large stride-1 kernels as one matrix product per
kernel offset, summed), which XLA's CPU backend runs up to 3x faster on layers with millions of weights (a 3x3
conv from 1024 to 512 channels on 7x7 maps), or `"cpu"` (`cpu_conv`: `matmul_conv`'s products, and unpadded
stride-1 layers, which XLA's CPU backend runs several times slower than padded ones, as a 1x1 product, products per
kernel offset or the centre of a zero-padded convolution); accelerators prefer `"xla"`.

`weight_init` applies to every convolution and linear weight, the classifier included:
kaiming-normal (default; std sqrt(2/fan_in), not truncated), kaiming-uniform (bound sqrt(6/fan_in)),
xavier-normal (std sqrt(2/(fan_in+fan_out))), xavier-uniform, orthogonal. Unknown names raise `ConfigError`
(the reference silently falls back to kaiming-normal).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_forgetting.models import net_string as ns
from nas_forgetting.errors import ConfigError

WEIGHT_INITS = ("kaiming-normal", "kaiming-uniform", "xavier-normal", "xavier-uniform", "orthogonal")
CONVS = ("xla", "matmul", "cpu")


# Kernels with at least this many weights go through `matmul_conv`'s products (measured on a 2-core CPU, 100 images:
# 3x3 from 1024 to 512 channels on 7x7 maps (4.7M weights) 3x faster, 5x5 512 -> 512 (6.6M) 1.3x; 3x3 512 -> 256
# (1.2M) and smaller kernels, or large maps with few channels, ran 0.3-0.95x as fast as XLA's convolution).
MATMUL_MIN_WEIGHTS = 1 << 22


def _plain(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, feature_group_count) -> bool:
  """A stride-1, undilated, ungrouped 2-D convolution with explicit padding."""
  return (all(d == 1 for d in (lhs_dilation or ()) + (rhs_dilation or ())) and feature_group_count == 1
          and not isinstance(padding, str) and lhs.ndim == 4 and all(s == 1 for s in window_strides))


def matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                feature_group_count=1, precision=None):
  """`lax.conv_general_dilated` for NHWC inputs and HWIO kernels (flax's layout), in the signature flax's `nn.Conv`
  calls: a stride-1 convolution with explicit padding and at least `MATMUL_MIN_WEIGHTS` weights is a loop over
  kernel offsets summing (shifted window of the padded input) @ kernel[dy, dx]; anything else goes to
  `lax.conv_general_dilated`."""
  plain = _plain(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, feature_group_count)
  if not plain or rhs.size < MATMUL_MIN_WEIGHTS:
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision)
  return _offset_products(lhs, rhs, padding, precision)


def _offset_products(lhs, rhs, padding, precision):
  """A stride-1 convolution (NHWC, HWIO) as the sum over kernel offsets of (shifted window of the padded input) @
  kernel[dy, dx]."""
  kh, kw, cin, cout = rhs.shape
  x = jnp.pad(lhs, ((0, 0),) + tuple(tuple(p) for p in padding) + ((0, 0),))
  n, oh, ow = x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1

  def offset(i, out):
    dy, dx = i // kw, i % kw
    window = jax.lax.dynamic_slice(x, (0, dy, dx, 0), (n, oh, ow, cin))
    return out + jnp.einsum("nhwc,cd->nhwd", window, rhs[dy, dx], precision=precision)

  dtype = jnp.result_type(lhs, rhs)
  return jax.lax.fori_loop(0, kh * kw, offset, jnp.zeros((n, oh, ow, cout), dtype))


# `cpu_conv` rewrites an unpadded stride-1 layer with at least `CPU_MIN_IN_CHANNELS` input channels (from one input
# channel the rewrites ran slower): from `CPU_OFFSET_MIN_IN_CHANNELS` as products per kernel offset, below that as the
# centre of the zero-padded convolution where it computes at most `CPU_MAX_SAME_WORK` times the outputs of the
# unpadded one (`benchmarks/conv_lowering.py` measures each form).
CPU_MIN_IN_CHANNELS = 16
CPU_OFFSET_MIN_IN_CHANNELS = 64
CPU_MAX_SAME_WORK = 2.0


def cpu_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
             feature_group_count=1, precision=None):
  """`lax.conv_general_dilated` for NHWC inputs and HWIO kernels in the forms XLA's CPU backend runs fastest:
  `matmul_conv`'s products for kernels of at least `MATMUL_MIN_WEIGHTS` weights; an unpadded stride-1 layer (XLA's
  CPU backend runs these several times slower per output than padded ones) as one matrix product (1x1), as products
  per kernel offset (from `CPU_OFFSET_MIN_IN_CHANNELS` input channels) or as the centre of the convolution
  zero-padded to keep the input size (the same products and sums, the border computed and dropped); anything else as
  XLA's convolution."""
  conv_args = (lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count)
  plain = _plain(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, feature_group_count)
  if plain and rhs.size >= MATMUL_MIN_WEIGHTS:
    return _offset_products(lhs, rhs, padding, precision)
  kh, kw, cin, _ = rhs.shape
  unpadded = plain and cin >= CPU_MIN_IN_CHANNELS and all(tuple(p) == (0, 0) for p in padding)
  if unpadded and kh == kw == 1:
    return jnp.einsum("nhwc,cd->nhwd", lhs, rhs[0, 0], precision=precision)
  if unpadded and cin >= CPU_OFFSET_MIN_IN_CHANNELS:
    return _offset_products(lhs, rhs, padding, precision)
  height, width = lhs.shape[1], lhs.shape[2]
  out_height, out_width = height - kh + 1, width - kw + 1
  if not unpadded or height * width > CPU_MAX_SAME_WORK * out_height * out_width:
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, *conv_args, precision=precision)
  top, left = kh // 2, kw // 2
  same = jax.lax.conv_general_dilated(lhs, rhs, window_strides, ((top, kh - 1 - top), (left, kw - 1 - left)),
                                      *conv_args, precision=precision)
  return same[:, top:top + out_height, left:left + out_width, :]


def _conv_fn(conv: str):
  """The `conv_general_dilated` handed to `nn.Conv` for a `conv` setting (None: flax's default, XLA's)."""
  if conv not in CONVS:
    raise ConfigError(f"conv={conv!r}; expected one of {CONVS}")
  return {"matmul": matmul_conv, "cpu": cpu_conv}.get(conv)


def weight_initializer(name: str) -> Callable:
  """The Flax initializer for a reference `--weight-init` name (PyTorch's fan conventions and gains)."""
  if name == "kaiming-normal":
    return nn.initializers.variance_scaling(2.0, "fan_in", "normal")
  if name == "kaiming-uniform":
    return nn.initializers.variance_scaling(2.0, "fan_in", "uniform")
  if name == "xavier-normal":
    return nn.initializers.variance_scaling(1.0, "fan_avg", "normal")
  if name == "xavier-uniform":
    return nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
  if name == "orthogonal":
    return nn.initializers.orthogonal()
  raise ConfigError(f"weight_init={name!r} is not known; expected one of {', '.join(WEIGHT_INITS)}")


def split_net(net: str | Sequence[ns.Layer]) -> tuple[tuple, tuple, int]:
  """(encoder layers, hidden FC sizes, number of classes) of a net."""
  layers = ns.as_net(net)
  encoder = tuple(layer for layer in layers if isinstance(layer, (ns.Conv, ns.Pool)))
  hidden = tuple(layer.units for layer in layers if isinstance(layer, ns.FC))
  return encoder, hidden, layers[-1].classes


def _batch_norm(x: jax.Array, epsilon: float, train: bool, momentum: float = 0.9) -> jax.Array:
  """BatchNorm (scale 1, bias 0 at init; momentum 0.9 = PyTorch's 0.1); called inside a compact method."""
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon)(x)


class ResidualBlock(nn.Module):
  """Pre-activation residual block (flag 0): 3x3 convs, stride 1, padding 1; 1x1 shortcut when channels change."""

  features: int
  bn_epsilon: float
  weight_init: str
  bn_momentum: float = 0.9
  conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    init = weight_initializer(self.weight_init)
    conv = _conv_fn(self.conv)
    bn = (lambda h: _batch_norm(h, self.bn_epsilon, train, self.bn_momentum)) if self.bn_epsilon > 0 else (lambda h: h)
    pre = nn.relu(bn(x))
    h = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, kernel_init=init,
                conv_general_dilated=conv)(pre)
    h = nn.relu(bn(h))
    h = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, kernel_init=init,
                conv_general_dilated=conv)(h)
    if x.shape[-1] == self.features:
      return x + h
    return h + nn.Conv(self.features, (1, 1), padding=((0, 0), (0, 0)), use_bias=False, kernel_init=init,
                       conv_general_dilated=conv, name="shortcut")(pre)


class DeepPriorEncoder(nn.Module):
  """The conv/residual/pool stack of a net string; returns (N, C*H*W) features in channel-major order."""

  net: str
  bn_epsilon: float = 1e-4
  weight_init: str = "kaiming-normal"
  bn_momentum: float = 0.9  # 0.0 makes a training-mode pass store exactly its batch statistics
  conv: str = "xla"  # how convolutions are computed (CONVS; same parameters, same results up to rounding)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    encoder, _, _ = split_net(self.net)
    init = weight_initializer(self.weight_init)
    conv = _conv_fn(self.conv)
    for layer in encoder:
      if isinstance(layer, ns.Pool):
        p = layer.padding
        x = nn.max_pool(x, (layer.kernel, layer.kernel), strides=(layer.stride, layer.stride),
                        padding=((p, p), (p, p)))
      elif layer.residual:
        x = ResidualBlock(layer.features, self.bn_epsilon, self.weight_init, self.bn_momentum, self.conv)(x, train)
      else:
        p = layer.padding
        x = nn.Conv(layer.features, (layer.kernel, layer.kernel), strides=(layer.stride, layer.stride),
                    padding=((p, p), (p, p)), use_bias=False, kernel_init=init, conv_general_dilated=conv)(x)
        if self.bn_epsilon > 0:
          x = _batch_norm(x, self.bn_epsilon, train, self.bn_momentum)
        x = nn.relu(x)
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


class DeepPriorClassifier(nn.Module):
  """Hidden FC layers (Linear without bias, BatchNorm, ReLU), optional dropout, then Linear to the classes."""

  num_classes: int
  hidden: tuple = ()
  bn_epsilon: float = 1e-4
  weight_init: str = "kaiming-normal"
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    init = weight_initializer(self.weight_init)
    for units in self.hidden:
      x = nn.Dense(units, use_bias=False, kernel_init=init)(x)
      if self.bn_epsilon > 0:
        x = _batch_norm(x, self.bn_epsilon, train)
      x = nn.relu(x)
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, use_bias=False, kernel_init=init, name="logits")(x)


class DeepPriorNet(nn.Module):
  """Encoder then classifier: the whole net of a string (used for `full_training`)."""

  net: str
  bn_epsilon: float = 1e-4
  weight_init: str = "kaiming-normal"
  dropout_rate: float = 0.0
  conv: str = "xla"

  def setup(self):
    _, hidden, classes = split_net(self.net)
    self.encoder = DeepPriorEncoder(self.net, self.bn_epsilon, self.weight_init, conv=self.conv)
    self.classifier = DeepPriorClassifier(classes, hidden, self.bn_epsilon, self.weight_init, self.dropout_rate)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return self.classifier(self.encoder(x, train), train)
