"""Fisher estimates of the ENAS supernets for WPL: per-example oracles, Jensen (batch <= empirical), support."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.enas import trainer as tr
from nas_forgetting.enas.search_space import RnnSearchSpace
from nas_forgetting.errors import ConfigError
from nas_forgetting.models import enas_cnn
from nas_forgetting.models.enas_cnn import EnasCnn
from nas_forgetting.models.enas_rnn import EnasRnn
from nas_forgetting.wpl import enas_fisher, masks
from nas_forgetting.wpl import state as wpl


def _below_or_equal(small, large):
  for s, l in zip(jax.tree.leaves(small), jax.tree.leaves(large)):
    assert bool(jnp.all(s <= l * (1 + 1e-4) + 1e-12))


def test_rnn_fisher_per_sequence_oracle_and_jensen():
  n, v, h, t, b = 4, 9, 4, 3, 3
  model = EnasRnn(vocab_size=v, num_blocks=n, hidden_size=h, init_range=0.4)
  tokens = jax.random.randint(jax.random.key(1), (t + 1, b), 0, v)
  inputs, targets = tokens[:-1], tokens[1:]
  arch = RnnSearchSpace(num_blocks=n).random_arch(jax.random.key(0))
  params = model.init(jax.random.key(2), inputs, jnp.zeros((b, h)), arch, train=False)["params"]
  fisher = jax.jit(enas_fisher.rnn_fisher, static_argnames=("model", "estimator"))
  emp = fisher(params, inputs, targets, arch, model=model, estimator="empirical")
  bat = fisher(params, inputs, targets, arch, model=model, estimator="batch")

  @jax.jit
  def column_grad(x, y):  # one sequence (T, 1)
    ce = lambda p: tr.rnn_batch_ce(p, x, y, jnp.zeros((1, h)), arch, model=model)[0]
    return masks.rnn_monitored(jax.grad(ce)(params))

  grads = [column_grad(inputs[:, i:i + 1], targets[:, i:i + 1]) for i in range(b)]
  oracle = jax.tree.map(lambda *g: sum(x ** 2 for x in g) / b, *grads)
  chex.assert_trees_all_close(emp, oracle, rtol=1e-4, atol=1e-10)
  chex.assert_trees_all_close(bat, jax.tree.map(lambda *g: (sum(g) / b) ** 2, *grads), rtol=1e-4, atol=1e-10)
  _below_or_equal(bat, emp)
  # Zero on the edges the architecture does not use, nonzero on some used one.
  active = np.asarray(masks.rnn_active_edges(arch, n))
  for leaf in emp.values():
    assert float(jnp.abs(leaf[~active]).max()) == 0.0 and float(jnp.abs(leaf[active]).max()) > 0.0


def test_cnn_fisher_coupled_per_example_oracle_and_jensen():
  nb, batch = 2, 3
  model = EnasCnn(num_classes=3, num_blocks=nb, features=2, num_modules=2, num_repeat_normal=1, sep_conv_stacks=1)
  images = jax.random.uniform(jax.random.key(0), (batch, 4, 4, 3))
  labels = jnp.array([0, 2, 1])
  arch = jnp.array([[[0, 1, 1, 2], [2, 1, 0, 2]], [[1, 2, 0, 1], [2, 2, 1, 0]]], jnp.int32)
  params = jax.jit(lambda k: model.init(k, images, arch, train=False))(jax.random.key(1))["params"]

  @jax.jit
  def both(params):
    return (enas_fisher.cnn_fisher(params, images, labels, arch, model=model, estimator="empirical"),
            enas_fisher.cnn_fisher(params, images, labels, arch, model=model, estimator="batch"))

  @jax.jit
  def example_grad(params, i):  # gradient of example i's loss term, through the whole batch's BN statistics
    def loss_i(p):
      logits = model.apply({"params": p}, enas_cnn.normalize(images), arch, train=False)
      return -jax.nn.log_softmax(logits)[i, labels[i]]
    return masks.cnn_monitored(jax.grad(loss_i)(params))

  emp, bat = both(params)
  grads = [example_grad(params, i) for i in range(batch)]
  chex.assert_trees_all_close(emp, jax.tree.map(lambda *g: sum(x ** 2 for x in g) / batch, *grads),
                              rtol=2e-3, atol=1e-10)
  chex.assert_trees_all_close(bat, jax.tree.map(lambda *g: (sum(g) / batch) ** 2, *grads), rtol=2e-3, atol=1e-10)
  _below_or_equal(bat, emp)
  # The masks select exactly the weights the architecture uses: zero outside, nonzero on every active tensor.
  mask = masks.cnn_active_mask(arch, emp)
  assert set(emp) == {"normal_0_0", "normal_1_0", "reduction_1"}
  for cell in emp:
    for name, leaf in emp[cell].items():
      m = np.broadcast_to(np.asarray(wpl.expand_mask(mask[cell][name], leaf)), leaf.shape)
      assert float(jnp.abs(jnp.where(m, 0.0, leaf)).max()) == 0.0
      if m.any():
        assert float(jnp.abs(jnp.where(m, leaf, 0.0)).max()) > 0.0


def test_unknown_estimator_names_the_choices():
  with pytest.raises(ConfigError, match="empirical, batch"):
    enas_fisher.rnn_fisher({}, jnp.zeros((2, 1), jnp.int32), jnp.zeros((2, 1), jnp.int32), jnp.zeros((2, 2)),
                           model=EnasRnn(vocab_size=3, num_blocks=2, hidden_size=2), estimator="exact")
