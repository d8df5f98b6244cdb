"""Task streams for continual learning: permuted, split by classes, and a sequence of data sets.

Stream config (build it with `default_stream_config(**overrides)`):
  kind                'permuted' | 'split' | 'sequence'
  num_tasks           permuted: number of tasks; split: number of tasks (0 = as many as class_order fills)
  classes_per_task    split: classes in each task
  class_order         split: the classes in task order, e.g. (1, 2, 3, 4, 5, 6, 7, 8, 9, 0); () = 0..K-1
  scenario            'task' | 'domain' | 'class'
  permute_first_task  permuted: False keeps task 0 as the original images (the common Permuted-MNIST protocol)

Kinds:
- permuted: task t applies one fixed pixel permutation to every image (train and test alike). The permutation
  acts on the H*W pixel positions; the channels of a pixel move together. Permutations are drawn from a numpy
  generator seeded by (seed, 3), one per task in order; with permute_first_task=False task 0 is the identity and
  tasks 1.. still get the same permutations as with True (the stream is a prefix-stable function of the seed).
  Images of a single pixel (stored embeddings, (1, 1, D)) are refused: every task would be the same.
- split: task t holds the examples whose class is in class_order[t*cpt:(t+1)*cpt].
- sequence: task t is data set t of a list (`make_sequence_stream`), e.g. MNIST then FashionMNIST; images are
  brought to a common shape: the first data set's height and width (or image_size) and the largest channel count
  (grey repeated to 3 channels when an RGB data set is in the stream).

Scenarios (how labels and output heads are assigned; `Task.classes` always keeps the original class ids):
- 'task' (task-incremental): labels are positions within the task's classes, 0..k-1; the model has one head per
  task and `Task.head` = t; `num_outputs` = k, the task's number of classes.
- 'domain' (domain-incremental): the same 0..k-1 labels, a single shared head (`head` = 0); `num_outputs` = the
  largest k of the stream.
- 'class' (class-incremental): one head (`head` = 0) over every class seen in the stream; a label is the number of
  classes in earlier tasks plus its position within its task's classes, so with the natural class order split
  labels equal the original ids, and permuted task t's class y becomes t*K + y. `num_outputs` = the total number
  of classes in the stream (the same for every task, so the head never changes size).
The task's ArrayDataset.num_classes equals its `num_outputs`.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import ml_collections
import numpy as np

from nas_forgetting.config_schema import override
from nas_forgetting.data import transforms
from nas_forgetting.data.datasets import ArrayDataset, Splits, load_dataset
from nas_forgetting.errors import ConfigError, DataError

KINDS = ("permuted", "split", "sequence")
SCENARIOS = ("task", "domain", "class")


class Task(NamedTuple):
  """One task of a stream: its data (labels remapped per scenario), original class ids, head and head size."""
  name: str
  train: ArrayDataset
  test: ArrayDataset
  classes: tuple[int, ...]
  head: int
  num_outputs: int


def default_stream_config(**overrides) -> ml_collections.ConfigDict:
  """The `stream` sub-config with every field declared (see the module docstring)."""
  config = ml_collections.ConfigDict()
  config.kind = "split"  # 'permuted' | 'split' | 'sequence'
  config.num_tasks = 5  # permuted: tasks; split: tasks (0 = as many as class_order fills)
  config.classes_per_task = 2  # split: classes per task
  config.class_order = ()  # split: classes in task order; () = natural order 0..K-1
  config.scenario = "task"  # 'task' (head per task) | 'domain' (one head, 0..k-1) | 'class' (one head, all classes)
  config.permute_first_task = False  # permuted: False keeps task 0 unpermuted
  if "class_order" in overrides:
    overrides["class_order"] = tuple(overrides["class_order"])
  return override(config, overrides, group="stream")


def _check_scenario(scenario: str) -> None:
  if scenario not in SCENARIOS:
    raise ConfigError(f"unknown stream scenario {scenario!r}; valid scenarios: {', '.join(SCENARIOS)}")


def _relabel(dataset: ArrayDataset, classes: Sequence[int], offset: int, num_outputs: int, name: str,
             ) -> ArrayDataset:
  """Keep the examples of `classes`; label = offset + position of the class in `classes`."""
  lookup = np.full(dataset.num_classes, -1, np.int64)
  lookup[np.asarray(classes)] = np.arange(len(classes))
  position = lookup[dataset.labels]
  keep = position >= 0
  if not keep.any():
    raise DataError(f"{name}: no examples of classes {tuple(classes)} in {dataset.name}")
  return ArrayDataset(dataset.images[keep], (position[keep] + offset).astype(np.int32), num_outputs, name)


def _assemble(parts: list[tuple[str, ArrayDataset, ArrayDataset, tuple[int, ...]]], scenario: str) -> list[Task]:
  """Tasks from (name, train, test, classes) with labels and heads assigned per scenario."""
  _check_scenario(scenario)
  total = sum(len(classes) for *_, classes in parts)
  widest = max(len(classes) for *_, classes in parts)
  tasks, offset = [], 0
  for t, (name, train, test, classes) in enumerate(parts):
    if scenario == "task":
      head, num_outputs, label_offset = t, len(classes), 0
    elif scenario == "domain":
      head, num_outputs, label_offset = 0, widest, 0
    else:
      head, num_outputs, label_offset = 0, total, offset
    tasks.append(Task(name,
                      _relabel(train, classes, label_offset, num_outputs, f"{name}/train"),
                      _relabel(test, classes, label_offset, num_outputs, f"{name}/test"),
                      tuple(int(c) for c in classes), head, num_outputs))
    offset += len(classes)
  return tasks


def pixel_permutations(num_tasks: int, num_pixels: int, *, seed: int, permute_first_task: bool) -> np.ndarray:
  """int64 (num_tasks, num_pixels): the permutation of each task (row 0 = identity unless permute_first_task)."""
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
  perms = np.stack([rng.permutation(num_pixels) for _ in range(num_tasks)])
  if not permute_first_task:
    perms[0] = np.arange(num_pixels)
  return perms


def permute_images(images: np.ndarray, permutation: np.ndarray) -> np.ndarray:
  """Images (N, H, W, C) with their H*W pixel positions reordered by `permutation` (channels move together)."""
  n, h, w, c = images.shape
  return images.reshape(n, h * w, c)[:, permutation].reshape(n, h, w, c)


def _permuted(splits: Splits, config, seed: int) -> list[Task]:
  if config.num_tasks < 1:
    raise ConfigError(f"stream.num_tasks must be >= 1 for a permuted stream, got {config.num_tasks}")
  _, h, w, _ = splits.train.images.shape
  if h * w == 1:
    raise DataError(f"{splits.train.name}: a permuted stream permutes pixel positions, but these images have a "
                    f"single one ({splits.train.images.shape[1:]}, e.g. stored embeddings as (1, 1, D)): every "
                    f"task would be the same; use a split stream")
  perms = pixel_permutations(config.num_tasks, h * w, seed=seed, permute_first_task=config.permute_first_task)
  classes = tuple(range(splits.train.num_classes))
  parts = []
  for t, perm in enumerate(perms):
    name = f"{splits.train.name.split('/')[0]}/permuted_{t}"
    parts.append((name, splits.train._replace(images=permute_images(splits.train.images, perm)),
                  splits.test._replace(images=permute_images(splits.test.images, perm)), classes))
  return _assemble(parts, config.scenario)


def split_classes(num_classes: int, classes_per_task: int, num_tasks: int, class_order: Sequence[int],
                  ) -> list[tuple[int, ...]]:
  """The classes of each task of a split stream (checks the order and the counts)."""
  order = tuple(int(c) for c in class_order) or tuple(range(num_classes))
  bad = [c for c in order if not 0 <= c < num_classes]
  if bad:
    raise ConfigError(f"stream.class_order has classes {bad} outside [0, {num_classes})")
  if len(set(order)) != len(order):
    raise ConfigError(f"stream.class_order {order} repeats a class; expected distinct classes")
  if classes_per_task < 1:
    raise ConfigError(f"stream.classes_per_task must be >= 1, got {classes_per_task}")
  num_tasks = num_tasks or len(order) // classes_per_task
  if num_tasks < 1 or num_tasks * classes_per_task > len(order):
    raise ConfigError(f"stream: {num_tasks} tasks of {classes_per_task} classes need "
                      f"{max(num_tasks, 1) * classes_per_task} classes, but class_order has {len(order)}")
  return [order[t * classes_per_task:(t + 1) * classes_per_task] for t in range(num_tasks)]


def _split(splits: Splits, config) -> list[Task]:
  groups = split_classes(splits.train.num_classes, config.classes_per_task, config.num_tasks, config.class_order)
  base = splits.train.name.split("/")[0]
  parts = [(f"{base}/classes_{'_'.join(map(str, g))}", splits.train, splits.test, g) for g in groups]
  return _assemble(parts, config.scenario)


def make_task_stream(splits: Splits, stream_config, *, seed: int) -> list[Task]:
  """The tasks of a permuted or split stream over one data set (see the module docstring)."""
  _check_scenario(stream_config.scenario)
  if stream_config.kind == "permuted":
    return _permuted(splits, stream_config, seed)
  if stream_config.kind == "split":
    return _split(splits, stream_config)
  if stream_config.kind == "sequence":
    raise ConfigError("stream.kind='sequence' takes several data sets: use make_sequence_stream(list_of_splits, "
                      "scenario) (or load_task_stream with a list of data configs)")
  raise ConfigError(f"unknown stream.kind {stream_config.kind!r}; valid kinds: {', '.join(KINDS)}")


def make_sequence_stream(list_of_splits: Sequence[Splits], scenario: str, *, image_size: int = 0,
                         channels: int = 0) -> list[Task]:
  """One task per data set, images brought to a common (H, W, C) (see the module docstring)."""
  if not list_of_splits:
    raise ConfigError("a sequence stream needs at least one data set")
  _, h, w, _ = list_of_splits[0].train.images.shape
  if image_size:
    h = w = image_size
  channels = channels or max(s.train.images.shape[-1] for s in list_of_splits)
  parts = []
  for splits in list_of_splits:
    pair = []
    for dataset in splits:
      images = transforms.match_channels(dataset.images, channels, what=dataset.name)
      images = transforms.resize_images(images, h, w, what=dataset.name)
      pair.append(dataset._replace(images=images))
    parts.append((splits.train.name.split("/")[0], pair[0], pair[1], tuple(range(splits.train.num_classes))))
  return _assemble(parts, scenario)


def load_task_stream(data_configs, stream_config, *, seed: int) -> list[Task]:
  """Load the data set(s) and build the stream: one data config for permuted/split, a list for sequence."""
  if stream_config.kind == "sequence":
    if not isinstance(data_configs, (list, tuple)):
      raise ConfigError("stream.kind='sequence' needs a list of data configs, one per task")
    return make_sequence_stream([load_dataset(c) for c in data_configs], stream_config.scenario)
  if isinstance(data_configs, (list, tuple)):
    if len(data_configs) != 1:
      raise ConfigError(f"stream.kind={stream_config.kind!r} takes one data config, got {len(data_configs)}")
    data_configs = data_configs[0]
  return make_task_stream(load_dataset(data_configs), stream_config, seed=seed)
