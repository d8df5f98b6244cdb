"""The ENAS controller: an LSTM policy over architecture decisions (sampling and log-probabilities).

The controller samples a sequence of decisions (see `nas_forgetting.enas.search_space`): at step i it runs one LSTM
cell step (gates in the order input, forget, cell, output), maps the hidden state through decoder i, divides the
logits by `temperature` and, when `tanh_c > 0`, squashes them to `tanh_c * tanh(logits)`. Options of a decision
beyond its `num_choices[i]` are masked out. The reference's derive mode samples without the squashing (logits /
temperature only): the same parameters under `controller.clone(tanh_c=0.0)` (experiment option
`controller.derive_reference_logits`). The input of step 0 is zeros; the input of step i > 0 is the embedding
of decision i-1's choice (one row per (decision, choice), so rows are never shared between decisions: the
reference shares rows between positions through a token offset, which is a quirk, not a feature).

Parameters start uniform in +-`init_range` (decoder biases at zero), as in the reference. Sampling is one pure
function of (params, rng); many architectures are sampled at once with `jax.vmap` (`sample`). `evaluate`
re-evaluates the log-probabilities of given decisions (teacher forcing), so sampling itself carries no gradient; the
REINFORCE update that trains the controller is `nas_forgetting.enas.reinforce`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
