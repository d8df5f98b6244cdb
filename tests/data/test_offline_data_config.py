"""offline_data_config: the data block of a data set stored under the shared data folder (defaults, overrides,
errors), and that the block it builds loads the real files."""

import numpy as np
import pytest

from nas_forgetting import paths
from nas_forgetting.data import datasets, idx
from nas_forgetting.errors import ConfigError


def test_mnist_defaults():
  config = datasets.offline_data_config("mnist")
  assert config.source == "idx"
  assert config.path == str(paths.shared_data_dir() / "mnist")
  assert (config.train_size, config.test_size) == (8000, 2000)  # carved from the 10,000-image test split
  # every other field keeps default_data_config's value
  untouched = {k: v for k, v in config.to_dict().items() if k not in ("source", "path", "train_size", "test_size")}
  assert untouched == {k: v for k, v in datasets.default_data_config().to_dict().items() if k in untouched}


def test_cifar10_defaults():
  config = datasets.offline_data_config("cifar10")
  assert config.source == "image_folder"
  assert config.path == str(paths.shared_data_dir() / "cifar10")
  assert (config.train_size, config.test_size) == (0, 0)  # all of both stored splits
  assert config.max_per_class == 0 and config.name == ""


def test_path_follows_the_shared_data_folder_at_call_time(monkeypatch, tmp_path):
  monkeypatch.setenv("SHARED_DATA", str(tmp_path))
  assert datasets.offline_data_config("mnist").path == str(tmp_path / "mnist")
  assert datasets.offline_data_config("cifar10").path == str(tmp_path / "cifar10")


def test_overrides_win_over_the_offline_fields_and_the_defaults():
  config = datasets.offline_data_config("mnist", name="mnist", train_size=500, test_size=0, seed=7, grayscale=True,
                                        image_size=14, path="/elsewhere/mnist")
  assert (config.name, config.train_size, config.test_size, config.seed) == ("mnist", 500, 0, 7)
  assert (config.grayscale, config.image_size, config.path, config.source) == (True, 14, "/elsewhere/mnist", "idx")
  assert datasets.offline_data_config("cifar10", source="idx").source == "idx"
  assert datasets.offline_data_config("cifar10", max_per_class=200).max_per_class == 200


def test_each_call_builds_a_fresh_block():
  first = datasets.offline_data_config("mnist")
  first.train_size = 3
  first.source = "embedded"
  again = datasets.offline_data_config("mnist")
  assert (again.train_size, again.source) == (8000, "idx")


@pytest.mark.parametrize("folder", ["svhn", "MNIST", "ptb", ""])  # ptb is stored, but is text, not images
def test_unknown_data_set_is_a_config_error(folder):
  with pytest.raises(ConfigError, match=rf"no offline data set '{folder}'; known: mnist, cifar10"):
    datasets.offline_data_config(folder)


def test_unknown_field_is_a_config_error():
  with pytest.raises(ConfigError, match=r"unknown data config field 'train_examples'; valid fields: channels, "):
    datasets.offline_data_config("mnist", train_examples=100)
  with pytest.raises(ConfigError, match=r"unknown data config field 'size'"):
    datasets.offline_data_config("cifar10", size=32)


def test_mnist_block_loads_the_real_files(shared_data):
  config = datasets.offline_data_config("mnist", name="mnist", train_size=300, test_size=100, seed=5)
  assert config.path == str(shared_data / "mnist")
  splits = datasets.load_dataset(config)
  # oracle: the raw IDX test split, carved by the documented rule
  raw_images, raw_labels = idx.load_idx_folder(shared_data / "mnist")["test"]
  train_idx, test_idx = datasets.carve_indices(raw_images.shape[0], train_size=300, test_size=100,
                                               holdout_fraction=0.2, seed=5)
  assert splits.train.images.shape == (300, 28, 28, 1) and splits.test.images.shape == (100, 28, 28, 1)
  np.testing.assert_array_equal(splits.train.labels, raw_labels[train_idx])
  np.testing.assert_array_equal(splits.test.labels, raw_labels[test_idx])
  np.testing.assert_array_equal(splits.train.images, raw_images[train_idx].astype(np.float32) / 255)
  assert splits.train.num_classes == 10 and splits.train.name == "mnist/train"
