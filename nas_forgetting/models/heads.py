"""Output heads shared by the continual-learning models: one `nn.Dense` per head, selected by a traced index."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_forgetting.errors import ConfigError


class MultiHead(nn.Module):
  """`num_heads` Dense heads (`head_0`, ...) of `num_outputs` logits; returns the selected head's logits.

  `head` is an int, a traced int32 scalar (one head for the whole batch) or an int32 vector with one head per
  example (joint training over a task-incremental stream). Every head is computed and the selected one gathered,
  so the head index is data, not structure: changing it never recompiles. Out-of-range indices are clamped by the
  gather (callers validate task heads before training).
  """
  num_outputs: int
  num_heads: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, head: int | jax.Array = 0) -> jax.Array:
    if self.num_heads < 1 or self.num_outputs < 1:
      raise ConfigError(f"MultiHead needs num_heads >= 1 and num_outputs >= 1; got {self.num_heads}, "
                        f"{self.num_outputs}")
    if self.num_heads == 1:
      return nn.Dense(self.num_outputs, name="head_0")(x)
    outs = jnp.stack([nn.Dense(self.num_outputs, name=f"head_{h}")(x) for h in range(self.num_heads)], axis=1)
    head = jnp.asarray(head, jnp.int32)
    index = jnp.broadcast_to(head, (x.shape[0],))
    return jnp.take_along_axis(outs, index[:, None, None], axis=1)[:, 0]
