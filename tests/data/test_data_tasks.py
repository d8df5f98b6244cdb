"""Task streams: split partitions the classes, permuted keeps each image's pixels, scenarios relabel as documented."""

import numpy as np
import pytest

from nas_forgetting.data import datasets, tasks
from nas_forgetting.errors import ConfigError


def _toy_splits(num_classes=10, per_class=6, shape=(4, 4, 1), name="toy"):
  """Images whose every pixel is distinct (so permutations are visible), labels cycling through the classes."""
  rng = np.random.default_rng(0)
  n = num_classes * per_class
  labels = np.arange(n) % num_classes
  images = rng.random((n,) + shape).astype(np.float32)
  make = lambda split: datasets.make_array_dataset(images, labels, num_classes, f"{name}/{split}")
  return datasets.Splits(make("train"), make("test"))


def test_split_partitions_the_classes():
  splits = _toy_splits()
  order = (1, 2, 3, 4, 5, 6, 7, 8, 9, 0)
  stream = tasks.make_task_stream(splits, tasks.default_stream_config(class_order=order), seed=0)
  assert [t.classes for t in stream] == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 0)]
  seen = []
  for t in stream:
    # Every example of the task's classes, and only those, is in the task (recovered through the classes map).
    original = np.asarray(t.classes)[t.train.labels]
    assert sorted(original.tolist()) == sorted(splits.train.labels[np.isin(splits.train.labels, t.classes)].tolist())
    seen += list(t.classes)
  assert sorted(seen) == list(range(10))
  assert sum(len(t.train.labels) for t in stream) == len(splits.train.labels)


def test_split_images_follow_their_labels():
  splits = _toy_splits()
  (task,) = tasks.make_task_stream(splits, tasks.default_stream_config(num_tasks=1, class_order=(7, 3)), seed=0)
  keep = np.isin(splits.train.labels, (7, 3))
  np.testing.assert_array_equal(task.train.images, splits.train.images[keep])
  np.testing.assert_array_equal(task.train.labels, (splits.train.labels[keep] == 3).astype(np.int32))


@pytest.mark.parametrize("scenario, heads, outputs, label_sets", [
    ("task", [0, 1, 2], [2, 2, 2], [{0, 1}, {0, 1}, {0, 1}]),
    ("domain", [0, 0, 0], [2, 2, 2], [{0, 1}, {0, 1}, {0, 1}]),
    ("class", [0, 0, 0], [6, 6, 6], [{0, 1}, {2, 3}, {4, 5}]),
])
def test_scenarios_relabel_as_documented(scenario, heads, outputs, label_sets):
  config = tasks.default_stream_config(num_tasks=3, classes_per_task=2, class_order=(4, 0, 9, 2, 5, 1),
                                       scenario=scenario)
  stream = tasks.make_task_stream(_toy_splits(), config, seed=0)
  assert [t.head for t in stream] == heads
  assert [t.num_outputs for t in stream] == outputs
  assert [set(t.train.labels.tolist()) for t in stream] == label_sets
  assert [set(t.test.labels.tolist()) for t in stream] == label_sets
  assert all(t.train.num_classes == t.num_outputs for t in stream)
  assert stream[0].classes == (4, 0)


def test_permuted_keeps_each_image_pixels_and_differs_across_tasks():
  splits = _toy_splits()
  config = tasks.default_stream_config(kind="permuted", num_tasks=3, scenario="domain", permute_first_task=False)
  stream = tasks.make_task_stream(splits, config, seed=5)
  np.testing.assert_array_equal(stream[0].train.images, splits.train.images)
  for t in stream:
    assert t.classes == tuple(range(10)) and t.head == 0 and t.num_outputs == 10
    np.testing.assert_array_equal(t.train.labels, splits.train.labels)
    for original, permuted in zip(splits.train.images, t.train.images):
      np.testing.assert_array_equal(np.sort(original.ravel()), np.sort(permuted.ravel()))
  assert not np.array_equal(stream[1].train.images, stream[2].train.images)
  assert not np.array_equal(stream[1].train.images, splits.train.images)
  # Train and test of a task share one permutation (here train and test images are equal).
  np.testing.assert_array_equal(stream[2].train.images, stream[2].test.images)


def test_permutations_are_seeded_and_prefix_stable():
  a = tasks.pixel_permutations(4, 784, seed=1, permute_first_task=True)
  b = tasks.pixel_permutations(4, 784, seed=1, permute_first_task=False)
  c = tasks.pixel_permutations(4, 784, seed=2, permute_first_task=True)
  np.testing.assert_array_equal(a[1:], b[1:])
  np.testing.assert_array_equal(b[0], np.arange(784))
  assert not np.array_equal(a[0], np.arange(784)) and not np.array_equal(a, c)
  assert all(sorted(p) == list(range(784)) for p in a)


def test_permuted_class_scenario_offsets_labels():
  splits = _toy_splits()
  config = tasks.default_stream_config(kind="permuted", num_tasks=3, scenario="class")
  stream = tasks.make_task_stream(splits, config, seed=0)
  for t, task in enumerate(stream):
    np.testing.assert_array_equal(task.train.labels, splits.train.labels + 10 * t)
    assert task.num_outputs == 30


def test_permutation_moves_channels_together():
  images = np.arange(2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
  perm = np.random.default_rng(0).permutation(9)
  out = tasks.permute_images(images, perm)
  np.testing.assert_array_equal(out.reshape(2, 9, 2), images.reshape(2, 9, 2)[:, perm])


def test_sequence_stream_brings_images_to_a_common_shape():
  grey = _toy_splits(shape=(6, 6, 1), name="grey")
  colour = _toy_splits(num_classes=4, shape=(8, 8, 3), name="colour")
  stream = tasks.make_sequence_stream([grey, colour], "class")
  assert [t.name for t in stream] == ["grey", "colour"]
  assert stream[0].train.images.shape[1:] == (6, 6, 3) and stream[1].train.images.shape[1:] == (6, 6, 3)
  np.testing.assert_array_equal(stream[0].train.images[..., 1], grey.train.images[..., 0])
  assert [t.num_outputs for t in stream] == [14, 14]
  np.testing.assert_array_equal(stream[1].train.labels, colour.train.labels + 10)
  task_stream = tasks.make_sequence_stream([grey, colour], "task", image_size=4, channels=1)
  assert task_stream[1].train.images.shape[1:] == (4, 4, 1)
  assert [t.head for t in task_stream] == [0, 1] and [t.num_outputs for t in task_stream] == [10, 4]


def test_stream_config_errors():
  splits = _toy_splits()
  with pytest.raises(ConfigError, match="repeats a class"):
    tasks.make_task_stream(splits, tasks.default_stream_config(class_order=(1, 1, 2, 3)), seed=0)
  with pytest.raises(ConfigError, match=r"classes \[10\] outside \[0, 10\)"):
    tasks.make_task_stream(splits, tasks.default_stream_config(class_order=(10, 1)), seed=0)
  with pytest.raises(ConfigError, match="6 tasks of 2 classes need 12 classes, but class_order has 10"):
    tasks.make_task_stream(splits, tasks.default_stream_config(num_tasks=6), seed=0)
  with pytest.raises(ConfigError, match="unknown stream scenario 'online'; valid scenarios: task, domain, class"):
    tasks.make_task_stream(splits, tasks.default_stream_config(scenario="online"), seed=0)
  with pytest.raises(ConfigError, match="unknown stream.kind 'rotated'; valid kinds: permuted, split, sequence"):
    tasks.make_task_stream(splits, tasks.default_stream_config(kind="rotated"), seed=0)
  with pytest.raises(ConfigError, match="use make_sequence_stream"):
    tasks.make_task_stream(splits, tasks.default_stream_config(kind="sequence"), seed=0)
  with pytest.raises(ConfigError, match="unknown stream config field 'tasks'"):
    tasks.default_stream_config(tasks=3)


def test_load_task_stream_on_real_mnist(shared_data):
  data = datasets.default_data_config(source="idx", path=str(shared_data / "mnist"), train_size=1000,
                                      test_size=200)
  stream = tasks.load_task_stream(data, tasks.default_stream_config(num_tasks=0), seed=0)
  assert len(stream) == 5 and stream[0].classes == (0, 1)
  # The MNIST test split has 980 zeros and 1135 ones in 10k: a 1k carve holds about 21% of classes 0/1.
  assert 150 < len(stream[0].train.labels) < 280
