"""A continual-learning sweep of every method of a config, and what it writes and prints.

`run_sweep(config, workdir, tasks, ...)` trains each method of `config.methods` over its grid of (seed, strength)
members (`nas_forgetting.continual.sweep.run_method`: the members in one compiled program, chunk after chunk, each
chunk checkpointing after every epoch), on training splits less a seeded validation share
(`sweep.split_validation`), and reports them: every member's accuracy matrix, per-member average accuracy,
forgetting and BWT, their mean and standard deviation over seeds per strength (`summarize`), the strength of each
method with the best mean validation accuracy (`best_strengths`), a plot against strength (`strength_plot`) and the
table as text (`format_table`).
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from nas_forgetting.continual import metrics as cm
from nas_forgetting.continual.methods import parse_method
from nas_forgetting.continual.sweep import run_method, split_validation
from nas_forgetting.data.tasks import Task
from nas_forgetting.io import plots
from nas_forgetting.io.atomic import atomic_writer
from nas_forgetting.io.metrics import write_csv
from nas_forgetting.io.report import print_result_block


def summarize(method: str, result: dict) -> tuple[list[dict], list[dict]]:
  """(per-member rows, per-strength rows): average accuracy, forgetting and BWT of each member (test split), and
  their mean and standard deviation over seeds per strength with the validation average accuracy's mean."""
  members = []
  for i, (seed, strength) in enumerate(result["members"]):
    acc = result["accuracy"][i]
    row = {"method": method, "seed": seed, "strength": strength, **cm.summary(acc, result["baseline"][i])}
    row["validation_avg_accuracy"] = float(cm.average_accuracy(result["validation"][i]))
    members.append(row)
  table = []
  for strength in dict.fromkeys(s for _, s in result["members"]):
    rows = [r for r in members if r["strength"] == strength]
    entry = {"method": method, "strength": strength, "seeds": len(rows)}
    for key in ("avg_accuracy", "forgetting", "bwt", "validation_avg_accuracy"):
      values = np.array([r[key] for r in rows], np.float64)
      entry[f"{key}_mean"], entry[f"{key}_std"] = float(values.mean()), float(values.std(ddof=0))
    table.append(entry)
  return members, table


def best_strengths(table: Sequence[dict]) -> dict[str, float]:
  """Per penalised method, the strength of the highest mean validation average accuracy (first on ties)."""
  best: dict[str, dict] = {}
  for row in table:
    if parse_method(row["method"])[0] in ("finetune", "joint"):
      continue
    if row["method"] not in best or row["validation_avg_accuracy_mean"] > best[row["method"]][
        "validation_avg_accuracy_mean"]:
      best[row["method"]] = row
  return {m: r["strength"] for m, r in best.items()}


def strength_plot(path, table: Sequence[dict]) -> None:
  """Average accuracy and forgetting (test, %) against strength (log x), one line per penalised method with a band
  of +- one standard deviation over seeds."""

  fig = plots.new_figure((10.0, 4.0))
  axes = fig.subplots(1, 2)
  for ax, key, label in zip(axes, ("avg_accuracy", "forgetting"), ("average accuracy %", "forgetting %")):
    for method in dict.fromkeys(r["method"] for r in table):
      rows = sorted((r for r in table if r["method"] == method and r["strength"] > 0), key=lambda r: r["strength"])
      if not rows:
        continue
      x = np.array([r["strength"] for r in rows])
      mean = 100 * np.array([r[f"{key}_mean"] for r in rows])
      std = 100 * np.array([r[f"{key}_std"] for r in rows])
      (line,) = ax.plot(x, mean, marker="o", label=method)
      ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("penalty strength")
    ax.set_ylabel(label)
    ax.legend()
  with atomic_writer(path, "wb") as fh:
    fig.savefig(fh, format="png")


def format_table(table: Sequence[dict], best: dict[str, float]) -> str:
  """The sweep table as aligned text: method, strength, mean +- std over seeds (test, %), validation mean."""
  width = max([12] + [len(r["method"]) for r in table])
  header = (f"{'method':<{width}} {'strength':>10} {'seeds':>5} {'avg acc %':>15} {'forgetting %':>15} "
            f"{'val acc %':>9}  best")
  lines = [header, "-" * len(header)]
  for r in table:
    mark = "*" if best.get(r["method"]) == r["strength"] else ""
    lines.append(f"{r['method']:<{width}} {r['strength']:>10.4g} {r['seeds']:>5} "
                 f"{100 * r['avg_accuracy_mean']:>7.2f} +- {100 * r['avg_accuracy_std']:<5.2f}"
                 f"{100 * r['forgetting_mean']:>7.2f} +- {100 * r['forgetting_std']:<5.2f}"
                 f"{100 * r['validation_avg_accuracy_mean']:>9.2f}  {mark}")
  return "\n".join(lines)


def run_sweep(config, workdir, tasks: Sequence[Task], *, description: tuple[str, str],
              max_traces: int | None = None) -> dict:
  """Every method of `config.methods` over its grid; writes into `workdir`:
  `<method>/sweep_accuracy.csv` (every member's accuracy matrix: seed, strength, after_task, task_j; test split),
  `sweep_members.csv` (per member: average accuracy, forgetting, BWT, FWT, validation average accuracy),
  `sweep_strength.png` (`strength_plot`) and `sweep_summary.csv` (last: mean and std over seeds per (method,
  strength), and `best`: the strength of each method with the highest mean validation average accuracy, the
  validation split being `sweep.validation_fraction` of each task's training data), and prints the result block
  and the table (`description`: the data and scenario it names). Each chunk of members checkpoints after every
  epoch into `<method>/sweep_checkpoints/` and a relaunch resumes from there with the numbers of an uninterrupted
  run; a relaunch of a finished sweep (its `sweep_summary.csv` exists) reads its final checkpoints, prints the table
  and writes nothing."""
  workdir = pathlib.Path(workdir)
  finished = (workdir / "sweep_summary.csv").exists()  # written last: the sweep is done
  fraction = config.sweep.validation_fraction
  validation = None
  if fraction > 0:
    tasks, validation = split_validation(tasks, fraction, config.seed)
  all_members, table, results = [], [], {}
  for method in config.methods:
    result = run_method(config, tasks, method, validation=validation, max_traces=max_traces,
                        checkpoint_dir=workdir / method / "sweep_checkpoints")
    results[method] = result
    t = result["accuracy"].shape[1]
    rows = [{"seed": seed, "strength": strength, "after_task": i,
             **{f"task_{j}": float(result["accuracy"][g, i, j]) for j in range(t)}}
            for g, (seed, strength) in enumerate(result["members"]) for i in range(t)]
    if not finished:
      write_csv(workdir / method / "sweep_accuracy.csv", rows,
                ["seed", "strength", "after_task"] + [f"task_{j}" for j in range(t)])
    members, per_strength = summarize(method, result)
    all_members += members
    table += per_strength
  best = best_strengths(table) if validation is not None else {}
  for row in table:
    row["best"] = best.get(row["method"]) == row["strength"]
  if not finished:
    write_csv(workdir / "sweep_members.csv", all_members)
    strength_plot(workdir / "sweep_strength.png", table)
    write_csv(workdir / "sweep_summary.csv", table)
  data, scenario = description
  rows = {"data": data, "scenario": scenario, "tasks": len(tasks), "seeds": len(config.sweep.seeds),
          "validation": (f"{fraction:g} of each task's training data" if validation is not None else "none")}
  for method, strength in best.items():
    row = next(r for r in table if r["method"] == method and r["strength"] == strength)
    rows[f"best {method}"] = (f"strength {strength:g}: {100 * row['avg_accuracy_mean']:.2f} +- "
                              f"{100 * row['avg_accuracy_std']:.2f} % test average accuracy")
  rows["outputs"] = str(workdir)
  print_result_block(f"Continual learning sweep: {', '.join(config.methods)}", rows)
  text = format_table(table, best)
  print(text, flush=True)
  return {"sweep": results, "table": table, "members": all_members, "best": best, "stopped": False,
          "already_finished": finished,
          "text": text, "task_names": [t.name for t in tasks]}
