"""Pure, jittable ENAS steps: shared-weight training, controller (REINFORCE) training, scoring, derive, evaluation.

Every function takes the architecture as a traced int32 array, so each is compiled once for all architectures.
Each training step also returns `<phase>/params_finite` (`PARAMS_FINITE`), a traced bool: every parameter and
optimizer-state entry after the step is finite (`nas_forgetting.numerics.all_finite`). The run carries these flags
and the step's losses out of the compiled step and checks them on the host once per logging interval, so a diverged
run stops (DivergenceError) without a device synchronisation per step.
Hyper-parameters are static arguments (bind them with functools.partial before jax.jit); the learning rate is a
traced argument, written into the optimizer's injected hyper-parameters (`optax.inject_hyperparams`), so the decay
schedule does not recompile. The language-model data are time-major token arrays
(num_steps, batch) that stay on the device; a window is cut out with a traced start index.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_forgetting.enas import reinforce
from nas_forgetting.enas.search_space import uniform_decisions
from nas_forgetting.models import controller as ctl
from nas_forgetting.models import enas_cnn
from nas_forgetting.models.enas_cnn import EnasCnn
from nas_forgetting.models.enas_rnn import EnasRnn, rnn_lm_loss
from nas_forgetting.numerics import all_finite
from nas_forgetting.wpl import masks as wpl_masks
from nas_forgetting.wpl import state as wpl_lib


# Metric keys of the traced "parameters and optimizer state are finite after the step" flags.
PARAMS_FINITE = ("shared/params_finite", "controller/params_finite")


class SharedState(NamedTuple):
  params: Any
  opt_state: Any
  step: jax.Array  # int32


def shared_optimizer(grad_clip: float, l2_reg: float, momentum: float = 0.0,
                     nesterov: bool = False) -> optax.GradientTransformation:
  """SGD as the references: global-norm clip, L2 weight decay, optional (Nesterov) momentum, then -learning_rate.

  The learning rate is an injected hyper-parameter (`optax.inject_hyperparams`): it lives in the optimizer state,
  and the shared steps write their traced `lr` argument there (`with_learning_rate`), so the decay schedule does
  not recompile.
  """
  def sgd(learning_rate):
    parts = []
    if grad_clip > 0:
      parts.append(optax.clip_by_global_norm(grad_clip))
    if l2_reg > 0:
      parts.append(optax.add_decayed_weights(l2_reg))
    if momentum > 0:
      parts.append(optax.trace(decay=momentum, nesterov=nesterov))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)

  return optax.inject_hyperparams(sgd)(learning_rate=0.0)


def with_learning_rate(opt_state: optax.OptState, lr: jax.Array) -> optax.OptState:
  """`opt_state` of `shared_optimizer` with its injected learning rate set to `lr` (float32, traced or not)."""
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": jnp.asarray(lr, jnp.float32)})


def _sgd_update(state: SharedState, grads: Any, lr: jax.Array,
                optimizer: optax.GradientTransformation) -> tuple[Any, Any, Any]:
  """(params, opt_state, updates) after one step of `optimizer` at learning rate `lr`."""
  updates, opt_state = optimizer.update(grads, with_learning_rate(state.opt_state, lr), state.params)
  return optax.apply_updates(state.params, updates), opt_state, updates


def shared_learning_rate(epoch: int, *, lr: float, decay: float, decay_after: int) -> float:
  """lr for a (0-based) epoch: lr * decay^(epoch - decay_after) once epoch > decay_after (reference schedule)."""
  return lr * decay ** max(0, epoch - decay_after)


def init_shared(params: Any, optimizer: optax.GradientTransformation) -> SharedState:
  return SharedState(params, optimizer.init(params), jnp.array(0, jnp.int32))


def lm_window(data: jax.Array, start: jax.Array, bptt: int) -> tuple[jax.Array, jax.Array]:
  """(inputs, targets), each (bptt, batch), from time-major tokens (num_steps, batch) at a traced start."""
  window = jax.lax.dynamic_slice_in_dim(data, start, bptt + 1, axis=0)
  return window[:-1], window[1:]


def wpl_rnn_penalty(params: Any, arch: jax.Array, wpl_state: wpl_lib.WPLState | None,
                    wpl_hp: wpl_lib.WPLHyperParams | None, num_blocks: int) -> jax.Array:
  """The WPL penalty of an RNN architecture over its active edges (0. without WPL, i.e. `wpl_hp` None)."""
  if wpl_hp is None:
    return jnp.float32(0.0)
  view = wpl_masks.rnn_monitored(params, wpl_hp.monitor)
  return wpl_lib.penalty(wpl_state, view, wpl_masks.rnn_active_mask(arch, num_blocks, view), wpl_hp)


def wpl_cnn_penalty(params: Any, arch: jax.Array, wpl_state: wpl_lib.WPLState | None,
                    wpl_hp: wpl_lib.WPLHyperParams | None) -> jax.Array:
  """The WPL penalty of a micro-CNN architecture over its active edge ops (0. without WPL)."""
  if wpl_hp is None:
    return jnp.float32(0.0)
  view = wpl_masks.cnn_monitored(params)
  return wpl_lib.penalty(wpl_state, view, wpl_masks.cnn_active_mask(arch, view), wpl_hp)


def rnn_shared_step(state: SharedState, data: jax.Array, start: jax.Array, hidden: jax.Array, arch: jax.Array,
                    rng: jax.Array, lr: jax.Array, wpl_state: wpl_lib.WPLState | None = None, *, model: EnasRnn,
                    optimizer: optax.GradientTransformation, bptt: int, ar_alpha: float, tar_beta: float,
                    wpl_hp: wpl_lib.WPLHyperParams | None = None
                    ) -> tuple[SharedState, jax.Array, dict[str, jax.Array]]:
  """One SGD step of the shared weights on one architecture; the hidden state is carried (and not differentiated).

  With `wpl_hp` (static) the loss adds the weight plasticity loss of `wpl_state` (traced) over the architecture's
  active edges: alpha/2 * sum F (theta - theta*)^2, so its gradient is alpha F (theta - theta*) there, 0 elsewhere;
  with `wpl_hp.proximal` the step descends the other terms and then solves the penalty exactly
  (`wpl.state.proximal_step`).
  """
  inputs, targets = lm_window(data, start, bptt)
  hidden = jax.lax.stop_gradient(hidden)

  def loss_fn(params):
    logits, new_hidden, extras = model.apply({"params": params}, inputs, hidden, arch, train=True,
                                             rngs={"dropout": rng})
    loss, parts = rnn_lm_loss(logits, targets, extras, ar_alpha=ar_alpha, tar_beta=tar_beta)
    parts = dict(parts, wpl=wpl_rnn_penalty(params, arch, wpl_state, wpl_hp, model.num_blocks))
    if proximal:  # the penalty is solved exactly after the step, not descended
      return loss + jax.lax.stop_gradient(parts["wpl"]), (new_hidden, parts, extras)
    return loss + parts["wpl"], (new_hidden, parts, extras)

  proximal = wpl_hp is not None and wpl_hp.proximal
  (loss, (new_hidden, parts, extras)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  params, opt_state, updates = _sgd_update(state, grads, lr, optimizer)
  if proximal:
    view = wpl_masks.rnn_monitored(params, wpl_hp.monitor)
    held = wpl_lib.proximal_step(wpl_state, view, wpl_masks.rnn_active_mask(arch, model.num_blocks, view), wpl_hp, lr)
    params = wpl_masks.rnn_write_back(params, held)
  metrics = {"shared/loss": loss, "shared/ce": parts["ce"], "shared/perplexity": jnp.exp(parts["ce"]),
             "shared/ar": parts["ar"], "shared/tar": parts["tar"], "shared/grad_norm": optax.tree.norm(grads),
             "shared/update_norm": optax.tree.norm(updates), "shared/param_norm": optax.tree.norm(params),
             "shared/max_hidden_norm": extras["max_hidden_norm"], "shared/clipped_fraction": extras["clipped_fraction"],
             "shared/lr": lr, "shared/params_finite": all_finite((params, opt_state))}
  if wpl_hp is not None:
    metrics["shared/wpl_penalty"] = parts["wpl"]
  return SharedState(params, opt_state, state.step + 1), new_hidden, metrics


def rnn_batch_ce(params: Any, inputs: jax.Array, targets: jax.Array, hidden: jax.Array, arch: jax.Array, *,
                 model: EnasRnn) -> tuple[jax.Array, jax.Array]:
  """(mean token cross-entropy, next hidden) of one window in evaluation mode (no dropout)."""
  logits, new_hidden, extras = model.apply({"params": params}, inputs, hidden, arch, train=False)
  return rnn_lm_loss(logits, targets, extras)[1]["ce"], new_hidden


def rnn_rewards(params: Any, inputs: jax.Array, targets: jax.Array, archs: jax.Array, *, model: EnasRnn,
                reward_c: float, ppl_square: bool) -> tuple[jax.Array, jax.Array]:
  """(rewards (K,), perplexities (K,)) of K architectures on one validation window, each from a zero hidden state.

  reward = reward_c / ppl (or / ppl^2). Evaluation mode: the reference scores in train mode (dropout on), a known
  defect we do not reproduce.
  """
  hidden = jnp.zeros((inputs.shape[1], model.hidden_size))
  ce = jax.vmap(lambda a: rnn_batch_ce(params, inputs, targets, hidden, a, model=model)[0])(archs)
  ppl = jnp.exp(ce)
  return reward_c / (ppl ** 2 if ppl_square else ppl), ppl


def rnn_reward_fn(shared_params: Any, batch: tuple[jax.Array, jax.Array], archs: jax.Array, *, model: EnasRnn,
                  bptt: int, reward_c: float, ppl_square: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Rewards of K architectures on the validation window `batch` = (tokens, start)."""
  inputs, targets = lm_window(batch[0], batch[1], bptt)
  rewards, ppl = rnn_rewards(shared_params, inputs, targets, archs, model=model, reward_c=reward_c,
                             ppl_square=ppl_square)
  return rewards, {"controller/valid_perplexity": ppl.mean()}


def rnn_score_fn(shared_params: Any, batch: tuple[jax.Array, jax.Array], archs: jax.Array, *, model: EnasRnn,
                 bptt: int) -> jax.Array:
  """Perplexity of K architectures on the validation window `batch` = (tokens, start), zero initial hidden."""
  inputs, targets = lm_window(batch[0], batch[1], bptt)
  return rnn_rewards(shared_params, inputs, targets, archs, model=model, reward_c=1.0, ppl_square=False)[1]


def controller_step(cstate: reinforce.ReinforceState, shared_params: Any, batch: Any, rng: jax.Array, *,
                    controller: ctl.Controller, optimizer: optax.GradientTransformation, decisions_to_arch: Callable,
                    decision_mask: Callable, reward_fn: Callable, num_samples: int, ema_decay: float,
                    entropy_coeff: float, entropy_mode: str) -> tuple[reinforce.ReinforceState, dict[str, jax.Array]]:
  """Samples `num_samples` architectures, rewards each with `reward_fn(shared_params, batch, archs)` and takes a
  REINFORCE step. Each architecture gets its own reward (the references share the last one across a policy batch).
  """
  sample = ctl.sample(controller, cstate.params, rng, num_samples)
  archs = jax.vmap(decisions_to_arch)(sample.decisions)
  rewards, extra = reward_fn(shared_params, batch, archs)
  mask = jax.vmap(decision_mask)(sample.decisions)
  cstate, metrics = reinforce.reinforce_step(cstate, sample.decisions, rewards, mask, controller=controller,
                                             optimizer=optimizer, ema_decay=ema_decay, entropy_coeff=entropy_coeff,
                                             entropy_mode=entropy_mode)
  metrics.update(extra)
  metrics["controller/params_finite"] = all_finite((cstate.params, cstate.opt_state, cstate.baseline))
  return cstate, metrics


def sample_archs(params: Any, rng: jax.Array, *, controller: ctl.Controller | None, num_choices: tuple[int, ...],
                 decisions_to_arch: Callable, num_samples: int) -> jax.Array:
  """`num_samples` architectures from the controller (or uniformly at random when `controller` is None)."""
  if controller is None:
    decisions = jax.vmap(lambda k: uniform_decisions(k, num_choices))(jax.random.split(rng, num_samples))
  else:
    decisions = ctl.sample(controller, params, rng, num_samples).decisions
  return jax.vmap(decisions_to_arch)(decisions)


def pick_best(archs: jax.Array, scores: jax.Array) -> tuple[np.ndarray, float, int]:
  """The highest-scoring architecture of a set: (arch, score, index). Ties go to the first."""
  scores = np.asarray(scores)
  if scores.ndim != 1 or len(scores) != len(archs) or len(scores) == 0:
    raise ValueError(f"need one score per architecture; got {scores.shape} scores for {len(archs)} architectures")
  best = int(np.argmax(scores))
  return np.asarray(archs[best]), float(scores[best]), best


def rnn_window_ce_sum(params: Any, data: jax.Array, start: jax.Array, num_valid: jax.Array, hidden: jax.Array,
                      arch: jax.Array, *, model: EnasRnn, bptt: int) -> tuple[jax.Array, jax.Array]:
  """(sum of token cross-entropies over the first `num_valid` time steps of the window at `start`, next hidden),
  evaluation mode. `data` must extend at least bptt + 1 steps past `start` (pad it)."""
  inputs, targets = lm_window(data, start, bptt)
  logits, new_hidden, _ = model.apply({"params": params}, inputs, hidden, arch, train=False)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  ce = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # (bptt, batch)
  return jnp.sum(ce * (jnp.arange(bptt) < num_valid)[:, None]), new_hidden


_window_ce_sum = jax.jit(rnn_window_ce_sum, static_argnames=("model", "bptt"))


def rnn_evaluate(params: Any, data: jax.Array, arch: jax.Array, *, model: EnasRnn, bptt: int) -> tuple[float, float]:
  """(mean cross-entropy, perplexity) over a whole time-major token array (num_steps, batch), hidden carried from
  zeros, every token weighted equally. Every window (the last one padded and masked) goes through one compiled
  function with a traced start, so splits of any length share that compilation."""
  steps = data.shape[0] - 1
  if steps < 1:
    raise ValueError(f"need at least 2 time steps to evaluate, got {data.shape[0]}")
  windows = -(-steps // bptt)
  data = jnp.asarray(data)
  padded = jnp.concatenate([data, jnp.zeros((windows * bptt + 1 - data.shape[0], data.shape[1]), data.dtype)])
  hidden = jnp.zeros((data.shape[1], model.hidden_size))
  arch = jnp.asarray(arch)
  sums = []
  for w in range(windows):
    ce, hidden = _window_ce_sum(params, padded, np.int32(w * bptt), np.int32(steps - w * bptt), hidden, arch,
                                model=model, bptt=bptt)
    sums.append(ce)
  mean = float(np.sum(jax.device_get(sums))) / (steps * data.shape[1])
  return mean, math.exp(min(mean, 700.0))


# ----------------------------------------------------------------------------------------------------------------
# Ablations of a derived RNN cell
# ----------------------------------------------------------------------------------------------------------------


def replace_activations(arch: Any, activation: int) -> np.ndarray:
  """The same topology with every active node's activation replaced by `activation`."""
  arch = np.array(arch, np.int32)
  arch[arch[:, 1] >= 0, 1] = activation
  return arch


def remove_node(arch: Any, node: int) -> np.ndarray:
  """The cell without `node` (> 0): its children read the removed node's parent; every other node keeps its id
  (and so its shared weights). The removed node's row becomes (-1, -1)."""
  arch = np.array(arch, np.int32)
  if not 0 < node < len(arch) or arch[node, 1] < 0:
    raise ValueError(f"node {node} is not an active non-input node of the cell (nodes 1..{len(arch) - 1})")
  parent = arch[node, 0]
  children = (arch[:, 1] >= 0) & (arch[:, 0] == node)
  children[0] = False
  arch[children, 0] = parent
  arch[node] = (-1, -1)
  return arch


# ----------------------------------------------------------------------------------------------------------------
# Micro-CNN
# ----------------------------------------------------------------------------------------------------------------


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]


def cnn_shared_step(state: SharedState, images: jax.Array, labels: jax.Array, index: jax.Array, arch: jax.Array,
                    rng: jax.Array, lr: jax.Array, wpl_state: wpl_lib.WPLState | None = None, *, model: EnasCnn,
                    optimizer: optax.GradientTransformation, pad: int, flip: bool, cutout: int,
                    wpl_hp: wpl_lib.WPLHyperParams | None = None) -> tuple[SharedState, dict[str, jax.Array]]:
  """One step of the shared CNN weights on the examples `index` (int32 (batch,)) of on-device data in [0, 1];
  with `wpl_hp`, plus the WPL penalty of `wpl_state` over the architecture's active edge ops (as rnn_shared_step)."""
  k_aug, k_drop = jax.random.split(rng)
  x = enas_cnn.normalize(enas_cnn.augment(k_aug, images[index], pad=pad, flip=flip, cutout=cutout))
  y = labels[index]

  def loss_fn(params):
    logits = model.apply({"params": params}, x, arch, train=True, rngs={"dropout": k_drop})
    wpl = wpl_cnn_penalty(params, arch, wpl_state, wpl_hp)
    return _cross_entropy(logits, y).mean() + wpl, (logits, wpl)

  (loss, (logits, wpl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  params, opt_state, updates = _sgd_update(state, grads, lr, optimizer)
  metrics = {"shared/loss": loss, "shared/accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
             "shared/grad_norm": optax.tree.norm(grads), "shared/update_norm": optax.tree.norm(updates),
             "shared/param_norm": optax.tree.norm(params), "shared/lr": lr,
             "shared/params_finite": all_finite((params, opt_state))}
  if wpl_hp is not None:
    metrics["shared/wpl_penalty"] = wpl
  return SharedState(params, opt_state, state.step + 1), metrics


def cnn_correct(params: Any, images: jax.Array, labels: jax.Array, arch: jax.Array, *, model: EnasCnn) -> jax.Array:
  """Per-example correctness (float (batch,)) in evaluation mode; images in [0, 1]."""
  logits = model.apply({"params": params}, enas_cnn.normalize(images), arch, train=False)
  return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def cnn_reward_fn(shared_params: Any, batch: tuple[jax.Array, jax.Array], archs: jax.Array, *, model: EnasCnn,
                  reward_c: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """reward_c * accuracy of K architectures on one validation batch (images, labels); architectures are scored
  one after the other (lax.map), so each computes only its own operations."""
  acc = jax.lax.map(lambda a: cnn_correct(shared_params, batch[0], batch[1], a, model=model).mean(), archs)
  return reward_c * acc, {"controller/valid_accuracy": acc.mean()}


def cnn_score_fn(shared_params: Any, batch: tuple[jax.Array, jax.Array], archs: jax.Array, *,
                 model: EnasCnn) -> jax.Array:
  """Accuracy of K architectures on one batch (images, labels), scored one after the other."""
  return jax.lax.map(lambda a: cnn_correct(shared_params, batch[0], batch[1], a, model=model).mean(), archs)


def cnn_evaluate(params: Any, images: jax.Array, labels: jax.Array, arch: jax.Array, *, model: EnasCnn,
                 batch_size: int) -> float:
  """Accuracy over a whole split in batches of `batch_size`. The last batch is filled up with the split's first
  examples (BatchNorm uses batch statistics, so every batch holds real images); only real examples count."""
  n = len(labels)
  batches = -(-n // batch_size)
  order = np.arange(batches * batch_size) % n
  correct = 0.0
  fn = _cnn_correct_jit
  for b in range(batches):
    idx = order[b * batch_size:(b + 1) * batch_size]
    c = np.asarray(fn(params, images[idx], labels[idx], arch, model=model))
    real = min(batch_size, n - b * batch_size)
    correct += float(c[:real].sum())
  return correct / n


_cnn_correct_jit = jax.jit(cnn_correct, static_argnames=("model",))
