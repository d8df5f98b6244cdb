"""The shared RNN cell against the same cell written out by hand; one trace for every architecture."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.enas.search_space import RnnSearchSpace
from nas_forgetting.models import enas_rnn
from nas_forgetting.models.enas_rnn import EnasRnn, rnn_lm_loss

V, H, T, B = 23, 8, 4, 3


def _sig(z):
  return 1 / (1 + np.exp(-z))


ACT = {"tanh": np.tanh, "ReLU": lambda z: np.maximum(z, 0), "identity": lambda z: z, "sigmoid": _sig}


def hand_cell(params, tokens, hidden, parents, act_names, *, next_hidden="average", max_norm=0.0):
  """The paper's cell with explicit per-(parent, child) matrices W^c_ij, W^h_ij, in float64 numpy."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  W = {}
  for j in range(1, len(parents)):
    i = parents[j]
    pair = p["edges"][j * (j - 1) // 2 + i]
    W[i, j] = (pair[:, :H], pair[:, H:])  # (W^c_ij, W^h_ij)
  n = len(parents)
  leaves = [j for j in range(n) if j not in parents[1:]]
  h = np.asarray(hidden, np.float64)
  logits = []
  for t in range(tokens.shape[0]):
    x = p["embedding"][tokens[t]]
    zc = x @ p["w_x"][:, :H] + p["b_x"][:H] + h @ p["w_h"][:, :H]
    zh = x @ p["w_x"][:, H:] + p["b_x"][H:] + h @ p["w_h"][:, H:]
    c = _sig(zc)
    node = {0: c * ACT[act_names[0]](zh) + (1 - c) * h}
    for j in range(1, n):
      i = parents[j]
      c = _sig(node[i] @ W[i, j][0])
      node[j] = c * ACT[act_names[j]](node[i] @ W[i, j][1]) + (1 - c) * node[i]
    out = sum(node[j] for j in leaves) / len(leaves)
    h = out if next_hidden == "average" else node[n - 1]
    if max_norm > 0:
      norm = np.linalg.norm(h, axis=-1, keepdims=True)
      h = h * np.minimum(1.0, max_norm / norm)
    logits.append(out @ p["embedding"].T + p["decoder_bias"])
  return np.stack(logits), h


def _init(model, num_blocks, seed=0):
  """Random weights of the model's parameter shapes (traced, not compiled), larger than the default init
  (3 x uniform(+-init_range) + 0.2 x normal) so that every activation and gate is exercised away from zero."""
  arch = np.zeros((num_blocks, 2), np.int32)
  shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((T, B), jnp.int32), jnp.zeros((B, H)), arch,
                                               train=False)["params"], jax.random.key(seed))
  gen, r = np.random.default_rng(seed), 3.0 * model.init_range
  return jax.tree.map(lambda s: jnp.asarray(gen.uniform(-r, r, s.shape) + 0.2 * gen.standard_normal(s.shape),
                                            s.dtype), shapes)


@pytest.mark.parametrize("next_hidden,max_norm", [("average", 0.0), ("last_node", 0.0), ("average", 0.7)])
def test_fixed_dag_equals_hand_written_cell(next_hidden, max_norm):
  space = RnnSearchSpace(num_blocks=6)
  arch = space.from_string("0:tanh(x,h) 1:ReLU(0) 2:identity(0) 3:sigmoid(1) 4:tanh(3) 5:ReLU(1)")
  model = EnasRnn(vocab_size=V, num_blocks=6, hidden_size=H, max_hidden_norm=max_norm, next_hidden=next_hidden,
                  init_range=0.3)
  params = _init(model, 6)
  tokens = jax.random.randint(jax.random.key(4), (T, B), 0, V)
  hidden = 0.5 * jax.random.normal(jax.random.key(5), (B, H))
  logits, new_hidden, extras = jax.jit(lambda p, a: model.apply({"params": p}, tokens, hidden, a, train=False))(
      params, arch)
  want_logits, want_hidden = hand_cell(params, np.asarray(tokens), hidden, arch[:, 0].tolist(),
                                       [space.activations[a] for a in arch[:, 1]], next_hidden=next_hidden,
                                       max_norm=max_norm)
  np.testing.assert_allclose(logits, want_logits, rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(new_hidden, want_hidden, rtol=2e-4, atol=2e-4)
  if max_norm:
    assert float(extras["max_hidden_norm"]) > max_norm  # the clamp was exercised
    assert np.all(np.linalg.norm(new_hidden, axis=-1) <= max_norm + 1e-5)


def test_flexible_arch_ignores_inactive_nodes():
  """A 3-node cell inside a 5-block supernet computes exactly the 3-node cell."""
  flex = RnnSearchSpace(num_blocks=5, mode="flexible")
  arch = flex.from_string("0:sigmoid(x,h) 1:tanh(0) 2:ReLU(0)")
  model = EnasRnn(vocab_size=V, num_blocks=5, hidden_size=H, max_hidden_norm=0.0, init_range=0.3)
  params = _init(model, 5, seed=3)
  tokens = jax.random.randint(jax.random.key(6), (T, B), 0, V)
  hidden = jnp.zeros((B, H))
  logits, new_hidden, _ = model.apply({"params": params}, tokens, hidden, arch, train=False)
  want_logits, want_hidden = hand_cell(params, np.asarray(tokens), hidden, [-1, 0, 0], ["sigmoid", "tanh", "ReLU"])
  np.testing.assert_allclose(logits, want_logits, rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(new_hidden, want_hidden, rtol=2e-4, atol=2e-4)


def test_one_trace_for_many_architectures_and_only_sampled_edges_get_gradients():
  space = RnnSearchSpace(num_blocks=5, mode="flexible")
  model = EnasRnn(vocab_size=V, num_blocks=5, hidden_size=H)
  params = _init(model, 5)
  tokens = jax.random.randint(jax.random.key(7), (T + 1, B), 0, V)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def grads_fn(params, arch, rng):
    def loss(p):
      logits, _, extras = model.apply({"params": p}, tokens[:-1], jnp.zeros((B, H)), arch, train=True,
                                      rngs={"dropout": rng})
      return rnn_lm_loss(logits, tokens[1:], extras, ar_alpha=2.0, tar_beta=1.0)[0]
    return jax.grad(loss)(params)

  archs = jax.vmap(space.random_arch)(jax.random.split(jax.random.key(8), 100))
  chex.clear_trace_counter()
  counts = set()
  for k, arch in enumerate(archs):
    g = grads_fn(params, arch, jax.random.key(k))
    a = np.asarray(arch)
    n = space.count_nodes(a)
    counts.add(n)
    if k < 10:
      used = {j * (j - 1) // 2 + a[j, 0] for j in range(1, n)}
      nonzero = {e for e in range(g["edges"].shape[0]) if np.any(np.asarray(g["edges"][e]) != 0)}
      assert nonzero <= used and len(nonzero) > 0
  assert len(counts) >= 2  # architectures of several sizes went through the same trace


@pytest.mark.parametrize("next_hidden,probing", [("average", False), ("last_node", True)])
def test_batched_weight_gradients_equal_plain_autodiff(next_hidden, probing):
  """`cell_scan` (weight gradients as one batched product after the backward loop) has the values and gradients of
  plain autodiff through the same recurrence (`_cell_scan_autodiff`), edge probes included."""
  n, max_norm, k = 5, 0.7, jax.random.split(jax.random.key(11), 8)
  w_h, w_sel = 0.3 * jax.random.normal(k[0], (H, 2 * H)), 0.3 * jax.random.normal(k[1], (n - 1, H, 2 * H))
  x_proj, hidden = jax.random.normal(k[2], (T, B, 2 * H)), jax.random.normal(k[3], (B, H))
  probes = 0.1 * jax.random.normal(k[4], (T, n - 1, B, 2 * H)) if probing else None
  spec = enas_rnn.CellSpec(jnp.array([0, 1, 2, 3, 0], jnp.int32), jnp.array([0, 0, 0, 1, 1], jnp.int32),
                           jnp.array([0, 0, 1, 1, 1], jnp.float32), jnp.int32(n - 1))
  weights = (jax.random.normal(k[5], (B, H)), jax.random.normal(k[6], (T, B, H)), jax.random.normal(k[7], ()))

  def loss(cell):
    def f(w_h, w_sel, x_proj, hidden, probes):
      new_hidden, (raw, norms, _), inputs = cell(w_h, w_sel, x_proj, hidden, probes, spec, next_hidden, max_norm)
      out = jnp.sum(new_hidden * weights[0]) + jnp.sum(raw * weights[1]) + weights[2] * jnp.sum(norms)
      return out + (jnp.sum(jnp.sin(inputs)) if probing else 0.0)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4) if probing else (0, 1, 2, 3)))

  def autodiff(w_h, w_sel, x_proj, hidden, probes, spec, next_hidden, max_norm):
    (new_hidden, seq), (_, inputs) = enas_rnn._cell_scan_autodiff(w_h, w_sel, x_proj, hidden, probes, spec,
                                                                  next_hidden, max_norm)
    return new_hidden, seq, inputs

  want = loss(autodiff)(w_h, w_sel, x_proj, hidden, probes)
  got = loss(enas_rnn.cell_scan)(w_h, w_sel, x_proj, hidden, probes)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.abs(want[1][1]))) > 0.1  # the edge weights' gradient is not trivially zero
