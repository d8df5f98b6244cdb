"""The continual-learning experiment: several methods over one task stream, compared.

`run(config, workdir) -> dict` loads the stream once, runs every method of `config.methods` in
`<workdir>/<method>/` (each resumable from its own checkpoints; see `runner`), then writes
`<workdir>/comparison.png` (average accuracy on the tasks seen so far, after each task, one line per method), then
`<workdir>/comparison.csv` (last: a relaunch that finds it and every method finished says so and does nothing), and
prints a result block naming the data and scenario, and the summary table (method, average accuracy, forgetting,
BWT, training seconds over all launches).

With `config.sweep.seeds` set, `run` runs every method over its grid of seeds x strengths in one compiled program
instead (`continual.sweep_report.run_sweep`: per-member accuracy matrices, mean +- std over seeds per strength, the best
strength per method on a validation split carved from the training data, a strength plot; resumable).

`continual.config.default_config()` declares every field; the files in `configs/` override what their setup
changes. `validate_config(config)` checks every value before any work (the launcher calls it before creating the workdir);
`RESUME_SAFE_FIELDS` lists the fields a relaunch into an existing workdir may change.
"""

from __future__ import annotations

import pathlib
from typing import Any

from absl import logging
import numpy as np

from nas_forgetting import config_schema as cc
from nas_forgetting import importance as imp
from nas_forgetting.continual import metrics as cm
from nas_forgetting.continual import sweep_report
from nas_forgetting.continual.methods import CHECKPOINT_EVERY, MAS_ACCUMULATIONS, METHODS, OPTIMIZERS, parse_method
from nas_forgetting.continual.runner import MethodRun
from nas_forgetting.data.datasets import validate_data_config
from nas_forgetting.data.tasks import KINDS, SCENARIOS, load_task_stream
from nas_forgetting.errors import ConfigError
from nas_forgetting.io import plots
from nas_forgetting.io.metrics import write_csv
from nas_forgetting.io.report import print_result_block
from nas_forgetting.models import MODEL_NAMES

# Fields a relaunch into an existing workdir may change: stopping after fewer or more epochs of one launch only
# changes where that launch stops (a resumed run ends with the numbers of an uninterrupted one).
RESUME_SAFE_FIELDS = ("train.stop_after_epochs",)


def validate_config(config) -> None:
  """Checks every value of a resolved continual config before any work; ConfigError naming the field."""
  cc.integer(config, "seed", minimum=0)
  methods = config.methods
  if isinstance(methods, str) or not methods:
    raise ConfigError(f"methods={methods!r}; expected a non-empty sequence of methods from {', '.join(METHODS)}")
  for m in methods:
    parse_method(m)
  if len(set(methods)) != len(methods):
    raise ConfigError(f"methods={tuple(methods)!r} repeats a method (each runs in its own folder <workdir>/<method>)")
  validate_data_config(config.data, "data")
  for key in config.data_sequence.keys():
    validate_data_config(config.data_sequence[key], f"data_sequence.{key}")
  if config.stream.kind == "sequence" and not config.data_sequence.keys():
    raise ConfigError("stream.kind='sequence' needs at least one data set in data_sequence (after data)")
  cc.choice(config, "stream.kind", KINDS)
  cc.choice(config, "stream.scenario", SCENARIOS)
  cc.integer(config, "stream.num_tasks", minimum=1 if config.stream.kind == "permuted" else 0)
  cc.integer(config, "stream.classes_per_task", minimum=1)
  cc.integers(config, "stream.class_order", minimum=0)
  cc.boolean(config, "stream.permute_first_task")
  cc.choice(config, "model.name", MODEL_NAMES)
  cc.integers(config, "model.hidden", minimum=1)
  cc.integers(config, "model.features", minimum=1, allow_empty=config.model.name != "convnet")
  cc.boolean(config, "model.batch_norm")
  cc.number(config, "model.width", above=0.0)
  cc.integer(config, "model.fc_units", minimum=1)
  cc.number(config, "model.dropout", minimum=0.0, below=1.0)
  if isinstance(config.model.frozen, str) or any(not isinstance(f, str) or not f for f in config.model.frozen):
    raise ConfigError(f"model.frozen={config.model.frozen!r}; expected a sequence of layer names")
  cc.choice(config, "train.optimizer", OPTIMIZERS)
  cc.number(config, "train.learning_rate", above=0.0)
  cc.number(config, "train.momentum", minimum=0.0, below=1.0)
  cc.integer(config, "train.epochs", minimum=1)
  cc.integer(config, "train.first_task_epochs", minimum=0)
  cc.integer(config, "train.batch_size", minimum=1)
  cc.integer(config, "train.eval_batch_size", minimum=1)
  cc.boolean(config, "train.reset_optimizer")
  cc.integer(config, "train.stop_after_epochs", minimum=0)
  for name in config.strength.keys():  # the '<method>@<strength>' form obeys the same rule (parse_method)
    cc.number(config, f"strength.{name}", minimum=0.0)
  cc.choice(config, "importance.fisher_estimator", imp.ESTIMATORS)
  cc.choice(config, "importance.mas_norm", imp.NORMS)
  cc.choice(config, "importance.mas_estimator", imp.MAS_ESTIMATORS)
  cc.choice(config, "importance.mas_accumulation", MAS_ACCUMULATIONS)
  cc.integer(config, "importance.mas_batch_size", minimum=0)
  if config.importance.mas_batch_size and config.importance.mas_estimator != "batch":
    raise ConfigError(f"importance.mas_batch_size={config.importance.mas_batch_size} applies to "
                      "importance.mas_estimator='batch' only (the per-example estimate does not depend on batches)")
  cc.number(config, "importance.online_ewc_gamma", minimum=0.0, maximum=1.0)
  cc.number(config, "importance.si_xi", above=0.0)
  cc.choice(config, "importance.path", imp.PATHS)
  cc.integer(config, "importance.chunk_size", minimum=1)
  cc.integer(config, "importance.num_examples", minimum=0)
  cc.integer(config, "checkpoint.max_to_keep", minimum=1)
  cc.choice(config, "checkpoint.every", CHECKPOINT_EVERY)
  _validate_sweep(config)
  if any(parse_method(m)[0] == "mas_local" for m in methods) and config.model.batch_norm:
    raise ConfigError("method 'mas_local' (local Hebbian MAS) needs model.batch_norm=False")


def _validate_sweep(config) -> None:
  """The `sweep` group: seeds distinct integers >= 0; strengths per penalised method distinct finite numbers >= 0,
  only with seeds, and not for a method that names its own strength ('ewc@1e4')."""
  seeds = cc.integers(config, "sweep.seeds", minimum=0)
  if len(set(seeds)) != len(seeds):
    raise ConfigError(f"sweep.seeds={seeds!r} repeats a seed")
  named = {parse_method(m)[0] for m in config.methods if parse_method(m)[1] is not None}
  for name in config.sweep.strengths.keys():
    path = f"sweep.strengths.{name}"
    if name not in METHODS or name in ("finetune", "joint"):
      raise ConfigError(f"{path}: {name!r} is not a method with a penalty strength")
    values = cc.get(config, path)
    if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)):
      raise ConfigError(f"{path}={values!r}; expected a sequence of strengths")
    for v in values:
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
        raise ConfigError(f"{path}={tuple(values)!r}: {v!r} is not a finite number >= 0")
    if len(set(values)) != len(values):
      raise ConfigError(f"{path}={tuple(values)!r} repeats a strength")
    if values and not seeds:
      raise ConfigError(f"{path}={tuple(values)!r} needs sweep.seeds (an empty sweep.seeds runs no sweep)")
    if values and name in named:
      raise ConfigError(f"{path}={tuple(values)!r} sweeps the strength of a method that names its own in methods "
                        f"({', '.join(m for m in config.methods if parse_method(m)[0] == name)})")
  if seeds and config.train.stop_after_epochs:
    raise ConfigError(f"train.stop_after_epochs={config.train.stop_after_epochs} stops single runs; a sweep "
                      "(sweep.seeds set) runs to its end (it resumes from its checkpoints when killed)")
  if seeds and config.checkpoint.every != "epoch":
    raise ConfigError(f"checkpoint.every={config.checkpoint.every!r} applies to single runs; a sweep (sweep.seeds "
                      "set) checkpoints after every epoch (use checkpoint.every='epoch')")
  cc.number(config, "sweep.validation_fraction", minimum=0.0, below=1.0)
  cc.integer(config, "sweep.chunk", minimum=0)
  cc.boolean(config, "sweep.shard")
  cc.integer(config, "sweep.members_at_once", minimum=0)
  cc.number(config, "sweep.memory_fraction", above=0.0, maximum=1.0)
  cc.integer(config, "sweep.cpu_memory_budget", minimum=1)


def data_description(config) -> tuple[str, str]:
  """(data, scenario) as the result block names them."""
  def one(d):
    name = d.name or (pathlib.Path(d.path).name if d.path else "") or (
        "font_digits" if d.source == "embedded" else d.source)
    sizes = f"{d.train_size or 'all'} train / {d.test_size or 'all'} test"
    return f"{name} ({d.source}, {sizes})"
  data = one(config.data)
  if config.stream.kind == "sequence":
    data = " then ".join([data] + [one(config.data_sequence[k]) for k in sorted(config.data_sequence.keys())])
  stream = config.stream
  if stream.kind == "permuted":
    kind = f"{stream.num_tasks} permuted tasks"
  elif stream.kind == "split":
    kind = f"split, {stream.num_tasks or 'all'} tasks of {stream.classes_per_task} classes"
  else:
    kind = "a sequence of data sets"
  scenario = {"task": "task-incremental (a head per task)", "domain": "domain-incremental (one head)",
              "class": "class-incremental (one head over all classes)"}[stream.scenario]
  return data, f"{kind}, {scenario}"


def load_tasks(config) -> list:
  """The config's task stream (one data set, or `data` followed by `data_sequence` for kind='sequence')."""
  if config.stream.kind == "sequence":
    data_configs = [config.data] + [config.data_sequence[k] for k in sorted(config.data_sequence.keys())]
    return load_task_stream(data_configs, config.stream, seed=config.seed)
  return load_task_stream(config.data, config.stream, seed=config.seed)


def format_table(rows: list[dict[str, Any]]) -> str:
  """The summary table as aligned text: method, average accuracy, forgetting, BWT (percent)."""
  width = max([12] + [len(r["method"]) for r in rows])
  header = f"{'method':<{width}} {'avg acc %':>10} {'forgetting %':>13} {'BWT %':>8} {'time s':>8}"
  lines = [header, "-" * len(header)]
  for r in rows:
    lines.append(f"{r['method']:<{width}} {100 * r['avg_accuracy']:>10.2f} {100 * r['forgetting']:>13.2f} "
                 f"{100 * r['bwt']:>8.2f} {r['seconds']:>8.1f}")
  return "\n".join(lines)


def run(config, workdir: str, *, max_traces: int | None = None) -> dict:
  """Every method of `config.methods` over the stream; returns {'methods': {name: summary}, 'stopped': bool}."""
  validate_config(config)
  methods = tuple(config.methods)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tasks = load_tasks(config)
  if config.sweep.seeds:
    return sweep_report.run_sweep(config, workdir, tasks, description=data_description(config), max_traces=max_traces)
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
  finished = all(r["already_finished"] for r in results.values()) and (workdir / "comparison.csv").exists()
  out["already_finished"] = finished
  if finished:
    logging.info("the run in %s is already finished (every method trained, outputs written): nothing to do", workdir)
  else:
    series = {}
    for m, r in results.items():
      acc = r["accuracy"]
      x = np.arange(1, acc.shape[0] + 1)
      series[m] = (x, np.array([cm.average_accuracy_after(acc, i) for i in range(acc.shape[0])]))
    plots.line_plot(workdir / "comparison.png", series, xlabel="tasks learned",
                    ylabel="average accuracy on tasks seen", title="Continual learning: method comparison")
    write_csv(workdir / "comparison.csv", rows, ["method", "avg_accuracy", "forgetting", "bwt", "fwt", "seconds"])
  data, scenario = data_description(config)
  best = max(rows, key=lambda r: r["avg_accuracy"])
  print_result_block(f"Continual learning: {', '.join(methods)}",
                     {"data": data, "scenario": scenario, "tasks": len(tasks),
                      "best average accuracy": f"{100 * best['avg_accuracy']:.2f} % ({best['method']})",
                      "outputs": str(workdir)})
  table = format_table(rows)
  print(table, flush=True)
  out["table"] = table
  return out
