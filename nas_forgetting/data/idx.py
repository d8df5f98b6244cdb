"""Reader for the IDX format of MNIST / Fashion-MNIST (raw or gzipped).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one big-endian uint32
per dimension, then the data in C order. Image files are magic 2051 (uint8, 3 dimensions: N, rows, cols), label
files magic 2049 (uint8, 1 dimension: N). Every deviation (wrong magic, wrong number of dimensions, a file shorter
or longer than its header promises, a gzip stream cut short) raises DataError naming the file and what was expected.

A folder is read by `load_idx_folder`: it looks for the standard file names
`{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` (also the `train-images.idx3-ubyte` spelling) and returns the
splits it finds. Labels are checked against the data set's number of classes (`num_classes`, 10 for the MNIST
family): a label byte outside [0, num_classes) raises DataError naming the file, the example's index and its value,
instead of silently declaring a larger label set.
"""

from __future__ import annotations

import gzip
import pathlib
import zlib

import numpy as np

from nas_forgetting.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# IDX type code -> numpy big-endian dtype.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Split name -> file prefix in the standard MNIST layout.
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}


def _read_bytes(path: pathlib.Path) -> bytes:
  if not path.is_file():
    raise DataError(f"IDX file {path} does not exist")
  raw = path.read_bytes()
  if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
    try:
      return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
      raise DataError(f"IDX file {path}: the gzip stream is truncated or corrupt ({exc})") from exc
  return raw


def read_idx(path: str | pathlib.Path, *, expected_magic: int | None = None) -> np.ndarray:
  """The array stored in an IDX file (native-endian). `expected_magic` (e.g. 2051, 2049) is checked when given."""
  path = pathlib.Path(path)
  data = _read_bytes(path)
  if len(data) < 4:
    raise DataError(f"IDX file {path}: expected at least a 4-byte header, found {len(data)} bytes")
  magic = int.from_bytes(data[:4], "big")
  if expected_magic is not None and magic != expected_magic:
    raise DataError(f"IDX file {path}: expected magic number {expected_magic}, found {magic}")
  zero, type_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
  if zero != 0 or type_code not in _DTYPES or ndim == 0:
    raise DataError(f"IDX file {path}: magic number {magic} is not an IDX header "
                    f"(expected 0x0000TTDD with type TT in {sorted(_DTYPES)} and DD >= 1 dimensions)")
  header_len = 4 + 4 * ndim
  if len(data) < header_len:
    raise DataError(f"IDX file {path}: truncated header, expected {header_len} bytes for {ndim} dimensions, "
                    f"found {len(data)}")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  dtype = _DTYPES[type_code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  found = len(data) - header_len
  if found < expected:
    raise DataError(f"IDX file {path} is truncated: header promises shape {shape} ({expected} bytes of data), "
                    f"found {found} bytes")
  if found > expected:
    raise DataError(f"IDX file {path}: {found - expected} unexpected bytes after the {expected} bytes of data "
                    f"that the header (shape {shape}) promises")
  array = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=header_len).reshape(shape)
  return array.astype(dtype.newbyteorder("="))


def read_idx_images(path: str | pathlib.Path) -> np.ndarray:
  """uint8 images (N, rows, cols) from an IDX image file (magic 2051)."""
  array = read_idx(path, expected_magic=IMAGES_MAGIC)
  if array.ndim != 3:  # Unreachable with magic 2051, kept as a guard for the reader's contract.
    raise DataError(f"IDX file {path}: expected 3 dimensions (N, rows, cols), found shape {array.shape}")
  return array


def read_idx_labels(path: str | pathlib.Path) -> np.ndarray:
  """uint8 labels (N,) from an IDX label file (magic 2049)."""
  array = read_idx(path, expected_magic=LABELS_MAGIC)
  if array.ndim != 1:
    raise DataError(f"IDX file {path}: expected 1 dimension (N,), found shape {array.shape}")
  return array


def _find(folder: pathlib.Path, prefix: str, kind: str) -> pathlib.Path | None:
  idx_kind = "idx3" if kind == "images" else "idx1"
  for stem in (f"{prefix}-{kind}-{idx_kind}-ubyte", f"{prefix}-{kind}.{idx_kind}-ubyte"):
    for name in (stem + ".gz", stem):
      candidate = folder / name
      if candidate.is_file():
        return candidate
  return None


def check_labels(labels: np.ndarray, num_classes: int, path: str | pathlib.Path) -> None:
  """DataError naming `path`, the first index and its value if a label lies outside [0, num_classes)."""
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    i = int(bad[0])
    raise DataError(f"IDX label file {path}: label {int(labels[i])} at index {i} (and {bad.size - 1} more) lies "
                    f"outside [0, {num_classes}); this data set has {num_classes} classes (data.num_classes sets "
                    "another count)")


def load_idx_pair(images_path: str | pathlib.Path, labels_path: str | pathlib.Path, *,
                  num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images (N, H, W, 1) and int32 labels (N,) from an image file and its label file; labels are checked
  against `num_classes` when given."""
  images = read_idx_images(images_path)
  labels = read_idx_labels(labels_path)
  if num_classes is not None:
    check_labels(labels, num_classes, labels_path)
  if images.shape[0] != labels.shape[0]:
    raise DataError(f"IDX files {images_path} and {labels_path}: {images.shape[0]} images but "
                    f"{labels.shape[0]} labels (expected the same number)")
  return images[..., None], labels.astype(np.int32)


def load_idx_folder(folder: str | pathlib.Path, *, num_classes: int | None = None,
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{'train': (images, labels), 'test': (...)} for the splits whose two files are in `folder`.

  At least one split must be present; a split with images but no labels (or the reverse) is an error. Labels
  outside [0, num_classes) are a DataError when `num_classes` is given.
  """
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise DataError(f"IDX folder {folder} does not exist")
  found = {}
  for split, prefix in SPLIT_PREFIXES.items():
    images_path, labels_path = _find(folder, prefix, "images"), _find(folder, prefix, "labels")
    if (images_path is None) != (labels_path is None):
      missing = f"{prefix}-images-idx3-ubyte[.gz]" if images_path is None else f"{prefix}-labels-idx1-ubyte[.gz]"
      raise DataError(f"IDX folder {folder}: the {split} split has one file but not {missing}")
    if images_path is not None:
      found[split] = load_idx_pair(images_path, labels_path, num_classes=num_classes)
  if not found:
    raise DataError(f"IDX folder {folder}: expected train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz] "
                    f"and/or t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz], found none")
  return found
