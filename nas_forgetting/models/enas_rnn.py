"""The ENAS recurrent supernet: one set of shared weights for every cell of `RnnSearchSpace`.

Cell (paper semantics, per time step t, with h = h_{t-1}):
  node 0:      c_0 = sigmoid(W_xc x_t + b_c + W_hc h),  h_0 = c_0 * f_0(W_xh x_t + b_h + W_hh h) + (1 - c_0) * h
  node j > 0:  with parent i = parent_j:  c_j = sigmoid(W^c_ij h_i),  h_j = c_j * f_j(W^h_ij h_i) + (1 - c_j) * h_i
  output:      mean of the loose ends (active nodes no active node reads); it is also the next hidden state.
Rows (-1, -1) mark inactive nodes (flexible cells; node-removal ablations), whose values are never read.
There is one bias-free (W^c_ij, W^h_ij) pair per (parent i, child j), i < j, stored stacked as
`edges[j (j - 1) / 2 + i]` of shape (hidden, 2 hidden) ([:, :hidden] = W^c, [:, hidden:] = W^h). The
architecture (int32 (num_blocks, 2), see the search space) is a traced argument: the weights of the sampled edges
are selected by one gather per call, the activation by an elementwise select, so a single compilation serves every
architecture, and only the sampled edges are computed (no candidate edge is evaluated and masked away).
The recurrence (`cell_scan`) computes its weight gradients after the backward loop, one batched product per weight
(summed over time and batch at once), instead of adding T small products into an (N - 1, H, 2H) carry inside it.

Option for comparison with the public PyTorch code (off by default):
  next_hidden='last_node'  the next hidden state is the last active node (the reference) instead of the output.
Regularisation as in the reference: embedding-row dropout, locked (variational) dropout on inputs and outputs,
DropConnect on the recurrent weights W_hh, W_hc (`weight_drop`), hidden rows clamped to norm `max_hidden_norm`,
tied embedding/decoder (embedding size = hidden size). AR/TAR penalties are computed by `rnn_lm_loss`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_forgetting.models.initializers import symmetric_uniform

NEXT_HIDDEN = ("average", "last_node")


def apply_activation(index: jax.Array, z: jax.Array) -> jax.Array:
  """tanh, ReLU, identity, sigmoid (index 0..3, the order of RNN_ACTIVATIONS), by elementwise select."""
  return jnp.where(index == 0, jnp.tanh(z),
                   jnp.where(index == 1, jax.nn.relu(z), jnp.where(index == 2, z, jax.nn.sigmoid(z))))


def edge_index(parent: Any, child: Any) -> Any:
  """Row of `edges` holding the (parent, child) weight pair."""
  return child * (child - 1) // 2 + parent


def edge_rows(arch: jax.Array, num_blocks: int) -> jax.Array:
  """int32 (num_blocks - 1,): the row of `edges` read by each node j = 1 .. num_blocks - 1 of an architecture
  (the (parent_j, j) pair; rows of inactive nodes point at (0, j), whose weights are then never used)."""
  arch = jnp.asarray(arch, jnp.int32)
  children = jnp.arange(1, num_blocks)
  return edge_index(jnp.clip(arch[1:, 0], 0, children - 1), children)


def _dropout_mask(rng, shape, rate, dtype=jnp.float32):
  keep = jax.random.bernoulli(rng, 1.0 - rate, shape)
  return keep.astype(dtype) / (1.0 - rate)


class CellSpec(NamedTuple):
  """What the cell's recurrence reads from an architecture (all traced): per node its activation index (N,), parent
  (N,; node 0's is unused), whether it is a loose end (float (N,)), and the last active node (scalar)."""
  acts: jax.Array
  parents: jax.Array
  leaf: jax.Array
  last: jax.Array


def _cell_scan_autodiff(w_h: jax.Array, w_sel: jax.Array, x_proj: jax.Array, hidden: jax.Array,
                        probes: jax.Array | None, spec: CellSpec, next_hidden: str, max_hidden_norm: float):
  """The recurrence over all time steps (see the module docstring), differentiable by plain autodiff.

  Returns ((next hidden (B, H), (raw outputs (T, B, H), max row norms (T,), clipped fractions (T,))),
  (hidden state entering each step (T, B, H), parent values of nodes 1 .. N - 1 (T, N - 1, B, H))).
  probes (T, N - 1, B, 2H) or None: added to the pre-activations of nodes 1 .. N - 1.
  """
  n, (batch, h_size) = w_sel.shape[0] + 1, hidden.shape

  def step(h_prev, xs):
    xp, probe = xs
    z = xp + h_prev @ w_h
    c = jax.nn.sigmoid(z[:, :h_size])
    h0 = c * apply_activation(spec.acts[0], z[:, h_size:]) + (1 - c) * h_prev
    nodes = jnp.zeros((n, batch, h_size), h0.dtype).at[0].set(h0)
    out = spec.leaf[0] * h0
    edge_inputs = []
    for j in range(1, n):
      hp = jax.lax.dynamic_index_in_dim(nodes, spec.parents[j], keepdims=False)
      z = hp @ w_sel[j - 1]
      if probe is not None:
        z = z + probe[j - 1]
      edge_inputs.append(hp)
      c = jax.nn.sigmoid(z[:, :h_size])
      hj = c * apply_activation(spec.acts[j], z[:, h_size:]) + (1 - c) * hp
      nodes = nodes.at[j].set(hj)
      out = out + spec.leaf[j] * hj
    out = out / jnp.sum(spec.leaf)
    nxt = out if next_hidden == "average" else jax.lax.dynamic_index_in_dim(nodes, spec.last, keepdims=False)
    norm = jnp.linalg.norm(nxt, axis=-1, keepdims=True)
    if max_hidden_norm > 0:
      nxt = nxt * jnp.minimum(1.0, max_hidden_norm / jnp.maximum(norm, 1e-12))
    inputs = jnp.stack(edge_inputs) if edge_inputs else jnp.zeros((0, batch, h_size), h0.dtype)
    return nxt, ((out, jnp.max(norm), jnp.mean(norm > max_hidden_norm)), (h_prev, inputs))

  new_hidden, (seq, recorded) = jax.lax.scan(step, hidden, (x_proj, probes))
  return (new_hidden, seq), recorded


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def cell_scan(w_h: jax.Array, w_sel: jax.Array, x_proj: jax.Array, hidden: jax.Array, probes: jax.Array | None,
              spec: CellSpec, next_hidden: str, max_hidden_norm: float):
  """(next hidden, (raw outputs, max row norms, clipped fractions), parent values of nodes 1 .. N - 1 or None)
  of the recurrence (`_cell_scan_autodiff`); the parent values (T, N - 1, B, H) are returned when `probes` is given.

  Same values and gradients as plain autodiff of `_cell_scan_autodiff` (up to float summation order), but the weight
  gradients are not accumulated step by step inside the backward loop (T small (B, H)^T (B, 2H) products added into
  an (N - 1, H, 2H) carry at every step): the backward loop computes only the pre-activation gradients dz, and the
  weight gradients are then one batched product each, dW_j = sum_t h_{parent j, t}^T dz_{j, t}.
  """
  (new_hidden, seq), (_, inputs) = _cell_scan_autodiff(w_h, w_sel, x_proj, hidden, probes, spec, next_hidden,
                                                      max_hidden_norm)
  return new_hidden, seq, None if probes is None else inputs


def _cell_scan_fwd(w_h, w_sel, x_proj, hidden, probes, spec, next_hidden, max_hidden_norm):
  given = probes is not None
  if not given:
    probes = jnp.zeros((x_proj.shape[0], w_sel.shape[0], hidden.shape[0], w_sel.shape[-1]), x_proj.dtype)

  def run(xp, h, pr):  # weights constant: the backward loop computes no weight gradient
    (new_hidden, seq), recorded = _cell_scan_autodiff(w_h, w_sel, xp, h, pr, spec, next_hidden, max_hidden_norm)
    return (new_hidden, seq, recorded[1] if given else None), recorded

  out, vjp_fn, (h_prevs, inputs) = jax.vjp(run, x_proj, hidden, probes, has_aux=True)
  return out, (vjp_fn, h_prevs, inputs)


def _cell_scan_bwd(next_hidden, max_hidden_norm, residuals, cotangent):
  vjp_fn, h_prevs, inputs = residuals
  d_x_proj, d_hidden, d_probes = vjp_fn(cotangent)
  d_w_h = jnp.einsum("tbh,tbk->hk", h_prevs, d_x_proj)  # z_0 = x_proj + h_prev W_h: dz_0 = d x_proj
  d_w_sel = jnp.einsum("tjbh,tjbk->jhk", inputs, d_probes)  # z_j = h_parent W_j + probe_j: dz_j = d probe_j
  return d_w_h, d_w_sel, d_x_proj, d_hidden, None if cotangent[2] is None else d_probes, None


cell_scan.defvjp(_cell_scan_fwd, _cell_scan_bwd)


class EnasRnn(nn.Module):
  """Language model around the shared ENAS cell. Call with tokens (T, B), hidden (B, H), arch (N, 2)."""

  vocab_size: int
  num_blocks: int = 12
  hidden_size: int = 1000
  dropout_embedding: float = 0.1
  dropout_input: float = 0.65
  dropout_output: float = 0.4
  weight_drop: float = 0.5
  max_hidden_norm: float = 25.0
  init_range: float = 0.025
  next_hidden: str = "average"

  @nn.compact
  def __call__(self, tokens: jax.Array, hidden: jax.Array, arch: jax.Array, *, train: bool,
               edge_probes: jax.Array | None = None):
    """Returns (logits (T, B, V), next hidden (B, H), extras).

    extras: 'raw_outputs' and 'outputs' (after output dropout), both (T, B, H), for AR/TAR;
    'max_hidden_norm' (largest row norm before clamping) and 'clipped_fraction'.

    edge_probes (T, N - 1, B, 2H), optional: added to the pre-activation h_i W_ij of node j = 1 .. N - 1 at every
    step. With zeros the outputs are unchanged, and the gradient of a loss with respect to the probes is its
    gradient with respect to those pre-activations; extras then also hold 'edge_inputs' (T, N - 1, B, H), the parent
    values h_i multiplied by each node's edge weights. Together they give per-sequence edge-weight gradients
    (`nas_forgetting.wpl.enas_fisher`).
    """
    if self.next_hidden not in NEXT_HIDDEN:
      raise ValueError(f"next_hidden={self.next_hidden!r}; expected one of {NEXT_HIDDEN}")
    h_size, n = self.hidden_size, self.num_blocks
    init = symmetric_uniform(self.init_range)
    embedding = self.param("embedding", init, (self.vocab_size, h_size))
    w_x = self.param("w_x", init, (h_size, 2 * h_size))
    b_x = self.param("b_x", init, (2 * h_size,))
    w_h = self.param("w_h", init, (h_size, 2 * h_size))
    edges = self.param("edges", init, (max(n * (n - 1) // 2, 1), h_size, 2 * h_size))
    decoder_bias = self.param("decoder_bias", nn.initializers.zeros, (self.vocab_size,))

    time, batch = tokens.shape
    emb = embedding
    if train and self.dropout_embedding > 0:
      emb = emb * _dropout_mask(self.make_rng("dropout"), (self.vocab_size, 1), self.dropout_embedding)
    x = emb[tokens]
    if train and self.dropout_input > 0:
      x = x * _dropout_mask(self.make_rng("dropout"), (1, batch, h_size), self.dropout_input)
    if train and self.weight_drop > 0:
      w_h = w_h * _dropout_mask(self.make_rng("dropout"), w_h.shape, self.weight_drop)

    arch = jnp.asarray(arch, jnp.int32)
    acts = jnp.clip(arch[:, 1], 0, 3)
    active = arch[:, 1] >= 0
    children = jnp.arange(n)
    parents = jnp.clip(arch[:, 0], 0, jnp.maximum(children - 1, 0))  # as `edge_rows`, with node 0 (unused) first
    is_read = jnp.any(active[:, None] & (children[:, None] > 0) & (parents[:, None] == children[None, :]), axis=0)
    leaf = (active & ~is_read).astype(jnp.float32)
    last = jnp.max(jnp.where(active, children, 0))  # last active node (ablations may deactivate middle nodes)
    # One gather for the whole call: the weights of the sampled edges, (N - 1, H, 2H).
    w_sel = edges[edge_rows(arch, n)]
    x_proj = x @ w_x + b_x  # input projections for all steps at once (T, B, 2H)
    probing = edge_probes is not None and n > 1
    if probing and edge_probes.shape != (time, n - 1, batch, 2 * h_size):
      raise ValueError(f"edge_probes has shape {edge_probes.shape}; expected {(time, n - 1, batch, 2 * h_size)}")

    spec = CellSpec(acts, parents, leaf, last)
    new_hidden, (raw, norms, clipped), edge_inputs = cell_scan(
        w_h, w_sel, x_proj, hidden, edge_probes if probing else None, spec, self.next_hidden, self.max_hidden_norm)
    outputs = raw
    if train and self.dropout_output > 0:
      outputs = raw * _dropout_mask(self.make_rng("dropout"), (1, batch, h_size), self.dropout_output)
    logits = outputs @ embedding.T + decoder_bias
    extras = {"raw_outputs": raw, "outputs": outputs, "max_hidden_norm": jnp.max(norms),
              "clipped_fraction": jnp.mean(clipped)}
    if probing:
      extras["edge_inputs"] = edge_inputs
    return logits, new_hidden, extras


def rnn_lm_loss(logits: jax.Array, targets: jax.Array, extras: dict[str, jax.Array], *, ar_alpha: float = 0.0,
                tar_beta: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean token cross-entropy plus the optional activation (AR) and temporal activation (TAR) penalties.

  AR = ar_alpha * mean(outputs^2) on the dropped outputs; TAR = tar_beta * mean((raw_t - raw_{t-1})^2).
  Returns (loss, {'ce', 'ar', 'tar'}); perplexity is exp(ce).
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  ce = -jnp.take_along_axis(logp, targets[..., None], axis=-1).mean()
  ar = ar_alpha * jnp.mean(extras["outputs"] ** 2) if ar_alpha > 0 else jnp.zeros(())
  raw = extras["raw_outputs"]
  tar = tar_beta * jnp.mean((raw[1:] - raw[:-1]) ** 2) if tar_beta > 0 and raw.shape[0] > 1 else jnp.zeros(())
  return ce + ar + tar, {"ce": ce, "ar": ar, "tar": tar}
