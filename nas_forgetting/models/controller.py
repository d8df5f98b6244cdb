"""The ENAS controller (an LSTM policy over architecture decisions) and its REINFORCE update.

The controller samples a sequence of decisions (see `nas_forgetting.enas.search_space`): at step i it runs one LSTM
cell step (gates in the order input, forget, cell, output), maps the hidden state through decoder i, divides the
logits by `temperature` and, when `tanh_c > 0`, squashes them to `tanh_c * tanh(logits)`. Options of a decision
beyond its `num_choices[i]` are masked out. The reference's derive mode samples without the squashing (logits /
temperature only): the same parameters under `controller.clone(tanh_c=0.0)` (experiment option
`controller.derive_reference_logits`). The input of step 0 is zeros; the input of step i > 0 is the embedding
of decision i-1's choice (one row per (decision, choice), so rows are never shared between decisions: the
reference shares rows between positions through a token offset, which is a quirk, not a feature).

Parameters start uniform in +-`init_range` (decoder biases at zero), as in the reference. Sampling is one pure
function of (params, rng); many architectures are sampled at once with `jax.vmap` (`sample`). The REINFORCE loss
re-evaluates the log-probabilities of given decisions (teacher forcing), so sampling itself carries no gradient.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_forgetting.models.initializers import symmetric_uniform

_NEG = -1e9  # logit of options a decision does not have (exp underflows to exactly 0)


class Controller(nn.Module):
  """LSTM policy. `num_choices[i]` options at decision i."""

  num_choices: Sequence[int]
  hidden_size: int = 100
  temperature: float = 5.0
  tanh_c: float = 2.5
  init_range: float = 0.1

  def setup(self):
    d, h, m = len(self.num_choices), self.hidden_size, max(self.num_choices)
    init = symmetric_uniform(self.init_range)
    self.embedding = self.param("embedding", init, (int(sum(self.num_choices)), h))
    self.w_input = self.param("w_input", init, (h, 4 * h))
    self.w_hidden = self.param("w_hidden", init, (h, 4 * h))
    self.b_lstm = self.param("b_lstm", init, (4 * h,))
    self.decoder_kernel = self.param("decoder_kernel", init, (d, h, m))
    self.decoder_bias = self.param("decoder_bias", nn.initializers.zeros, (d, m))

  def _run(self, rng, decisions):
    """Samples (rng given) or teacher-forces (decisions given) one decision sequence, as one `lax.scan` over the
    decisions: the compiled size does not grow with their number."""
    d, m = len(self.num_choices), max(self.num_choices)
    # Parameters are read here, outside the scan body (setup creates them on first access).
    w_input, w_hidden, b_lstm, embedding = self.w_input, self.w_hidden, self.b_lstm, self.embedding
    kernel, bias = self.decoder_kernel, self.decoder_bias
    offsets = jnp.asarray(np.concatenate([[0], np.cumsum(self.num_choices)[:-1]]), jnp.int32)
    valid = jnp.asarray(np.arange(m)[None, :] < np.asarray(self.num_choices)[:, None])  # (D, M)
    sampling = decisions is None
    forced = jnp.zeros((d,), jnp.int32) if sampling else jnp.asarray(decisions, jnp.int32)

    def step(carry, inputs):
      h, c, x, key = carry
      i, forced_i = inputs
      gates = x @ w_input + h @ w_hidden + b_lstm  # LSTM gates in the order input, forget, cell, output
      g_i, g_f, g_g, g_o = jnp.split(gates, 4, axis=-1)
      c = jax.nn.sigmoid(g_f) * c + jax.nn.sigmoid(g_i) * jnp.tanh(g_g)
      h = jax.nn.sigmoid(g_o) * jnp.tanh(c)
      logits = (h @ kernel[i] + bias[i]) / self.temperature
      if self.tanh_c > 0:
        logits = self.tanh_c * jnp.tanh(logits)
      logp = jax.nn.log_softmax(jnp.where(valid[i], logits, _NEG))
      if sampling:
        key, sub = jax.random.split(key)
        choice = jax.random.categorical(sub, logp).astype(jnp.int32)
      else:
        choice = forced_i
      out = (choice, logp[choice], -jnp.sum(jnp.exp(logp) * logp))
      return (h, c, embedding[offsets[i] + choice], key), out

    zeros = jnp.zeros((self.hidden_size,))
    key = rng if sampling else jax.random.key(0)  # unused when teacher-forcing
    _, (chosen, log_probs, entropies) = jax.lax.scan(step, (zeros, zeros, zeros, key),
                                                     (jnp.arange(d), forced))
    return chosen, log_probs, entropies

  def sample(self, rng: jax.Array):
    """One architecture: (decisions int32 (D,), log_probs (D,), entropies (D,))."""
    return self._run(rng, None)

  def evaluate(self, decisions: jax.Array):
    """(log_probs (D,), entropies (D,)) of given decisions."""
    _, log_probs, entropies = self._run(None, decisions)
    return log_probs, entropies

  def __call__(self, decisions: jax.Array):
    return self.evaluate(decisions)


class ControllerSample(NamedTuple):
  decisions: jax.Array  # int32 (B, D)
  log_probs: jax.Array  # (B, D)
  entropies: jax.Array  # (B, D)


def init_controller(controller: Controller, rng: jax.Array) -> Any:
  """Controller parameters."""
  return _init_fn(controller)(rng)


@functools.lru_cache(maxsize=None)
def _init_fn(controller: Controller):
  """Jitted initialisation, compiled once per controller configuration."""
  return jax.jit(lambda rng: controller.init(rng, jnp.zeros((len(controller.num_choices),), jnp.int32))["params"])


def sample(controller: Controller, params: Any, rng: jax.Array, num_samples: int) -> ControllerSample:
  """`num_samples` independent decision sequences at once (vmapped over keys)."""
  keys = jax.random.split(rng, num_samples)
  fn = lambda k: controller.apply({"params": params}, k, method=Controller.sample)
  return ControllerSample(*jax.vmap(fn)(keys))


def evaluate(controller: Controller, params: Any, decisions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(log_probs, entropies), each (B, D), of a batch of decision sequences (B, D)."""
  fn = lambda d: controller.apply({"params": params}, d, method=Controller.evaluate)
  return jax.vmap(fn)(decisions)


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
