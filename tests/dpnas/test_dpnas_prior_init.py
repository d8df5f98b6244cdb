"""dpnas.prior_init: the random encoders drawn with programs shared across architectures equal Flax's initialisation
under jit bit for bit (the weights every deep-prior reward depends on)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.dpnas import prior_init
from nas_forgetting.models import deep_prior as dp

NETS = ["[C(32,5,1,2,1), P(4,4,0,0), C(32,3,1,1,0), C(64,1,1,0,1), C(16,3,1,0,1), SM(10)]",  # residual (flag 0)
        "[C(64,3,1,1,1), C(16,9,1,4,1), P(2,2,0,0), C(128,3,1,1,1), SM(10)]"]
SAMPLE = jnp.zeros((1, 28, 28, 1), jnp.float32)


def _flax_init_under_jit(encoder, seeds):
  return jax.jit(jax.vmap(lambda k: encoder.init(k, SAMPLE)))(prior_init.init_keys(seeds))


@pytest.mark.parametrize("weight_init", ["kaiming-normal", "xavier-normal", "kaiming-uniform"])
@pytest.mark.parametrize("net", NETS)
def test_equal_to_flax_initialisation_under_jit(net, weight_init):
  encoder = dp.DeepPriorEncoder(net, 1e-4, weight_init)
  seeds = np.array([0, 5, 11])
  got, expected = prior_init.encoder_variables(encoder, seeds, SAMPLE), _flax_init_under_jit(encoder, seeds)
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  kernels = [np.asarray(k) for k in jax.tree.leaves(got["params"]) if k.ndim == 5]
  assert all(np.std(k[0]) > 0 and not np.array_equal(k[0], k[1]) for k in kernels)  # drawn, per seed


def test_draw_programs_are_shared_by_architectures_with_the_same_kernels():
  prior_init._PROGRAMS.clear()
  seeds = np.array([0])
  prior_init.encoder_variables(dp.DeepPriorEncoder(NETS[1], 1e-4, "kaiming-normal"), seeds, SAMPLE)
  draws = {k for k in prior_init._PROGRAMS if k[0] == "normal"}
  # the same kernels in another order and with a pool moved: a new recording program, no new draw program
  other = "[C(64,3,1,1,1), P(2,2,0,0), C(16,9,1,4,1), C(128,3,1,1,1), SM(10)]"
  prior_init.encoder_variables(dp.DeepPriorEncoder(other, 1e-4, "kaiming-normal"), seeds, SAMPLE)
  assert {k for k in prior_init._PROGRAMS if k[0] == "normal"} == draws
  assert sum(k[0] == "record" for k in prior_init._PROGRAMS) == 2
