"""Named data sets through tensorflow-datasets: mnist, fashion_mnist, cifar10, cifar100.

tensorflow_datasets is imported lazily (it takes a moment). Two paths:
- TensorFlow installed (`pip install nas_forgetting[tf]`): the stock builder is downloaded and prepared when it is
  not yet in `data_dir` (online), then read whole with `tfds.as_numpy(builder.as_dataset(split, batch_size=-1))`.
- TensorFlow missing: an already prepared data set in ArrayRecord format is read with
  `builder.as_data_source(split)`, which needs no TensorFlow (tfds decodes image features there with OpenCV or
  PIL). Preparing a stock builder needs TensorFlow, so an
  unprepared data set raises ConfigError saying to install the `tf` extra or to use a local source
  (`idx` for MNIST-format files, `image_folder` for class folders).
`data_dir` empty means tfds' default (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from nas_forgetting.errors import ConfigError, DataError

NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100")
_SPLITS = ("train", "test")
# Records read per call from an ArrayRecord data source.
_READ_CHUNK = 1024


def tensorflow_available() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def _check_name(name: str) -> None:
  if name not in NAMES:
    raise ConfigError(f"unknown tfds data set {name!r}; valid names: {', '.join(NAMES)}")


def _record_arrays(record, name: str) -> tuple[np.ndarray, np.ndarray]:
  if "image" not in record or "label" not in record:
    raise DataError(f"tfds data set {name}: expected features 'image' and 'label', found {sorted(record)}")
  return np.asarray(record["image"]), np.asarray(record["label"])


def read_data_source(source, name: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images (N, H, W, C) and int32 labels from a random-access tfds data source (records with image/label)."""
  n = len(source)
  if n == 0:
    raise DataError(f"tfds data set {name}: the split is empty")
  images, labels = [], []
  for start in range(0, n, _READ_CHUNK):
    records = source.__getitems__(range(start, min(start + _READ_CHUNK, n)))
    for record in records:
      image, label = _record_arrays(record, name)
      images.append(image)
      labels.append(label)
  images = np.stack(images)
  if images.ndim == 3:
    images = images[..., None]
  return images, np.asarray(labels, np.int32)


def read_builder(builder, name: str, *, use_tensorflow: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{'train': (images, labels), 'test': (...)} from a prepared builder."""
  out = {}
  for split in _SPLITS:
    if split not in builder.info.splits:
      raise DataError(f"tfds data set {name} in {builder.data_dir}: expected a {split!r} split, found "
                      f"{sorted(builder.info.splits)}")
    if use_tensorflow:
      import tensorflow_datasets as tfds

      arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
      images, labels = _record_arrays(arrays, name)
      images = images[..., None] if images.ndim == 3 else images
      out[split] = (images, labels.astype(np.int32))
    else:
      out[split] = read_data_source(builder.as_data_source(split=split), name)
  return out


def load_tfds(name: str, *, data_dir: str = "") -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Train and test arrays of a named tfds data set (downloaded and prepared when TensorFlow is installed)."""
  _check_name(name)
  import tensorflow_datasets as tfds

  builder = tfds.builder(name, data_dir=data_dir or None)
  has_tf = tensorflow_available()
  if not builder.is_prepared():
    if not has_tf:
      raise ConfigError(
          f"tfds data set {name!r} is not prepared in {builder.data_dir} and preparing it needs TensorFlow: "
          f"`pip install nas_forgetting[tf]` (then it downloads when online), or use a local source "
          f"(data.source='idx' for MNIST-format files, 'image_folder' for <split>/<label>/ image folders)")
    builder.download_and_prepare()
  file_format = str(getattr(builder.info, "file_format", ""))
  if not has_tf and "array_record" not in file_format.lower():
    raise ConfigError(
        f"tfds data set {name!r} in {builder.data_dir} is stored as {file_format or 'tfrecord'}, which needs "
        f"TensorFlow to read: `pip install nas_forgetting[tf]`, or prepare it with file_format='array_record'")
  return read_builder(builder, name, use_tensorflow=has_tf)
