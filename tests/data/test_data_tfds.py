"""tfds source: name checks, the install hint without TensorFlow, and the TensorFlow-free ArrayRecord path."""

import numpy as np
import pytest

from nas_forgetting.data import datasets, tfds_source
from nas_forgetting.errors import ConfigError


def test_unknown_name_lists_valid_names():
  with pytest.raises(ConfigError, match="unknown tfds data set 'imagenet'; valid names: mnist, fashion_mnist, "
                                        "cifar10, cifar100"):
    datasets.load_dataset(datasets.default_data_config(source="tfds", name="imagenet"))


@pytest.mark.skipif(tfds_source.tensorflow_available(), reason="TensorFlow is installed: preparing would download")
def test_unprepared_without_tensorflow_says_how_to_install(tmp_path):
  config = datasets.default_data_config(source="tfds", name="fashion_mnist", data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match=r"'fashion_mnist' is not prepared in .*pip install nas_forgetting\[tf\].*"
                                        r"data.source='idx'"):
    datasets.load_dataset(config)


@pytest.fixture(scope="module")
def toy_data_dir(tmp_path_factory):
  """A tiny builder with Tensor features prepared as ArrayRecord (no TensorFlow needed to write or read it)."""
  import tensorflow_datasets as tfds

  class NasForgettingToyDigits(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
          "label": tfds.features.Tensor(shape=(), dtype=np.int64)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(30, 0), "test": self._generate_examples(9, 100)}

    def _generate_examples(self, n, offset):
      for i in range(n):
        yield i, {"image": np.full((4, 4, 1), offset + i, np.uint8), "label": i % 3}

  data_dir = tmp_path_factory.mktemp("tfds")
  NasForgettingToyDigits(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return data_dir


def test_array_record_data_source_end_to_end(toy_data_dir, monkeypatch):
  name = "nas_forgetting_toy_digits"
  monkeypatch.setattr(tfds_source, "NAMES", tfds_source.NAMES + (name,))
  monkeypatch.setattr(datasets, "_TFDS_NUM_CLASSES", {**datasets._TFDS_NUM_CLASSES, name: 3})
  monkeypatch.setattr(tfds_source, "tensorflow_available", lambda: False)
  splits = datasets.load_dataset(datasets.default_data_config(source="tfds", name=name, data_dir=str(toy_data_dir),
                                                              test_size=5))
  assert splits.train.images.shape == (30, 4, 4, 1) and splits.test.images.shape == (5, 4, 4, 1)
  assert splits.train.num_classes == 3 and splits.train.name == f"{name}/train"
  # Every image keeps its own label, whatever order the records come in.
  values = np.rint(splits.train.images[:, 0, 0, 0] * 255).astype(int)
  assert sorted(values.tolist()) == list(range(30))
  np.testing.assert_array_equal(splits.train.labels, values % 3)
  test_values = np.rint(splits.test.images[:, 0, 0, 0] * 255).astype(int) - 100
  np.testing.assert_array_equal(splits.test.labels, test_values % 3)
