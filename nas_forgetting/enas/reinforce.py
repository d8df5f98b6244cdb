"""REINFORCE for the ENAS controller: the training state, the optimizer and one policy-gradient update.

The controller itself (the Flax LSTM policy, sampling and the log-probabilities of given decisions) is
`nas_forgetting.models.controller`; this module trains it. `nas_forgetting.enas.trainer.controller_step` samples
architectures, rewards them with the shared weights and calls `reinforce_step`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nas_forgetting.models.controller import Controller, evaluate


class ReinforceState(NamedTuple):
  params: Any
  opt_state: Any
  baseline: jax.Array  # (D,) exponential moving average of the per-decision reward
  baseline_ready: jax.Array  # bool: False until the first update sets the baseline to the first reward
  step: jax.Array  # int32


def controller_optimizer(learning_rate: float, grad_clip: float = 0.0) -> optax.GradientTransformation:
  """Adam, optionally after a global-norm clip (`grad_clip` 0 = off)."""
  adam = optax.adam(learning_rate)
  return optax.chain(optax.clip_by_global_norm(grad_clip), adam) if grad_clip > 0 else adam


def init_reinforce(controller: Controller, params: Any, optimizer: optax.GradientTransformation) -> ReinforceState:
  d = len(controller.num_choices)
  return ReinforceState(params, optimizer.init(params), jnp.zeros((d,)), jnp.array(False), jnp.array(0, jnp.int32))


def reinforce_step(state: ReinforceState, decisions: jax.Array, rewards: jax.Array, mask: jax.Array, *,
                   controller: Controller, optimizer: optax.GradientTransformation, ema_decay: float,
                   entropy_coeff: float, entropy_mode: str) -> tuple[ReinforceState, dict[str, jax.Array]]:
  """One REINFORCE update from a batch of B architectures, each with its own reward.

  decisions: int32 (B, D); rewards: (B,) (e.g. c/ppl or c*accuracy); mask: bool (B, D), the decisions that shape
  the architecture (others carry neither log-probability nor entropy).
  entropy_mode 'reward' (reference default): the per-decision reward is R + entropy_coeff * H_i (H not
  differentiated); 'regularizer': the reward is R for every decision and -entropy_coeff * H is added to the loss.
  Baseline (as the reference): b <- ema_decay * b + (1 - ema_decay) * mean_batch(R_i), the first update sets
  b to the first rewards; advantage = R_i - b (after the update). Loss = -mean_batch sum_i log pi_i * adv_i.
  """
  if entropy_mode not in ("reward", "regularizer"):
    raise ValueError(f"entropy_mode={entropy_mode!r}; expected 'reward' or 'regularizer'")
  mask = mask.astype(jnp.float32)

  def loss_fn(params):
    log_probs, entropies = evaluate(controller, params, decisions)
    log_probs, entropies = log_probs * mask, entropies * mask
    per_decision = rewards[:, None] * mask
    if entropy_mode == "reward":
      per_decision = per_decision + entropy_coeff * jax.lax.stop_gradient(entropies)
    batch_mean = per_decision.mean(0)
    baseline = jnp.where(state.baseline_ready, ema_decay * state.baseline + (1 - ema_decay) * batch_mean, batch_mean)
    adv = jax.lax.stop_gradient(per_decision - baseline[None]) * mask
    loss = -(log_probs * adv).sum(-1).mean()
    entropy = entropies.sum(-1).mean()
    if entropy_mode == "regularizer":
      loss = loss - entropy_coeff * entropy
    return loss, (baseline, adv, entropy, log_probs)

  (loss, (baseline, adv, entropy, log_probs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"controller/loss": loss, "controller/reward": rewards.mean(), "controller/entropy": entropy,
             "controller/advantage": (adv.sum(-1) / jnp.maximum(mask.sum(-1), 1)).mean(),
             "controller/baseline": (baseline * mask.mean(0)).sum() / jnp.maximum(mask.mean(0).sum(), 1e-9),
             "controller/log_prob": log_probs.sum(-1).mean(), "controller/grad_norm": optax.tree.norm(grads)}
  return ReinforceState(params, opt_state, baseline, jnp.array(True), state.step + 1), metrics
