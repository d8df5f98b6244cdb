"""Multi-layer perceptron with optional batch norm and one or several output heads (Flax Linen).

`MLP(hidden=(256, 256), num_outputs=2, num_heads=5)` is the MAS demo network (784-256-256-2, a head per task);
`MLP(hidden=(256, 128), num_outputs=10, batch_norm=True)` the EWC tutorial's 784-256-128-10 with BatchNorm.
Images of any shape are flattened. Each hidden layer is Dense -> [BatchNorm] -> ReLU.

Heads (`heads.MultiHead`): with `num_heads` > 1 every head is its own `nn.Dense` (`head_0`, `head_1`, ...);
`__call__(x, head)` returns the logits of head `head`, an int or a traced int32 scalar or one index per example,
so a single compiled step serves every task of a task-incremental stream.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_forgetting.models.heads import MultiHead


class MLP(nn.Module):
  """Dense ReLU layers (optionally with BatchNorm) and `num_heads` linear heads of `num_outputs` each."""
  hidden: Sequence[int] = (256, 256)
  num_outputs: int = 10
  num_heads: int = 1
  batch_norm: bool = False
  bn_momentum: float = 0.9  # running-statistics momentum (PyTorch's momentum 0.1)

  @nn.compact
  def __call__(self, x: jax.Array, head: int | jax.Array = 0, train: bool = False) -> jax.Array:
    x = jnp.reshape(x, (x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, name=f"dense_{i}")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=f"bn_{i}")(x)
      x = nn.relu(x)
    return MultiHead(self.num_outputs, self.num_heads, name="heads")(x, head)
