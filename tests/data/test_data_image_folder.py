"""Image class folders: class ids by sorted names, subsets, the decode cache, and every error."""

import os

import numpy as np
import pytest
from PIL import Image

from nas_forgetting.data import datasets, image_folder
from nas_forgetting.errors import DataError


def _write(folder, values, *, size=(6, 4), mode="L", ext="png"):
  folder.mkdir(parents=True, exist_ok=True)
  for i, value in enumerate(values):
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(folder / f"{i:03d}.{ext}")


def test_class_ids_follow_sorted_folder_names(tmp_path):
  _write(tmp_path / "train" / "zebra", [10, 20])
  _write(tmp_path / "train" / "ant", [30])
  _write(tmp_path / "train" / "Moth", [40, 50, 60])
  found, names = image_folder.load_image_folder(tmp_path)
  assert names == ["Moth", "ant", "zebra"] and set(found) == {"train"}
  images, labels = found["train"]
  assert images.shape == (6, 4, 6, 1) and images.dtype == np.uint8
  assert labels.tolist() == [0, 0, 0, 1, 2, 2]
  assert images[:, 0, 0, 0].tolist() == [40, 50, 60, 30, 10, 20]  # files in name order within a class


def test_rgb_jpeg_and_max_per_class(tmp_path):
  for split in ("train", "test"):
    _write(tmp_path / split / "a", [0, 100, 200], mode="RGB", ext="jpg")
    _write(tmp_path / split / "b", [50, 150], mode="RGB", ext="jpg")
  found, names = image_folder.load_image_folder(tmp_path, max_per_class=1)
  images, labels = found["test"]
  assert images.shape == (2, 4, 6, 3) and labels.tolist() == [0, 1]
  assert abs(int(images[1, 2, 2, 0]) - 50) <= 2  # JPEG is lossy, flat images nearly exact


def test_cache_is_used_and_invalidated(tmp_path, monkeypatch):
  cache = tmp_path / "cache"
  monkeypatch.setenv("NAS_FORGETTING_CACHE", str(cache))
  _write(tmp_path / "data" / "x", [10, 20])
  first, _ = image_folder.load_image_folder(tmp_path / "data")
  entries = list((cache / "image_folder").glob("*.npy"))
  assert len(entries) == 1
  np.testing.assert_array_equal(np.load(entries[0]), first["train"][0])
  # A cached entry is read back (overwrite it to prove the files are not decoded again).
  np.save(entries[0], np.full_like(first["train"][0], 99))
  cached, _ = image_folder.load_image_folder(tmp_path / "data")
  assert (cached["train"][0] == 99).all()
  # Changing a file (size and mtime) makes a new key: the change is seen.
  path = tmp_path / "data" / "x" / "001.png"
  Image.fromarray(np.full((5, 7), 77, np.uint8)).resize((6, 4)).save(path)
  os.utime(path, ns=(1, 1))
  fresh, _ = image_folder.load_image_folder(tmp_path / "data")
  assert fresh["train"][0][1, 0, 0, 0] == 77
  monkeypatch.setenv("NAS_FORGETTING_CACHE", "off")
  assert image_folder.cache_dir() is None


def test_errors_name_the_path(tmp_path):
  with pytest.raises(DataError, match=f"image folder {tmp_path / 'none'} does not exist"):
    image_folder.load_image_folder(tmp_path / "none")
  (tmp_path / "train" / "a").mkdir(parents=True)
  _write(tmp_path / "train" / "b", [1])
  with pytest.raises(DataError, match=f"image folder {tmp_path / 'train' / 'a'}: empty class folder"):
    image_folder.load_image_folder(tmp_path)
  _write(tmp_path / "train" / "a", [1], size=(5, 5))
  with pytest.raises(DataError, match="b/000.png has size 6x4 but .*a/000.png has 5x5; expected one size"):
    image_folder.load_image_folder(tmp_path)
  resized, _ = image_folder.load_image_folder(tmp_path, image_size=3)
  assert resized["train"][0].shape == (2, 3, 3, 1)
  (tmp_path / "train" / "b" / "bad.png").write_bytes(b"not an image")
  with pytest.raises(DataError, match="bad.png cannot be decoded"):
    image_folder.load_image_folder(tmp_path)
  empty = tmp_path / "empty_split"
  empty.mkdir()
  with pytest.raises(DataError, match="expected one sub-folder per class"):
    image_folder.load_image_folder(empty)


def test_mismatched_class_folders(tmp_path):
  _write(tmp_path / "train" / "a", [1])
  _write(tmp_path / "test" / "b", [1])
  with pytest.raises(DataError, match=r"train classes \['a'\] differ from test classes \['b'\]"):
    image_folder.load_image_folder(tmp_path)


def test_real_cifar10_subset(shared_data):
  config = datasets.default_data_config(source="image_folder", path=str(shared_data / "cifar10"), max_per_class=20)
  splits = datasets.load_dataset(config)
  assert splits.train.images.shape == (200, 32, 32, 3) and splits.test.images.shape == (200, 32, 32, 3)
  assert np.bincount(splits.train.labels).tolist() == [20] * 10 and splits.train.num_classes == 10
  assert image_folder.class_names(shared_data / "cifar10" / "train")[:3] == ["airplane", "automobile", "bird"]
  grey = datasets.load_dataset(datasets.default_data_config(
      source="image_folder", path=str(shared_data / "cifar10"), max_per_class=20, grayscale=True, image_size=28))
  assert grey.train.images.shape == (200, 28, 28, 1)
  # Natural colour images: the channels differ; grey-scale plus an averaging resize keeps each image's mean luma.
  assert np.abs(splits.train.images[..., 0] - splits.train.images[..., 2]).mean() > 0.01
  luma = (splits.train.images * np.array([0.299, 0.587, 0.114], np.float32)).sum(-1).mean(axis=(1, 2))
  np.testing.assert_allclose(grey.train.images.mean(axis=(1, 2, 3)), luma, atol=0.01)
