"""Image classification data sets as in-memory arrays, from any source, with one config shape.

`load_dataset(data_config) -> Splits(train, test)`; every split is an `ArrayDataset` of float32 images
(N, H, W, C) in [0, 1] and int32 labels (the 'embeddings' source is exempt from the range: its "images" are stored
feature vectors as (N, 1, 1, D), neither normalised nor clipped; see `embeddings`). The data config (build it with
`default_data_config(**overrides)`, or `offline_data_config(folder, **overrides)` for a data set stored under the
shared data folder):

  source            'embedded' | 'tfds' | 'idx' | 'image_folder' | 'embeddings'
  name              embedded name ('' = 'font_digits') or tfds name (mnist, fashion_mnist, cifar10, cifar100);
                    for idx and image_folder only a label for logs ('' = the folder's name)
  path              folder of IDX files (`{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`), of
                    `<split>/<label>/*.jpg|png` image folders, or of stored embeddings (`embeddings` module:
                    `<split>_embeddings.npy` / `<split>_labels.npy` [+ embedding.json], or the reference's
                    `<split>/<label:06d>/<index:06d>.npy`; a stored `val` split is merged into train)
  train_size        examples kept for training; 0 = all (embedded: 10,000)
  test_size         examples kept for testing; 0 = all (embedded: 2,000)
  seed              seeds subsampling, carving and the embedded generator
  image_size        0 = native size; else resize to image_size x image_size (bilinear, antialiased; image
                    folders resize while decoding, so folders of mixed sizes load too). 'embeddings' takes
                    only 0 here, grayscale=False and channels=0 (features are not resampled nor mixed)
  grayscale         convert RGB to one luma channel
  channels          0 = as the source; 1 or 3 = force that many channels (grey repeated to 3, colour to luma)
  max_per_class     image_folder only: decode at most this many files per class (first in name order); 0 = all
  holdout_fraction  single-split sources with test_size 0: the fraction carved out as the test split
  data_dir          tfds only: its data folder ('' = tfds' default)
  num_classes       idx only: the number of classes (0 = 10, the MNIST family the IDX layout holds: MNIST,
                    Fashion-MNIST, KMNIST). A label outside [0, num_classes) is a DataError naming the file and
                    the example's index (never a silently larger label set); other sources know their classes

Splitting rules (seeded, documented so runs can be compared):
- Source with both splits: `train_size` / `test_size` > 0 keep a seeded random subset of that split (in the
  original order), drawn from streams seeded by (seed, split), so the test subset does not depend on train_size.
- Source with a single split (e.g. offline MNIST, where only the 10k `t10k` files exist; an image folder without
  train/test sub-folders): one seeded permutation of it; the test split is its first `test_size` examples
  (or `round(holdout_fraction * N)` when 0), the train split the next `train_size` (0 = all the rest). Train and
  test never overlap, and the test split is the same whatever train_size is. More than N examples -> DataError.
"""

from __future__ import annotations

import logging
import pathlib
from typing import NamedTuple

import ml_collections
import numpy as np

from nas_forgetting import config_schema as cc
from nas_forgetting.data import embedded, embeddings, idx, image_folder, tfds_source, transforms
from nas_forgetting.errors import ConfigError, DataError
from nas_forgetting.paths import shared_data

SOURCES = ("embedded", "tfds", "idx", "image_folder", "embeddings")
_TFDS_NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}

_log = logging.getLogger(__name__)


class ArrayDataset(NamedTuple):
  """One split in memory: float32 images (N, H, W, C) in [0, 1], int32 labels (N,) in [0, num_classes).

  Stored embeddings (source 'embeddings') are (N, 1, 1, D) feature vectors, not in [0, 1] (not normalised)."""
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  name: str


class Splits(NamedTuple):
  train: ArrayDataset
  test: ArrayDataset


def make_array_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, name: str) -> ArrayDataset:
  """An ArrayDataset with its invariants checked (uint8 images are scaled to [0, 1])."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  images = np.ascontiguousarray(images, dtype=np.float32)
  labels = np.ascontiguousarray(labels, dtype=np.int32)
  if images.ndim != 4:
    raise DataError(f"data set {name}: expected images of shape (N, H, W, C), got {images.shape}")
  if labels.shape != (images.shape[0],):
    raise DataError(f"data set {name}: expected labels of shape ({images.shape[0]},), got {labels.shape}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(f"data set {name}: labels must lie in [0, {num_classes}), found [{labels.min()}, {labels.max()}]")
  return ArrayDataset(images, labels, int(num_classes), name)


def default_data_config(**overrides) -> ml_collections.ConfigDict:
  """The `data` sub-config with every field declared (see the module docstring); overrides must be known fields."""
  config = ml_collections.ConfigDict()
  config.source = "embedded"  # 'embedded' | 'tfds' | 'idx' | 'image_folder' | 'embeddings' (stored features)
  config.name = ""  # embedded name ('' = font_digits) or tfds name; a label for local folders ('' = folder name)
  config.path = ""  # folder for 'idx', 'image_folder' and 'embeddings'
  config.train_size = 0  # training examples kept; 0 = all (embedded: 10,000)
  config.test_size = 0  # test examples kept; 0 = all (embedded: 2,000)
  config.seed = 0  # seeds subsampling, carving of single-split sources, and the embedded generator
  config.image_size = 0  # 0 = native; else resize to image_size x image_size
  config.grayscale = False  # convert RGB images to one luma channel
  config.channels = 0  # 0 = as the source; 1 or 3 = force (grey repeated to 3 / colour to luma)
  config.max_per_class = 0  # image_folder: at most this many files decoded per class (first by name); 0 = all
  config.holdout_fraction = 0.2  # single-split sources with test_size 0: fraction carved out as test
  config.data_dir = ""  # tfds data folder ('' = tfds default)
  config.num_classes = 0  # idx only: number of classes (0 = 10, the MNIST family); a label outside it is an error
  return cc.override(config, overrides, group="data")


# The data sets stored offline under the shared data folder (`nas_forgetting.paths.shared_data`): folder ->
# the fields that read it. 'mnist' holds only the 10,000-image MNIST test split (IDX files); by default it is
# carved into 8,000 train / 2,000 test, the reduced scale of the offline MNIST experiments. 'cifar10' holds a
# CIFAR-10 JPEG export in train/ and test/ image folders.
OFFLINE = {
    "mnist": {"source": "idx", "train_size": 8000, "test_size": 2000},
    "cifar10": {"source": "image_folder"},
}


def offline_data_config(folder: str, **overrides) -> ml_collections.ConfigDict:
  """`default_data_config` for the offline data set `folder` (a key of `OFFLINE`) at its shared-data path,
  with `OFFLINE[folder]`'s fields, then `overrides`."""
  if folder not in OFFLINE:
    raise ConfigError(f"no offline data set {folder!r}; known: {', '.join(OFFLINE)}")
  return default_data_config(**{"path": shared_data(folder), **OFFLINE[folder], **overrides})


IDX_DEFAULT_NUM_CLASSES = 10


def validate_data_config(config, field: str = "data") -> None:
  """Checks every field of a data config without reading any data; ConfigError naming `<field>.<name>`."""
  missing = [key for key in default_data_config().keys() if key not in config]
  if missing:
    raise ConfigError(f"{field} config lacks the fields {missing}; build it with "
                      f"nas_forgetting.data.datasets.default_data_config(**overrides) so every field is declared")
  cc.choice(config, "source", SOURCES, group=field)
  for name in ("train_size", "test_size", "image_size", "max_per_class", "seed", "num_classes"):
    cc.integer(config, name, minimum=0, group=field)
  cc.choice(config, "channels", (0, 1, 3), group=field)  # 0 = as the source
  cc.boolean(config, "grayscale", group=field)
  cc.number(config, "holdout_fraction", above=0.0, below=1.0, group=field)
  if config.source in ("idx", "image_folder", "embeddings") and not str(config.path).strip():
    raise ConfigError(f"{field}.source={config.source!r} needs {field}.path (a folder); it is empty")
  if config.source == "tfds" and config.name not in _TFDS_NUM_CLASSES:
    raise ConfigError(f"{field}.name: unknown tfds data set {config.name!r}; valid names: "
                      f"{', '.join(_TFDS_NUM_CLASSES)}")
  if config.source == "embedded" and config.name not in ("",) + tuple(embedded.NAMES):
    raise ConfigError(f"{field}.name={config.name!r} for source 'embedded'; known: {', '.join(embedded.NAMES)}")
  if config.num_classes and config.source != "idx":
    raise ConfigError(f"{field}.num_classes={config.num_classes} applies to source 'idx' only (source "
                      f"{config.source!r} knows its classes); leave it 0")


def _check_config(config) -> None:
  validate_data_config(config)
  if config.source == "embeddings" and (config.image_size or config.grayscale or config.channels):
    raise ConfigError(f"data.source='embeddings' stores feature vectors, not images: image_size, grayscale and "
                      f"channels must stay 0 / False / 0, got {config.image_size} / {config.grayscale} / "
                      f"{config.channels}")


def _subset(n: int, size: int, rng: np.random.Generator, what: str) -> np.ndarray:
  if size > n:
    raise DataError(f"{what}: asked for {size} examples but it has only {n}")
  if size == 0 or size == n:
    return np.arange(n)
  return np.sort(rng.permutation(n)[:size])


def carve_indices(n: int, *, train_size: int, test_size: int, holdout_fraction: float, seed: int,
                  what: str = "data set") -> tuple[np.ndarray, np.ndarray]:
  """Disjoint (train, test) index arrays carved out of one split of n examples (see the module docstring)."""
  test_n = test_size or int(round(holdout_fraction * n))
  train_n = train_size or n - test_n
  if test_n < 1 or train_n < 1 or train_n + test_n > n:
    raise DataError(f"{what}: cannot carve {train_n} train + {test_n} test examples out of its single split of "
                    f"{n} examples")
  perm = np.random.default_rng(np.random.SeedSequence([int(seed), 2])).permutation(n)
  return np.sort(perm[test_n:test_n + train_n]), np.sort(perm[:test_n])


def select_splits(found: dict[str, tuple[np.ndarray, np.ndarray]], config, what: str,
                  ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """Apply the splitting rules to the raw splits a source found ({'train': ...} and/or {'test': ...})."""
  if "train" in found and "test" in found:
    out = []
    for split, size, stream in (("train", config.train_size, 0), ("test", config.test_size, 1)):
      images, labels = found[split]
      rng = np.random.default_rng(np.random.SeedSequence([int(config.seed), stream]))
      keep = _subset(images.shape[0], int(size), rng, f"{what} ({split} split)")
      out.append((images[keep], labels[keep]))
    return out[0], out[1]
  (split, (images, labels)), = found.items()
  _log.info("%s has only a %s split: carving train/test from it with seed %d", what, split, config.seed)
  train_idx, test_idx = carve_indices(images.shape[0], train_size=int(config.train_size),
                                      test_size=int(config.test_size),
                                      holdout_fraction=float(config.holdout_fraction), seed=int(config.seed),
                                      what=f"{what} ({split} split)")
  return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


def _load_raw(config) -> tuple[dict, int, str]:
  """(raw splits, number of classes, data set name) of a source, before splitting and image options."""
  source = config.source
  if source == "embedded":
    name = config.name or embedded.NAMES[0]
    train, test = embedded.load_embedded(name, train_size=int(config.train_size),
                                         test_size=int(config.test_size), seed=int(config.seed))
    return {"train": train, "test": test}, embedded.NUM_CLASSES, name
  if source == "tfds":
    found = tfds_source.load_tfds(config.name, data_dir=config.data_dir)
    return found, _TFDS_NUM_CLASSES[config.name], config.name
  path = pathlib.Path(config.path)
  name = config.name or path.name
  if source == "embeddings":
    found, num_classes = embeddings.load_embedding_splits(path)
    return found, num_classes, name
  if source == "idx":
    num_classes = int(config.num_classes) or IDX_DEFAULT_NUM_CLASSES
    found = idx.load_idx_folder(path, num_classes=num_classes)
    return found, num_classes, name
  found, names = image_folder.load_image_folder(path, max_per_class=int(config.max_per_class),
                                                image_size=int(config.image_size))
  return found, len(names), name


def load_dataset(data_config) -> Splits:
  """Train and test splits of the configured data set (see the module docstring for every field)."""
  _check_config(data_config)
  found, num_classes, name = _load_raw(data_config)
  if data_config.source == "embedded":
    (train_x, train_y), (test_x, test_y) = found["train"], found["test"]
  else:
    (train_x, train_y), (test_x, test_y) = select_splits(found, data_config, f"data set {name}")
  out = []
  for split, images, labels in (("train", train_x, train_y), ("test", test_x, test_y)):
    what = f"{name}/{split}"
    dataset = make_array_dataset(images, labels, num_classes, what)
    images = transforms.apply_image_options(dataset.images, image_size=int(data_config.image_size),
                                            grayscale=bool(data_config.grayscale),
                                            channels=int(data_config.channels), what=what)
    out.append(dataset._replace(images=images))
  return Splits(*out)
