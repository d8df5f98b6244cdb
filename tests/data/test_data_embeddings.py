"""Stored embeddings as a data source: both layouts read back exactly as DP-NAS writes them, the data-source
rules (val merged into train, seeded subsets, no normalisation), and an error for every bad folder."""

import json
import types

import numpy as np
import pytest

from nas_forgetting.data import datasets, embeddings, transforms
from nas_forgetting.dpnas import embeddings as dpnas_embeddings
from nas_forgetting.errors import ConfigError, DataError

D = 7
COUNTS = {"train": 40, "val": 10, "test": 15}


def _features(seed=0):
  """Per split: unbounded features (negative and > 1 on purpose) and labels of 3 classes."""
  rng = np.random.default_rng(seed)
  x = {s: (rng.standard_normal((n, D)) * 3).astype(np.float32) for s, n in COUNTS.items()}
  y = {s: rng.integers(0, 3, n).astype(np.int32) for s, n in COUNTS.items()}
  return x, y


class _StubEvaluator:
  """What dpnas.embeddings.store_embeddings uses of an evaluator: embed() per split and the labels."""

  def __init__(self, x, y):
    self._x = x
    self.data = types.SimpleNamespace(train_y=y["train"], val_y=y["val"], test_y=y["test"], num_classes=3)

  def embed(self, net, seeds):
    return tuple(self._x[s][None] for s in ("train", "val", "test"))


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
  """A folder written by the DP-NAS writer in both layouts, and the arrays it was given."""
  x, y = _features()
  directory = tmp_path_factory.mktemp("stored_embedding")
  dpnas_embeddings.store_embeddings(_StubEvaluator(x, y), "[C(4,3,1,1,1), SM(3)]", 0, directory, layout="both")
  return directory, x, y


def _config(path, **overrides):
  return datasets.default_data_config(source="embeddings", path=str(path), **overrides)


@pytest.mark.parametrize("layout", ["arrays", "reference"])
def test_both_layouts_read_back_exactly_what_dpnas_wrote(stored, layout):
  directory, x, y = stored
  found, num_classes = embeddings.read_embeddings(directory, layout=layout)
  assert num_classes == 3 and sorted(found) == sorted(COUNTS)
  for split in COUNTS:
    assert found[split][0].dtype == np.float32 and found[split][1].dtype == np.int32
    np.testing.assert_array_equal(found[split][0], x[split])
    np.testing.assert_array_equal(found[split][1], y[split])


def test_reference_only_folder_is_detected_and_has_no_info(tmp_path):
  x, y = _features(1)
  embeddings.write_reference_layout(tmp_path, x, y)
  assert embeddings.detect_layout(tmp_path) == "reference"
  found, num_classes = embeddings.read_embeddings(tmp_path)
  assert num_classes == int(max(v.max() for v in y.values())) + 1
  for split in COUNTS:  # every split in index order, as written
    np.testing.assert_array_equal(found[split][0], x[split])
    np.testing.assert_array_equal(found[split][1], y[split])


def test_data_source_merges_val_into_train_and_keeps_values_unnormalised(stored):
  directory, x, y = stored
  splits = datasets.load_dataset(_config(directory, name="deep_prior"))
  assert splits.train.images.shape == (COUNTS["train"] + COUNTS["val"], 1, 1, D)
  assert splits.test.images.shape == (COUNTS["test"], 1, 1, D)
  np.testing.assert_array_equal(splits.train.images[:, 0, 0], np.concatenate([x["train"], x["val"]]))
  np.testing.assert_array_equal(splits.train.labels, np.concatenate([y["train"], y["val"]]))
  np.testing.assert_array_equal(splits.test.images.reshape(-1, D), x["test"])
  assert splits.train.images.min() < 0 and splits.train.images.max() > 1  # exempt from [0, 1]: not clipped
  assert splits.train.num_classes == 3 and splits.train.name == "deep_prior/train"


def test_subsets_follow_the_rules_of_sources_with_both_splits(stored):
  directory, x, _ = stored
  splits = datasets.load_dataset(_config(directory, train_size=20, test_size=5, seed=4))
  merged = np.concatenate([x["train"], x["val"]])
  keep_train = np.sort(np.random.default_rng(np.random.SeedSequence([4, 0])).permutation(50)[:20])
  keep_test = np.sort(np.random.default_rng(np.random.SeedSequence([4, 1])).permutation(15)[:5])
  np.testing.assert_array_equal(splits.train.images[:, 0, 0], merged[keep_train])
  np.testing.assert_array_equal(splits.test.images[:, 0, 0], x["test"][keep_test])
  with pytest.raises(DataError, match="asked for 16 examples but it has only 15"):
    datasets.load_dataset(_config(directory, test_size=16))


def test_folder_without_test_split_is_carved(tmp_path):
  x, y = _features(2)
  embeddings.write_arrays(tmp_path, {"train": x["train"]}, {"train": y["train"]}, {"num_classes": 3})
  splits = datasets.load_dataset(_config(tmp_path, test_size=10, seed=1))
  train_idx, test_idx = datasets.carve_indices(40, train_size=0, test_size=10, holdout_fraction=0.2, seed=1)
  np.testing.assert_array_equal(splits.test.images[:, 0, 0], x["train"][test_idx])
  np.testing.assert_array_equal(splits.train.labels, y["train"][train_idx])


def test_own_writers_round_trip_and_info(tmp_path):
  x, y = _features(3)
  embeddings.write_arrays(tmp_path / "a", x, y, {"num_classes": 5, "net": "n"})
  info = embeddings.read_info(tmp_path / "a")
  assert info == {"num_classes": 5, "net": "n", "width": D, "counts": COUNTS}
  found, num_classes = embeddings.read_embeddings(tmp_path / "a")
  assert num_classes == 5
  embeddings.write_reference_layout(tmp_path / "r", x, y)
  again, _ = embeddings.read_embeddings(tmp_path / "r")
  for split in COUNTS:
    np.testing.assert_array_equal(found[split][0], again[split][0])
    np.testing.assert_array_equal(found[split][1], again[split][1])


def test_image_options_leave_feature_vectors_alone_and_are_refused_by_the_source(stored):
  directory, x, _ = stored
  images = x["test"].reshape(-1, 1, 1, D)
  np.testing.assert_array_equal(transforms.apply_image_options(images, image_size=0, grayscale=False), images)
  for field, value in (("image_size", 28), ("grayscale", True), ("channels", 1)):
    with pytest.raises(ConfigError, match="stores feature vectors, not images"):
      datasets.load_dataset(_config(directory, **{field: value}))
  with pytest.raises(ConfigError, match="needs data.path"):
    datasets.load_dataset(datasets.default_data_config(source="embeddings"))


def _arrays_folder(tmp_path, **replace):
  """A valid arrays folder (train/test, 3 classes), with files replaced by `replace` {file name: array or bytes}."""
  x, y = _features(5)
  embeddings.write_arrays(tmp_path, {s: x[s] for s in ("train", "test")}, {s: y[s] for s in ("train", "test")},
                          {"num_classes": 3})
  for name, value in replace.items():
    if value is None:
      (tmp_path / name).unlink()
    elif isinstance(value, bytes):
      (tmp_path / name).write_bytes(value)
    else:
      np.save(tmp_path / name, value)
  return tmp_path


@pytest.mark.parametrize("replace, message", [
    ({"train_labels.npy": None}, r"train_labels.npy: missing \(expected .*_labels.npy"),
    ({"test_embeddings.npy": None}, r"test_embeddings.npy: missing"),
    ({"train_embeddings.npy": b"not a numpy file"}, r"train_embeddings.npy: unreadable .npy file"),
    ({"train_labels.npy": np.zeros(39, np.int32)}, r"train_embeddings.npy / train_labels.npy: 40 embeddings but 39"),
    ({"train_labels.npy": np.zeros(40, np.float32)}, r"expected integer labels of shape \(N,\)"),
    ({"train_embeddings.npy": np.zeros(40, np.float32)}, r"expected embeddings of shape \(N, D\)"),
    ({"test_embeddings.npy": np.zeros((15, D + 1), np.float32)}, r"widths differ between splits"),
    ({"test_embeddings.npy": np.full((15, D), np.nan, np.float32)}, r"test_embeddings.npy.*NaN or infinite"),
    ({"train_labels.npy": np.full(40, 3, np.int32)}, r"embedding.json: states num_classes 3 but .* reach 3"),
    ({"train_labels.npy": np.full(40, -1, np.int32)}, r"negative label -1"),
    ({"embedding.json": b"{broken"}, r"embedding.json: unreadable"),
    ({"embedding.json": b'{"width": 3}'}, r"embedding.json: states width 3 but the stored embeddings have D = 7"),
    ({"embedding.json": b'{"counts": {"test": 14}}'}, r"states 14 test examples but the stored arrays layout has 15"),
])
def test_bad_arrays_folder_names_the_file_and_the_expectation(tmp_path, replace, message):
  directory = _arrays_folder(tmp_path, **replace)
  with pytest.raises(DataError, match=message):
    datasets.load_dataset(_config(directory))


def test_bad_folders(tmp_path):
  with pytest.raises(DataError, match=r"no_such: no such embedding folder"):
    embeddings.read_embeddings(tmp_path / "no_such")
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match=r"empty: not a stored-embedding folder"):
    datasets.load_dataset(_config(tmp_path / "empty"))
  with pytest.raises(DataError, match=r"unknown embedding layout 'npz'"):
    embeddings.read_embeddings(tmp_path / "empty", layout="npz")


def test_bad_reference_layouts(tmp_path):
  x, y = _features(6)
  embeddings.write_reference_layout(tmp_path / "ok", x, y)
  (tmp_path / "ok" / "train" / "cat").mkdir()
  with pytest.raises(DataError, match=r"train/cat: expected a label folder named by digits"):
    embeddings.read_embeddings(tmp_path / "ok")
  embeddings.write_reference_layout(tmp_path / "wide", x, y)
  first = sorted((tmp_path / "wide" / "test").glob("*/000001.npy"))[0]
  np.save(first, np.zeros(D + 2, np.float32))
  with pytest.raises(DataError, match=rf"test/.*: {D} features, but .*000001.npy has {D + 2}"):
    embeddings.read_embeddings(tmp_path / "wide")
  embeddings.write_reference_layout(tmp_path / "dup", x, y)
  other = next(p for p in (tmp_path / "dup" / "val").iterdir() if p.name != f"{y['val'][0]:06d}")
  np.save(other / "000001.npy", np.zeros(D, np.float32))
  with pytest.raises(DataError, match=r"the same index 1 twice"):
    embeddings.read_embeddings(tmp_path / "dup")
  (tmp_path / "nofiles" / "train" / "000000").mkdir(parents=True)
  with pytest.raises(DataError, match=r"nofiles/train: no .npy files"):
    embeddings.read_embeddings(tmp_path / "nofiles")
  embeddings.write_reference_layout(tmp_path / "junk", x, y)
  (tmp_path / "junk" / "train" / f"{y['train'][0]:06d}" / "000001.npy").write_bytes(b"junk")
  with pytest.raises(DataError, match=r"000001.npy: unreadable .npy file"):
    embeddings.read_embeddings(tmp_path / "junk")


def test_permuted_stream_of_feature_vectors_is_refused(stored):
  from nas_forgetting.data import tasks
  directory, _, _ = stored
  stream = tasks.default_stream_config(kind="permuted", num_tasks=2, scenario="domain")
  with pytest.raises(DataError, match=r"permutes pixel positions, but these images have a single one"):
    tasks.load_task_stream(_config(directory), stream, seed=0)
