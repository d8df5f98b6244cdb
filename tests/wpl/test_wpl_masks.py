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


def test_cnn_masks_of_a_depthwise_supernet_match_gradient_support():
  """With sep_conv='depthwise' the cells have no pointwise weights: the monitored view and the masks leave them out
  and still cover exactly the weights the architecture's conv ops use."""
  from nas_forgetting.enas.search_space import CnnSearchSpace
  from nas_forgetting.models.enas_cnn import EnasCnn

  n = 2
  model = EnasCnn(num_blocks=n, features=4, num_modules=1, num_repeat_normal=1, sep_conv_stacks=1,
                  sep_conv="depthwise")
  images = jax.random.uniform(jax.random.key(0), (3, 8, 8, 3))
  conv_arch = jnp.asarray([[[0, 1, 1, 2], [2, 1, 0, 3]]] * 2, jnp.int32)  # sep 3x3 / 5x5 on nodes 0, 1
  params = model.init(jax.random.key(1), images, conv_arch, train=False)["params"]
  view = masks.cnn_monitored(params)
  assert all(sorted(v) == ["dw3", "dw5"] for v in view.values())

  def loss(p, arch):
    return jnp.mean(model.apply({"params": p}, images, arch, train=False) ** 2)

  space = CnnSearchSpace(num_blocks=n)
  for arch in (conv_arch, space.random_arch(jax.random.key(2))):
    grads = masks.cnn_monitored(jax.grad(loss)(params, arch))
    mask = masks.cnn_active_mask(arch, grads)
    assert jax.tree.structure(mask) == jax.tree.structure(grads)
    _check_grad_support(grads, mask)
