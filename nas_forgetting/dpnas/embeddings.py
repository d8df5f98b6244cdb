"""Stored deep-prior embeddings: the reference's per-sample layout and single arrays.

* Reference layout (`layout="reference"`): `<dir>/<split>/<label:06d>/<index:06d>.npy`, one float32 feature vector
  per example, `index` running from 1 across the whole split (train, val, test), readable by a torchvision
  `DatasetFolder` (as the reference and Avalanche use it).
* Arrays (`layout="arrays"`): `<dir>/<split>_embeddings.npy` (N, D) float32 and `<dir>/<split>_labels.npy` (N,) int32,
  plus `<dir>/embedding.json` (net, seed, width, counts). `layout="both"` writes both.

`load_arrays` / `load_reference_layout` read them back (the reference layout in index order), so the continual
runner can train on deep-prior embeddings.
"""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

import numpy as np

from nas_forgetting.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
LAYOUTS = ("reference", "arrays", "both")


def store_embeddings(evaluator, net: str, seed: int, directory: str | pathlib.Path, *, layout: str = "both"
                     ) -> dict:
  """Embeds the evaluator's train/val/test data with the deep prior of (`net`, `seed`) and writes it."""
  if layout not in LAYOUTS:
    raise ConfigError(f"embedding layout {layout!r}; expected one of {LAYOUTS}")
  directory = pathlib.Path(directory)
  embedded = [e[0] for e in evaluator.embed(net, [seed])]
  data = evaluator.data
  labels = (data.train_y, data.val_y, data.test_y)
  if layout in ("reference", "both"):
    write_reference_layout(directory, dict(zip(SPLITS, embedded)), dict(zip(SPLITS, labels)))
  if layout in ("arrays", "both"):
    directory.mkdir(parents=True, exist_ok=True)
    for split, x, y in zip(SPLITS, embedded, labels):
      np.save(directory / f"{split}_embeddings.npy", np.asarray(x, np.float32))
      np.save(directory / f"{split}_labels.npy", np.asarray(y, np.int32))
  info = {"net": net, "seed": int(seed), "width": int(embedded[0].shape[1]),
          "counts": {s: int(len(x)) for s, x in zip(SPLITS, embedded)}, "num_classes": int(data.num_classes)}
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "embedding.json").write_text(json.dumps(info, indent=2))
  return info


def write_reference_layout(directory: str | pathlib.Path, features: dict, labels: dict) -> None:
  """`<dir>/<split>/<label:06d>/<index:06d>.npy` with index 1.. across each split."""
  for split in features:
    x, y = np.asarray(features[split], np.float32), np.asarray(labels[split])
    for label in np.unique(y):
      (pathlib.Path(directory) / split / f"{int(label):06d}").mkdir(parents=True, exist_ok=True)
    for i, (vector, label) in enumerate(zip(x, y), start=1):
      np.save(pathlib.Path(directory) / split / f"{int(label):06d}" / f"{i:06d}.npy", vector)


def load_reference_layout(directory: str | pathlib.Path, splits: Sequence[str] = SPLITS) -> dict:
  """{split: (features (N, D), labels (N,))} from the reference layout, in index order."""
  out = {}
  for split in splits:
    root = pathlib.Path(directory) / split
    if not root.is_dir():
      raise DataError(f"{root}: no such embedding folder (expected <dir>/<split>/<label:06d>/<index:06d>.npy)")
    items = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
      if not label_dir.name.isdigit():
        raise DataError(f"{label_dir}: expected a six-digit label folder")
      for f in label_dir.glob("*.npy"):
        if not f.stem.isdigit():
          raise DataError(f"{f}: expected a six-digit index file name")
        items.append((int(f.stem), int(label_dir.name), f))
    if not items:
      raise DataError(f"{root}: no .npy files")
    items.sort()
    out[split] = (np.stack([np.load(f) for _, _, f in items]), np.asarray([l for _, l, _ in items], np.int32))
  return out


def load_arrays(directory: str | pathlib.Path, splits: Sequence[str] = SPLITS) -> dict:
  """{split: (features, labels)} from the single-array layout."""
  out = {}
  for split in splits:
    paths = [pathlib.Path(directory) / f"{split}_{kind}.npy" for kind in ("embeddings", "labels")]
    for p in paths:
      if not p.is_file():
        raise DataError(f"{p}: missing (expected <dir>/<split>_embeddings.npy and <split>_labels.npy)")
    out[split] = (np.load(paths[0]), np.load(paths[1]))
  return out


def as_splits(directory: str | pathlib.Path, *, name: str = "deep_prior", include_val_in_train: bool = False):
  """Stored single-array embeddings as the data module's `Splits` (features as (N, 1, 1, D) "images").

  This is how the continual-learning runner consumes deep-prior embeddings (hypothesis 4): an MLP on the
  flattened input sees exactly the D features. Values are not in [0, 1] (they are ReLU features).
  """
  from nas_forgetting.data.datasets import Splits, make_array_dataset
  info_path = pathlib.Path(directory) / "embedding.json"
  if not info_path.is_file():
    raise DataError(f"{info_path}: missing (write embeddings with store_embeddings first)")
  num_classes = json.loads(info_path.read_text())["num_classes"]
  arrays = load_arrays(directory)
  train_x, train_y = arrays["train"]
  if include_val_in_train:
    train_x = np.concatenate([train_x, arrays["val"][0]])
    train_y = np.concatenate([train_y, arrays["val"][1]])
  test_x, test_y = arrays["test"]
  as_images = lambda x: x.reshape(len(x), 1, 1, -1)
  return Splits(make_array_dataset(as_images(train_x), train_y, num_classes, f"{name}/train"),
                make_array_dataset(as_images(test_x), test_y, num_classes, f"{name}/test"))
