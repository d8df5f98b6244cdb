"""Stored embeddings (one feature vector per example) as a data source: `source='embeddings'`, `path=<folder>`.

This module owns the on-disk formats of stored embeddings (DP-NAS writes the embedding of a chosen deep prior in
them; the continual runner trains on them: continual learning on deep-prior embeddings). Two layouts:

* arrays (`"arrays"`): `<dir>/<split>_embeddings.npy` (N, D) floats (an (N, ...) array is flattened to (N, D)) and
  `<dir>/<split>_labels.npy` (N,) integers.
* reference (`"reference"`): `<dir>/<split>/<label:06d>/<index:06d>.npy`, one flattened feature vector per file,
  `index` running from 1 across the whole split: the layout the DP-NAS reference (PyTorch) writes under
  `stored_embedding/` and a torchvision `DatasetFolder` reads. Examples are read back in index order.

An optional `<dir>/embedding.json` (beside either layout) gives `num_classes`, `width` (D) and `counts`
({split: N}); whatever it states is checked against the stored data.

Splits are `train`, `val` and `test`; `train` is required, `val` and `test` are optional. `read_embeddings(dir)`
detects the layout (arrays when `embedding.json` or `train_embeddings.npy` exists, else reference when a `train/`
folder exists) and returns every split found, checked: the same D everywhere, finite values, integer labels in
[0, num_classes), matching counts. `num_classes` is `embedding.json`'s, else the largest label + 1.

As a data source (`load_dataset` with `source='embeddings'`): the stored `val` split is merged into `train` (in
that order: the continual runner has no validation split; DP-NAS carved `val` out of its training data), `test` is
the test split, and `train_size` / `test_size` / `seed` keep seeded subsets exactly as for any source with both
splits (a folder without `test` is carved like any single-split source). The features become "images" of shape
(N, 1, 1, D) (D as channels, so `MLP` and every flattening model see exactly the D features). Embeddings are
exempt from the [0, 1] range of images: the values are stored features (e.g. unbounded ReLU outputs) and are
neither normalised nor clipped. `image_size`, `grayscale` and `channels` would resample or mix features, so the
source refuses them (ConfigError).

Any missing, unreadable or inconsistent file raises DataError naming the path and what was expected.
"""

from __future__ import annotations

import json
import pathlib
from typing import Mapping, Sequence

import numpy as np

from nas_forgetting.errors import DataError

SPLITS = ("train", "val", "test")
LAYOUTS = ("arrays", "reference")
INFO_FILE = "embedding.json"
_ARRAYS_HINT = "<dir>/<split>_embeddings.npy (N, D) and <dir>/<split>_labels.npy (N,)"
_REFERENCE_HINT = "<dir>/<split>/<label:06d>/<index:06d>.npy"


def arrays_paths(directory: str | pathlib.Path, split: str) -> tuple[pathlib.Path, pathlib.Path]:
  """(embeddings file, labels file) of `split` in the arrays layout."""
  directory = pathlib.Path(directory)
  return directory / f"{split}_embeddings.npy", directory / f"{split}_labels.npy"


def detect_layout(directory: str | pathlib.Path) -> str:
  """'arrays' or 'reference' for a stored-embedding folder (DataError when it is neither)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise DataError(f"{directory}: no such embedding folder (expected {_ARRAYS_HINT} [+ {INFO_FILE}], or "
                    f"{_REFERENCE_HINT})")
  if (directory / INFO_FILE).is_file() or arrays_paths(directory, "train")[0].is_file():
    return "arrays"
  if (directory / "train").is_dir():
    return "reference"
  raise DataError(f"{directory}: not a stored-embedding folder: found neither {INFO_FILE} / train_embeddings.npy "
                  f"({_ARRAYS_HINT}) nor a train/ folder ({_REFERENCE_HINT})")


def _load_npy(path: pathlib.Path) -> np.ndarray:
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise DataError(f"{path}: unreadable .npy file ({e}); expected a numpy array written by numpy.save") from e


def read_info(directory: str | pathlib.Path) -> dict | None:
  """The folder's `embedding.json` as a dict, or None when there is none."""
  path = pathlib.Path(directory) / INFO_FILE
  if not path.is_file():
    return None
  try:
    info = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: unreadable ({e}); expected a JSON object (num_classes, width, counts)") from e
  if not isinstance(info, dict):
    raise DataError(f"{path}: expected a JSON object (num_classes, width, counts), got {type(info).__name__}")
  return info


def _check_split(features: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
  """(float32 (N, D), int32 (N,)) after checking dtypes, shapes and finiteness."""
  if features.ndim < 2 or features.shape[0] == 0:
    raise DataError(f"{what}: expected embeddings of shape (N, D) with N >= 1, got {features.shape}")
  if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
    raise DataError(f"{what}: expected numeric embeddings, got dtype {features.dtype}")
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{what}: expected integer labels of shape (N,), got {labels.dtype} {labels.shape}")
  if labels.shape[0] != features.shape[0]:
    raise DataError(f"{what}: {features.shape[0]} embeddings but {labels.shape[0]} labels; expected one label each")
  features = np.ascontiguousarray(features.reshape(features.shape[0], -1), dtype=np.float32)
  if not np.isfinite(features).all():
    raise DataError(f"{what}: embeddings contain NaN or infinite values")
  if labels.min() < 0:
    raise DataError(f"{what}: negative label {labels.min()}; expected labels in [0, num_classes)")
  return features, np.ascontiguousarray(labels, dtype=np.int32)


def read_arrays(directory: str | pathlib.Path, splits: Sequence[str] = SPLITS, *,
                required: Sequence[str] = ("train",)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (float32 (N, D), int32 (N,))} of the arrays layout; splits outside `required` may be absent."""
  out = {}
  for split in splits:
    x_path, y_path = arrays_paths(directory, split)
    present = [p.is_file() for p in (x_path, y_path)]
    if not any(present) and split not in required:
      continue
    for p, here in zip((x_path, y_path), present):
      if not here:
        raise DataError(f"{p}: missing (expected {_ARRAYS_HINT} for split {split!r})")
    out[split] = _check_split(_load_npy(x_path), _load_npy(y_path), f"{x_path} / {y_path.name}")
  return out


def read_reference_layout(directory: str | pathlib.Path, splits: Sequence[str] = SPLITS, *,
                          required: Sequence[str] = ("train",)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (float32 (N, D), int32 (N,))} of the reference layout, examples in index order."""
  out = {}
  for split in splits:
    root = pathlib.Path(directory) / split
    if not root.is_dir():
      if split in required:
        raise DataError(f"{root}: no such embedding folder (expected {_REFERENCE_HINT})")
      continue
    items = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
      if not label_dir.name.isdigit():
        raise DataError(f"{label_dir}: expected a label folder named by digits (<label:06d>)")
      for f in label_dir.glob("*.npy"):
        if not f.stem.isdigit():
          raise DataError(f"{f}: expected an index file name of digits (<index:06d>.npy)")
        items.append((int(f.stem), int(label_dir.name), f))
    if not items:
      raise DataError(f"{root}: no .npy files (expected {_REFERENCE_HINT})")
    items.sort()
    for (a, _, fa), (b, _, fb) in zip(items, items[1:]):
      if a == b:
        raise DataError(f"{fa} and {fb}: the same index {a} twice; expected one running index per split")
    vectors = []
    for _, _, f in items:
      vector = _load_npy(f).reshape(-1)
      if vectors and vector.shape != vectors[0].shape:
        raise DataError(f"{f}: {vector.size} features, but {items[0][2]} has {vectors[0].size}; expected one "
                        f"embedding width per split")
      vectors.append(vector)
    labels = np.asarray([label for _, label, _ in items], np.int64)
    out[split] = _check_split(np.stack(vectors), labels, str(root))
  return out


def read_embeddings(directory: str | pathlib.Path, *, layout: str = "auto",
                    ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
  """({split: (features (N, D) float32, labels (N,) int32)}, num_classes) of a stored-embedding folder, checked."""
  directory = pathlib.Path(directory)
  if layout == "auto":
    layout = detect_layout(directory)
  if layout not in LAYOUTS:
    raise DataError(f"{directory}: unknown embedding layout {layout!r}; expected 'auto' or one of {LAYOUTS}")
  found = read_arrays(directory) if layout == "arrays" else read_reference_layout(directory)
  info = read_info(directory)  # written beside either layout (DP-NAS writes it with both)
  widths = {split: x.shape[1] for split, (x, _) in found.items()}
  if len(set(widths.values())) != 1:
    raise DataError(f"{directory}: embedding widths differ between splits {widths}; expected one width D")
  width = widths["train"]
  largest = max(int(y.max()) for _, y in found.values())
  num_classes = largest + 1
  if info is not None:
    where = directory / INFO_FILE
    if "width" in info and int(info["width"]) != width:
      raise DataError(f"{where}: states width {info['width']} but the stored embeddings have D = {width}")
    for split, count in (info.get("counts") or {}).items():
      if split in found and int(count) != found[split][0].shape[0]:
        raise DataError(f"{where}: states {count} {split} examples but the stored {layout} layout has "
                        f"{found[split][0].shape[0]}")
    if "num_classes" in info:
      num_classes = int(info["num_classes"])
      if largest >= num_classes:
        raise DataError(f"{where}: states num_classes {num_classes} but the stored labels reach {largest}")
  return found, num_classes


def load_embedding_splits(directory: str | pathlib.Path, *, layout: str = "auto",
                          ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
  """The data source: ({'train': ..., ['test': ...]}, num_classes) with val merged into train and the features as
  (N, 1, 1, D) "images" (see the module docstring)."""
  found, num_classes = read_embeddings(directory, layout=layout)
  if "val" in found:
    (train_x, train_y), (val_x, val_y) = found.pop("train"), found.pop("val")
    found["train"] = (np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]))
  return {split: (x.reshape(x.shape[0], 1, 1, x.shape[1]), y) for split, (x, y) in found.items()}, num_classes


def write_arrays(directory: str | pathlib.Path, features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                 info: Mapping | None = None) -> None:
  """Writes `<dir>/<split>_embeddings.npy` (float32 (N, D)) and `<split>_labels.npy` (int32) for every split given,
  and `embedding.json` = `info` (with `width` and `counts` filled in) when given."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  for split in features:
    x = np.asarray(features[split], np.float32)
    x_path, y_path = arrays_paths(directory, split)
    np.save(x_path, x.reshape(x.shape[0], -1))
    np.save(y_path, np.asarray(labels[split], np.int32))
  if info is not None:
    write_info(directory, features, info)


def write_info(directory: str | pathlib.Path, features: Mapping[str, np.ndarray], info: Mapping) -> dict:
  """Writes `<dir>/embedding.json` = `info` with `width` (D) and `counts` ({split: N}) of `features` filled in, beside
  either layout; returns what it wrote."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  first = np.asarray(next(iter(features.values())))
  full = {**dict(info), "width": int(np.prod(first.shape[1:])),
          "counts": {split: int(len(x)) for split, x in features.items()}}
  (directory / INFO_FILE).write_text(json.dumps(full, indent=2))
  return full


def write_reference_layout(directory: str | pathlib.Path, features: Mapping[str, np.ndarray],
                           labels: Mapping[str, np.ndarray]) -> None:
  """Writes `<dir>/<split>/<label:06d>/<index:06d>.npy` (float32 vectors, index 1.. across each split)."""
  for split in features:
    x, y = np.asarray(features[split], np.float32), np.asarray(labels[split])
    root = pathlib.Path(directory) / split
    for label in np.unique(y):
      (root / f"{int(label):06d}").mkdir(parents=True, exist_ok=True)
    for i, (vector, label) in enumerate(zip(x, y), start=1):
      np.save(root / f"{int(label):06d}" / f"{i:06d}.npy", vector.reshape(-1))
