"""Fisher estimates of the ENAS supernets for WPL: per-example oracles, Jensen (batch <= empirical), support."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.errors import ConfigError
from nas_forgetting.models import enas_cnn
from nas_forgetting.models.enas_cnn import EnasCnn
from nas_forgetting.models.enas_rnn import EnasRnn, rnn_lm_loss
from nas_forgetting.wpl import enas_fisher, masks
from nas_forgetting.wpl import state as wpl


def _below_or_equal(small, large):
  for s, l in zip(jax.tree.leaves(small), jax.tree.leaves(large)):
    assert bool(jnp.all(s <= l * (1 + 1e-4) + 1e-12))


# Architectures (parent, activation) of a 5-node cell: a chain, one parent read by every node, repeated parents with
# every activation, and a flexible cell whose last two nodes are inactive.
RNN_ARCHS = jnp.array([
    [[-1, 0], [0, 0], [1, 1], [2, 2], [3, 3]],
    [[-1, 1], [0, 0], [0, 1], [0, 2], [0, 3]],
    [[-1, 3], [0, 2], [1, 0], [1, 1], [2, 0]],
    [[-1, 2], [0, 1], [1, 3], [-1, -1], [-1, -1]],
], jnp.int32)


def _rnn_case(max_hidden_norm=25.0, next_hidden="average", n=5, v=7, h=4, t=3, b=3):
  model = EnasRnn(vocab_size=v, num_blocks=n, hidden_size=h, init_range=0.6, max_hidden_norm=max_hidden_norm,
                  next_hidden=next_hidden)
  tokens = jax.random.randint(jax.random.key(1), (t + 1, b), 0, v)
  inputs, targets = tokens[:-1], tokens[1:]
  params = model.init(jax.random.key(2), inputs, jnp.zeros((b, h)), RNN_ARCHS[0], train=False)["params"]
  return model, params, inputs, targets


def _rnn_column_grads(model, params, inputs, targets, arch, *, ar_alpha=0.0, tar_beta=0.0, monitor="edges"):
  """Oracle: per-sequence gradients of the monitored weights by `vmap(grad)` over batch columns."""
  def column_loss(p, x, y):  # x, y: (T,)
    logits, _, extras = model.apply({"params": p}, x[:, None], jnp.zeros((1, model.hidden_size)), arch, train=False)
    return rnn_lm_loss(logits, y[:, None], extras, ar_alpha=ar_alpha, tar_beta=tar_beta)[0]
  return jax.vmap(lambda x, y: masks.rnn_monitored(jax.grad(column_loss)(params, x, y), monitor),
                  in_axes=(1, 1))(inputs, targets)


@pytest.mark.parametrize("max_hidden_norm, next_hidden", [(25.0, "average"), (0.3, "last_node")])
def test_rnn_per_layer_fisher_equals_per_sequence_vmap_grad(max_hidden_norm, next_hidden):
  """The per-layer (probe) form of the `empirical` estimate equals mean_b (per-sequence vmap(grad))^2 for
  architectures with chains, repeated parents and inactive nodes, with and without the hidden-norm clamp active;
  `batch` is (mean_b g_b)^2 <= `empirical`; one compilation serves every architecture."""
  model, params, inputs, targets = _rnn_case(max_hidden_norm, next_hidden)
  if max_hidden_norm < 1:  # the clamp really acts in this case
    _, _, extras = model.apply({"params": params}, inputs, jnp.zeros((inputs.shape[1], 4)), RNN_ARCHS[0], train=False)
    assert float(extras["clipped_fraction"]) > 0
  chex.clear_trace_counter()
  both = jax.jit(chex.assert_max_traces(lambda a: tuple(
      enas_fisher.rnn_fisher(params, inputs, targets, a, model=model, estimator=e) for e in ("empirical", "batch")),
      n=1))
  oracle = jax.jit(lambda a: _rnn_column_grads(model, params, inputs, targets, a))
  for arch in RNN_ARCHS:
    emp, bat = both(arch)
    grads = oracle(arch)
    chex.assert_trees_all_close(emp, jax.tree.map(lambda g: jnp.mean(g ** 2, axis=0), grads), rtol=1e-4, atol=1e-11)
    chex.assert_trees_all_close(bat, jax.tree.map(lambda g: jnp.mean(g, axis=0) ** 2, grads), rtol=1e-4, atol=1e-11)
    _below_or_equal(bat, emp)
    # Zero on the edges the architecture does not use, nonzero on some used one.
    active = np.asarray(masks.rnn_active_edges(arch, model.num_blocks))
    for leaf in emp.values():
      assert float(jnp.abs(leaf[~active]).max()) == 0.0 and float(jnp.abs(leaf[active]).max()) > 0.0


def test_rnn_fisher_of_every_shared_weight_with_monitor_all():
  """monitor='all': the view adds embedding, decoder bias and node 0's weights under "shared", always active; their
  `empirical` estimate is mean_b (per-sequence vmap(grad))^2 and `batch` is (mean_b g_b)^2, like the edges'; the
  edges' estimate is the same as with monitor='edges'; and the WPL penalty then covers the shared weights too."""
  model, params, inputs, targets = _rnn_case()
  for arch in RNN_ARCHS[:2]:
    emp, bat, edges_only = (enas_fisher.rnn_fisher(params, inputs, targets, arch, model=model, estimator=e,
                                                   monitor=m)
                            for e, m in (("empirical", "all"), ("batch", "all"), ("empirical", "edges")))
    grads = _rnn_column_grads(model, params, inputs, targets, arch, monitor="all")
    assert sorted(emp["shared"]) == ["b_x", "decoder_bias", "embedding", "w_h", "w_x"]
    chex.assert_trees_all_close(emp, jax.tree.map(lambda g: jnp.mean(g ** 2, axis=0), grads), rtol=1e-4, atol=1e-11)
    chex.assert_trees_all_close(bat, jax.tree.map(lambda g: jnp.mean(g, axis=0) ** 2, grads), rtol=1e-4, atol=1e-11)
    chex.assert_trees_all_close({k: emp[k] for k in ("edges_c", "edges_h")}, edges_only, rtol=1e-6)
    assert all(float(jnp.max(f)) > 0 for f in jax.tree.leaves(emp["shared"]))
  view = masks.rnn_monitored(params, "all")
  mask = masks.rnn_active_mask(RNN_ARCHS[0], model.num_blocks, view)
  assert all(bool(m) for m in jax.tree.leaves(mask["shared"]))
  hp = wpl.WPLHyperParams.from_config(wpl.default_wpl_config(alpha_fisher=2.0, monitor="all"))
  state = wpl.init_wpl_state(view)
  state = state._replace(fisher=jax.tree.map(jnp.ones_like, state.fisher))
  moved = dict(params, embedding=params["embedding"] + 0.5)  # only a shared weight moves
  penalty = wpl.penalty(state, masks.rnn_monitored(moved, "all"), mask, hp)
  assert float(penalty) == pytest.approx(2.0 / 2 * 0.25 * params["embedding"].size, rel=1e-5)  # alpha/2 sum F d^2


def _wpl_state(view, scale=0.5):
  state = wpl.init_wpl_state(view)
  return state._replace(fisher=jax.tree.map(lambda f: f + 1.0, state.fisher),
                        anchor=jax.tree.map(lambda w: w * scale, state.anchor))


def test_rnn_full_loss_fisher():
  """shared_ce_fisher=False: without regularisers it equals the cross-entropy Fisher; the L2 and WPL terms add the
  same gradient r to every sequence, so F_full = F_ce + 2 r mean_b g_b + r^2 (analytic); AR/TAR per sequence as the
  vmap(grad) oracle of the full per-sequence loss."""
  model, params, inputs, targets = _rnn_case()
  arch = RNN_ARCHS[2]
  view = masks.rnn_monitored(params)
  hp = wpl.WPLHyperParams.from_config(wpl.default_wpl_config(alpha_fisher=3.0))
  state = _wpl_state(view)
  l2 = 0.1

  @jax.jit
  def estimates(params, state):
    f = functools.partial(enas_fisher.rnn_fisher, params, inputs, targets, arch, model=model)
    out = {}
    for e in enas_fisher.ENAS_ESTIMATORS:
      out[e, "ce"] = f(estimator=e)
      out[e, "full_no_reg"] = f(estimator=e, shared_ce_fisher=False)
      out[e, "ce_ignores_reg"] = f(state, estimator=e, l2_reg=l2, wpl_hp=hp, ar_alpha=1.0)
      out[e, "full_l2_wpl"] = f(state, estimator=e, shared_ce_fisher=False, l2_reg=l2, wpl_hp=hp)
    out["empirical", "ar_tar"] = f(shared_ce_fisher=False, ar_alpha=2.0, tar_beta=1.0)
    oracles = (_rnn_column_grads(model, params, inputs, targets, arch),
               _rnn_column_grads(model, params, inputs, targets, arch, ar_alpha=2.0, tar_beta=1.0))
    return out, oracles

  out, (g, g_reg) = estimates(params, state)
  for e in enas_fisher.ENAS_ESTIMATORS:
    chex.assert_trees_all_close(out[e, "full_no_reg"], out[e, "ce"])
    chex.assert_trees_all_close(out[e, "ce_ignores_reg"], out[e, "ce"])
  active = masks.rnn_active_edges(arch, model.num_blocks)[:, None, None]
  r = jax.tree.map(lambda w, f, w0: l2 * w + jnp.where(active, 3.0 * f * (w - w0), 0.0), view, state.fisher,
                   state.anchor)
  g_mean = jax.tree.map(lambda x: jnp.mean(x, axis=0), g)
  chex.assert_trees_all_close(out["empirical", "full_l2_wpl"],
                              jax.tree.map(lambda f, gm, ri: f + 2 * ri * gm + ri ** 2, out["empirical", "ce"], g_mean,
                                           r), rtol=1e-4, atol=1e-10)
  chex.assert_trees_all_close(out["batch", "full_l2_wpl"], jax.tree.map(lambda gm, ri: (gm + ri) ** 2, g_mean, r),
                              rtol=1e-4, atol=1e-10)
  assert float(jnp.abs(out["empirical", "full_l2_wpl"]["edges_h"][~active[:, 0, 0]]).max()) > 0  # (l2 theta)^2
  chex.assert_trees_all_close(out["empirical", "ar_tar"], jax.tree.map(lambda x: jnp.mean(x ** 2, axis=0), g_reg),
                              rtol=1e-4, atol=1e-11)
  with pytest.raises(ConfigError, match="WPL state"):
    enas_fisher.rnn_fisher(params, inputs, targets, arch, shared_ce_fisher=False, wpl_hp=hp, model=model)


def _cnn_case(num_modules):
  """A tiny micro-CNN (2 blocks, 2 filters), 3 images of 4x4 and a fixed architecture."""
  model = EnasCnn(num_classes=3, num_blocks=2, features=2, num_modules=num_modules, num_repeat_normal=1,
                  sep_conv_stacks=1)
  images = jax.random.uniform(jax.random.key(0), (3, 4, 4, 3))
  labels = jnp.array([0, 2, 1])
  arch = jnp.array([[[0, 1, 1, 2], [2, 1, 0, 2]], [[1, 2, 0, 1], [2, 2, 1, 0]]], jnp.int32)
  params = jax.jit(lambda k: model.init(k, images, arch, train=False))(jax.random.key(1))["params"]
  return model, params, images, labels, arch


def test_cnn_fisher_coupled_per_example_oracle_and_jensen():
  batch = 3
  model, params, images, labels, arch = _cnn_case(num_modules=2)

  @jax.jit
  def both(params):  # 2 per-image backward passes at once: one chunk of 2 (scan) + the rest (1); the full-loss test
    # below covers 3 at once (the default examples_per_pass=8 > batch)
    return (enas_fisher.cnn_fisher(params, images, labels, arch, model=model, examples_per_pass=2),
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


def test_cnn_full_loss_fisher_adds_the_analytic_term():
  """With the L2 and WPL terms every image's gradient gains r = l2 theta + alpha F (theta - theta*) (active entries):
  F_full = F_ce + 2 r mean_i g_i + r^2, and (mean_i g_i + r)^2 for `batch`."""
  batch = 3
  model, params, images, labels, arch = _cnn_case(num_modules=1)
  view = masks.cnn_monitored(params)
  hp = wpl.WPLHyperParams.from_config(wpl.default_wpl_config(alpha_fisher=3.0))
  state = _wpl_state(view)
  l2 = 0.05

  @jax.jit
  def estimates(params):
    out = {}
    for e in enas_fisher.ENAS_ESTIMATORS:
      out[e, "ce"] = enas_fisher.cnn_fisher(params, images, labels, arch, model=model, estimator=e)
      out[e, "full"] = enas_fisher.cnn_fisher(params, images, labels, arch, state, model=model, estimator=e,
                                              shared_ce_fisher=False, l2_reg=l2, wpl_hp=hp)
    mean_ce = lambda p: -jnp.mean(jax.nn.log_softmax(model.apply({"params": p}, enas_cnn.normalize(images), arch,
                                                                 train=False))[jnp.arange(batch), labels])
    return out, masks.cnn_monitored(jax.grad(mean_ce)(params))

  out, g_mean = estimates(params)
  mask = masks.cnn_active_mask(arch, view)
  r = jax.tree.map(lambda w, f, w0, m: l2 * w + jnp.where(wpl.expand_mask(m, w), 3.0 * f * (w - w0), 0.0),
                   view, state.fisher, state.anchor, mask)
  chex.assert_trees_all_close(out["empirical", "full"],
                              jax.tree.map(lambda f, gm, ri: f + 2 * ri * gm + ri ** 2, out["empirical", "ce"], g_mean,
                                           r), rtol=2e-3, atol=1e-10)
  chex.assert_trees_all_close(out["batch", "full"], jax.tree.map(lambda gm, ri: (gm + ri) ** 2, g_mean, r),
                              rtol=2e-3, atol=1e-10)


def test_unknown_estimator_names_the_choices():
  with pytest.raises(ConfigError, match="empirical, batch"):
    enas_fisher.rnn_fisher({}, jnp.zeros((2, 1), jnp.int32), jnp.zeros((2, 1), jnp.int32), jnp.zeros((2, 2)),
                           model=EnasRnn(vocab_size=3, num_blocks=2, hidden_size=2), estimator="exact")
