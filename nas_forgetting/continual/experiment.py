"""The continual-learning experiment: several methods over one task stream, compared.

`run(config, workdir) -> dict` loads the stream once, runs every method of `config.methods` in
`<workdir>/<method>/` (each resumable from its own checkpoints; see `runner`), then writes
`<workdir>/comparison.csv`, `<workdir>/comparison.png` (average accuracy on the tasks seen so far, after each
task, one line per method) and prints the summary table (method, average accuracy, forgetting, BWT).

`default_config()` declares every field; the files in `configs/` override what their setup changes.
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections
import numpy as np

from nas_forgetting.continual import metrics as cm
from nas_forgetting.continual.runner import METHODS, MethodRun, check_method
from nas_forgetting.data.datasets import default_data_config
from nas_forgetting.data.tasks import default_stream_config, load_task_stream
from nas_forgetting.errors import ConfigError
from nas_forgetting.models import default_model_config


def default_config() -> ml_collections.ConfigDict:
  """Every field of the continual experiment, with its meaning."""
  c = ml_collections.ConfigDict()
  c.experiment = "continual"  # dispatch key of launch.py
  c.seed = 0  # seeds the stream, the initialisation, the batch order and importance sampling
  c.methods = ("finetune", "ewc", "mas")  # run in order, each in <workdir>/<method>/; see runner.METHODS
  c.data = default_data_config()  # the data set (permuted/split streams) or the first data set (sequence)
  # stream.kind='sequence': the data sets after `data`, in key order (e.g. {'d1_fashion': <data config>})
  c.data_sequence = ml_collections.ConfigDict()
  c.stream = default_stream_config()  # task stream: kind, num_tasks, classes_per_task, class_order, scenario
  c.model = default_model_config()  # network; one head per task when stream.scenario == 'task'
  c.train = ml_collections.ConfigDict()
  c.train.optimizer = "sgd"  # 'sgd' | 'momentum' | 'adam'
  c.train.learning_rate = 0.01  # constant learning rate
  c.train.momentum = 0.9  # optimizer='momentum' only
  c.train.epochs = 1  # epochs per task
  c.train.first_task_epochs = 0  # epochs of the first task (0 = train.epochs; the MAS demo uses 10 then 20)
  c.train.batch_size = 64  # training batch size (incomplete last batch dropped; a task smaller than it fails)
  c.train.eval_batch_size = 500  # evaluation chunk size (memory only; results do not depend on it)
  c.train.reset_optimizer = True  # fresh optimiser state at each task start (the references build a new one)
  c.train.stop_after_epochs = 0  # > 0: stop each method after this many epochs of this call (resume tests)
  c.strength = ml_collections.ConfigDict()  # penalty strength lambda per method (finetune/joint have none)
  c.strength.l2 = 1.0  # lambda/2 sum (theta - anchor)^2
  c.strength.ewc = 1000.0  # lambda/2 sum_t F_t (theta - anchor_t)^2 (one pair per earlier task)
  c.strength.online_ewc = 1000.0  # lambda/2 sum F* (theta - anchor)^2, F* <- gamma F* + F_t
  c.strength.mas = 1.0  # lambda sum Omega (theta - anchor)^2 (the MAS reference's reg_lambda)
  c.strength.si = 1.0  # c sum Omega (theta - anchor)^2 (Zenke et al.)
  c.importance = ml_collections.ConfigDict()
  c.importance.fisher_estimator = "exact"  # 'exact' | 'sampled' | 'empirical' | 'batch' (see importance.fisher)
  c.importance.mas_norm = "l2"  # MAS output norm: 'l2' (squared L2, the paper) | 'l1'
  c.importance.mas_estimator = "per_example"  # 'per_example' | 'batch' (|grad of batch-summed norm|, reference)
  c.importance.mas_accumulation = "sum"  # 'sum' | 'replace' | 'recompute_all' (MAS_sequence)
  c.importance.online_ewc_gamma = 1.0  # online EWC decay of the running Fisher
  c.importance.si_xi = 0.1  # SI damping xi in Omega += w / (Delta^2 + xi)
  c.importance.path = "per_layer"  # 'per_layer' (fast, Dense/Conv) | 'vmap' (any model); same numbers
  c.importance.chunk_size = 256  # examples per importance chunk (memory only)
  c.importance.num_examples = 0  # training examples of the task used for importance (0 = all; seeded subset)
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.max_to_keep = 2  # checkpoints kept per method (one is written after every epoch)
  return c


def load_tasks(config) -> list:
  """The config's task stream (one data set, or `data` followed by `data_sequence` for kind='sequence')."""
  if config.stream.kind == "sequence":
    data_configs = [config.data] + [config.data_sequence[k] for k in sorted(config.data_sequence.keys())]
    return load_task_stream(data_configs, config.stream, seed=config.seed)
  return load_task_stream(config.data, config.stream, seed=config.seed)


def format_table(rows: list[dict[str, Any]]) -> str:
  """The summary table as aligned text: method, average accuracy, forgetting, BWT (percent)."""
  header = f"{'method':<12} {'avg acc %':>10} {'forgetting %':>13} {'BWT %':>8} {'time s':>8}"
  lines = [header, "-" * len(header)]
  for r in rows:
    lines.append(f"{r['method']:<12} {100 * r['avg_accuracy']:>10.2f} {100 * r['forgetting']:>13.2f} "
                 f"{100 * r['bwt']:>8.2f} {r['seconds']:>8.1f}")
  return "\n".join(lines)


def run(config, workdir: str, *, max_traces: int | None = None) -> dict:
  """Every method of `config.methods` over the stream; returns {'methods': {name: summary}, 'stopped': bool}."""
  from nas_forgetting.io import plots
  from nas_forgetting.io.metrics import write_csv

  methods = tuple(config.methods)
  if not methods:
    raise ConfigError(f"config.methods is empty; choose from {', '.join(METHODS)}")
  for m in methods:
    check_method(m)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tasks = load_tasks(config)
  results, rows, stopped = {}, [], False
  for method in methods:
    result = MethodRun(config, tasks, method, workdir / method, max_traces=max_traces).run()
    results[method] = result
    if result["stopped"]:
      stopped = True
      continue
    rows.append({"method": method, **cm.summary(result["accuracy"], result["baseline"]),
                 "seconds": result["seconds"]})
  out = {"methods": {m: {k: v for k, v in r.items() if k not in ("params", "anchors")} for m, r in results.items()},
         "stopped": stopped, "summary": rows, "task_names": [t.name for t in tasks]}
  if stopped:
    return out
  write_csv(workdir / "comparison.csv", rows, ["method", "avg_accuracy", "forgetting", "bwt", "fwt", "seconds"])
  series = {}
  for m, r in results.items():
    acc = r["accuracy"]
    x = np.arange(1, acc.shape[0] + 1)
    series[m] = (x, np.array([cm.average_accuracy_after(acc, i) for i in range(acc.shape[0])]))
  plots.line_plot(workdir / "comparison.png", series, xlabel="tasks learned",
                  ylabel="average accuracy on tasks seen", title="Continual learning: method comparison")
  table = format_table(rows)
  print(table, flush=True)
  out["table"] = table
  return out
