"""EnasRnn's zero edge probes (per-layer Fisher, for WPL) leave the outputs unchanged."""

import chex
import jax
import jax.numpy as jnp
import pytest

from nas_forgetting.models.enas_rnn import EnasRnn

ARCH = jnp.array([[-1, 3], [0, 2], [1, 0], [1, 1], [2, 0]], jnp.int32)  # node 1 read twice, leaves 3 and 4
T, B, H, V = 3, 4, 4, 7


def _case(**options):
  model = EnasRnn(vocab_size=V, num_blocks=5, hidden_size=H, init_range=0.6, **options)
  tokens = jax.random.randint(jax.random.key(1), (T, B), 0, V)
  variables = model.init(jax.random.key(2), tokens, jnp.zeros((B, H)), ARCH, train=False)
  return model, variables, tokens


def test_edge_probes_leave_the_outputs_unchanged():
  model, variables, tokens = _case()
  hidden = jnp.zeros((B, H))
  plain = model.apply(variables, tokens, hidden, ARCH, train=False)
  probed = model.apply(variables, tokens, hidden, ARCH, train=False, edge_probes=jnp.zeros((T, 4, B, 2 * H)))
  chex.assert_trees_all_close(plain[:2], probed[:2])
  chex.assert_shape(probed[2]["edge_inputs"], (T, 4, B, H))
  assert "edge_inputs" not in plain[2]
  with pytest.raises(ValueError, match="edge_probes has shape"):
    model.apply(variables, tokens, hidden, ARCH, train=False, edge_probes=jnp.zeros((T, 4, B, H)))
