"""DP-NAS task 2: fixed architectures re-initialised and re-evaluated (hypotheses 2 and 3).

Which nets (the reference's precedence): a net string, else a replay-buffer CSV and a row index (row by position),
else the whole CSV, which triggers the hypothesis-2 selection (`select_hypothesis2`): rows with reward 0 dropped,
sorted ascending by reward (a stable sort here: ties keep file order; the reference's sort is not stable), duplicate
nets dropped keeping the last, then with n rows positions 0..5 (low), ceil(n/2)-3+i for i in 0..5 (middle) and
n-6..n-1 (top): 18 nets (fewer, without repeats, when n < 18).

Every net is evaluated with several seeds at once by the same evaluator as the search (fresh random weights per
seed: the initialisation lottery of hypothesis 2); `full_training` in the evaluator's config gives hypothesis 3.
Outputs: `fixed_net.csv` (one row per net and seed; rewritten after every net), `chosen_to_train.csv` when the nets
came from a CSV, the trained classifier (or whole net) of every (net, seed) under
`checkpoints/<row index>/seed_<seed>.msgpack` (so runs of several nets never overwrite one another), and
`seed_spread.{png,pdf}`: the reward of every seed per net.
"""

from __future__ import annotations

import math
import pathlib
from typing import Sequence

import numpy as np

from nas_forgetting.dpnas import logs
from nas_forgetting.dpnas import net_string as ns
from nas_forgetting.dpnas.q_learning import ReplayRow
from nas_forgetting.errors import ConfigError, DataError

FIXED_FILE = "fixed_net.csv"
CHOSEN_FILE = "chosen_to_train.csv"
SPREAD_STEM = "seed_spread"


def select_hypothesis2(rows: Sequence[ReplayRow], per_group: int = 6) -> list[tuple[int, ReplayRow]]:
  """(original row index, row) of the low / middle / top nets of a search log (see the module docstring)."""
  candidates = sorted(((i, r) for i, r in enumerate(rows) if r.reward > 0), key=lambda item: item[1].reward)
  last = {row.net: k for k, (_, row) in enumerate(candidates)}
  unique = [item for k, item in enumerate(candidates) if last[item[1].net] == k]
  n = len(unique)
  if not n:
    raise DataError("the replay buffer has no row with reward > 0 to select from")
  half = per_group // 2
  positions = (list(range(per_group)) + [math.ceil(n / 2) - half + i for i in range(per_group)]
               + list(range(n - per_group, n)))
  chosen, seen = [], set()
  for p in positions:
    if 0 <= p < n and p not in seen:
      seen.add(p)
      chosen.append(unique[p])
  return chosen


def resolve_nets(*, net: str = "", replay_buffer_csv: str = "", index: int = -1
                 ) -> tuple[list[tuple[int, str]], list[tuple[int, ReplayRow]] | None]:
  """[(row index, net)] to train and the chosen CSV rows (None for a net string); -1 marks a string net."""
  if net:
    return [(-1, ns.format_net(ns.as_net(net)))], None
  if not replay_buffer_csv:
    raise ConfigError("task 2 needs a net string (fixed.net) or a replay-buffer CSV (fixed.replay_buffer_csv)")
  rows = logs.read_replay_buffer(replay_buffer_csv)
  if index >= 0:
    if index >= len(rows):
      raise ConfigError(f"fixed.index={index} is outside {replay_buffer_csv} (rows 0..{len(rows) - 1})")
    chosen = [(index, rows[index])]
  else:
    chosen = select_hypothesis2(rows)
  return [(i, r.net) for i, r in chosen], chosen


def run_fixed(evaluator, nets: Sequence[tuple[int, str]], seeds: Sequence[int], directory: str | pathlib.Path, *,
              chosen: Sequence[tuple[int, ReplayRow]] | None = None, in_channels: int, image_size: int,
              save_params: bool = True, log=None) -> list[dict]:
  """Evaluates every net with every seed; writes the files of the module docstring; returns the fixed-net rows."""
  from flax import serialization

  from nas_forgetting.io.atomic import atomic_write_bytes, atomic_write_text
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  if chosen is not None:
    atomic_write_text(str(directory / CHOSEN_FILE), logs.chosen_to_train_text(chosen))
  from nas_forgetting.io.progress import progress
  rows: list[dict] = []
  for index, net in progress(nets, desc="DP-NAS fixed nets", unit="net"):
    ns.infer_shapes(net, image_size=image_size, in_channels=in_channels, max_fc_input=0, max_image_size=0)
    results, params = evaluator.evaluate(net, seeds, return_params=True)
    for k, result in enumerate(results):
      rows.append({"index": index, "net": net, "seed": result.seed, "reward": result.reward,
                   "acc_best_val": result.acc_best_val, "acc_val_all_epochs": result.acc_val_all_epochs,
                   "acc_train_all_epochs": result.acc_train_all_epochs, "acc_test_last": result.acc_test_last})
      if save_params:
        single = serialization.to_state_dict(_take(params, k))
        path = directory / "checkpoints" / str(index) / f"seed_{result.seed}.msgpack"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(str(path), serialization.msgpack_serialize(single))
    atomic_write_text(str(directory / FIXED_FILE), logs.fixed_net_text(rows))
    if log:
      rewards = [r.reward for r in results]
      log(f"{index} {net}: reward mean {np.mean(rewards):.4f} min {min(rewards):.4f} max {max(rewards):.4f}")
  plot_seed_spread(rows, directory / SPREAD_STEM, chosen=chosen)
  return rows


def _take(tree, k: int):
  import jax
  return jax.tree.map(lambda x: np.asarray(x[k]), tree)


def plot_seed_spread(rows: Sequence[dict], path_stem: str | pathlib.Path, *,
                     chosen: Sequence[tuple[int, ReplayRow]] | None = None) -> list[pathlib.Path]:
  """Reward of every seed per net (in evaluation order), with the search's reward where known."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  order = list(dict.fromkeys((r["index"], r["net"]) for r in rows))
  searched = {i: row.reward for i, row in (chosen or [])}
  fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(order) + 2), 4.5))
  for x, key in enumerate(order):
    rewards = [r["reward"] for r in rows if (r["index"], r["net"]) == key]
    ax.scatter([x] * len(rewards), rewards, s=12, color="tab:blue", alpha=0.7,
               label="re-initialised seeds" if x == 0 else None)
    if key[0] in searched:
      ax.scatter([x], [searched[key[0]]], marker="x", color="tab:red", label="search reward" if x == 0 else None)
  ax.set_xticks(range(len(order)))
  ax.set_xticklabels([str(i) for i, _ in order], rotation=90, fontsize=7)
  ax.set_xlabel("replay-buffer row")
  ax.set_ylabel("reward")
  ax.set_title("DP-NAS: reward spread over random initialisations")
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  return logs.save_figure(fig, path_stem)
