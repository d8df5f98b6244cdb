"""The two-model demonstration of multi-model forgetting on MNIST, with and without WPL.

Model A, an MLP of 4 dense layers (784 -> h -> h -> h -> 10), is trained to convergence. Then model B, an MLP of 6
dense layers (784 -> h -> h -> h -> h -> h -> 10), whose first k layers (k in {1, 2, 3}) ARE A's first k layers
(the same arrays: training B moves them for A as well), is trained for `train_b.steps` iterations. Every
`train_b.eval_every` iterations both A and B are evaluated on the held-out split. Three runs per k:

  no WPL    B trained on its cross-entropy alone: A's accuracy falls as the shared layers drift.
  WPL       B's loss + alpha/2 * sum_shared F_A * (theta - theta_A*)^2, where F_A is A's Fisher on its own
            training data at the end of A's training (per-example, `importance.fisher_diagonal`) and theta_A* the
            shared weights A ended with (`wpl.state.penalty`).
  baselines A trained alone (its accuracy stays where its training ended) and B trained alone (fresh weights,
            nothing shared).

Both B runs of one k go through one compiled chunk function (the strength alpha is a traced argument, 0 for
"no WPL"); B alone is the k = 0 case. Outputs in the workdir: `two_model_k<k>.png` (one figure per k, as the WPL
paper's introductory example; `two_model_k<k>_a.png` zooms on A's curves), `two_model_k<k>.csv` (the curves),
`two_model_summary.csv` (per k: A's final accuracy and mean drop over B's training with/without WPL, B's final
accuracies), `metrics.jsonl` + TensorBoard scalars, and a
checkpoint of A's trained weights and finished curves under `checkpoints/` (a rerun resumes from it).

Data: MNIST from a `data` config group (`nas_forgetting.data.load_dataset`); offline, the 10k MNIST test split is
carved into a train and an evaluation split.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nas_forgetting import importance
from nas_forgetting.data import batching
from nas_forgetting.data import datasets
from nas_forgetting.errors import ConfigError
from nas_forgetting.io import checkpoint as ckpt_lib
from nas_forgetting.io import metrics as metrics_lib
from nas_forgetting.io import plots
from nas_forgetting.io import progress as progress_lib
from nas_forgetting.io import run as run_lib
from nas_forgetting.wpl import state as wpl

Layers = list  # a list of {"w": (in, out), "b": (out,)} dicts, input layer first

A_DEPTH = 4
B_DEPTH = 6
CURVES = ("a_no_wpl", "b_no_wpl", "a_wpl", "b_wpl", "a_alone", "b_alone")
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
  if config.optimizer == "adam":
    return optax.adam(config.learning_rate)
  if config.optimizer == "sgd":
    return optax.sgd(config.learning_rate, momentum=config.momentum or None)
  raise ConfigError(f"optimizer={config.optimizer!r}; expected 'adam' or 'sgd'")


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
  """One epoch of model A (scan over the epoch's batches); returns (layers, opt_state, mean loss)."""
  (layers, opt_state), losses = jax.lax.scan(
      lambda c, i: _a_step(c, i, images, labels, optimizer), (layers, opt_state), batch_indices)
  return layers, opt_state, losses.mean()


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
  the WPL and the no-WPL run.
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
             "ce": parts["ce"].mean(), "wpl": parts["wpl"].mean()}
  return shared, b_own, opt_state, metrics


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
  for _ in progress_lib.progress(range(config.train_a.epochs), desc="model A", unit="epoch"):
    data_key, sub = jax.random.split(data_key)
    idx = batching.epoch_batch_indices(sub, train[0].shape[0], config.train_a.batch_size)
    layers, opt_state, loss = train_a_epoch(layers, opt_state, idx, *train, optimizer=optimizer)
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


# ----------------------------------------------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------------------------------------------


def _validate(config: ml_collections.ConfigDict) -> None:
  bad = [k for k in config.shared_layers if not 1 <= int(k) <= A_DEPTH - 1]
  if bad or not config.shared_layers or len(set(config.shared_layers)) != len(config.shared_layers):
    raise ConfigError(f"shared_layers={list(config.shared_layers)}; expected a non-empty list of distinct values in "
                      f"1..{A_DEPTH - 1} (model A has {A_DEPTH} layers, the last is its classifier)")
  if config.train_b.eval_every < 1 or config.train_b.steps < 1:
    raise ConfigError(f"train_b.steps={config.train_b.steps}, train_b.eval_every={config.train_b.eval_every}; "
                      "expected both >= 1")
  if config.wpl.alpha_fisher < 0:
    raise ConfigError(f"wpl.alpha_fisher={config.wpl.alpha_fisher}; expected >= 0")
  if config.wpl.estimator not in wpl.FISHER_ESTIMATORS:
    raise ConfigError(f"wpl.estimator={config.wpl.estimator!r}; expected one of {', '.join(wpl.FISHER_ESTIMATORS)}")


def _fisher_report(k: int, fisher: Layers, config: ml_collections.ConfigDict) -> dict[str, float]:
  """Fisher statistics, and the stiffness lr * alpha * max F of the penalty under SGD (> 2 diverges: warned)."""
  leaves = jax.tree.leaves(fisher)
  f_max = float(max(jnp.max(f) for f in leaves))
  stiffness = config.train_b.learning_rate * config.wpl.alpha_fisher * f_max
  if config.train_b.optimizer == "sgd" and stiffness >= 2.0:
    logging.warning("k=%d: train_b.learning_rate * wpl.alpha_fisher * max Fisher = %.3g >= 2: plain gradient descent "
                    "on the WPL penalty diverges; lower wpl.alpha_fisher or train_b.learning_rate", k, stiffness)
  return {f"k{k}/fisher_mean": float(sum(jnp.sum(f) for f in leaves) / sum(f.size for f in leaves)),
          f"k{k}/fisher_max": f_max, f"k{k}/sgd_stiffness": stiffness}


def _forgetting_row(k: int, curves: dict[str, list[float]], a_alone: float) -> dict[str, float]:
  drop_no = a_alone - curves["a_no_wpl"][-1]
  drop_wpl = a_alone - curves["a_wpl"][-1]
  return {"k": k, "a_alone": a_alone, "a_final_no_wpl": curves["a_no_wpl"][-1], "a_final_wpl": curves["a_wpl"][-1],
          "a_mean_drop_no_wpl": a_alone - float(np.mean(curves["a_no_wpl"][1:])),
          "a_mean_drop_wpl": a_alone - float(np.mean(curves["a_wpl"][1:])),
          "a_drop_no_wpl": drop_no, "a_drop_wpl": drop_wpl,
          "forgetting_reduction": (1.0 - drop_wpl / drop_no) if drop_no > 0 else float("nan"),
          "b_final_no_wpl": curves["b_no_wpl"][-1], "b_final_wpl": curves["b_wpl"][-1],
          "b_final_alone": curves["b_alone"][-1]}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the demonstration for every k in `config.shared_layers`; returns per-k summaries (see module docstring)."""
  _validate(config)
  workdir_path = run_lib.prepare_workdir(workdir, config)
  splits = datasets.load_dataset(config.data)
  train = batching.to_device(splits.train)
  eval_ = batching.to_device(splits.test)
  num_inputs = int(np.prod(splits.train.images.shape[1:]))
  num_classes = splits.train.num_classes
  h = config.model.hidden
  rng = jax.random.key(config.seed)
  a_key, b_init_key, b_data_key, alone_key = jax.random.split(rng, 4)

  # The checkpoint (step = number of finished k's) holds A's trained weights and the curves of every finished k
  # (row k - 1 of `curves`, flagged in `finished`), whatever the order of `shared_layers`.
  checkpointer = ckpt_lib.Checkpointer(workdir_path / "checkpoints", max_to_keep=1)
  a_sizes = layer_sizes(A_DEPTH, num_inputs, h, num_classes)
  b_sizes = layer_sizes(B_DEPTH, num_inputs, h, num_classes)
  num_points = len(eval_iterations(config.train_b))
  ks = [int(k) for k in config.shared_layers]
  done: dict[int, np.ndarray] = {}
  latest = checkpointer.latest_step()
  saved = {"a": init_layers(a_key, a_sizes), "a_loss": np.zeros((), np.float32), "a_epochs": np.zeros((), np.int32),
           "curves": np.zeros((A_DEPTH - 1, len(CURVES), num_points), np.float32),
           "finished": np.zeros((A_DEPTH - 1,), bool)}
  if latest is not None:
    saved = checkpointer.restore(latest, saved)
    a, a_history = saved["a"], [float(saved["a_loss"])] * int(saved["a_epochs"])
    done = {k: np.asarray(saved["curves"][k - 1]) for k in ks if bool(saved["finished"][k - 1])}
  else:
    a, a_history = train_model_a(a_key, train, config, a_sizes)
    saved.update(a=a, a_loss=np.float32(a_history[-1]), a_epochs=np.int32(len(a_history)))
    checkpointer.save(0, saved)
  a_alone = float(accuracy(a, *eval_))

  summaries = {}
  iterations = eval_iterations(config.train_b)
  # Metrics of the finished k's were logged before their checkpoint: a resumed run logs only what is new.
  with metrics_lib.MetricsLogger(str(workdir_path)) as logger:
    if latest is None:
      logger.log(0, {"a/final_train_loss": a_history[-1], "a/eval_accuracy": a_alone, "a/epochs": len(a_history)})
    alone = None
    for k in ks:
      if k in done:
        curves = {name: [float(v) for v in done[k][i]] for i, name in enumerate(CURVES)}
      else:
        if alone is None:  # B alone (nothing shared): the same for every k
          alone = train_model_b(b_data_key, [], [], init_layers(alone_key, b_sizes), wpl.init_wpl_state([]), 0.0,
                                train, eval_, config, desc="B alone")
        shared0, a_own = a[:k], a[k:]
        b_own0 = init_layers(b_init_key, b_sizes)[k:]
        fisher = shared_fisher(a, k, *train, config)
        wpl_state = wpl.init_wpl_state(shared0)._replace(fisher=fisher)
        runs = {}
        for name, alpha in (("no_wpl", 0.0), ("wpl", config.wpl.alpha_fisher)):
          runs[name] = train_model_b(b_data_key, shared0, a_own, b_own0, wpl_state, alpha, train, eval_, config,
                                     desc=f"B k={k} {name}")
        curves = {"a_no_wpl": runs["no_wpl"]["a"], "b_no_wpl": runs["no_wpl"]["b"], "a_wpl": runs["wpl"]["a"],
                  "b_wpl": runs["wpl"]["b"], "a_alone": [a_alone] * len(iterations), "b_alone": alone["b"]}
        logger.log(k, _fisher_report(k, fisher, config))
        for i, it in enumerate(iterations):
          logger.log(it, {f"k{k}/{name}": curves[name][i] for name in CURVES})
      rows = [{"iteration": it, **{name: curves[name][i] for name in CURVES}} for i, it in enumerate(iterations)]
      metrics_lib.write_csv(workdir_path / f"two_model_k{k}.csv", rows, fieldnames=["iteration", *CURVES])
      _plot(workdir_path / f"two_model_k{k}.png", iterations, curves, k, config)
      summaries[k] = _forgetting_row(k, curves, a_alone)
      if k not in done:
        logger.log(config.train_b.steps, {f"k{k}/{key}": v for key, v in summaries[k].items() if key != "k"})
      if k not in done:
        saved["curves"] = np.asarray(saved["curves"]).copy()
        saved["curves"][k - 1] = np.asarray([curves[name] for name in CURVES], np.float32)
        saved["finished"] = np.asarray(saved["finished"]).copy()
        saved["finished"][k - 1] = True
        checkpointer.save(int(np.sum(saved["finished"])), saved)
    checkpointer.wait()
  metrics_lib.write_csv(workdir_path / "two_model_summary.csv", list(summaries.values()))
  return {"a_eval_accuracy": a_alone, "a_epochs": len(a_history),
          "per_k": {str(k): s for k, s in summaries.items()},
          "figures": [str(workdir_path / f"two_model_k{k}{suffix}.png") for k in summaries for suffix in ("", "_a")]}


def _plot(path: pathlib.Path, iterations, curves, k: int, config) -> None:
  """`path`: all six curves, the y range starting just below the lowest value after B's first evaluation (B's
  untrained start is cut off so that A's changes stay visible); `<stem>_a.png`: A's three curves alone."""
  label = {"a_no_wpl": "A, no WPL", "a_wpl": "A, WPL", "a_alone": "A alone", "b_no_wpl": "B, no WPL",
           "b_wpl": "B, WPL", "b_alone": "B alone"}
  order = ("a_no_wpl", "a_wpl", "a_alone", "b_no_wpl", "b_wpl", "b_alone")
  series = {label[name]: (iterations, curves[name]) for name in order}
  shown = [v for name in CURVES for v in curves[name][1:]]
  low = max(0.0, min(shown) - 0.02)
  title = f"Model B shares A's first {k} layer{'s' if k > 1 else ''} (alpha={config.wpl.alpha_fisher:g})"
  plots.line_plot(str(path), series, xlabel="training iterations of model B", ylabel="eval accuracy", title=title,
                  ylim=(low, min(1.0, max(shown) + 0.01)))
  a_series = {label[name]: (iterations, curves[name]) for name in ("a_no_wpl", "a_wpl", "a_alone")}
  plots.line_plot(str(path.with_name(path.stem + "_a.png")), a_series, xlabel="training iterations of model B",
                  ylabel="eval accuracy of model A", title=title)
