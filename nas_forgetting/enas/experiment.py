"""ENAS experiment: `run(config, workdir)` for the recurrent (PTB, WikiText-2) and micro-CNN (CIFAR-10) searches.

Modes (`config.mode`):
  train                alternate shared-weight and controller phases for `train.max_epoch` epochs (resumes from the
                       latest checkpoint in <workdir>/checkpoints), then derive and evaluate.
  derive               sample `train.derive_num_sample` architectures, score each on the first reward batch, keep
                       the best; evaluate it on the reward split and the test split.
  evaluate             evaluate one architecture (`dag_path`, else the derived one) with the trained shared weights.
  train_scratch        derive the best cell, re-initialise the shared weights and train that cell alone.
  single               train the cell of a JSON DAG file (`dag_path`) alone, without a controller.
  ablation_activation  replace every activation of the cell by each activation in turn (RNN only).
  ablation_node        remove one node at a time (RNN only).
  rank_correlation     sample `train.rank_num_archs` architectures, score each with the shared weights and after
                       training it alone for `train.rank_epochs` epochs; Kendall tau between the two rankings.
  multi_model          train `multi_model.num_archs` sampled architectures round-robin from fresh shared weights and
                       measure their forgetting after every burst (<workdir>/multi_model;
                       `nas_forgetting.enas.multi_model`).
Modes other than train/single/multi_model read the trained run from `load_workdir` ('' = this workdir).

Outputs under the workdir: metrics.jsonl and tensorboard/ on the shared-step axis (shared loss and perplexity or
accuracy, WPL and forgetting statistics, evaluations of derived cells), controller/metrics.jsonl and
controller/tensorboard/ on the controller-step axis (reward, entropy, advantage, baseline), checkpoints/,
networks/*.png (sampled cells) and networks.gif, derived/{dag.json, arch.txt, cell.png}, ablations/<kind>.{csv,png},
rank/rank.{csv,png}, summary.json ("seconds": the run's total over its launches, up to the checkpoint each resumed
from), forgetting.csv (per-epoch forgetting of the search's architectures, `wpl.measure_forgetting`); cells trained
alone (single, scratch, rank/arch_<k>) keep their own metrics, checkpoints and result.json in their folder. Every
run ends with a result block in the terminal (data, network, derived cell and its numbers).

Resuming: a relaunch restores the latest checkpoint and drops whatever was logged after it (metrics.jsonl lines,
TensorBoard steps, on both step axes), so a resumed run's outputs equal an uninterrupted run's. The last epoch's derive
and summary.json come before its checkpoint: a search whose last checkpoint is the final epoch's has finished, and
relaunching it says so and writes nothing. `train.max_epoch` may be raised on a relaunch (RESUME_SAFE_FIELDS): the
search continues exactly as a run launched with the longer schedule (the shorter run's final derive stays in the logs).
Mode 'multi_model' resumes the same way from <workdir>/multi_model/checkpoints (`multi_model.max_rounds` may be raised,
`multi_model.stand_alone` switched on). Divergence: every step's losses and metrics and a traced "parameters and
optimizer state are finite" flag are checked on the host once per logging interval; a NaN or infinity stops the run with
a DivergenceError naming the quantity, the step, the epoch and phase and the step's architecture. WPL (`config.wpl`, see
`nas_forgetting.wpl.state.default_wpl_config`; off in the plain ENAS configs): the penalty over each architecture's
active shared weights in the shared step, the Fisher update and anchor refresh after each burst of
`wpl.num_batch_per_iter` steps (the Fisher of the cross-entropy, or with `wpl.shared_ce_fisher=False` of the full
training loss: cross-entropy, regularisers, L2 and the WPL penalty), the WPL state in the checkpoint. Offline text data
(train.txt missing) train on valid.txt and evaluate on test.txt; every summary says so in `data_note`.

Layout: `state` (the run's context and the `SearchState` every phase takes and returns, checkpoints), `tasks` (the
RNN and CNN data, supernets and compiled steps), `search` (shared and controller epochs, the loop, training a cell
alone), `derive` (derive and evaluate), `modes` (the modes after a search, rank correlation), `outputs` (metrics,
divergence checks, drawings, curves), `reinforce` (the controller's REINFORCE update).

The references' deviations from the papers are available as named options, all off by default:
`controller.derive_reference_logits` (derive, and the best-of-samples pick of train_scratch, sample from
decoder(h) / temperature without the tanh_c squashing, as the reference's derive mode; the search always samples
from the squashed training policy), `rnn.next_hidden='last_node'` (the next hidden state is the last node, not the
average of the loose ends), `cnn.sep_conv='depthwise'` (conv ops without the pointwise convolution) and
`cnn.cell_output='last_node'` (the micro cell outputs its last node alone; see `nas_forgetting.models.enas_cnn`).
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections

from nas_forgetting.enas import config as enas_config
from nas_forgetting.enas import modes
from nas_forgetting.enas import multi_model
from nas_forgetting.enas import outputs
from nas_forgetting.enas import search
from nas_forgetting.enas.state import Run
from nas_forgetting.io.report import print_result_block

MODES = enas_config.MODES
NETWORKS = enas_config.NETWORKS

# Fields a relaunch into an existing workdir may change: a longer (or equal) schedule continues the search (or the
# round-robin run) exactly as a run launched with it from the start would (same numbers; the shorter search's final
# derive stays logged); the stand-alone training of a round-robin run's architectures may be added to a finished run.
RESUME_SAFE_FIELDS = ("train.max_epoch", "multi_model.max_rounds", "multi_model.stand_alone")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every field of a resolved ENAS config before any work (ConfigError naming the field); see
  `nas_forgetting.enas.config.validate`."""
  enas_config.validate(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs `config.mode`; returns (and writes to <workdir>/summary.json) a summary of the results, and prints a
  result block. The config is validated first (`validate_config`)."""

  validate_config(config)
  path = pathlib.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  r = Run(config, path)
  if config.mode == "train":
    summary = search.train(r)
  elif config.mode == "multi_model":
    summary = multi_model.round_robin(r)
  else:
    logs = outputs.open_logs(path)
    try:
      summary = outputs.summary_record(r, modes.MODES[config.mode](r, logs))
      outputs.write_summary(r, summary)
    finally:
      outputs.close_logs(logs)
  print_result(r, summary)
  return summary


def _network_description(run: Run) -> str:
  c = run.config
  if c.network == "rnn":
    return (f"ENAS recurrent cell supernet: {c.search.num_blocks} nodes ({c.search.mode} search space), hidden "
            f"size {c.rnn.hidden_size}, vocabulary {run.task.vocab_size}, next hidden = {c.rnn.next_hidden}")
  return (f"ENAS micro-CNN supernet: {c.search.num_blocks} nodes per cell, {c.cnn.num_modules} modules x "
          f"{c.cnn.num_repeat_normal} normal cells, {c.cnn.features} filters, {c.cnn.sep_conv} convolutions, cell "
          f"output = {c.cnn.cell_output}")


def print_result(run: Run, summary: dict[str, Any]) -> str:
  """Prints the result block of a run: data, network, schedule and the headline numbers."""

  c = run.config
  m = run.task.metric
  wpl = "with WPL" if c.wpl.enabled else "without WPL"
  title = {"train": f"ENAS search ({wpl})", "derive": "ENAS derive", "evaluate": "ENAS evaluation",
           "train_scratch": "ENAS derived cell trained from scratch", "single": "ENAS cell trained alone",
           "rank_correlation": "ENAS rank correlation (shared weights vs trained alone)",
           "ablation_activation": "ENAS activation ablation", "ablation_node": "ENAS node ablation",
           "multi_model": "ENAS multi-model forgetting (round-robin)"}[c.mode]
  rows = {"data": summary.get("data_note", run.task.data_note), "network": _network_description(run)}
  if c.mode == "train":
    rows["schedule"] = (f"{c.train.max_epoch} epochs of {c.shared.steps_per_epoch or run.task.steps_per_pass} "
                        f"shared steps and {c.controller.steps_per_epoch if run.trains_controller else 0} "
                        "controller steps")
  if "arch" in summary:
    rows["derived cell" if c.mode in ("train", "derive", "train_scratch") else "cell"] = summary["arch"]
  names = {f"eval/reward_split_{m}": f"reward-split {m}", f"eval/test_{m}": f"test {m}",
           "derive/best_reward": "best candidate reward", "kendall_tau": "Kendall tau",
           "forgetting/mean_diff_last_epoch": "forgetting, last epoch (mean diff)",
           "forgetting/mean_diff_all_epochs": "forgetting, mean over epochs",
           "rounds": "rounds", "converged": "converged (strict patience)",
           "forgetting/after_next/mean_diff_all_rounds": "forgetting after the next burst, mean over rounds",
           "forgetting/end/mean_diff_all_rounds": "forgetting at round end, mean over rounds",
           "forgetting/after_next/frac_worse_all_rounds": "fraction worse after the next burst, mean over rounds",
           f"final_valid_{m}_mean": f"final validation {m}, mean over the architectures",
           f"final_test_{m}_mean": f"final test {m}, mean over the architectures",
           "wpl_sgd_stiffness_max": "WPL stiffness lr x alpha x max Fisher (>= 2: unstable)"}
  rows.update({label: summary[key] for key, label in names.items() if key in summary})
  if "rows" in summary:
    rows["table"] = {"rank_correlation": "rank/rank.csv"}.get(c.mode, f"ablations/{c.mode.split('_', 1)[-1]}.csv")
  if "seconds" in summary:
    rows["seconds"] = summary["seconds"]
  if summary.get("finished_before"):
    rows["status"] = "finished earlier; nothing was run"
  rows["outputs"] = str(run.workdir)
  return print_result_block(f"{title} on {c.data.name}", rows)
