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
accuracies), `metrics.jsonl` + TensorBoard scalars, `summary.json` (written last), and a checkpoint of A's
trained weights and the finished curves under `checkpoints/` (one after A, one after each k).

Resume: a relaunch restores the checkpoint and trains only what is missing (A, then the unfinished k's). The
outputs are written from the checkpoint once every k is finished, the metrics from scratch (`MetricsLogger` with
purge_step 0, TensorBoard included), so a killed and resumed run leaves exactly the files of an uninterrupted one.
A relaunch that finds every k finished and `summary.json` written says so and writes nothing. "seconds" in
summary.json is the training time over all launches (carried in the checkpoint).

Divergence: A's epochs and B's chunks return their per-step losses and whether the parameters are finite; they are
read once per epoch / chunk, and a NaN or infinity stops the run with a `DivergenceError` naming the quantity, the
step and the model (and k).

Data: MNIST from a `data` config group (`nas_forgetting.data.load_dataset`); offline, the 10k MNIST test split is
carved into a train and an evaluation split.

Config: `nas_forgetting.wpl.config.default_config()` declares every field; `validate_config` checks every value.
The models and their training steps: `nas_forgetting.wpl.two_model_training`.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nas_forgetting import config_schema as cc
from nas_forgetting import numerics
from nas_forgetting.data import batching
from nas_forgetting.data import datasets
from nas_forgetting.errors import ConfigError
from nas_forgetting.io import checkpoint as ckpt_lib
from nas_forgetting.io import metrics as metrics_lib
from nas_forgetting.io import plots
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.report import print_result_block
from nas_forgetting.wpl import state as wpl
from nas_forgetting.wpl.two_model_training import (A_DEPTH, B_DEPTH, OPTIMIZERS, Layers, accuracy, eval_iterations,
                                                    init_layers, layer_sizes, shared_fisher, train_model_a,
                                                    train_model_b)

CURVES = ("a_no_wpl", "b_no_wpl", "a_wpl", "b_wpl", "a_alone", "b_alone")
FISHER_STATS = ("fisher_mean", "fisher_max", "sgd_stiffness")
SUMMARY_FILE = "summary.json"  # written last: its presence (with every k of the config) marks a finished run
# Fields a relaunch into an existing workdir may change: each k's results depend only on A (restored) and the seed,
# so more (or fewer) values of k reuse the finished ones exactly (tested).
RESUME_SAFE_FIELDS = ("shared_layers",)


# ----------------------------------------------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every value of a resolved two-model config before any work; ConfigError naming the field."""
  cc.integer(config, "seed", minimum=0)
  datasets.validate_data_config(config.data, "data")
  cc.integer(config, "model.hidden", minimum=1)
  layers = config.shared_layers
  if (isinstance(layers, str) or not layers or any(isinstance(k, bool) or not isinstance(k, int) for k in layers)
      or any(not 1 <= k <= A_DEPTH - 1 for k in layers) or len(set(layers)) != len(layers)):
    raise ConfigError(f"shared_layers={list(layers) if not isinstance(layers, str) else layers!r}; expected a "
                      f"non-empty list of distinct integers in 1..{A_DEPTH - 1} (model A has {A_DEPTH} layers, the "
                      "last is its classifier)")
  for group in ("train_a", "train_b"):
    cc.choice(config, f"{group}.optimizer", OPTIMIZERS)
    cc.number(config, f"{group}.learning_rate", above=0.0)
    cc.number(config, f"{group}.momentum", minimum=0.0, below=1.0)
    cc.integer(config, f"{group}.batch_size", minimum=1)
  cc.integer(config, "train_a.epochs", minimum=1)
  cc.number(config, "train_a.target_loss", minimum=0.0)
  cc.integer(config, "train_b.steps", minimum=1)
  cc.integer(config, "train_b.eval_every", minimum=1)
  cc.number(config, "wpl.alpha_fisher", minimum=0.0)
  cc.choice(config, "wpl.estimator", wpl.FISHER_ESTIMATORS)
  cc.integer(config, "wpl.fisher_num_examples", minimum=0)


def _fisher_stats(k: int, fisher: Layers, config: ml_collections.ConfigDict) -> np.ndarray:
  """float32 [mean F, max F, lr * alpha * max F] (the stiffness of the penalty under SGD: >= 2 diverges, warned)."""
  leaves = jax.tree.leaves(fisher)
  f_max = float(max(jnp.max(f) for f in leaves))
  stiffness = wpl.sgd_stiffness(fisher, config.wpl.alpha_fisher, config.train_b.learning_rate)
  if config.train_b.optimizer == "sgd" and stiffness >= 2.0:
    logging.warning("k=%d: train_b.learning_rate * wpl.alpha_fisher * max Fisher = %.3g >= 2: plain gradient descent "
                    "on the WPL penalty diverges; lower wpl.alpha_fisher or train_b.learning_rate", k, stiffness)
  stats = np.asarray([float(sum(jnp.sum(f) for f in leaves) / sum(f.size for f in leaves)), f_max, stiffness],
                     np.float32)
  numerics.check_finite(dict(zip(FISHER_STATS, stats)), context=f"model A's Fisher on its first {k} layers")
  return stats


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
  validate_config(config)
  workdir_path = pathlib.Path(workdir)
  workdir_path.mkdir(parents=True, exist_ok=True)
  splits = datasets.load_dataset(config.data)
  for group in ("train_a", "train_b"):
    batching.check_batch_size(len(splits.train.labels), config[group].batch_size,
                              what=f"the training split ({group}.batch_size)")
  train = batching.to_device(splits.train)
  eval_ = batching.to_device(splits.test)
  num_inputs = int(np.prod(splits.train.images.shape[1:]))
  num_classes = splits.train.num_classes
  h = config.model.hidden
  rng = jax.random.key(config.seed)
  a_key, b_init_key, b_data_key, alone_key = jax.random.split(rng, 4)
  t0 = time.time()

  # The checkpoint (step = number of finished k's) holds A's trained weights and, per finished k (row k - 1, flagged
  # in `finished`), its curves and Fisher statistics, whatever the order of `shared_layers`; and the seconds so far.
  checkpointer = ckpt_lib.Checkpointer(workdir_path / "checkpoints", max_to_keep=1)
  a_sizes = layer_sizes(A_DEPTH, num_inputs, h, num_classes)
  b_sizes = layer_sizes(B_DEPTH, num_inputs, h, num_classes)
  num_points = len(eval_iterations(config.train_b))
  ks = [int(k) for k in config.shared_layers]
  latest = checkpointer.latest_step()
  saved = {"a": init_layers(a_key, a_sizes), "a_loss": np.zeros((), np.float32), "a_epochs": np.zeros((), np.int32),
           "curves": np.zeros((A_DEPTH - 1, len(CURVES), num_points), np.float32),
           "fisher": np.zeros((A_DEPTH - 1, len(FISHER_STATS)), np.float32),
           "finished": np.zeros((A_DEPTH - 1,), bool), "seconds": np.float64(0.0)}
  if latest is not None:
    saved = checkpointer.restore(latest, saved)
  seconds_before = float(saved["seconds"])

  def save(step: int) -> None:
    saved["seconds"] = np.float64(seconds_before + time.time() - t0)
    checkpointer.save(step, saved)

  if latest is None:
    a, a_history = train_model_a(a_key, train, config, a_sizes)
    saved.update(a=a, a_loss=np.float32(a_history[-1]), a_epochs=np.int32(len(a_history)))
    save(0)
  a = saved["a"]
  a_alone = float(accuracy(a, *eval_))
  summary_path = workdir_path / SUMMARY_FILE
  finished = (all(bool(saved["finished"][k - 1]) for k in ks) and summary_path.exists()
              and json.loads(summary_path.read_text()).get("shared_layers") == ks)
  if finished:
    logging.info("the two-model run in %s is already finished (k = %s): nothing to do", workdir_path, ks)
  else:
    alone = None
    for k in ks:
      if bool(saved["finished"][k - 1]):
        continue
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
                "b_wpl": runs["wpl"]["b"], "a_alone": [a_alone] * num_points, "b_alone": alone["b"]}
      for key in ("curves", "fisher", "finished"):
        saved[key] = np.asarray(saved[key]).copy()
      saved["curves"][k - 1] = np.asarray([curves[name] for name in CURVES], np.float32)
      saved["fisher"][k - 1] = _fisher_stats(k, fisher, config)
      saved["finished"][k - 1] = True
      save(int(np.sum(saved["finished"])))
    checkpointer.wait()

  # Every output below is a function of the checkpoint: written whole, so a killed run rewrites it identically.
  iterations = eval_iterations(config.train_b)
  a_loss, a_epochs = float(saved["a_loss"]), int(saved["a_epochs"])
  all_curves = {k: {name: [float(v) for v in saved["curves"][k - 1][i]] for i, name in enumerate(CURVES)}
                for k in ks}
  summaries = {k: _forgetting_row(k, all_curves[k], a_alone) for k in ks}
  seconds = float(saved["seconds"])
  if not finished:
    for k in ks:
      rows = [{"iteration": it, **{name: all_curves[k][name][i] for name in CURVES}} for i, it in enumerate(iterations)]
      metrics_lib.write_csv(workdir_path / f"two_model_k{k}.csv", rows, fieldnames=["iteration", *CURVES])
      _plot(workdir_path / f"two_model_k{k}.png", iterations, all_curves[k], k, config)
    with metrics_lib.MetricsLogger(str(workdir_path), purge_step=0) as logger:
      logger.log(0, {"a/final_train_loss": a_loss, "a/eval_accuracy": a_alone, "a/epochs": a_epochs})
      for k in ks:
        logger.log(k, {f"k{k}/{name}": float(v) for name, v in zip(FISHER_STATS, saved["fisher"][k - 1])})
        for i, it in enumerate(iterations):
          logger.log(it, {f"k{k}/{name}": all_curves[k][name][i] for name in CURVES})
        logger.log(config.train_b.steps, {f"k{k}/{key}": v for key, v in summaries[k].items() if key != "k"})
    metrics_lib.write_csv(workdir_path / "two_model_summary.csv", list(summaries.values()))
    atomic_write_text(summary_path, json.dumps(
        {"shared_layers": ks, "a_eval_accuracy": a_alone, "a_epochs": a_epochs, "seconds": seconds,
         "per_k": {str(k): s for k, s in summaries.items()}}, indent=2) + "\n")
  rows = {"data": f"{config.data.name or config.data.source} ({len(splits.train.labels)} train / "
                  f"{len(splits.test.labels)} eval images)",
          "scenario": f"model B ({B_DEPTH} layers) shares model A's ({A_DEPTH} layers) first k layers, "
                      f"{config.train_b.steps} iterations of B, WPL alpha {config.wpl.alpha_fisher:g}",
          "A eval accuracy": f"{100 * a_alone:.2f} % after {a_epochs} epochs"}
  for k in ks:
    r = summaries[k]
    rows[f"k={k}: A mean drop no WPL / WPL"] = (f"{100 * r['a_mean_drop_no_wpl']:.2f} / "
                                                f"{100 * r['a_mean_drop_wpl']:.2f} points")
    rows[f"k={k}: B final no WPL / WPL"] = f"{100 * r['b_final_no_wpl']:.2f} / {100 * r['b_final_wpl']:.2f} %"
  rows["seconds (all launches)"] = f"{seconds:.1f}"
  print_result_block("WPL two-model demonstration", rows)
  return {"a_eval_accuracy": a_alone, "a_epochs": a_epochs, "already_finished": finished, "seconds": seconds,
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
