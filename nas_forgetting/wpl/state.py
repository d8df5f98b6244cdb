"""Weight plasticity loss (WPL): a moving-average Fisher over shared parameters, anchors, and the penalty.

WPL fights multi-model forgetting: when models that share weights are trained one after another (the architectures
of a weight-sharing search, or two networks with common layers), moving a shared weight that mattered to an
earlier model is penalised in proportion to its Fisher information:

  penalty(theta) = alpha(epoch) / 2 * sum_{active i} F_i * (theta_i - theta*_i)^2

State (`WPLState`, a pytree of arrays, so it is checkpointed and resumed like any other state):

* `fisher`: the raw moving-average Fisher F per monitored parameter (same tree as the monitored params).
  After each architecture's training burst it is updated on the parameters that architecture uses:
    momentum form (`momentum=True`):  F <- (1 - lambda_fisher) * F + lambda_fisher * g2
    plain form    (`momentum=False`): F <- F + lambda_fisher * g2
  where g2 is a Fisher estimate (per-example squared gradients by default; see `nas_forgetting.importance`),
  then every tensor whose L2 (Frobenius) norm exceeds `fisher_clip_by_norm` (> 0) is scaled back to that norm.
  Parameters the architecture does NOT use keep their Fisher unchanged (they were not trained in this burst, so the
  evidence about them is unchanged); the penalty ignores them as well. A tensor the architecture uses but that gets
  no gradient from its loss (identically zero, e.g. an op whose output never reaches the cell output) takes the
  ordinary update with a zero estimate: the momentum form decays its Fisher, the plain form keeps it. The reference
  instead resets the Fisher of a parameter whose gradient is absent to zero; that is the option
  `reset_fisher_without_gradient=True` (reproduction only).
* `anchor`: theta*, refreshed after every burst to the current values of ALL monitored parameters (as the
  reference does), so the penalty is zero at the first batch of the next architecture's burst and grows as the
  weights drift.
* `epoch` (int32 scalar), set by `begin_epoch`, which also resets F to zero every `set_fisher_zero_per_iter` epochs
  (when epoch % k == 0, epoch 0 included; k <= 0 never resets). WPL is switched on from epoch
  `start_using_fisher`: before that the penalty is zero and `update_fisher` leaves F unchanged.
* `num_updates` (int32 scalar): Fisher updates applied so far.

alpha(epoch) = alpha_fisher before epoch `alpha_decay_after`, then
max(alpha_fisher - (epoch - alpha_decay_after + 1) * alpha_decay, 0) (linear decay to zero); it is applied when the
penalty is computed, never stored in F. The reference implementation instead multiplies alpha into the stored
Fisher at every update, so that it compounds (F_t = alpha * clip(F_{t-1} + lambda g2)) and the penalty then uses the
stored value as is: that is available as `reference_scaling=True`, for reproduction only.

Masks. `active_mask` is a pytree with the structure of the monitored parameters whose boolean leaves select the
parameters the current architecture uses. A mask leaf may be a scalar (the whole tensor), the full parameter shape,
or any shape that is a prefix of the parameter's shape, possibly with size-1 dims (e.g. (E,) or (E, 1, 1) for a
stack of E per-edge weight matrices of shape (E, h, h)): it is aligned with the LEADING dims and broadcast over the
rest. Masks are ordinary (traced) arrays, so one compilation serves every architecture. For norm clipping, a
"tensor" is the set of entries that share one mask entry: the whole leaf for a scalar mask, one slice per edge for
an (E,) mask (the reference clips each edge's weight tensor separately).

Hyper-parameters travel as a `WPLHyperParams` (a hashable NamedTuple: pass it as a static argument of `jax.jit`),
built from the `wpl` config group with `WPLHyperParams.from_config`; `default_wpl_config` builds that group and
`reference_rnn_wpl_config` / `reference_cnn_wpl_config` mirror the reference's command lines.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from nas_forgetting import penalties
from nas_forgetting import config_schema as cc
from nas_forgetting.errors import ArchitectureError

PyTree = Any

FISHER_ESTIMATORS = ("exact", "sampled", "empirical", "batch")
MONITORS = ("edges", "all")  # the ENAS RNN weights WPL covers (`nas_forgetting.wpl.masks.rnn_monitored`)
_OPTIONAL_FIELDS = ("reset_fisher_without_gradient", "monitor", "proximal")  # a wpl group may omit them
GROUP = "wpl"  # the config group of the WPL fields (named in error messages)


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------


def default_wpl_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `wpl` config group (defaults = the reference's config.py defaults, with our corrections off-by-default).

  Every field:
    enabled                   use WPL at all (False: plain weight-sharing training, forgetting still measurable).
    alpha_fisher              penalty strength alpha before any decay.
    alpha_decay               alpha decreases by this much per epoch from `alpha_decay_after` on (0 = constant).
    alpha_decay_after         first epoch at which alpha is decayed (alpha(e) = alpha_fisher - (e - after + 1) * decay).
    lambda_fisher             EMA weight of the new Fisher estimate (see `momentum`).
    momentum                  True: F <- (1-lambda) F + lambda g2; False: F <- F + lambda g2 (relies on clipping/reset).
    fisher_clip_by_norm       > 0: scale each Fisher tensor down to at most this L2 norm after every update; 0 = off.
    set_fisher_zero_per_iter  k > 0: reset the Fisher to zero at the start of every epoch with epoch % k == 0;
                              <= 0: never.
    start_using_fisher        first epoch at which the Fisher is updated and the penalty applied.
    num_batch_per_iter        training batches per sampled architecture (one "burst") before its Fisher/anchor update.
    estimator                 Fisher estimate per burst: 'empirical' (default: mean over examples of squared
                              per-example gradients of the cross-entropy at the true labels), 'exact' (expectation over
                              the model's predictive distribution), 'sampled' (labels drawn from the model), or 'batch'
                              (square of the batch-mean gradient: what the reference computes; reproduction only).
    shared_valid_fisher       True: estimate the Fisher on one validation batch after the burst (reference default);
                              False: on the burst's last training batch.
    shared_ce_fisher          True: the Fisher gradient is of the cross-entropy alone; False: of the full training loss
                              (cross-entropy + WPL penalty + regularisers), as the reference's option.
    reference_scaling         True: multiply alpha(epoch) into the stored Fisher at each update so it compounds, and
                              apply the penalty without alpha (the reference's behaviour; reproduction only).
    measure_forgetting        evaluate every architecture of an epoch right after its burst and at the end of the
                              epoch on a fixed validation batch, and log the forgetting statistics.
    monitor                   which shared weights of the ENAS RNN supernet WPL covers: 'edges' (default, as the
                              reference: the per-edge cell weights) or 'all' (also the weights every architecture
                              shares: embedding, decoder bias, node 0's input and recurrent weights; they are active
                              for every architecture). `nas_forgetting.wpl.masks`.
    proximal                  False (default): the penalty is a loss term, its gradient alpha F (theta - theta*) taken
                              by the optimiser (unstable under SGD where lr alpha F > 2: `sgd_stiffness`). True (ENAS
                              RNN): the step descends the other terms, then solves the penalty exactly,
                              theta <- theta* + (theta - theta*) / (1 + lr alpha F) (`proximal_step`: stable at any
                              stiffness, equal to the gradient form to first order in lr alpha F).
    reset_fisher_without_gradient
                              False (default): a tensor of the architecture that gets no gradient from its loss (the
                              gradient is identically zero over the tensor, e.g. an op whose output never reaches the
                              cell output) takes the ordinary update with a zero estimate (momentum form: F decays to
                              (1 - lambda) F; plain form: F is kept). True: its Fisher is reset to zero, as the
                              reference does for a parameter whose gradient is absent (reproduction only). Tensors of
                              edges the architecture does not use keep their Fisher either way.
  """
  config = ml_collections.ConfigDict()
  config.enabled = True
  config.alpha_fisher = 1.0
  config.alpha_decay = 2.0
  config.alpha_decay_after = 15
  config.lambda_fisher = 0.9
  config.momentum = True
  config.fisher_clip_by_norm = 0.0
  config.set_fisher_zero_per_iter = -1
  config.start_using_fisher = 0
  config.num_batch_per_iter = 10
  config.estimator = "empirical"
  config.shared_valid_fisher = True
  config.shared_ce_fisher = True
  config.reference_scaling = False
  config.measure_forgetting = True
  config.reset_fisher_without_gradient = False
  config.monitor = "edges"
  config.proximal = False
  cc.override(config, overrides, group=GROUP)
  validate_wpl_config(config)
  return config


def validate_wpl_config(config: ml_collections.ConfigDict) -> "WPLHyperParams":
  """Checks every field of a `wpl` group (types, ranges, finiteness, choices); ConfigError names the first bad one.
  Returns the hyper-parameters (`WPLHyperParams.from_config` checks the fields they hold)."""
  for name in ("enabled", "shared_valid_fisher", "shared_ce_fisher", "measure_forgetting"):
    cc.boolean(config, name, group=GROUP)
  cc.integer(config, "num_batch_per_iter", minimum=1, group=GROUP)
  cc.choice(config, "estimator", FISHER_ESTIMATORS, group=GROUP)
  return WPLHyperParams.from_config(config)


def reference_rnn_wpl_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `wpl` group of the reference's RNN (PTB) command line.

  alpha 60, Fisher norm clip 10, alpha decay 1 per epoch after epoch 15, Fisher reset every 2 epochs, 7 batches per
  architecture. The same command line also sets, outside this group, the controller reward constant 80
  (reward = 80 / ppl), 150 epochs and 60 architectures per epoch: those belong to the ENAS config.
  """
  base = dict(alpha_fisher=60.0, fisher_clip_by_norm=10.0, alpha_decay=1.0, alpha_decay_after=15,
              set_fisher_zero_per_iter=2, num_batch_per_iter=7)
  base.update(overrides)
  return default_wpl_config(**base)


def reference_cnn_wpl_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `wpl` group of the reference's micro-CNN (CIFAR-10) command line.

  alpha 60, Fisher norm clip 10, plain (non-momentum) accumulation, Fisher reset every 3 epochs, 7 batches per
  architecture. The reference CNN trainer never passes the epoch to the alpha schedule, so its alpha is constant:
  `alpha_decay=0` reproduces that. Outside this group the command line sets 5 blocks per cell, 5 normal cells per
  stage, batch 32, softmax temperature 8, baseline EMA 0.99, controller lr 0.0035, entropy weight 1e-4, 310 epochs
  and 70 architectures per epoch (ENAS config). Its start_using_fisher=50000 would never switch WPL on within 310
  epochs; we use 0 (WPL from the start), which is what the reported results need.
  """
  base = dict(alpha_fisher=60.0, fisher_clip_by_norm=10.0, momentum=False, alpha_decay=0.0,
              set_fisher_zero_per_iter=3, num_batch_per_iter=7)
  base.update(overrides)
  return default_wpl_config(**base)


class WPLHyperParams(NamedTuple):
  """The scalars the pure WPL functions need (hashable: a static argument of jitted functions)."""

  alpha_fisher: float = 1.0
  alpha_decay: float = 2.0
  alpha_decay_after: int = 15
  lambda_fisher: float = 0.9
  momentum: bool = True
  fisher_clip_by_norm: float = 0.0
  set_fisher_zero_per_iter: int = -1
  start_using_fisher: int = 0
  reference_scaling: bool = False
  reset_fisher_without_gradient: bool = False
  monitor: str = "edges"
  proximal: bool = False

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "WPLHyperParams":
    """Validated hyper-parameters from a `wpl` config group (see `default_wpl_config`); a group without
    field of `_OPTIONAL_FIELDS` (reset_fisher_without_gradient, monitor, proximal) gets its default."""
    values = {name: cc.get(config, name, group=GROUP) for name in cls._fields
              if name in config or name not in _OPTIONAL_FIELDS}
    return cls(**values).validate()

  def validate(self) -> "WPLHyperParams":
    """Checks every field (ConfigError naming the first bad one, as `wpl.<name>`); returns them as float / int /
    bool."""
    for name in ("momentum", "reference_scaling", "reset_fisher_without_gradient", "proximal"):
      cc.boolean(self, name, group=GROUP)
    cc.choice(self, "monitor", MONITORS, group=GROUP)
    cc.integer(self, "alpha_decay_after", minimum=0, group=GROUP)
    cc.integer(self, "set_fisher_zero_per_iter", group=GROUP)  # <= 0: never reset
    cc.integer(self, "start_using_fisher", minimum=0, group=GROUP)
    cc.number(self, "alpha_fisher", minimum=0.0, group=GROUP)
    cc.number(self, "alpha_decay", minimum=0.0, group=GROUP)
    cc.number(self, "lambda_fisher", above=0.0, maximum=1.0 if self.momentum else None, group=GROUP)  # momentum: EMA
    cc.number(self, "fisher_clip_by_norm", minimum=0.0, group=GROUP)  # 0 = no clipping
    return self._replace(**{name: float(getattr(self, name)) for name in
                            ("alpha_fisher", "alpha_decay", "lambda_fisher", "fisher_clip_by_norm")})


# ----------------------------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------------------------


class WPLState(NamedTuple):
  """WPL state over a tree of monitored (shared) parameters; see the module docstring."""

  fisher: PyTree
  anchor: PyTree
  epoch: jax.Array
  num_updates: jax.Array


def init_wpl_state(params: PyTree) -> WPLState:
  """Zero Fisher, anchor = a copy of `params`, epoch 0, no updates yet."""
  return WPLState(fisher=jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.result_type(p)), params),
                  anchor=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
                  epoch=jnp.zeros((), jnp.int32), num_updates=jnp.zeros((), jnp.int32))


def alpha_at(epoch: jax.Array | int, hp: WPLHyperParams) -> jax.Array:
  """alpha(epoch): alpha_fisher, decayed linearly by alpha_decay per epoch from alpha_decay_after on, floored at 0."""
  epoch = jnp.asarray(epoch, jnp.float32)
  decayed = jnp.maximum(hp.alpha_fisher - (epoch - hp.alpha_decay_after + 1.0) * hp.alpha_decay, 0.0)
  return jnp.where(epoch >= hp.alpha_decay_after, decayed, jnp.float32(hp.alpha_fisher))


def is_on(state: WPLState, hp: WPLHyperParams) -> jax.Array:
  """Whether WPL is switched on in the state's epoch (epoch >= start_using_fisher), as a bool scalar."""
  return state.epoch >= hp.start_using_fisher


def begin_epoch(state: WPLState, epoch: jax.Array | int, hp: WPLHyperParams) -> WPLState:
  """Enter `epoch`: store it, and reset the Fisher to zero if set_fisher_zero_per_iter = k > 0 and epoch % k == 0."""
  epoch = jnp.asarray(epoch, jnp.int32)
  fisher = state.fisher
  if hp.set_fisher_zero_per_iter > 0:
    reset = epoch % hp.set_fisher_zero_per_iter == 0
    fisher = jax.tree.map(lambda f: jnp.where(reset, jnp.zeros_like(f), f), fisher)
  return state._replace(fisher=fisher, epoch=epoch)


def _path_name(path) -> str:
  return jax.tree_util.keystr(path) or "<root>"


def expand_mask(active_mask: PyTree | None, params: PyTree) -> PyTree:
  """Boolean masks reshaped to broadcast against `params` (leading-dim alignment, see the module docstring).

  Each returned leaf has the parameter's rank (size-1 where it broadcasts). `None` means every parameter is active.
  Raises ArchitectureError naming the leaf whose mask does not fit.
  """
  if active_mask is None:
    return jax.tree.map(lambda p: jnp.ones((1,) * jnp.ndim(p), bool), params)
  try:
    pairs = jax.tree.map(lambda p, m: (p, m), params, active_mask)
  except (ValueError, TypeError) as e:
    raise ArchitectureError(f"the active mask's tree does not match the monitored parameters' tree: {e}") from None

  def one(path, pair):
    p, m = pair
    m = jnp.asarray(m)
    p_shape, m_shape = jnp.shape(p), tuple(m.shape)
    if len(m_shape) > len(p_shape) or any(md not in (1, pd) for md, pd in zip(m_shape, p_shape)):
      raise ArchitectureError(f"active mask at {_path_name(path)} has shape {m_shape}; expected a scalar or a "
                              f"leading-dims prefix of the parameter's shape {p_shape} (size-1 dims allowed)")
    if m.dtype != jnp.bool_:
      raise ArchitectureError(f"active mask at {_path_name(path)} has dtype {m.dtype}; expected bool")
    return m.reshape(m_shape + (1,) * (len(p_shape) - len(m_shape)))

  return jax.tree_util.tree_map_with_path(one, pairs, is_leaf=lambda x: isinstance(x, tuple))


def _clip_per_tensor(f: jax.Array, mask: jax.Array, max_norm: float) -> jax.Array:
  """Scales each tensor of `f` (the entries sharing one mask entry) down to L2 norm <= max_norm."""
  axes = tuple(i for i, (md, fd) in enumerate(zip(mask.shape, f.shape)) if md == 1 and fd != 1)
  norm = jnp.sqrt(jnp.sum(jnp.square(f), axis=axes, keepdims=True))
  scale = jnp.where(norm > max_norm, max_norm / jnp.maximum(norm, jnp.finfo(f.dtype).tiny), 1.0)
  return f * scale


def update_fisher(state: WPLState, sq_grads: PyTree, active_mask: PyTree | None, hp: WPLHyperParams) -> WPLState:
  """One moving-average Fisher update on the active parameters (no-op before start_using_fisher).

  `sq_grads`: a Fisher estimate with the monitored parameters' tree (e.g. `importance.fisher_diagonal(...)` with the
  configured estimator). Inactive parameters keep their Fisher. An active tensor (the entries sharing one mask
  entry) whose estimate is identically zero (no gradient reaches it) takes the ordinary update with g2 = 0, or,
  with `hp.reset_fisher_without_gradient`, is reset to zero (the reference). The anchor is not touched
  (`refresh_anchor`).
  """
  if jax.tree.structure(sq_grads) != jax.tree.structure(state.fisher):
    raise ArchitectureError(f"the Fisher estimate's tree {jax.tree.structure(sq_grads)} does not match the WPL "
                            f"state's tree {jax.tree.structure(state.fisher)}")
  for (path, f), g in zip(jax.tree_util.tree_leaves_with_path(state.fisher), jax.tree.leaves(sq_grads)):
    if jnp.shape(g) != jnp.shape(f):
      raise ArchitectureError(f"Fisher estimate at {_path_name(path)} has shape {jnp.shape(g)}; "
                              f"expected {jnp.shape(f)}")
  masks = expand_mask(active_mask, state.fisher)
  on = is_on(state, hp)
  alpha = alpha_at(state.epoch, hp)
  lam = hp.lambda_fisher

  def one(f, g2, m):
    g2 = g2.astype(f.dtype)
    new = (1.0 - lam) * f + lam * g2 if hp.momentum else f + lam * g2
    if hp.fisher_clip_by_norm > 0:
      new = _clip_per_tensor(new, m, hp.fisher_clip_by_norm)
    if hp.reference_scaling:
      new = alpha.astype(f.dtype) * new
    if hp.reset_fisher_without_gradient:  # the reference: a tensor without gradient gets a zero Fisher
      axes = tuple(i for i, (md, fd) in enumerate(zip(m.shape, f.shape)) if md == 1 and fd != 1)
      has_gradient = jnp.any(g2 != 0, axis=axes, keepdims=True)
      new = jnp.where(has_gradient, new, jnp.zeros_like(new))
    return jnp.where(jnp.logical_and(m, on), new, f)

  fisher = jax.tree.map(one, state.fisher, sq_grads, masks)
  return state._replace(fisher=fisher, num_updates=state.num_updates + on.astype(jnp.int32))


def refresh_anchor(state: WPLState, params: PyTree) -> WPLState:
  """theta* <- the current values of all monitored parameters (as the reference: all of them, not only active ones)."""
  if jax.tree.structure(params) != jax.tree.structure(state.anchor):
    raise ArchitectureError(f"the parameters' tree {jax.tree.structure(params)} does not match the WPL anchor's tree "
                            f"{jax.tree.structure(state.anchor)}")
  return state._replace(anchor=jax.tree.map(lambda p, a: jnp.asarray(p, a.dtype), params, state.anchor))


def end_burst(state: WPLState, params: PyTree, sq_grads: PyTree, active_mask: PyTree | None,
              hp: WPLHyperParams) -> WPLState:
  """After an architecture's training burst: Fisher update on its active parameters, then anchor refresh."""
  return refresh_anchor(update_fisher(state, sq_grads, active_mask, hp), params)


def penalty_strength(state: WPLState, hp: WPLHyperParams) -> jax.Array:
  """The factor applied to 1/2 sum F (theta - theta*)^2: alpha(epoch) (1 with reference_scaling), 0 before start."""
  strength = jnp.float32(1.0) if hp.reference_scaling else alpha_at(state.epoch, hp)
  return jnp.where(is_on(state, hp), strength, jnp.float32(0.0))


def penalty(state: WPLState, params: PyTree, active_mask: PyTree | None, hp: WPLHyperParams) -> jax.Array:
  """alpha(epoch)/2 * sum over active parameters of F * (theta - theta*)^2 (a float32 scalar).

  Its gradient with respect to `params` is alpha * F * (theta - theta*) on active entries and zero elsewhere.
  Fisher and anchor enter as constants (no gradient flows into the state).
  """
  fisher = jax.lax.stop_gradient(state.fisher)
  anchor = jax.lax.stop_gradient(state.anchor)
  value = penalties.quadratic_penalty(params, anchor, fisher, mask=expand_mask(active_mask, params))
  return penalty_strength(state, hp) * value


def proximal_step(state: WPLState, params: PyTree, active_mask: PyTree | None, hp: WPLHyperParams,
                  learning_rate: jax.Array | float) -> PyTree:
  """The exact minimiser of |theta - params|^2 / (2 lr) + penalty(theta): on active entries
  theta* + (params - theta*) / (1 + lr alpha F), elsewhere params (alpha = `penalty_strength`, 0 before WPL is on).
  Stable at any stiffness lr alpha F (a gradient step on the penalty overshoots once it exceeds 2)."""
  masks = expand_mask(active_mask, params)
  strength = penalty_strength(state, hp)
  lr = jnp.asarray(learning_rate, jnp.float32)

  def one(p, f, a, m):
    f, a = jax.lax.stop_gradient(f), jax.lax.stop_gradient(a)
    held = a + (p - a) / (1.0 + lr * strength * f)
    return jnp.where(m, held.astype(p.dtype), p)

  return jax.tree.map(one, params, state.fisher, state.anchor, masks)


def sgd_stiffness(fisher: PyTree, alpha: float, learning_rate: float) -> float:
  """learning_rate * alpha * max F (host float): the step factor of plain gradient descent on the penalty alone. An
  entry whose factor exceeds 2 overshoots its anchor further at every step (diverges; with a gradient-norm clip it
  oscillates at the clip's amplitude instead, i.e. the penalty shakes the weight it should hold); callers warn."""
  return float(learning_rate) * float(alpha) * float(max(jnp.max(f) for f in jax.tree.leaves(fisher)))


def fisher_statistics(state: WPLState, active_mask: PyTree | None = None) -> dict[str, jax.Array]:
  """Scalars worth logging: total/max Fisher and the number of active entries (jittable)."""
  masks = jax.tree.map(lambda m, f: jnp.broadcast_to(m, f.shape), expand_mask(active_mask, state.fisher),
                       state.fisher)
  leaves = jax.tree.leaves(state.fisher)
  mask_leaves = jax.tree.leaves(masks)
  return {
      "wpl/fisher_sum": sum(jnp.sum(f) for f in leaves),
      "wpl/fisher_max": jnp.max(jnp.stack([jnp.max(f) for f in leaves])),
      "wpl/fisher_active_sum": sum(jnp.sum(jnp.where(m, f, 0.0)) for f, m in zip(leaves, mask_leaves)),
      "wpl/active_entries": sum(jnp.sum(m.astype(jnp.int32)) for m in mask_leaves),
  }
