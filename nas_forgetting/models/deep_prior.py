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

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    init = weight_initializer(self.weight_init)
    bn = (lambda h: _batch_norm(h, self.bn_epsilon, train, self.bn_momentum)) if self.bn_epsilon > 0 else (lambda h: h)
    pre = nn.relu(bn(x))
    h = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, kernel_init=init)(pre)
    h = nn.relu(bn(h))
    h = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, kernel_init=init)(h)
    if x.shape[-1] == self.features:
      return x + h
    return h + nn.Conv(self.features, (1, 1), use_bias=False, kernel_init=init, name="shortcut")(pre)


class DeepPriorEncoder(nn.Module):
  """The conv/residual/pool stack of a net string; returns (N, C*H*W) features in channel-major order."""

  net: str
  bn_epsilon: float = 1e-4
  weight_init: str = "kaiming-normal"
  bn_momentum: float = 0.9  # 0.0 makes a training-mode pass store exactly its batch statistics

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    encoder, _, _ = split_net(self.net)
    init = weight_initializer(self.weight_init)
    for layer in encoder:
      if isinstance(layer, ns.Pool):
        p = layer.padding
        x = nn.max_pool(x, (layer.kernel, layer.kernel), strides=(layer.stride, layer.stride),
                        padding=((p, p), (p, p)))
      elif layer.residual:
        x = ResidualBlock(layer.features, self.bn_epsilon, self.weight_init, self.bn_momentum)(x, train)
      else:
        p = layer.padding
        x = nn.Conv(layer.features, (layer.kernel, layer.kernel), strides=(layer.stride, layer.stride),
                    padding=((p, p), (p, p)), use_bias=False, kernel_init=init)(x)
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

  def setup(self):
    _, hidden, classes = split_net(self.net)
    self.encoder = DeepPriorEncoder(self.net, self.bn_epsilon, self.weight_init)
    self.classifier = DeepPriorClassifier(classes, hidden, self.bn_epsilon, self.weight_init, self.dropout_rate)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return self.classifier(self.encoder(x, train), train)
