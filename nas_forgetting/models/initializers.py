"""Weight initialisers shared by the models."""

import jax
import jax.numpy as jnp


def symmetric_uniform(scale: float):
  """Uniform in [-scale, scale] (the ENAS references initialise every shared and controller weight so)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init
