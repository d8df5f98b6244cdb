"""DP-NAS task 2: fixed architectures re-initialised and re-evaluated (hypotheses 2 and 3).

Which nets (the reference's precedence): a net string, else a replay-buffer CSV and a row index (row by position),
else the whole CSV, which triggers the hypothesis-2 selection (`select_hypothesis2`): rows with reward 0 dropped,
sorted ascending by reward (a stable sort here: ties keep file order; the reference's sort is not stable), duplicate
nets dropped keeping the last, then with n rows positions 0..5 (low), ceil(n/2)-3+i for i in 0..5 (middle) and
n-6..n-1 (top): 18 nets (fewer, without repeats, when n < 18).

Every net is evaluated with several seeds at once by the same evaluator as the search (fresh random weights per
seed: the initialisation lottery of hypothesis 2); `full_training` in the evaluator's config gives hypothesis 3.
Outputs: `fixed_net.csv` (one row per net and seed; rewritten after every net), `chosen_to_train.csv` when the nets
came from a CSV, `seed_spread.{png,pdf}` (the reward of every seed per net), and one checkpoint per (net, seed,
variant): `checkpoints/<variant>/<net>/seed_<seed>/` (an orbax checkpoint through
`nas_forgetting.io.checkpoint.Checkpointer`, step 0), the classifier (`deep_prior`) or the whole net
(`full_training`) as it was after its best validation epoch (the reference's `model_best`), with
`seed_<seed>.json` beside it (what was evaluated, the fixed-net row and the best epoch). `<net>` is
`row<index>_<digest>` for a replay-buffer row and `net_<digest>` for a net string, the digest being the first 12 hex
digits of the SHA-256 of the net string, so no two nets, seeds or variants share a file. Running again in the same
folder resumes: a (net, seed) with a record is not evaluated again, and a record of a different evaluation (other
evaluator settings or data) is never overwritten (CheckpointError). Each record also holds `seconds`, the run's
total (over its launches) when it was written (`recorded_seconds`).

Every net is checked before anything is evaluated or written (`check_nets`: feasible for the images, `SM(c)` equal
to the data's classes, its evaluation within the memory available). An evaluation whose embeddings, losses or
parameters become NaN or infinite stops the run with a `DivergenceError` naming the quantity, the net and the seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
from typing import Mapping, Sequence

import jax
import numpy as np

from nas_forgetting.dpnas import logs
from nas_forgetting.models import net_string as ns
from nas_forgetting.dpnas.q_learning import ReplayRow
from nas_forgetting.errors import ArchitectureError, CheckpointError, ConfigError, DataError
from nas_forgetting.io import plots
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.checkpoint import Checkpointer
from nas_forgetting.progress import progress

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


CHECKPOINT_DIR = "checkpoints"
VARIANTS = ("deep_prior", "full_training")  # classifier on a frozen random encoder | the whole net trained


def checkpoint_folder(directory: str | pathlib.Path, index: int, net: str, full_training: bool) -> pathlib.Path:
  """`<directory>/checkpoints/<variant>/<row<index> or net>_<net digest>`: one folder per (net, variant)."""
  net = ns.format_net(ns.as_net(net))
  digest = hashlib.sha256(net.encode()).hexdigest()[:12]
  name = f"net_{digest}" if index < 0 else f"row{index}_{digest}"
  return pathlib.Path(directory) / CHECKPOINT_DIR / VARIANTS[int(bool(full_training))] / name


def checkpoint_identity(evaluator, index: int, net: str, seed: int, context: Mapping | None = None) -> dict:
  """What a checkpoint must agree on to stand for this (net, seed) evaluation: the net, its row, the seed, the
  variant, the evaluator settings that change results (`EvalConfig.result_fields`), the split sizes and image
  shape, and the caller's `context` (e.g. the data config); JSON values (tuples become lists)."""
  config = evaluator.config
  identity = {"net": ns.format_net(ns.as_net(net)), "index": int(index), "seed": int(seed),
              "variant": VARIANTS[int(bool(config.full_training))], "evaluator": config.result_fields(),
              "splits": list(evaluator.sizes), "image_shape": list(evaluator.data.train_x.shape[1:]),
              "num_classes": int(evaluator.data.num_classes), "context": dict(context or {})}
  return json.loads(json.dumps(identity))


CHECKPOINT_STEP = 0  # each (net, seed) folder holds one orbax checkpoint


def _checkpointer(folder: pathlib.Path, seed: int) -> Checkpointer:
  return Checkpointer(pathlib.Path(folder) / f"seed_{seed}", max_to_keep=1)


def load_checkpoint(folder: str | pathlib.Path, seed: int, like: Mapping) -> tuple[dict, dict]:
  """(variables, record) of one (net, seed) of `checkpoint_folder(...)`: the variables {"params", "batch_stats"}
  after its best validation epoch, restored into the structure, shapes and dtypes of `like` (e.g. the model's
  `init` or its `jax.eval_shape`; a mismatch raises CheckpointError), and its `seed_<seed>.json` record (keys
  identity, row, best_epoch, seconds)."""
  folder = pathlib.Path(folder)
  record_path = folder / f"seed_{seed}.json"
  if not record_path.is_file():
    raise CheckpointError(f"{record_path}: no such checkpoint record")
  try:
    record = json.loads(record_path.read_text())
  except (ValueError, TypeError) as error:
    raise CheckpointError(f"{record_path}: unreadable checkpoint record ({error})") from error
  with _checkpointer(folder, seed) as checkpointer:
    variables = checkpointer.restore(CHECKPOINT_STEP, like)
  return variables, record


def _finished(folder: pathlib.Path, seed: int, identity: dict) -> dict | None:
  """The stored fixed-net row of a finished evaluation of `identity`, or None when there is none to resume from.

  The record (`.json`) is written last, so an evaluation interrupted before it counts as not done; a record of
  another evaluation at the same place raises rather than being overwritten."""
  record_path = folder / f"seed_{seed}.json"
  if not record_path.is_file():
    return None
  try:
    record = json.loads(record_path.read_text())
    stored = record["identity"]
  except (ValueError, KeyError, TypeError) as error:
    raise CheckpointError(f"{record_path}: unreadable checkpoint record ({error}); remove it to evaluate again") \
        from error
  if stored != identity:
    keys = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
    raise CheckpointError(f"{record_path} holds another evaluation (differs in {', '.join(keys)}); refusing to "
                          f"overwrite it: use another workdir or remove {folder}")
  if _checkpointer(folder, seed).latest_step() != CHECKPOINT_STEP:
    return None
  return record["row"]


def check_nets(evaluator, nets: Sequence[tuple[int, str]], seeds: Sequence[int], *, in_channels: int,
               image_size: int) -> None:
  """Refuses, before anything is evaluated or written, a net that is infeasible for the images, ends with SM(c) for
  another number of classes than the data's, or whose evaluation with `seeds` would not fit in memory."""
  for index, net in nets:
    where = f"replay-buffer row {index}" if index >= 0 else "fixed.net"
    try:
      ns.infer_shapes(net, image_size=image_size, in_channels=in_channels, max_fc_input=0, max_image_size=0)
      evaluator.check_memory(net, seeds)
    except ArchitectureError as e:
      raise type(e)(f"{where}: {e}") from None
    classes = ns.as_net(net)[-1].classes
    if classes != evaluator.data.num_classes:
      raise ConfigError(f"{where}: net {net} ends with SM({classes}) but the data have "
                        f"{evaluator.data.num_classes} classes")


def recorded_seconds(directory: str | pathlib.Path) -> float:
  """The largest `seconds` (the run's total when it was written) of the checkpoint records under `directory`: the
  time earlier launches of a fixed-net run spent up to their last record (0 when there is none)."""
  best = 0.0
  folder = pathlib.Path(directory) / CHECKPOINT_DIR
  for path in folder.rglob("seed_*.json") if folder.is_dir() else ():
    try:
      best = max(best, float(json.loads(path.read_text()).get("seconds", 0.0)))
    except (ValueError, TypeError, AttributeError):
      continue  # an unreadable record is reported when its (net, seed) comes up
  return best


def run_fixed(evaluator, nets: Sequence[tuple[int, str]], seeds: Sequence[int], directory: str | pathlib.Path, *,
              chosen: Sequence[tuple[int, ReplayRow]] | None = None, in_channels: int, image_size: int,
              save_params: bool = True, context: Mapping | None = None, log=None, metrics=None,
              clock=None) -> list[dict]:
  """Evaluates every net with every seed; writes the files of the module docstring; returns the fixed-net rows.

  Every net is checked first (feasible for the images, `SM(c)` matching the data's classes), so a bad net fails
  before anything is evaluated. With `save_params`, each (net, seed) leaves the orbax checkpoint `seed_<seed>/`
  (the variables after its best validation epoch) and `seed_<seed>.json` (identity, row, best_epoch, seconds) in
  `checkpoint_folder(...)`; a (net, seed) whose record is there already is not evaluated again (its stored row is
  used), so an interrupted run resumes and a finished one is not overwritten. A record of another evaluation
  (different settings, data `context` or net) raises CheckpointError. Without `save_params` nothing is stored and
  every (net, seed) is evaluated. A diverged evaluation raises `DivergenceError` (naming the quantity, net, seed).

  `metrics`: a `MetricsLogger` opened with `purge_step=0`; it receives one record per row (step = its position in
  the returned list), so the log of a resumed run equals an uninterrupted run's. `clock()`: the run's total seconds
  so far, stored in each record (see `recorded_seconds`).
  """
  check_nets(evaluator, nets, seeds, in_channels=in_channels, image_size=image_size)
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  if chosen is not None:
    atomic_write_text(str(directory / CHOSEN_FILE), logs.chosen_to_train_text(chosen))
  full_training = evaluator.config.full_training
  rows: list[dict] = []
  for index, net in progress(nets, desc="DP-NAS fixed nets", unit="net"):
    folder = checkpoint_folder(directory, index, net, full_training)
    identities = {s: checkpoint_identity(evaluator, index, net, s, context) for s in seeds}
    done = {}
    for s in seeds if save_params else ():
      stored = _finished(folder, s, identities[s])
      if stored is not None:
        done[s] = stored
    todo = [s for s in seeds if s not in done]
    fresh = {}
    if todo:
      if save_params:
        results, params = evaluator.evaluate(net, todo, return_params=True)
      else:
        results, params = evaluator.evaluate(net, todo), None
      for k, result in enumerate(results):
        row = {"index": index, "net": net, "seed": result.seed, "reward": result.reward,
               "acc_best_val": result.acc_best_val, "acc_val_all_epochs": result.acc_val_all_epochs,
               "acc_train_all_epochs": result.acc_train_all_epochs, "acc_test_last": result.acc_test_last}
        fresh[result.seed] = row
        if params is not None:
          folder.mkdir(parents=True, exist_ok=True)
          with _checkpointer(folder, result.seed) as checkpointer:
            checkpointer.save(CHECKPOINT_STEP, _take(params, k))
          record = {"identity": identities[result.seed], "row": row,
                    "best_epoch": int(np.argmax(result.acc_val_all_epochs)),
                    "seconds": float(clock()) if clock else 0.0}
          atomic_write_text(str(folder / f"seed_{result.seed}.json"), json.dumps(record, indent=1) + "\n")
    net_rows = [done[s] if s in done else fresh[s] for s in seeds]
    if metrics is not None:
      for k, r in enumerate(net_rows):
        metrics.log(len(rows) + k, {"index": r["index"], "seed": r["seed"], "reward": r["reward"],
                                    "acc_best_val": r["acc_best_val"], "acc_test_last": r["acc_test_last"]})
    rows.extend(net_rows)
    atomic_write_text(str(directory / FIXED_FILE), logs.fixed_net_text(rows))
    if log:
      rewards = [r["reward"] for r in net_rows]
      resumed = f" ({len(done)} seeds from {folder})" if done else ""
      log(f"{index} {net}: reward mean {np.mean(rewards):.4f} min {min(rewards):.4f} max {max(rewards):.4f}{resumed}")
  plot_seed_spread(rows, directory / SPREAD_STEM, chosen=chosen)
  return rows


def _take(tree, k: int):
  return jax.tree.map(lambda x: np.asarray(x[k]), tree)


def plot_seed_spread(rows: Sequence[dict], path_stem: str | pathlib.Path, *,
                     chosen: Sequence[tuple[int, ReplayRow]] | None = None) -> list[pathlib.Path]:
  """Reward of every seed per net (in evaluation order), with the search's reward where known."""
  order = list(dict.fromkeys((r["index"], r["net"]) for r in rows))
  searched = {i: row.reward for i, row in (chosen or [])}
  pdf, png = plots.strip_plot(
      str(path_stem) + ".pdf", [[r["reward"] for r in rows if (r["index"], r["net"]) == key] for key in order],
      labels=[str(i) for i, _ in order], xlabel="replay-buffer row", ylabel="reward",
      points_label="re-initialised seeds",
      marks={x: searched[key[0]] for x, key in enumerate(order) if key[0] in searched},
      marks_label="search reward", title="DP-NAS: reward spread over random initialisations")
  return [png, pdf]
