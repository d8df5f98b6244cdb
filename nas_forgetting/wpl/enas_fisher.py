"""Fisher estimates of the ENAS supernets' monitored weights, for the WPL update after each architecture's burst.

Both return squared gradients over the monitored view (`nas_forgetting.wpl.masks`) of the loss of the current
architecture on one batch (the validation batch with `shared_valid_fisher`, else the burst's last training batch),
in evaluation mode (no dropout, no weight drop), ready for `wpl.state.update_fisher` / `end_burst`. The loss is the
cross-entropy (`shared_ce_fisher=True`, default) or the full training loss (`shared_ce_fisher=False`: + the L2 term
and the WPL penalty, + AR/TAR for the RNN; see `rnn_fisher`).

* ``empirical`` (default of `wpl.estimator`): the mean over examples of squared per-example gradients. An example
  is one sequence (one batch column, its mean token loss) for the language model, one image for the CNN.
  RNN columns are independent, so every per-sequence gradient of every edge matrix comes from one forward and one
  backward pass in the per-layer form (sums over time of outer products of each edge's input and the gradient at
  its pre-activation; `rnn_fisher`). The CNN's BatchNorm uses batch statistics, so its examples are coupled: each
  image's gradient is that of its own loss term through the shared batch statistics, one backward pass per image
  (`examples_per_pass` of them at once under `vmap`, chunks in sequence; `cnn_fisher`).
* ``batch``: the square of the batch-mean gradient, (mean_i g_i)^2, what the reference computes; one backward pass.
  By Jensen's inequality it is <= ``empirical`` entry by entry (equal for a batch of one).

The cross-entropy's gradients are zero on the weights the architecture does not use, so inactive entries of the
estimate are zero with `shared_ce_fisher=True` (and `update_fisher` leaves the state's Fisher there unchanged
anyway).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nas_forgetting.errors import ConfigError
from nas_forgetting.models import enas_cnn
from nas_forgetting.models.enas_cnn import EnasCnn
from nas_forgetting.models.enas_rnn import EnasRnn, edge_rows, rnn_lm_loss
from nas_forgetting.wpl import masks
from nas_forgetting.wpl import state as wpl

PyTree = Any
ENAS_ESTIMATORS = ("empirical", "batch")


def _check_estimator(estimator: str) -> None:
  if estimator not in ENAS_ESTIMATORS:
    raise ConfigError(f"wpl.estimator={estimator!r} is not available for the ENAS supernets; expected one of "
                      f"{', '.join(ENAS_ESTIMATORS)}")


def _parameter_terms_grad(view: PyTree, mask: PyTree, wpl_state: wpl.WPLState | None, *, l2_reg: float,
                          wpl_hp: wpl.WPLHyperParams | None) -> PyTree | None:
  """Gradient over the monitored `view` of the training loss's terms that depend on the weights only: the L2 term
  l2_reg / 2 * |theta|^2 (what the optimiser's weight decay `l2_reg` descends) and the WPL penalty of `wpl_state`
  over the active `mask` (with `wpl_hp`); None when both are absent. Every example's gradient includes it."""
  if l2_reg <= 0 and wpl_hp is None:
    return None
  if wpl_hp is not None and wpl_state is None:
    raise ConfigError("the Fisher of the full training loss with WPL needs the WPL state (its penalty is part of "
                      "the loss)")

  def terms(v):
    l2 = 0.5 * l2_reg * sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(v)) if l2_reg > 0 else 0.0
    return l2 + (wpl.penalty(wpl_state, v, mask, wpl_hp) if wpl_hp is not None else 0.0)

  return jax.grad(terms)(view)


def _plus(grads: PyTree, extra: PyTree | None) -> PyTree:
  return grads if extra is None else jax.tree.map(jnp.add, grads, extra)


def rnn_fisher(params: PyTree, inputs: jax.Array, targets: jax.Array, arch: jax.Array,
               wpl_state: wpl.WPLState | None = None, *, model: EnasRnn, estimator: str = "empirical",
               shared_ce_fisher: bool = True, ar_alpha: float = 0.0, tar_beta: float = 0.0, l2_reg: float = 0.0,
               wpl_hp: wpl.WPLHyperParams | None = None, monitor: str = "edges") -> dict[str, jax.Array]:
  """Fisher estimate over `masks.rnn_monitored(params, monitor)` from one window (inputs, targets: (T, B) token
  ids), each column starting from a zero hidden state.

  The loss is the mean token cross-entropy (`shared_ce_fisher=True`), or the full training loss of
  `enas.trainer.rnn_shared_step` (`shared_ce_fisher=False`): cross-entropy + AR (`ar_alpha`) + TAR (`tar_beta`)
  + the L2 term l2_reg / 2 * |theta|^2 that the optimiser's weight decay `l2_reg` descends + the WPL penalty of
  `wpl_state` when `wpl_hp` is given (the state before this burst's update: the penalty the burst trained with).
  In evaluation mode AR/TAR are means over columns of per-sequence terms, so a sequence's loss is its own
  cross-entropy + AR + TAR; the L2 and WPL terms depend on the weights only and add the same gradient r to every
  sequence's gradient (so the estimate is r^2 on edges the architecture does not use).

  `empirical`: per-sequence gradients of each node's edge matrix W (H, 2H) in the per-layer form
  G_b = sum_t a_{t,b}^T g_{t,b}, with a the parent value that multiplies W and g the loss gradient at the node's
  pre-activation, for sequence b. One forward pass returns the a's (`EnasRnn(edge_probes=...)`), one backward pass
  of the summed per-sequence losses gives every g as the gradient with respect to zero probes added to the
  pre-activations (sequences are independent, so the gradient of the sum at sequence b's probes is that of its own
  loss), and F = mean_b (G_b + r)^2 over the N - 1 edges the cell reads, scattered into the (E, H, 2H) edge stack.
  Memory: the (N - 1, B, H, 2H) per-sequence gradients of the read edges (not of all E edges).
  With `monitor='all'` the weights outside the edges (embedding, decoder bias, node 0's input and recurrent
  weights) get theirs from one backward pass per sequence (`vmap` over the B columns): B copies of them in memory.
  """
  _check_estimator(estimator)
  if shared_ce_fisher:
    ar_alpha, tar_beta, l2_reg, wpl_hp = 0.0, 0.0, 0.0, None
  n, h = model.num_blocks, model.hidden_size
  time, batch = inputs.shape
  hidden = jnp.zeros((batch, h), jnp.float32)
  view = masks.rnn_monitored(params, monitor)
  reg = _parameter_terms_grad(view, masks.rnn_active_mask(arch, n, view), wpl_state, l2_reg=l2_reg, wpl_hp=wpl_hp)

  def loss(p, probes=None):  # mean over the window and the columns, = mean over columns of each column's loss
    logits, _, extras = model.apply({"params": p}, inputs, hidden, arch, train=False, edge_probes=probes)
    return rnn_lm_loss(logits, targets, extras, ar_alpha=ar_alpha, tar_beta=tar_beta)[0], extras

  if estimator == "batch":
    return jax.tree.map(jnp.square, _plus(masks.rnn_monitored(jax.grad(lambda p: loss(p)[0])(params), monitor), reg))

  edges = params["edges"]
  reg_edges = None if reg is None else jnp.concatenate([reg["edges_c"], reg["edges_h"]], axis=-1)
  fisher = jnp.zeros_like(edges) if reg_edges is None else jnp.square(reg_edges)
  if n > 1:
    probes = jnp.zeros((time, n - 1, batch, 2 * h), edges.dtype)

    def summed(pr):  # sum over columns of each column's loss, and the parent values a
      value, extras = loss(params, pr)
      return batch * value, extras["edge_inputs"]

    g, a = jax.grad(summed, has_aux=True)(probes)  # g: (T, N-1, B, 2H), a: (T, N-1, B, H)
    per_sequence = jnp.einsum("tkbi,tkbj->kbij", a, g)  # G_b of each read edge: (N-1, B, H, 2H)
    rows = edge_rows(arch, n)
    if reg_edges is not None:
      per_sequence = per_sequence + reg_edges[rows][:, None]
    fisher = fisher.at[rows].set(jnp.mean(jnp.square(per_sequence), axis=1))
  out = masks.rnn_monitored({"edges": fisher})
  if monitor == "all":
    shared = {k: v for k, v in params.items() if k != "edges"}

    def column_loss(weights, x, y):  # one sequence's loss (its column alone: columns are independent)
      logits, _, extras = model.apply({"params": {**weights, "edges": edges}}, x[:, None], hidden[:1], arch,
                                      train=False)
      return rnn_lm_loss(logits, y[:, None], extras, ar_alpha=ar_alpha, tar_beta=tar_beta)[0]

    per_sequence = jax.vmap(jax.grad(column_loss), in_axes=(None, 1, 1))(shared, inputs, targets)
    out["shared"] = jax.tree.map(lambda g, r: jnp.mean(jnp.square(g + r), axis=0), per_sequence,
                                 reg["shared"] if reg is not None else jax.tree.map(jnp.zeros_like, shared))
  return out


def cnn_fisher(params: PyTree, images: jax.Array, labels: jax.Array, arch: jax.Array,
               wpl_state: wpl.WPLState | None = None, *, model: EnasCnn, estimator: str = "empirical",
               shared_ce_fisher: bool = True, l2_reg: float = 0.0, wpl_hp: wpl.WPLHyperParams | None = None,
               examples_per_pass: int = 8) -> dict[str, dict[str, jax.Array]]:
  """Fisher estimate over `masks.cnn_monitored(params)` from one batch (images in [0, 1], int labels).

  The loss is the cross-entropy (`shared_ce_fisher=True`), or the full training loss of `enas.trainer.cnn_shared_step`
  (`shared_ce_fisher=False`): cross-entropy + the L2 term l2_reg / 2 * |theta|^2 + the WPL penalty of `wpl_state`
  when `wpl_hp` is given; those two terms add the same gradient r to every image's gradient (see `rnn_fisher`).

  `empirical`: image i's gradient is the backward pass of the batch's per-image losses with the cotangent e_i
  (through the shared BatchNorm statistics); `examples_per_pass` such backward passes run at once (`vmap`), chunk
  after chunk (`lax.scan`), and their squares are summed, so memory holds that many backward passes and gradients.
  """
  _check_estimator(estimator)
  if shared_ce_fisher:
    l2_reg, wpl_hp = 0.0, None
  x = enas_cnn.normalize(images)
  view = masks.cnn_monitored(params)
  reg = _parameter_terms_grad(view, masks.cnn_active_mask(arch, view), wpl_state, l2_reg=l2_reg, wpl_hp=wpl_hp)

  def losses(p):  # per-example cross-entropy (B,), through the batch's shared BatchNorm statistics
    logits = model.apply({"params": p}, x, arch, train=False)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]

  n = images.shape[0]
  if estimator == "batch":
    grads = jax.grad(lambda p: jnp.mean(losses(p)))(params)
    return jax.tree.map(jnp.square, _plus(masks.cnn_monitored(grads), reg))
  if examples_per_pass < 1:
    raise ConfigError(f"examples_per_pass={examples_per_pass}; expected >= 1")
  _, vjp = jax.vjp(losses, params)

  def squares(index):  # sum over the images `index` (k,) of their squared gradients, k backward passes at once
    one = lambda i: _plus(masks.cnn_monitored(vjp(jax.nn.one_hot(i, n, dtype=jnp.float32))[0]), reg)
    return jax.tree.map(lambda g: jnp.sum(jnp.square(g), axis=0), jax.vmap(one)(index))

  k = min(examples_per_pass, n)
  chunks, rest = divmod(n, k)
  add = lambda acc, index: (jax.tree.map(jnp.add, acc, squares(index)), None)
  total, _ = jax.lax.scan(add, jax.tree.map(jnp.zeros_like, view), jnp.arange(chunks * k).reshape(chunks, k))
  if rest:
    total = jax.tree.map(jnp.add, total, squares(jnp.arange(chunks * k, n)))
  return jax.tree.map(lambda t: t / n, total)
