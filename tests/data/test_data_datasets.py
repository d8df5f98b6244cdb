"""load_dataset: config fields, seeded carving of single-split sources, image options."""

import numpy as np
import pytest

from nas_forgetting.data import datasets, idx, transforms
from nas_forgetting.errors import ConfigError, DataError


def _mnist_config(shared_data, **overrides):
  return datasets.default_data_config(source="idx", name="mnist", path=str(shared_data / "mnist"), **overrides)


def test_mnist_carved_from_its_single_split(shared_data):
  splits = datasets.load_dataset(_mnist_config(shared_data, train_size=800, test_size=200, seed=3))
  raw_images, raw_labels = idx.load_idx_folder(shared_data / "mnist")["test"]
  train_idx, test_idx = datasets.carve_indices(10000, train_size=800, test_size=200, holdout_fraction=0.2, seed=3)
  assert splits.train.images.shape == (800, 28, 28, 1) and splits.test.images.shape == (200, 28, 28, 1)
  assert splits.train.images.dtype == np.float32 and splits.train.labels.dtype == np.int32
  assert 0.0 <= splits.train.images.min() and splits.train.images.max() <= 1.0
  np.testing.assert_array_equal(splits.train.images, raw_images[train_idx].astype(np.float32) / 255)
  np.testing.assert_array_equal(splits.test.labels, raw_labels[test_idx])
  assert splits.train.num_classes == 10 and splits.train.name == "mnist/train"


def test_carving_is_disjoint_seeded_and_test_is_stable():
  train, test = datasets.carve_indices(1000, train_size=300, test_size=100, holdout_fraction=0.2, seed=0)
  assert len(train) == 300 and len(test) == 100 and not set(train) & set(test)
  again, test_again = datasets.carve_indices(1000, train_size=300, test_size=100, holdout_fraction=0.2, seed=0)
  np.testing.assert_array_equal(train, again)
  other, _ = datasets.carve_indices(1000, train_size=300, test_size=100, holdout_fraction=0.2, seed=1)
  assert not np.array_equal(train, other)
  bigger, test_bigger = datasets.carve_indices(1000, train_size=800, test_size=100, holdout_fraction=0.2, seed=0)
  np.testing.assert_array_equal(test, test_bigger)  # the test split does not depend on train_size
  rest, held = datasets.carve_indices(1000, train_size=0, test_size=0, holdout_fraction=0.25, seed=0)
  assert len(held) == 250 and len(rest) == 750 and not set(rest) & set(held)


def test_asking_for_too_much_is_an_error(shared_data):
  with pytest.raises(DataError, match=r"mnist \(test split\): cannot carve 9500 train \+ 1000 test examples"):
    datasets.load_dataset(_mnist_config(shared_data, train_size=9500, test_size=1000))


def test_two_split_sources_subsample_each_split(tmp_path):
  from PIL import Image

  for split, n in (("train", 6), ("test", 4)):
    for label in ("a", "b"):
      folder = tmp_path / split / label
      folder.mkdir(parents=True)
      for i in range(n):
        Image.fromarray(np.full((5, 5), 40 * i, np.uint8)).save(folder / f"{i}.png")
  config = datasets.default_data_config(source="image_folder", path=str(tmp_path), train_size=7, test_size=3)
  splits = datasets.load_dataset(config)
  assert splits.train.images.shape == (7, 5, 5, 1) and splits.test.images.shape == (3, 5, 5, 1)
  assert splits.train.num_classes == 2 and splits.train.name == f"{tmp_path.name}/train"
  with pytest.raises(DataError, match=r"test split\): asked for 9 examples but it has only 8"):
    datasets.load_dataset(datasets.default_data_config(source="image_folder", path=str(tmp_path), test_size=9))


def test_config_errors():
  with pytest.raises(ConfigError, match="unknown data config field 'size'; valid fields: .*train_size"):
    datasets.default_data_config(size=3)
  with pytest.raises(ConfigError, match="data.source='web'; expected one of embedded, tfds, idx, image_folder"):
    datasets.load_dataset(datasets.default_data_config(source="web"))
  with pytest.raises(ConfigError, match="data.name='digits' for source 'embedded'; known: font_digits"):
    datasets.load_dataset(datasets.default_data_config(name="digits"))
  with pytest.raises(ConfigError, match="data.source='idx' needs data.path"):
    datasets.load_dataset(datasets.default_data_config(source="idx"))
  with pytest.raises(ConfigError, match=r"data.train_size=-1; expected an integer >= 0"):
    datasets.load_dataset(datasets.default_data_config(train_size=-1))
  # validated without reading anything, each field named under the group it sits in
  with pytest.raises(ConfigError, match=r"data_sequence.d1.seed=-1; expected an integer >= 0"):
    datasets.validate_data_config(datasets.default_data_config(seed=-1), "data_sequence.d1")
  with pytest.raises(ConfigError, match=r"data.holdout_fraction=nan; expected a finite number > 0 and < 1"):
    datasets.validate_data_config(datasets.default_data_config(holdout_fraction=float("nan")))
  with pytest.raises(ConfigError, match=r"data.channels=2; expected one of 0, 1, 3"):
    datasets.validate_data_config(datasets.default_data_config(channels=2))
  with pytest.raises(ConfigError, match="data.source='image_folder' needs data.path"):
    datasets.validate_data_config(datasets.default_data_config(source="image_folder", path=" "))


def test_image_options_through_load_dataset(shared_data):
  splits = datasets.load_dataset(_mnist_config(shared_data, train_size=50, test_size=10, image_size=14))
  assert splits.train.images.shape == (50, 14, 14, 1) and splits.test.images.shape == (10, 14, 14, 1)
  full = datasets.load_dataset(_mnist_config(shared_data, train_size=50, test_size=10))
  # Averaging resize keeps the mean intensity (antialiased bilinear 2x shrink = 2x2 box average here).
  np.testing.assert_allclose(splits.train.images.mean(axis=(1, 2, 3)), full.train.images.mean(axis=(1, 2, 3)),
                             atol=2e-3)


def test_grayscale_uses_luma_weights_and_match_channels():
  rgb = np.zeros((2, 3, 3, 3), np.float32)
  rgb[0, ..., 0] = 1.0
  rgb[1] = 0.5
  grey = transforms.to_grayscale(rgb)
  assert grey.shape == (2, 3, 3, 1)
  np.testing.assert_allclose(grey[0], 0.299, rtol=1e-6)
  np.testing.assert_allclose(grey[1], 0.5, rtol=1e-6)
  assert transforms.to_grayscale(grey) is grey
  three = transforms.match_channels(grey, 3)
  assert three.shape == (2, 3, 3, 3) and np.array_equal(three[..., 0], three[..., 2])
  with pytest.raises(DataError, match="cannot convert 2 channels to 3"):
    transforms.match_channels(np.zeros((1, 2, 2, 2), np.float32), 3)


def test_resize_keeps_constant_images_constant():
  images = np.full((3, 32, 32, 3), 0.25, np.float32)
  out = transforms.resize_images(images, 28)
  assert out.shape == (3, 28, 28, 3)
  np.testing.assert_allclose(out, 0.25, atol=1e-6)
  with pytest.raises(ConfigError, match="image_size must be 0 \\(native\\) or a positive size, got -2"):
    transforms.apply_image_options(images, image_size=-2, grayscale=False)


def test_channels_option(shared_data):
  three = datasets.load_dataset(_mnist_config(shared_data, train_size=20, test_size=5, channels=3))
  one = datasets.load_dataset(_mnist_config(shared_data, train_size=20, test_size=5))
  assert three.train.images.shape == (20, 28, 28, 3)
  for c in range(3):
    np.testing.assert_array_equal(three.train.images[..., c], one.train.images[..., 0])
  with pytest.raises(ConfigError, match="grayscale=True contradicts channels=3"):
    datasets.load_dataset(_mnist_config(shared_data, train_size=20, test_size=5, channels=3, grayscale=True))
