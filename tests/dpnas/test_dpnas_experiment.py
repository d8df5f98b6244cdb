"""The dpnas experiment end to end on real MNIST (tiny sizes): search resumes in the same workdir with the same
validation split; task 2 from the search log; configs load."""

import importlib.util
import json
import sys

import pytest

from nas_forgetting.dpnas import logs

needs_io = pytest.mark.skipif(
    any(importlib.util.find_spec(f"nas_forgetting.io.{m}") is None for m in ("atomic", "run")),
    reason="nas_forgetting.io (atomic, run) not available yet")


def configs():
  sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
  from configs import dpnas_cifar10, dpnas_fashion_mnist, dpnas_mnist
  return dpnas_mnist, dpnas_fashion_mnist, dpnas_cifar10


def test_configs_load_with_every_variant():
  for module in configs():
    for arg in (None, "quick", "quick,fixed,full_training", "hypothesis2,store_embedding,readme,reference_bn",
                "reference_duplicates"):
      config = module.get_config(arg)
      assert config.experiment == "dpnas" and isinstance(config.seed, int)
  with pytest.raises(ValueError, match="unknown variant 'fast'"):
    configs()[0].get_config("fast")


@needs_io
def test_bad_task_or_continue_without_csvs_fails_before_data_are_read(tmp_path):
  from nas_forgetting.dpnas import experiment
  from nas_forgetting.errors import ConfigError
  config = configs()[0].get_config("quick")
  config.data.path = str(tmp_path / "no_such_data")
  config.search.continue_search = True
  with pytest.raises(ConfigError, match="continue_search needs search.q_values_csv_path"):
    experiment.run(config, str(tmp_path / "run"))
  config.task = "train"
  with pytest.raises(ConfigError, match="task='train'"):
    experiment.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def tiny(config, shared_data):
  config.data.path = str(shared_data / "mnist")
  config.data.train_size, config.data.test_size, config.data.image_size = 160, 40, 8
  config.evaluator.epochs, config.evaluator.early_stopping_epoch = 2, 0
  config.evaluator.batch_size = 32
  config.search_space.conv_features = (4, 8)
  config.search_space.max_conv = 3
  config.search.schedule = ((1.0, 1), (0.0, 1))
  config.search.replay_number = 4
  config.verbose = False
  return config


@needs_io
def test_search_then_resume_then_fixed(tmp_path, shared_data):
  from nas_forgetting.dpnas import experiment
  mnist = configs()[0]
  config = tiny(mnist.get_config("quick"), shared_data)
  config.search.max_architectures = 1
  first = experiment.run(config, str(tmp_path / "run"))
  assert first["search"]["rows"] == 1 and first["examples"] == {"train": 144, "val": 16, "test": 40}
  config.search.max_architectures = 0
  second = experiment.run(config, str(tmp_path / "run"))
  rows = logs.read_replay_buffer(tmp_path / "run" / "search" / "replay_buffer.csv")
  assert second["search"]["done"] and len(rows) == second["search"]["rows"] >= 2
  assert sum(r.reward > 0 for r in rows) == 2
  assert json.loads((tmp_path / "run" / "summary.json").read_text())["search"]["done"]

  fixed = tiny(mnist.get_config("quick,hypothesis2,store_embedding"), shared_data)
  fixed.fixed.replay_buffer_csv_path = str(tmp_path / "run" / "search" / "replay_buffer.csv")
  best = max(range(len(rows)), key=lambda i: rows[i].reward)
  fixed.fixed.index = best  # one row by position (the hypothesis-2 selection is tested in test_dpnas_fixed)
  fixed.fixed.num_seeds = 2
  summary = experiment.run(fixed, str(tmp_path / "h2"))
  assert list(summary["fixed"]) == [f"{best} {rows[best].net}"]
  assert (tmp_path / "h2" / "fixed" / "fixed_net.csv").is_file()
  assert (tmp_path / "h2" / "stored_embedding" / "train_embeddings.npy").is_file()
