"""The `dpnas` experiment: `run(config, workdir)` for task 1 (search) and task 2 (fixed nets, stored embeddings).

Data: `config.data` goes to `nas_forgetting.data.load_dataset`; the training split is divided into train and
validation by a seeded random split (`val_fraction`, seed `config.seed`), so a resumed or continued search sees the
same validation split. The official (or carved) test split is the test split.

Outputs under `workdir`: `config.json` and `git_revision.txt`; `search/` (task 1: `replay_buffer.csv`,
`q_values.csv`, `search_state.json`, `moving_average_reward.{png,pdf}`); `fixed/` (task 2: `fixed_net.csv`,
`chosen_to_train.csv`, `checkpoints/<variant>/<net>/seed_<seed>.{msgpack,json}` (best validation epoch; see
`nas_forgetting.dpnas.fixed`), `seed_spread.{png,pdf}`); `stored_embedding/` (task 2 with `fixed.store_embedding`);
`summary.json`. Running again in the same workdir continues the search from `search/search_state.json`, and task 2
skips the (net, seed) pairs whose checkpoints are there.
"""

from __future__ import annotations

import json
import pathlib

import ml_collections
import numpy as np

from nas_forgetting.dpnas import evaluator as ev
from nas_forgetting.dpnas import fixed as fx
from nas_forgetting.dpnas import search as sr
from nas_forgetting.dpnas.embeddings import store_embeddings
from nas_forgetting.dpnas.state_space import SearchSpace
from nas_forgetting.errors import ConfigError

TASKS = ("search", "fixed")


def load_split_data(config: ml_collections.ConfigDict) -> ev.SplitData:
  """Train/val/test arrays from `config.data` and the seeded validation split."""
  from nas_forgetting.data.datasets import load_dataset
  splits = load_dataset(config.data)
  train_x, train_y, val_x, val_y = ev.split_train_val(splits.train.images, splits.train.labels,
                                                      val_fraction=config.val_fraction, seed=config.seed)
  return ev.SplitData(train_x, train_y, val_x, val_y, splits.test.images, splits.test.labels,
                      splits.train.num_classes)


def search_space(config: ml_collections.ConfigDict, data: ev.SplitData) -> SearchSpace:
  """The search space of `config.search_space`; image_size / num_classes 0 are taken from the data."""
  fields = dict(config.search_space)
  if fields["image_size"] == 0:
    fields["image_size"] = data.train_x.shape[1]
  if fields["num_classes"] == 0:
    fields["num_classes"] = data.num_classes
  return SearchSpace.from_config(fields)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs task `config.task` ('search' or 'fixed'); returns the summary also written to summary.json."""
  from nas_forgetting.io.atomic import atomic_write_text
  from nas_forgetting.io.run import prepare_workdir
  if config.task not in TASKS:
    raise ConfigError(f"task={config.task!r}; expected one of {TASKS}")
  s = config.search
  if config.task == "search" and s.continue_search and not (s.q_values_csv_path and s.replay_buffer_csv_path):
    raise ConfigError("search.continue_search needs search.q_values_csv_path and search.replay_buffer_csv_path")
  path = pathlib.Path(prepare_workdir(workdir, config))
  data = load_split_data(config)
  evaluator = ev.Evaluator(data, ev.EvalConfig.from_config(config.evaluator))
  in_channels, image_size = data.train_x.shape[3], data.train_x.shape[1]
  summary = {"task": config.task, "data": config.data.name or config.data.source,
             "examples": {"train": len(data.train_x), "val": len(data.val_x), "test": len(data.test_x)},
             "image_shape": list(data.train_x.shape[1:]), "devices": evaluator.num_devices}
  log = print if config.verbose else None
  if config.task == "search":
    q_config = sr.QConfig(schedule=sr.read_schedule(s.schedule), replay_number=s.replay_number,
                          learning_rate=s.q_learning_rate, discount=s.q_discount_factor, init_utility=s.init_utility)
    continue_from = None
    if s.continue_search:
      continue_from = sr.ContinueFrom(s.q_values_csv_path, s.replay_buffer_csv_path, s.continue_epsilon,
                                      s.continue_ite)
    search = sr.Search(sr.evaluator_fn(evaluator, s.seeds_per_architecture), search_space(config, data), in_channels,
                       path / "search", q_config, seed=config.seed, continue_from=continue_from, plot_every=s.plot_every,
                       plot_window=s.plot_window, log=log)
    traces = dict(ev.TRACES)
    summary["search"] = search.run(max_new=s.max_architectures or None)
    summary["compilations"] = {k: ev.TRACES[k] - traces.get(k, 0) for k in ("train", "prepare")}
  else:
    f = config.fixed
    nets, chosen = fx.resolve_nets(net=f.net, replay_buffer_csv=f.replay_buffer_csv_path, index=f.index)
    seeds = [int(config.seed) * 1000 + k for k in range(f.num_seeds)]
    rows = fx.run_fixed(evaluator, nets, seeds, path / "fixed", chosen=chosen, in_channels=in_channels,
                        image_size=image_size, save_params=f.save_checkpoints, log=log,
                        context={"data": config.data.to_dict(), "val_fraction": config.val_fraction,
                                 "split_seed": config.seed})
    per_net = {}
    for r in rows:
      per_net.setdefault(f"{r['index']} {r['net']}", []).append(r["reward"])
    summary["fixed"] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": min(v), "max": max(v)}
                        for k, v in per_net.items()}
    summary["full_training"] = bool(config.evaluator.full_training)
    if f.store_embedding:
      summary["stored_embedding"] = store_embeddings(evaluator, nets[0][1], seeds[0], path / "stored_embedding",
                                                     layout=f.embedding_layout)
  atomic_write_text(str(path / "summary.json"), json.dumps(summary, indent=2, default=float))
  return summary
