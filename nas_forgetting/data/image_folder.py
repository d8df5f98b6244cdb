"""Image class folders: `<root>/<split>/<label>/*.{jpg,jpeg,png,bmp}` (the usual image-folder convention).

- Class ids are the positions of the label folders in sorted (byte-wise) name order, as torchvision's ImageFolder
  and tfds' ImageFolder assign them; `class_names(split_dir)` gives that order.
- Files within a class are taken in sorted name order; `max_per_class > 0` keeps only the first that many of each
  class (cheap: only those files are decoded), which makes small subsets of a large folder quick to load.
- Images are decoded with PIL: all-grey folders give 1 channel, anything else is converted to RGB (3 channels).
  Every image of a split must have the same size, unless `image_size > 0` is given, in which case each image is
  resized to `image_size x image_size` while decoding.
- A missing folder, a split without class folders, a class folder without images and an unreadable image all
  raise DataError naming the path.

Decoded-array cache: decoding tens of thousands of JPEGs takes a while on a small machine, so each class's decoded
uint8 array is cached as a `.npy` file under `$NAS_FORGETTING_CACHE` (default `~/.cache/nas_forgetting`), in
`image_folder/<key>.npy`. The key is a SHA-256 over the absolute path, modification time (ns) and size of every
decoded file, the channel mode and the decode-time size, so any change to the files makes a new entry; nothing is
ever written next to the data or in the repository. Delete the folder to reclaim the space; set
`NAS_FORGETTING_CACHE=off` to disable caching.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib

import numpy as np

from nas_forgetting.errors import DataError
from nas_forgetting.progress import progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SPLIT_ALIASES = {"train": ("train",), "test": ("test", "val", "valid", "validation")}

_log = logging.getLogger(__name__)


def cache_dir() -> pathlib.Path | None:
  """Where decoded arrays are cached, or None when caching is off."""
  env = os.environ.get("NAS_FORGETTING_CACHE", "")
  if env.lower() == "off":
    return None
  root = pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "nas_forgetting"
  return root / "image_folder"


def class_names(split_dir: str | pathlib.Path) -> list[str]:
  """The label folders of a split in class-id order (sorted names)."""
  split_dir = pathlib.Path(split_dir)
  if not split_dir.is_dir():
    raise DataError(f"image folder {split_dir} does not exist")
  names = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))
  if not names:
    raise DataError(f"image folder {split_dir}: expected one sub-folder per class (<split>/<label>/*.jpg|png), "
                    f"found none")
  return names


def _image_files(class_dir: pathlib.Path) -> list[os.DirEntry]:
  files = sorted((e for e in os.scandir(class_dir)
                  if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)), key=lambda e: e.name)
  if not files:
    raise DataError(f"image folder {class_dir}: empty class folder, expected image files "
                    f"({', '.join(IMAGE_EXTENSIONS)})")
  return files


def _decode(files: list[os.DirEntry], mode: str, image_size: int, class_dir: pathlib.Path) -> np.ndarray:
  from PIL import Image, UnidentifiedImageError

  arrays = []
  for entry in files:
    try:
      with Image.open(entry.path) as img:
        img = img.convert(mode)
        if image_size:
          img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(img, np.uint8))
    except (OSError, UnidentifiedImageError) as exc:
      raise DataError(f"image file {entry.path} cannot be decoded ({exc})") from exc
  shape = arrays[0].shape
  for entry, array in zip(files, arrays):
    if array.shape != shape:
      raise DataError(f"image file {entry.path} has size {array.shape[1]}x{array.shape[0]} but "
                      f"{files[0].path} has {shape[1]}x{shape[0]}; expected one size per folder "
                      f"(or set image_size to resize while decoding)")
  stacked = np.stack(arrays)
  return stacked[..., None] if stacked.ndim == 3 else stacked


def _cache_key(files: list[os.DirEntry], mode: str, image_size: int) -> str:
  digest = hashlib.sha256(f"v1|{mode}|{image_size}".encode())
  for entry in files:
    stat = entry.stat()
    digest.update(f"|{os.path.abspath(entry.path)}|{stat.st_mtime_ns}|{stat.st_size}".encode())
  return digest.hexdigest()[:32]


def _load_class(files: list[os.DirEntry], mode: str, image_size: int, class_dir: pathlib.Path) -> np.ndarray:
  root = cache_dir()
  path = None
  if root is not None:
    path = root / f"{_cache_key(files, mode, image_size)}.npy"
    if path.is_file():
      try:
        return np.load(path)
      except (OSError, ValueError):
        _log.warning("ignoring unreadable cache entry %s", path)
  array = _decode(files, mode, image_size, class_dir)
  if path is not None:
    try:
      root.mkdir(parents=True, exist_ok=True)
      tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
      np.save(tmp, array)
      os.replace(tmp, path)
    except OSError as exc:
      _log.warning("cannot write the decoded-image cache %s (%s); continuing without it", path, exc)
  return array


def _mode(files: list[os.DirEntry]) -> str:
  from PIL import Image

  with Image.open(files[0].path) as img:
    return "L" if img.mode in ("L", "1", "I", "I;16", "F") else "RGB"


def load_split(split_dir: str | pathlib.Path, *, max_per_class: int = 0, image_size: int = 0,
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """uint8 images (N, H, W, C), int32 labels (N,) and class names of one split folder."""
  split_dir = pathlib.Path(split_dir)
  if max_per_class < 0:
    raise DataError(f"image folder {split_dir}: max_per_class must be >= 0, got {max_per_class}")
  names = class_names(split_dir)
  per_class = []
  for name in names:
    files = _image_files(split_dir / name)
    per_class.append(files[:max_per_class] if max_per_class else files)
  mode = _mode(per_class[0])
  images, labels = [], []
  for label, (name, files) in enumerate(progress(list(zip(names, per_class)), desc=f"images {split_dir.name}",
                                                        unit="class", leave=False)):
    array = _load_class(files, mode, image_size, split_dir / name)
    images.append(array)
    labels.append(np.full(array.shape[0], label, np.int32))
  for files, array in zip(per_class, images):
    if array.shape[1:] != images[0].shape[1:]:
      (h, w, _), (h0, w0, _) = array.shape[1:], images[0].shape[1:]
      raise DataError(f"image file {files[0].path} has size {w}x{h} but {per_class[0][0].path} has {w0}x{h0}; "
                      f"expected one size per folder (or set image_size to resize while decoding)")
  return np.concatenate(images), np.concatenate(labels), names


def load_image_folder(root: str | pathlib.Path, *, max_per_class: int = 0, image_size: int = 0,
                      ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
  """({'train': (images, labels), 'test': (...)}, class names) from `root/<split>/<label>/*`.

  The test split is `test/` (or `val/`, `valid/`, `validation/`). When `root` has neither `train/` nor a test
  folder but holds class folders directly, it is one split named 'train' (the caller carves a test split).
  Both splits must have the same class folders.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DataError(f"image folder {root} does not exist")
  found: dict[str, pathlib.Path] = {}
  for split, aliases in SPLIT_ALIASES.items():
    for alias in aliases:
      if (root / alias).is_dir():
        found[split] = root / alias
        break
  if not found:
    found["train"] = root
  out, names_of = {}, {}
  for split, split_dir in found.items():
    images, labels, names = load_split(split_dir, max_per_class=max_per_class, image_size=image_size)
    out[split], names_of[split] = (images, labels), names
  if len(names_of) == 2 and names_of["train"] != names_of["test"]:
    raise DataError(f"image folder {root}: train classes {names_of['train']} differ from test classes "
                    f"{names_of['test']}; expected the same class folders in both splits")
  return out, next(iter(names_of.values()))
