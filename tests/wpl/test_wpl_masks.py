"""WPL masks select exactly the shared ENAS weights an architecture uses: the loss gradient vanishes outside them.

The micro-CNN masks are checked the same way in test_wpl_enas_fisher.py (one CNN compilation for both)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.enas.search_space import RnnSearchSpace
from nas_forgetting.errors import ArchitectureError
from nas_forgetting.models.enas_rnn import EnasRnn
from nas_forgetting.wpl import masks, state as wpl


def _check_grad_support(grads_view, mask_tree):
  """Zero gradient wherever the mask is off; some nonzero gradient on every active tensor."""
  expanded = wpl.expand_mask(mask_tree, grads_view)
  for g, m in zip(jax.tree.leaves(grads_view), jax.tree.leaves(expanded)):
    m = np.broadcast_to(np.asarray(m), g.shape)
    assert float(np.abs(np.where(m, 0.0, g)).max()) == 0.0
    if m.any():
      assert float(np.abs(np.where(m, g, 0.0)).max()) > 0.0


def test_rnn_masks_match_gradient_support():
  n, v, h, t, b = 4, 7, 4, 2, 2
  model = EnasRnn(vocab_size=v, num_blocks=n, hidden_size=h, dropout_embedding=0.0, dropout_input=0.0,
                  dropout_output=0.0, weight_drop=0.0, init_range=0.3)
  tokens = jax.random.randint(jax.random.key(1), (t, b), 0, v)
  space = RnnSearchSpace(num_blocks=n)
  arch0 = space.random_arch(jax.random.key(0))
  params = model.init(jax.random.key(2), tokens, jnp.zeros((b, h)), arch0, train=False)["params"]

  @jax.jit
  def grads_and_mask(params, arch):
    def loss(p):
      logits, _, _ = model.apply({"params": p}, tokens, jnp.zeros((b, h)), arch, train=False)
      return jnp.mean(logits ** 2)
    return masks.rnn_monitored(jax.grad(loss)(params)), masks.rnn_active_mask(arch, n)

  for seed in range(4):
    arch = space.random_arch(jax.random.key(10 + seed))
    view, mask = grads_and_mask(params, arch)
    assert int(mask["edges_c"].sum()) == n - 1  # one parent edge per node j > 0
    _check_grad_support(view, mask)
  assert grads_and_mask._cache_size() == 1
  view = masks.rnn_monitored(params)
  assert view["edges_c"].shape == view["edges_h"].shape == (n * (n - 1) // 2, h, h)


def test_mask_errors_name_the_shape():
  with pytest.raises(ArchitectureError, match=r"expected \(4, 2\)"):
    masks.rnn_active_edges(jnp.zeros((3, 2), jnp.int32), 4)
  with pytest.raises(ArchitectureError, match="no 'edges'"):
    masks.rnn_monitored({"w": jnp.zeros(3)})
  with pytest.raises(ArchitectureError, match=r"expected \(2, num_blocks, 4\)"):
    masks.cnn_active_mask(jnp.zeros((3, 4), jnp.int32), {})
