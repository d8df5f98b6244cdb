"""A tiny continual config shared by the runner tests (embedded data, 3 split tasks, MLP 16)."""

import pytest

from nas_forgetting.continual import config as continual_config


def make_tiny_config(**train):
  c = continual_config.default_config()
  c.data.source = "embedded"
  c.data.train_size = 300
  c.data.test_size = 120
  c.stream.kind = "split"
  c.stream.num_tasks = 3
  c.stream.classes_per_task = 2
  c.stream.scenario = "task"
  c.model.hidden = (16,)
  c.train.optimizer = "momentum"
  c.train.learning_rate = 0.05
  c.train.epochs = 2
  c.train.batch_size = 16
  c.train.eval_batch_size = 64
  c.importance.num_examples = 40
  c.importance.chunk_size = 32
  for k, v in train.items():
    c.train[k] = v
  return c


@pytest.fixture(scope="session")
def tiny_config():
  """`tiny_config(**train_overrides)` -> a fresh tiny continual config."""
  return make_tiny_config
