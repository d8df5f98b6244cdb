"""Small convolutional network for continual learning on image data (Flax Linen).

Conv blocks (3x3 convolution, [BatchNorm], ReLU, 2x2 max pooling) of `features[i]` channels, then Dense ReLU
layers of `hidden[i]` units and `num_heads` linear heads (`heads.MultiHead`, selected by a traced index).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from nas_forgetting.models.heads import MultiHead


class ConvNet(nn.Module):
  """conv(features) -> dense(hidden) -> heads."""
  features: Sequence[int] = (32, 64)
  hidden: Sequence[int] = (256,)
  num_outputs: int = 10
  num_heads: int = 1
  batch_norm: bool = False
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x: jax.Array, head: int | jax.Array = 0, train: bool = False) -> jax.Array:
    for i, width in enumerate(self.features):
      x = nn.Conv(width, (3, 3), padding="SAME", name=f"conv_{i}")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=f"conv_bn_{i}")(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"dense_{i}")(x))
    return MultiHead(self.num_outputs, self.num_heads, name="heads")(x, head)
