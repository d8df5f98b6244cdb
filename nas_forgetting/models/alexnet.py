"""AlexNet-style network with freezable layers, for the MAS image-folder setup (Flax Linen).

The layer pattern of AlexNet (Krizhevsky et al. 2012; torchvision's variant): five convolutions with max
pooling after the first, second and fifth, then two fully connected ReLU layers with dropout and one linear head
per task. The channel counts are AlexNet's (64, 192, 384, 256, 256) times `width`, and the first convolution uses
an 11x11 stride-4 kernel only for inputs of at least 64 pixels; small inputs (CIFAR-sized 32x32) get a 3x3 stride-1
first layer so the feature map survives the three poolings. Layer names: `conv_0..conv_4`, `fc_0`, `fc_1`,
`heads/head_t`.

Freezing: `nas_forgetting.models.trainable_mask(params, frozen)` gives a boolean tree (True = trainable) that leaves the named layers out
of training, e.g. `("conv_0", "conv_1")` as the third-party MAS code's `num_freeze_layers=2`. There are no
pretrained weights here (the reference starts from ImageNet AlexNet); frozen layers keep their seeded random
initialisation, which a report must state.
"""

from __future__ import annotations



import flax.linen as nn
import jax

from nas_forgetting.models.heads import MultiHead

ALEXNET_CHANNELS = (64, 192, 384, 256, 256)


class AlexNet(nn.Module):
  """AlexNet-style conv stack, two FC layers, `num_heads` heads."""
  num_outputs: int = 10
  num_heads: int = 1
  width: float = 1.0  # multiplies AlexNet's channel counts
  fc_units: int = 4096  # units of fc_0 and fc_1
  dropout: float = 0.5  # dropout before fc_0 and fc_1 (training only)

  @nn.compact
  def __call__(self, x: jax.Array, head: int | jax.Array = 0, train: bool = False) -> jax.Array:
    channels = [max(1, int(round(c * self.width))) for c in ALEXNET_CHANNELS]
    large = x.shape[1] >= 64
    x = nn.Conv(channels[0], (11, 11) if large else (3, 3), strides=(4, 4) if large else (1, 1),
                padding=2 if large else 1, name="conv_0")(x)
    x = nn.max_pool(nn.relu(x), (3, 3) if large else (2, 2), strides=(2, 2))
    x = nn.Conv(channels[1], (5, 5) if large else (3, 3), padding="SAME", name="conv_1")(x)
    x = nn.max_pool(nn.relu(x), (3, 3) if large else (2, 2), strides=(2, 2))
    for i in (2, 3, 4):
      x = nn.relu(nn.Conv(channels[i], (3, 3), padding="SAME", name=f"conv_{i}")(x))
    x = nn.max_pool(x, (3, 3) if large else (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    for i in range(2):
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(nn.Dense(self.fc_units, name=f"fc_{i}")(x))
    return MultiHead(self.num_outputs, self.num_heads, name="heads")(x, head)

