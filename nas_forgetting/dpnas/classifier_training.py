"""Training of the deep prior's linear classifier (or, with full training, of the whole net), entirely under jit.

Adam (lr from the config, L2 weight decay as PyTorch's `weight_decay`), batches of `batch_size` from a fresh seeded
permutation per epoch (the last partial batch is kept and masked, a batch of one is skipped as in the reference),
one `lax.scan` over epochs of `lax.scan`s over batches; after each epoch the validation and test accuracies, and
the variables of the first epoch with the best validation accuracy. Embeddings are zero-padded to a bucket width
and the classifier's first kernel with them (`pad_first_kernel`): zero features get zero gradients and Adam leaves
them at zero, so padding changes neither the initialisation nor training.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from nas_forgetting.numerics import all_finite


class TrainGeometry(NamedTuple):
  n_train: int
  num_batches: int  # batches per epoch (a final batch of one example is skipped)
  used: int  # examples used per epoch


def train_geometry(n_train: int, batch_size: int) -> TrainGeometry:
  full, rest = divmod(n_train, batch_size)
  if rest == 1:  # the reference skips mini-batches of size 1
    rest = 0
  return TrainGeometry(n_train, full + (1 if rest else 0), full * batch_size + rest)


def optimizer(config) -> optax.GradientTransformation:
  adam = optax.adam(config.learning_rate)
  if config.weight_decay:
    return optax.chain(optax.add_decayed_weights(config.weight_decay), adam)  # PyTorch Adam's (coupled) L2
  return adam


def _accuracy(apply_fn, variables, x, y, eval_batch_size: int) -> jax.Array:
  """Percent correct over a whole split, forward passes in chunks."""
  def predict(example):  # lax.map(batch_size=...) vmaps this over chunks of examples
    return jnp.argmax(apply_fn(variables, example[None], False, None)[0], axis=-1)
  predictions = jax.lax.map(predict, x, batch_size=min(eval_batch_size, x.shape[0]))
  return 100.0 * jnp.mean(predictions == y)


class TrainState(NamedTuple):
  """One seed's training state. `best` holds the variables {"params", "batch_stats"} of the first epoch with the
  highest validation accuracy so far, `best_val` that accuracy in percent (-1 before the first epoch)."""

  params: dict
  batch_stats: dict
  opt_state: optax.OptState
  best: dict
  best_val: jax.Array


def initial_train_state(params: dict, batch_stats: dict, tx: optax.GradientTransformation) -> TrainState:
  """The state before the first epoch."""
  return TrainState(params, batch_stats, tx.init(params), {"params": params, "batch_stats": batch_stats},
                    jnp.float32(-1.0))


def make_run_epochs(apply_fn, tx, config, geometry: TrainGeometry, num_epochs: int):
  """Per-seed function: `num_epochs` epochs from `first_epoch`; returns (TrainState, (accuracies, finite)): per epoch
  the (train, val, test) accuracies and two flags, every training loss of the epoch finite and the parameters
  (and BatchNorm statistics) finite at its end."""
  batch = config.batch_size
  slots = geometry.num_batches * batch

  def run(state, seed, x_tr, y_tr, x_va, y_va, x_te, y_te, first_epoch):
    key = jax.random.fold_in(jax.random.key(seed), 1)  # 0 = initialisation, 1 = training

    def epoch(state, e):
      ekey = jax.random.fold_in(key, e)
      perm = jax.random.permutation(ekey, geometry.n_train)
      index = jnp.zeros((slots,), jnp.int32).at[:geometry.used].set(perm[:geometry.used].astype(jnp.int32))
      mask = (jnp.arange(slots) < geometry.used).astype(jnp.float32)

      def step(carry, inputs):
        params, batch_stats, opt_state, correct, finite = carry
        b, bidx, bmask = inputs
        x, y = x_tr[bidx], y_tr[bidx]
        dkey = jax.random.fold_in(ekey, b)

        def loss_fn(params):
          logits, new_stats = apply_fn({"params": params, "batch_stats": batch_stats}, x, True, dkey)
          ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
          loss = jnp.sum(ce * bmask) / jnp.sum(bmask)
          return loss, (loss, logits, new_stats)

        grads, (loss, logits, new_stats) = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = correct + jnp.sum((jnp.argmax(logits, -1) == y) * bmask)
        return (params, new_stats, opt_state, correct, finite & jnp.isfinite(loss)), None

      inputs = (jnp.arange(geometry.num_batches), index.reshape(-1, batch), mask.reshape(-1, batch))
      (params, batch_stats, opt_state, correct, loss_ok), _ = jax.lax.scan(
          step, (state.params, state.batch_stats, state.opt_state, jnp.zeros((), jnp.float32), jnp.asarray(True)),
          inputs)
      variables = {"params": params, "batch_stats": batch_stats}
      val = _accuracy(apply_fn, variables, x_va, y_va, config.eval_batch_size)
      test = _accuracy(apply_fn, variables, x_te, y_te, config.eval_batch_size)
      better = val > state.best_val  # strict: the first epoch reaching the best accuracy is kept
      best = jax.tree.map(lambda new, old: jnp.where(better, new, old), variables, state.best)
      state = TrainState(params, batch_stats, opt_state, best, jnp.maximum(val, state.best_val))
      finite = jnp.stack([loss_ok, all_finite(variables)])  # read on the host once per evaluation
      return state, (jnp.stack([100.0 * correct / geometry.used, val, test]), finite)

    return jax.lax.scan(epoch, state, first_epoch + jnp.arange(num_epochs))

  return run


def module_apply(module):
  """apply(variables, x, train, dropout_key) -> (logits, batch_stats) for a Linen module with optional BatchNorm."""
  def apply(variables, x, train, key):
    rngs = {"dropout": key} if (train and key is not None) else None
    if train:
      logits, state = module.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
      return logits, state.get("batch_stats", {})
    return module.apply(variables, x, train=False), variables.get("batch_stats", {})

  def apply_logits(variables, x, train, key):
    return apply(variables, x, train, key) if train else apply(variables, x, False, key)[0]

  return apply_logits


def pad_first_kernel(params: dict, extra: int) -> dict:
  """Zero rows appended to the kernel that reads the embedding (the first Dense layer)."""
  if not extra:
    return params
  name = "Dense_0" if "Dense_0" in params else "logits"
  kernel = params[name]["kernel"]
  return {**params, name: {**params[name], "kernel": jnp.pad(kernel, ((0, extra), (0, 0)))}}


def cut_first_kernel(params: dict, width: int) -> dict:
  """Inverse of `pad_first_kernel` on seed-stacked params (kernel shape (seeds, padded width, out))."""
  name = "Dense_0" if "Dense_0" in params else "logits"
  return {**params, name: {**params[name], "kernel": params[name]["kernel"][:, :width]}}
