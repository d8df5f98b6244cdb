"""The ENAS modes that read a trained search (`load_workdir`) or train one cell alone, and rank correlation.

  derive               the best of `train.derive_num_sample` sampled cells, evaluated (`nas_forgetting.enas.derive`)
  evaluate             one cell (`dag_path`, else the derived one) with the trained shared weights
  train_scratch        the best sampled cell trained alone from fresh shared weights (<workdir>/scratch)
  single               the cell of `dag_path` trained alone, without a search (<workdir>/single)
  ablation_activation  every activation of the cell replaced by each activation in turn (RNN only)
  ablation_node        one node removed at a time (RNN only)
  rank_correlation     `train.rank_num_archs` sampled cells scored with the shared weights and after training each
                       alone for `train.rank_epochs` epochs; Kendall's tau-b between the two rankings
Each mode is `mode(run, logs) -> results`; `run` in `nas_forgetting.enas.experiment` adds the summary around them.
Modes 'train' (`nas_forgetting.enas.search.train`) and 'multi_model' (`nas_forgetting.enas.multi_model.round_robin`)
checkpoint and resume, and own their logs and summary.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import jax
import numpy as np

from nas_forgetting.enas import search_space as ss
from nas_forgetting.enas import trainer as tr
from nas_forgetting.enas.derive import best_of_samples, derive, report_arch
from nas_forgetting.enas.outputs import Logs
from nas_forgetting.enas.search import train_alone
from nas_forgetting.enas.state import Run, load_trained
from nas_forgetting.errors import DataError
from nas_forgetting.io import plots
from nas_forgetting.io.metrics import write_csv
from nas_forgetting.statistics import kendall_tau_b


def derive_mode(run: Run, logs: Logs) -> dict[str, Any]:
  _, state = load_trained(run)
  return derive(run, logs.shared, state, jax.random.key(run.config.seed + 7))


def evaluate_mode(run: Run, logs: Logs) -> dict[str, Any]:
  source, state = load_trained(run)
  return report_arch(run, logs.shared, state, run.fixed_arch(source), "evaluated")


def train_scratch(run: Run, logs: Logs) -> dict[str, Any]:
  del logs  # the cell's training logs into <workdir>/scratch
  _, state = load_trained(run)
  best, _ = best_of_samples(run, state, jax.random.key(run.config.seed + 7))
  return train_alone(run, best, "scratch")


def single(run: Run, logs: Logs) -> dict[str, Any]:
  del logs  # the cell's training logs into <workdir>/single
  return train_alone(run, ss.load_dag_file(run.config.dag_path, run.space), "single")


def rank_correlation(run: Run, logs: Logs) -> dict[str, Any]:
  """Kendall tau between weight-sharing scores and stand-alone scores of sampled architectures."""
  c = run.config
  _, state = load_trained(run)
  archs = np.asarray(run.sample(state.controller.params, jax.random.key(c.seed + 11),
                                num_samples=c.train.rank_num_archs))
  m = run.task.metric
  rows = []
  for k, arch in enumerate(archs):
    shared_score = run.task.evaluate(state.shared.params, arch, "reward")
    alone = train_alone(run, arch, f"rank/arch_{k:02d}", epochs=c.train.rank_epochs)
    rows.append({"arch": run.space.to_string(arch), f"shared_{m}": shared_score,
                 f"alone_{m}": alone[f"eval/reward_split_{m}"]})
  tau = kendall_tau_b([r[f"shared_{m}"] for r in rows], [r[f"alone_{m}"] for r in rows])
  write_csv(str(run.workdir / "rank" / "rank.csv"), rows)
  plots.scatter_plot(run.workdir / "rank" / "rank.png", [r[f"shared_{m}"] for r in rows],
                     [r[f"alone_{m}"] for r in rows],
                     xlabel=f"{m} with shared weights", ylabel=f"{m} trained alone ({c.train.rank_epochs} epochs)",
                     title=f"Kendall tau {tau:.3f} over {len(rows)} architectures. {run.task.data_note}")
  logs.shared.log(int(state.shared.step), {"rank/kendall_tau": tau})
  return {"kendall_tau": tau, "rows": rows}


def ablation(run: Run, logs: Logs, kind: str) -> dict[str, Any]:
  """The test metric of the cell and of its variants (`kind` 'activation' or 'node'), as ablations/<kind>.csv/png."""
  del logs  # an ablation logs no metric
  source, state = load_trained(run)
  arch = run.fixed_arch(source)
  m = run.task.metric
  variants = [("original", arch)]
  if kind == "activation":
    variants += [(f"all_{name}", tr.replace_activations(arch, a)) for a, name in enumerate(run.space.activations)]
  else:
    variants += [(f"without_node_{j}", tr.remove_node(arch, j)) for j in range(1, run.space.count_nodes(arch))]
  rows = []
  for name, variant in variants:
    value = run.task.evaluate(state.shared.params, variant, "test")
    rows.append({"variant": name, f"test_{m}": value, "arch": json.dumps(np.asarray(variant).tolist())})
  out = run.workdir / "ablations"
  out.mkdir(parents=True, exist_ok=True)
  write_csv(str(out / f"{kind}.csv"), rows)
  plots.bar_plot(out / f"{kind}.png", [r["variant"] for r in rows], [r[f"test_{m}"] for r in rows],
                 ylabel=f"test {m}", title=f"{kind} ablation of {run.space.to_string(arch)[:60]}. {run.task.data_note}")
  return {"ablation": kind, "rows": rows}


# The modes after a search (mode 'train' is `nas_forgetting.enas.search.train`).
MODES: dict[str, Callable[[Run, Logs], dict[str, Any]]] = {
    "derive": derive_mode,
    "evaluate": evaluate_mode,
    "train_scratch": train_scratch,
    "single": single,
    "rank_correlation": rank_correlation,
    "ablation_activation": lambda run, logs: ablation(run, logs, "activation"),
    "ablation_node": lambda run, logs: ablation(run, logs, "node"),
}
