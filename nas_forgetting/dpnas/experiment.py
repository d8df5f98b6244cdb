"""The `dpnas` experiment: `run(config, workdir)` for task 1 (search) and task 2 (fixed nets, stored embeddings).

Data: `config.data` goes to `nas_forgetting.data.load_dataset`; the training split is divided into train and
validation by a seeded random split (`val_fraction`, seed `config.seed`), so a resumed or continued search sees the
same validation split. The official (or carved) test split is the test split.

`dpnas.config.default_config(data)` declares every field; `validate_config(config)` checks every field before any
work (the launcher calls it before the workdir exists; `run` calls it first); `RESUME_SAFE_FIELDS` lists the fields
a relaunch into an existing workdir may change.

Outputs under `workdir` (the launcher adds `config.json` and `git_revision.txt`):
* `metrics.jsonl` and `tensorboard/`: one record per sampled architecture (search; `step` = its replay row:
  epsilon, reward, accuracies, flags duplicate / feasible / diverged, rewarded count) or per evaluated (net, seed)
  (task 2; `step` = its row of fixed_net.csv);
* `search/` (task 1): `replay_buffer.csv`, `q_values.csv` (the reference's formats), `diverged.csv` (when a net's
  evaluation diverged), `search_state.json` and `state/` (the committed generation the search resumes from; see
  `nas_forgetting.dpnas.search`), `moving_average_reward.{png,pdf}`;
* `fixed/` (task 2): `fixed_net.csv`, `chosen_to_train.csv`, `checkpoints/<variant>/<net>/seed_<seed>{/,.json}`
  (best validation epoch; see `nas_forgetting.dpnas.fixed`), `seed_spread.{png,pdf}`;
* `stored_embedding/` (task 2 with `fixed.store_embedding`);
* `summary.json`, written last: `finished` (the schedule ended / every net and seed evaluated), `seconds` (the run's
  total over all its launches, each counted up to its last durable commit), and the results.

Running again in the same workdir continues the search from `search/search_state.json`, and task 2 skips the
(net, seed) pairs whose checkpoints are there; a run whose summary.json says it finished says so and does nothing.
The run ends with a result block naming the data and giving the best net(s), rewards and test accuracies.

Divergence: in a search, an architecture whose embeddings, losses or parameters become non-finite is logged with
reward 0 in `search/diverged.csv` and the search goes on; in task 2 the run stops with a `DivergenceError` naming
the quantity, the net and the seed.
"""

from __future__ import annotations

import json
import pathlib
import time

import ml_collections
import numpy as np

from nas_forgetting import config_schema as cc
from nas_forgetting.data.datasets import load_dataset, validate_data_config
from nas_forgetting.dpnas import evaluator as ev
from nas_forgetting.dpnas import fixed as fx
from nas_forgetting.dpnas import search as sr
from nas_forgetting.dpnas.embeddings import LAYOUTS, store_embeddings
from nas_forgetting.dpnas.state_space import SearchSpace
from nas_forgetting.errors import ArchitectureError, ConfigError
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.metrics import MetricsLogger
from nas_forgetting.io.report import print_result_block
from nas_forgetting.models import net_string as ns

TASKS = ("search", "fixed")
SUMMARY_FILE = "summary.json"
# Only how far one launch goes: a search stopped after max_architectures nets continues where it stopped.
RESUME_SAFE_FIELDS = ("search.max_architectures",)
_MAX_SEED = (2 ** 31 - 1) // 1000 - 1  # task-2 seeds are seed * 1000 + k (int32)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every value of a resolved dpnas config before any work; ConfigError naming the field. The `evaluator`,
  `search_space` and Q-learning fields are checked by the objects built from them (EvalConfig, SearchSpace, QConfig
  check their own fields), the others here."""
  cc.choice(config, "task", TASKS)
  cc.integer(config, "seed", minimum=0, maximum=_MAX_SEED)
  cc.number(config, "val_fraction", above=0.0, below=1.0)
  cc.boolean(config, "verbose")
  validate_data_config(config.data, "data")

  ev.EvalConfig.from_config(config.evaluator)  # unknown fields; EvalConfig checks every value

  # image_size / num_classes 0 take the data's values (`search_space`); SearchSpace checks every resolved value
  for name in ("image_size", "num_classes"):
    cc.integer(config, f"search_space.{name}", minimum=0)
  space = SearchSpace.from_config(_space_fields(config, image_size=1, num_classes=1))
  for name in ("conv_sizes", "conv_features", "conv_strides", "pool_sizes", "pool_strides", "fc_sizes"):
    if not getattr(space, name) and (name != "fc_sizes" or space.max_fc):  # a space built directly may omit pooling
      raise ConfigError(f"search_space.{name}=(); expected a non-empty sequence of integers >= 1")

  q = "search."
  q_config = sr.QConfig.from_config(config.search)  # QConfig checks the Q-learning fields and the schedule
  for name in ("seeds_per_architecture", "plot_every", "plot_window"):
    cc.integer(config, q + name, minimum=1)
  cc.integer(config, q + "max_architectures", minimum=0)
  cc.boolean(config, q + "continue_search")
  if config.task == "search" and config.search.continue_search:
    for name in ("q_values_csv_path", "replay_buffer_csv_path"):
      value = str(config.search[name]).strip()
      if not value:
        raise ConfigError(f"search.continue_search needs search.q_values_csv_path and search.replay_buffer_csv_path;"
                          f" search.{name} is empty")
      if not pathlib.Path(value).expanduser().is_file():
        raise ConfigError(f"search.{name}={value!r}: no such file")
    cc.integer(config, q + "continue_ite", minimum=1)
    sr.check_continue(q_config.schedule, config.search.continue_epsilon, config.search.continue_ite,
                      prefix="search.continue_")

  f = "fixed."
  net = config.fixed.net
  if not isinstance(net, str):
    raise ConfigError(f"fixed.net={net!r}; expected a net string such as '[C(32,3,1,1,1), SM(10)]' (or '')")
  if net.strip():
    try:
      ns.parse_net(net)
    except ArchitectureError as error:
      raise ConfigError(f"fixed.net: {error}") from None
  cc.integer(config, f + "index", minimum=-1)
  cc.integer(config, f + "num_seeds", minimum=1, maximum=1000)  # seeds seed*1000 + k must not reach the next seed's
  for name in ("save_checkpoints", "store_embedding"):
    cc.boolean(config, f + name)
  cc.choice(config, f + "embedding_layout", LAYOUTS)
  if config.task == "fixed":
    if not net.strip() and not str(config.fixed.replay_buffer_csv_path).strip():
      raise ConfigError("task='fixed' needs a net string (fixed.net) or a replay-buffer CSV "
                        "(fixed.replay_buffer_csv_path); both are empty")
    if config.fixed.store_embedding and not net.strip() and config.fixed.index < 0:
      raise ConfigError("fixed.store_embedding stores the embedding of one net: give fixed.net or fixed.index >= 0 "
                        "(as the reference, not with the hypothesis-2 selection)")


def load_split_data(config: ml_collections.ConfigDict) -> ev.SplitData:
  """Train/val/test arrays from `config.data` and the seeded validation split."""
  splits = load_dataset(config.data)
  train_x, train_y, val_x, val_y = ev.split_train_val(splits.train.images, splits.train.labels,
                                                      val_fraction=config.val_fraction, seed=config.seed)
  return ev.SplitData(train_x, train_y, val_x, val_y, splits.test.images, splits.test.labels,
                      splits.train.num_classes)


def _space_fields(config: ml_collections.ConfigDict, *, image_size: int, num_classes: int) -> dict:
  """The fields of `config.search_space` with image_size / num_classes 0 replaced by the given values."""
  fields = dict(config.search_space)
  for name, actual in (("image_size", image_size), ("num_classes", num_classes)):
    fields[name] = fields[name] or actual
  return fields


def search_space(config: ml_collections.ConfigDict, data: ev.SplitData) -> SearchSpace:
  """The search space of `config.search_space`; image_size / num_classes 0 are taken from the data, other values
  must agree with the data (ConfigError naming the field)."""
  actual = {"image_size": int(data.train_x.shape[1]), "num_classes": int(data.num_classes)}
  for name, what in (("image_size", "image size"), ("num_classes", "number of classes")):
    value = config.search_space[name]
    if value not in (0, actual[name]):
      raise ConfigError(f"search_space.{name}={value} disagrees with the data's {what} {actual[name]}; leave it 0 "
                        f"to take it from the data")
  return SearchSpace.from_config(_space_fields(config, **actual))


def data_description(config: ml_collections.ConfigDict, data: ev.SplitData | None = None) -> str:
  """'mnist (idx, /path): 7200 train / 800 val / 2000 test, 14x14x1' (sizes when `data` is given)."""
  d = config.data
  where = f"{d.source}, {d.path}" if str(d.path).strip() else d.source
  text = f"{d.name or d.source} ({where})"
  if data is not None:
    h, w, c = data.train_x.shape[1:]
    text += f": {len(data.train_x)} train / {len(data.val_x)} val / {len(data.test_x)} test, {h}x{w}x{c}"
  return text


def _stored_summary(path: pathlib.Path, task: str) -> dict | None:
  """The summary of a finished run of `task` in `path`, or None."""
  try:
    summary = json.loads((path / SUMMARY_FILE).read_text())
  except (OSError, ValueError):
    return None
  if isinstance(summary, dict) and summary.get("finished") and summary.get("task") == task:
    return summary
  return None


def print_result(summary: dict) -> str:
  """The result block of a run from its summary."""
  rows = {"data": summary["data_description"]}
  if summary["task"] == "search":
    result = summary["search"]
    title = "DP-NAS search (task 1)"
    rows["architectures"] = (f"{result['rows']} sampled, {result['rewarded']} rewarded, {result['diverged']} "
                             f"diverged{'' if result['done'] else ' (schedule not finished)'}")
    for rank, top in enumerate(result.get("top", []), start=1):
      rows[f"best net {rank}"] = (f"{top['net']}: reward {top['reward']:.4f}, test accuracy "
                                  f"{top['acc_test_last']:.2f} % (replay row {top['row']})")
    rows["mean reward (rewarded nets)"] = result["mean_reward"]
  else:
    title = f"DP-NAS fixed nets (task 2, {'full training' if summary['full_training'] else 'deep prior'})"
    ranked = sorted(summary["fixed"].items(), key=lambda item: -item[1]["mean"])
    for key, r in ranked:
      rows[key] = (f"reward {r['mean']:.4f} +- {r['std']:.4f} (min {r['min']:.4f}, max {r['max']:.4f}), test "
                   f"accuracy {r['test_accuracy_mean']:.2f} % over {r['seeds']} seeds")
  rows["seconds (all launches)"] = round(float(summary["seconds"]), 1)
  rows["outputs"] = summary["workdir"]
  return print_result_block(title, rows)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs task `config.task` ('search' or 'fixed'); returns the summary also written to summary.json."""
  validate_config(config)
  started = time.time()
  path = pathlib.Path(workdir).expanduser().absolute()
  finished = _stored_summary(path, config.task)
  if finished is not None:
    print(f"The DP-NAS {config.task} run in {path} has finished; nothing to do (its results are in "
          f"{path / SUMMARY_FILE}).", flush=True)
    print_result(finished)
    return dict(finished, finished_before=True)
  path.mkdir(parents=True, exist_ok=True)
  data = load_split_data(config)
  space = search_space(config, data) if config.task == "search" else None
  evaluator = ev.Evaluator(data, ev.EvalConfig.from_config(config.evaluator))
  in_channels, image_size = data.train_x.shape[3], data.train_x.shape[1]
  summary = {"task": config.task, "data": config.data.name or config.data.source,
             "data_description": data_description(config, data), "workdir": str(path),
             "examples": {"train": len(data.train_x), "val": len(data.val_x), "test": len(data.test_x)},
             "image_shape": list(data.train_x.shape[1:]), "devices": evaluator.num_devices}
  log = print if config.verbose else None
  s = config.search
  if config.task == "search":
    q_config = sr.QConfig.from_config(s)
    continue_from = None
    if s.continue_search:
      continue_from = sr.ContinueFrom(s.q_values_csv_path, s.replay_buffer_csv_path, s.continue_epsilon,
                                      s.continue_ite)
    search = sr.Search(sr.evaluator_fn(evaluator, s.seeds_per_architecture), space, in_channels, path / "search",
                       q_config, seed=config.seed, continue_from=continue_from, plot_every=s.plot_every,
                       plot_window=s.plot_window, log=log, metrics_dir=path, started=started)
    traces = dict(ev.TRACES)
    try:
      summary["search"] = search.run(max_new=s.max_architectures or None)
    finally:
      search.close()
    summary["compilations"] = {k: ev.TRACES[k] - traces.get(k, 0) for k in ("train", "prepare")}
    summary["finished"] = bool(summary["search"]["done"])
    summary["seconds"] = search.seconds
  else:
    f = config.fixed
    nets, chosen = fx.resolve_nets(net=f.net, replay_buffer_csv=f.replay_buffer_csv_path, index=f.index)
    seeds = [int(config.seed) * 1000 + k for k in range(f.num_seeds)]
    fx.check_nets(evaluator, nets, seeds, in_channels=in_channels, image_size=image_size)  # before any output
    before = fx.recorded_seconds(path / "fixed")
    clock = lambda: before + time.time() - started
    metrics = MetricsLogger(path, purge_step=0)  # every row is logged again in order: no duplicates on resume
    try:
      rows = fx.run_fixed(evaluator, nets, seeds, path / "fixed", chosen=chosen, in_channels=in_channels,
                          image_size=image_size, save_params=f.save_checkpoints, log=log, metrics=metrics,
                          clock=clock, context={"data": config.data.to_dict(), "val_fraction": config.val_fraction,
                                                "split_seed": config.seed})
    finally:
      metrics.close()
    per_net = {}
    for r in rows:
      per_net.setdefault(f"{r['index']} {r['net']}", []).append(r)
    summary["fixed"] = {k: {"mean": float(np.mean([r["reward"] for r in v])),
                            "std": float(np.std([r["reward"] for r in v])),
                            "min": min(r["reward"] for r in v), "max": max(r["reward"] for r in v),
                            "test_accuracy_mean": float(np.mean([r["acc_test_last"] for r in v])), "seeds": len(v)}
                        for k, v in per_net.items()}
    summary["full_training"] = bool(config.evaluator.full_training)
    if f.store_embedding:
      summary["stored_embedding"] = store_embeddings(evaluator, nets[0][1], seeds[0], path / "stored_embedding",
                                                     layout=f.embedding_layout)
    summary["finished"] = True
    summary["seconds"] = clock()
  atomic_write_text(str(path / SUMMARY_FILE), json.dumps(summary, indent=2, default=float))
  print_result(summary)
  return summary
