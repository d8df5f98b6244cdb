"""The models and training of the two-model WPL demonstration (`nas_forgetting.wpl.two_model` runs it).

Model A (`A_DEPTH` dense layers) and model B (`B_DEPTH` dense layers) are plain lists of {"w", "b"} parameter dicts,
so that "B shares A's first k layers" is literally B's list starting with the same k dicts. A trains to convergence
epoch by epoch (`train_model_a`, one jitted scan per epoch); B trains in chunks of `train_b.eval_every` steps
(`train_model_b`, one jitted scan per chunk followed by A's and B's accuracy on the eval split) on its
cross-entropy plus alpha times the WPL penalty on the shared layers (`b_loss`; alpha, A's own layers and the WPL
state are traced arguments, so the WPL and no-WPL runs of one k share one compilation). `shared_fisher` is A's
per-example Fisher diagonal on the layers B shares. Each epoch / chunk returns its per-step losses and whether the
parameters are finite; `check_finite` raises a DivergenceError at the first non-finite step.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nas_forgetting import importance
from nas_forgetting import numerics
from nas_forgetting.data import batching
from nas_forgetting.errors import ConfigError
from nas_forgetting import progress as progress_lib
from nas_forgetting.wpl import state as wpl

Layers = list  # a list of {"w": (in, out), "b": (out,)} dicts, input layer first

A_DEPTH = 4
B_DEPTH = 6
OPTIMIZERS = ("adam", "sgd")
# The WPL penalty on B's shared layers: alpha is applied as a traced factor, so the hyper-parameters carry 1.
_UNIT_ALPHA = wpl.WPLHyperParams(alpha_fisher=1.0, alpha_decay=0.0)


# ----------------------------------------------------------------------------------------------------------------
# Models: plain dense stacks, so that "sharing k layers" is literally reusing k parameter dicts
# ----------------------------------------------------------------------------------------------------------------


def init_layers(rng: jax.Array, sizes: Sequence[int]) -> Layers:
  """Dense layers sizes[0] -> sizes[1] -> ... (LeCun-normal weights, zero biases)."""
  keys = jax.random.split(rng, len(sizes) - 1)
  init = jax.nn.initializers.lecun_normal()
  return [{"w": init(k, (m, n), jnp.float32), "b": jnp.zeros((n,), jnp.float32)}
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def mlp_apply(layers: Layers, x: jax.Array) -> jax.Array:
  """Logits of a ReLU MLP; x of shape (batch, ...) is flattened."""
  h = x.reshape(x.shape[0], -1)
  for i, layer in enumerate(layers):
    h = h @ layer["w"] + layer["b"]
    if i < len(layers) - 1:
      h = jax.nn.relu(h)
  return h


def layer_sizes(depth: int, num_inputs: int, hidden: int, num_classes: int) -> list[int]:
  return [num_inputs] + [hidden] * (depth - 1) + [num_classes]


def a_layers(shared: Layers, a_own: Layers) -> Layers:
  """Model A's layers: the shared ones first."""
  return list(shared) + list(a_own)


def b_layers(shared: Layers, b_own: Layers) -> Layers:
  """Model B's layers: the same shared parameter dicts first, then B's own."""
  return list(shared) + list(b_own)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimiser of a `train_a` / `train_b` group; equal settings give the same object (a static argument of the
  jitted steps, so a relaunch in the same process compiles nothing again)."""
  if config.optimizer not in OPTIMIZERS:
    raise ConfigError(f"optimizer={config.optimizer!r}; expected 'adam' or 'sgd'")
  return _optimizer(config.optimizer, float(config.learning_rate), float(config.momentum))


@functools.lru_cache(maxsize=32)
def _optimizer(name: str, learning_rate: float, momentum: float) -> optax.GradientTransformation:
  if name == "adam":
    return optax.adam(learning_rate)
  return optax.sgd(learning_rate, momentum=momentum or None)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(layers: Layers, images: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(mlp_apply(layers, images), -1) == labels)


def _a_step(carry, idx, images, labels, optimizer):
  layers, opt_state = carry
  loss, grads = jax.value_and_grad(lambda p: cross_entropy(mlp_apply(p, images[idx]), labels[idx]))(layers)
  updates, opt_state = optimizer.update(grads, opt_state, layers)
  return (optax.apply_updates(layers, updates), opt_state), loss


@functools.partial(jax.jit, static_argnames="optimizer")
def train_a_epoch(layers: Layers, opt_state, batch_indices: jax.Array, images: jax.Array, labels: jax.Array, *,
                  optimizer: optax.GradientTransformation):
  """One epoch of model A (scan over the epoch's batches); returns (layers, opt_state, mean loss, checks) with
  checks = {"loss": the per-step losses, "params_finite": a bool} for the host's divergence check."""
  (layers, opt_state), losses = jax.lax.scan(
      lambda c, i: _a_step(c, i, images, labels, optimizer), (layers, opt_state), batch_indices)
  return layers, opt_state, losses.mean(), {"loss": losses, "params_finite": numerics.all_finite(layers)}


def b_loss(shared: Layers, b_own: Layers, images: jax.Array, labels: jax.Array, wpl_state: wpl.WPLState,
           alpha: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """B's cross-entropy plus alpha times the WPL penalty on the shared layers (alpha = 0: no WPL)."""
  ce = cross_entropy(mlp_apply(b_layers(shared, b_own), images), labels)
  pen = alpha * wpl.penalty(wpl_state, shared, None, _UNIT_ALPHA) if shared else jnp.float32(0.0)
  return ce + pen, {"ce": ce, "wpl": pen}


@functools.partial(jax.jit, static_argnames="optimizer")
def train_b_chunk(shared: Layers, b_own: Layers, opt_state, batch_indices: jax.Array, a_own: Layers,
                  wpl_state: wpl.WPLState, alpha: jax.Array, train_images: jax.Array, train_labels: jax.Array,
                  eval_images: jax.Array, eval_labels: jax.Array, *, optimizer: optax.GradientTransformation):
  """`len(batch_indices)` steps of B (shared + own layers), then A's and B's accuracy on the eval split.

  A's own layers, the WPL state and alpha are arguments (never closed over): one compilation per k serves both
  the WPL and the no-WPL run. The metrics also hold `checks`: the per-step `ce` and `wpl` values and whether B's
  parameters are finite (`params_finite`), for the host's divergence check.
  """

  def step(carry, idx):
    shared, b_own, opt_state = carry
    (loss, parts), grads = jax.value_and_grad(b_loss, argnums=(0, 1), has_aux=True)(
        shared, b_own, train_images[idx], train_labels[idx], wpl_state, alpha)
    updates, opt_state = optimizer.update(grads, opt_state, (shared, b_own))
    shared, b_own = optax.apply_updates((shared, b_own), updates)
    return (shared, b_own, opt_state), parts

  (shared, b_own, opt_state), parts = jax.lax.scan(step, (shared, b_own, opt_state), batch_indices)
  metrics = {"a_accuracy": accuracy(a_layers(shared, a_own), eval_images, eval_labels),
             "b_accuracy": accuracy(b_layers(shared, b_own), eval_images, eval_labels),
             "ce": parts["ce"].mean(), "wpl": parts["wpl"].mean(),
             "checks": {"ce": parts["ce"], "wpl": parts["wpl"], "params_finite": numerics.all_finite((shared, b_own))}}
  return shared, b_own, opt_state, metrics


def check_finite(checks: dict[str, Any], *, names: dict[str, str], first_step: int, context: str) -> None:
  """DivergenceError at the earliest non-finite step of `checks` (per-step arrays renamed by `names`), or if the
  parameters are not finite at the end."""
  per_step = {names[k]: np.asarray(v) for k, v in checks.items() if k in names}
  bad = ~np.isfinite(np.stack(list(per_step.values())))
  if bad.any():
    i = int(np.argmax(bad.any(axis=0)))
    numerics.check_finite({k: v[i:i + 1] for k, v in per_step.items()}, context=context, first_step=first_step + i)
  numerics.check_finite({"the parameters": np.asarray(checks["params_finite"])}, context=f"the end of {context}")


def _batch_stream(rng: jax.Array, num_examples: int, batch_size: int, num_steps: int) -> jax.Array:
  """(num_steps, batch_size) indices: fresh permutations epoch after epoch, cut to num_steps."""
  chunks, total = [], 0
  while total < num_steps:
    rng, sub = jax.random.split(rng)
    idx = batching.epoch_batch_indices(sub, num_examples, batch_size)
    chunks.append(idx)
    total += idx.shape[0]
  return jnp.concatenate(chunks)[:num_steps]


def train_model_a(rng: jax.Array, train: tuple[jax.Array, jax.Array], config: ml_collections.ConfigDict,
                  sizes: Sequence[int]) -> tuple[Layers, list[float]]:
  """Model A to convergence: `train_a.epochs` epochs (early exit when the training loss < `train_a.target_loss`)."""
  init_key, data_key = jax.random.split(rng)
  layers = init_layers(init_key, sizes)
  optimizer = make_optimizer(config.train_a)
  opt_state = optimizer.init(layers)
  history = []
  for epoch in progress_lib.progress(range(config.train_a.epochs), desc="model A", unit="epoch"):
    data_key, sub = jax.random.split(data_key)
    idx = batching.epoch_batch_indices(sub, train[0].shape[0], config.train_a.batch_size)
    layers, opt_state, loss, checks = train_a_epoch(layers, opt_state, idx, *train, optimizer=optimizer)
    check_finite(checks, names={"loss": "model A's training loss"}, first_step=epoch * idx.shape[0],
                 context=f"epoch {epoch} of model A")
    history.append(float(loss))
    if history[-1] < config.train_a.target_loss:
      break
  return layers, history


def eval_iterations(train_b: ml_collections.ConfigDict) -> list[int]:
  """B's iterations at which A and B are evaluated: 0, eval_every, 2 eval_every, ..., steps."""
  return [0] + [min(start + train_b.eval_every, train_b.steps) for start in range(0, train_b.steps, train_b.eval_every)]


def train_model_b(rng: jax.Array, shared: Layers, a_own: Layers, b_own: Layers, wpl_state: wpl.WPLState,
                  alpha: float, train, eval_, config: ml_collections.ConfigDict, desc: str) -> dict[str, list[float]]:
  """B's training from the given layers; curves of A's and B's eval accuracy at iterations 0, eval_every, ..."""
  optimizer = make_optimizer(config.train_b)
  opt_state = optimizer.init((shared, b_own))
  cb = config.train_b
  stream = _batch_stream(rng, train[0].shape[0], cb.batch_size, cb.steps)
  a0 = float(accuracy(a_layers(shared, a_own), *eval_)) if shared or a_own else float("nan")
  curves = {"a": [a0], "b": [float(accuracy(b_layers(shared, b_own), *eval_))]}
  alpha = jnp.float32(alpha)
  for start in progress_lib.progress(range(0, cb.steps, cb.eval_every), desc=desc, unit="chunk"):
    shared, b_own, opt_state, m = train_b_chunk(shared, b_own, opt_state, stream[start:start + cb.eval_every],
                                                a_own, wpl_state, alpha, *train, *eval_, optimizer=optimizer)
    check_finite(m["checks"], names={"ce": "model B's cross-entropy", "wpl": "model B's WPL penalty"},
                 first_step=start, context=f"model B ({desc}), iterations {start}..{start + cb.eval_every - 1}")
    curves["a"].append(float(m["a_accuracy"]))
    curves["b"].append(float(m["b_accuracy"]))
  curves["shared"] = shared
  return curves


def shared_fisher(a: Layers, k: int, images: jax.Array, labels: jax.Array, config: ml_collections.ConfigDict):
  """A's per-example Fisher diagonal for its first k layers (the ones B will share), on A's training data.

  Taken over all of A's layers with the others masked off, so `mlp_apply` (one function object) serves every k.
  """
  n = images.shape[0] if config.wpl.fisher_num_examples <= 0 else min(config.wpl.fisher_num_examples, images.shape[0])
  mask = [jax.tree.map(lambda _: i < k, layer) for i, layer in enumerate(a)]
  fisher = importance.fisher_diagonal(mlp_apply, a, images[:n], labels[:n], estimator=config.wpl.estimator,
                                      rng=jax.random.key(config.seed), mask=mask)
  return fisher[:k]
