"""IDX reader: the real MNIST test files, and every malformed-file error."""

import gzip

import numpy as np
import pytest

from nas_forgetting.data import idx
from nas_forgetting.errors import DataError

# Published class counts of the MNIST test split.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
  header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_real_mnist_test_split(shared_data):
  images = idx.read_idx_images(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")
  labels = idx.read_idx_labels(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
  assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (10000,)
  assert np.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS
  # Border pixels of MNIST are background; the digit mass sits in the middle.
  assert images[:, 0, :].max() == 0 and images[:, 13:15, 13:15].mean() > 50


def test_folder_finds_only_the_test_split(shared_data):
  found = idx.load_idx_folder(shared_data / "mnist")
  assert set(found) == {"test"}
  images, labels = found["test"]
  assert images.shape == (10000, 28, 28, 1) and labels.dtype == np.int32


def test_raw_and_gzip_read_the_same(tmp_path):
  rng = np.random.default_rng(0)
  array = rng.integers(0, 256, (5, 3, 4)).astype(np.uint8)
  (tmp_path / "raw").write_bytes(_idx_bytes(array))
  (tmp_path / "zipped").write_bytes(gzip.compress(_idx_bytes(array)))
  np.testing.assert_array_equal(idx.read_idx_images(tmp_path / "raw"), array)
  np.testing.assert_array_equal(idx.read_idx_images(tmp_path / "zipped"), array)


def test_other_dtypes_are_read_big_endian(tmp_path):
  array = np.arange(6, dtype=np.int32).reshape(2, 3) * 1000
  (tmp_path / "ints").write_bytes(_idx_bytes(array, 0x0C))
  np.testing.assert_array_equal(idx.read_idx(tmp_path / "ints"), array)


def test_wrong_magic_names_path_and_expected(tmp_path):
  labels = np.zeros(7, np.uint8)
  path = tmp_path / "labels-as-images"
  path.write_bytes(_idx_bytes(labels))
  with pytest.raises(DataError, match=r"labels-as-images.*expected magic number 2051, found 2049"):
    idx.read_idx_images(path)
  garbage = tmp_path / "garbage"
  garbage.write_bytes(b"\x12\x34\x56\x78" + bytes(20))
  with pytest.raises(DataError, match="garbage.*not an IDX header"):
    idx.read_idx(garbage)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_file(tmp_path, compress):
  data = _idx_bytes(np.ones((4, 28, 28), np.uint8))[:-100]
  path = tmp_path / "short"
  path.write_bytes(gzip.compress(data) if compress else data)
  with pytest.raises(DataError, match=r"short is truncated: header promises shape \(4, 28, 28\) \(3136 bytes"):
    idx.read_idx_images(path)


def test_truncated_gzip_stream(tmp_path):
  path = tmp_path / "cut.gz"
  path.write_bytes(gzip.compress(_idx_bytes(np.ones((40, 28, 28), np.uint8)))[:60])
  with pytest.raises(DataError, match="cut.gz.*gzip stream is truncated"):
    idx.read_idx_images(path)


def test_trailing_bytes_and_short_header(tmp_path):
  long = tmp_path / "long"
  long.write_bytes(_idx_bytes(np.ones(3, np.uint8)) + b"xx")
  with pytest.raises(DataError, match="long: 2 unexpected bytes"):
    idx.read_idx_labels(long)
  header = tmp_path / "header"
  header.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
  with pytest.raises(DataError, match="header: truncated header, expected 16 bytes"):
    idx.read_idx_images(header)


def test_missing_file_and_folder(tmp_path):
  with pytest.raises(DataError, match=f"{tmp_path / 'nope.gz'} does not exist"):
    idx.read_idx_labels(tmp_path / "nope.gz")
  with pytest.raises(DataError, match=f"IDX folder {tmp_path}: expected train-images-idx3-ubyte"):
    idx.load_idx_folder(tmp_path)
  (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.ones((2, 2, 2), np.uint8)))
  with pytest.raises(DataError, match="test split has one file but not t10k-labels-idx1-ubyte"):
    idx.load_idx_folder(tmp_path)


def test_image_and_label_counts_must_match(tmp_path):
  (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.ones((3, 2, 2), np.uint8)))
  (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.ones(4, np.uint8)))
  with pytest.raises(DataError, match="3 images but 4 labels"):
    idx.load_idx_folder(tmp_path)


def test_label_outside_the_declared_classes_names_file_and_index(tmp_path):
  # A label byte of 200 must not silently make a 201-class data set (DP-NAS would build SM(201)).
  from nas_forgetting.data.datasets import default_data_config, load_dataset
  labels = np.array([3, 1, 200, 7, 0, 9], np.uint8)
  (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.ones((6, 4, 4), np.uint8)))
  (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
  config = default_data_config(source="idx", path=str(tmp_path), train_size=3, test_size=2)
  with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: label 200 at index 2 .*outside \[0, 10\)"):
    load_dataset(config)
  with pytest.raises(DataError, match="label 200 at index 2"):
    idx.load_idx_folder(tmp_path, num_classes=10)
  # A declared larger label set is honoured; without labels >= 10 the MNIST family's 10 classes are used.
  config.num_classes = 256
  assert load_dataset(config).train.num_classes == 256
  labels[2] = 2
  (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
  config.num_classes = 0
  assert load_dataset(config).train.num_classes == 10
