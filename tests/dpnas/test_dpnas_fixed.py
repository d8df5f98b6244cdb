"""Task 2 (fixed nets, hypothesis-2 selection, checkpoints) and stored embeddings."""

import importlib.util
import math

import numpy as np
import pytest

from nas_forgetting.data import embeddings as stored
from nas_forgetting.data.datasets import default_data_config, load_dataset
from nas_forgetting.dpnas import embeddings as emb
from nas_forgetting.dpnas import evaluator as ev
from nas_forgetting.dpnas import fixed
from nas_forgetting.dpnas import logs
from nas_forgetting.dpnas.q_learning import ReplayRow
from nas_forgetting.errors import ConfigError, DataError
from nas_forgetting.models import deep_prior as dp

NETS = ("[C(8,3,1,1,1), P(2,2,0,0), SM(4)]", "[C(4,3,1,0,1), P(3,3,0,0), SM(4)]")
needs_io = pytest.mark.skipif(importlib.util.find_spec("nas_forgetting.io.atomic") is None,
                              reason="nas_forgetting.io.atomic not available yet")


CONFIG = ev.EvalConfig(epochs=3, batch_size=16, learning_rate=1e-2, early_stopping_epoch=0, reward_window=2,
                       bn_calibration_size=32)


def row(i, reward, net=None):
  return ReplayRow(1.0, net or f"[C({i + 1},1,1,0,1), SM(4)]", reward > 0, reward, 0.0, (1.0,), (2.0,), 3.0)


def test_hypothesis2_selection_by_hand():
  # 30 distinct nets with rewards 0.01 * (i+1) in reverse file order, plus 4 zero-reward rows and duplicates
  rows = [row(i, 0.01 * (30 - i)) for i in range(30)] + [row(100 + i, 0.0) for i in range(4)]
  rows.append(row(1, 0.01 * 29))  # a duplicate of row 1's net (position 28, top), same reward: the later one is kept
  chosen = fixed.select_hypothesis2(rows)
  # after dropping zeros and the duplicate: 30 nets sorted ascending (reward 0.01 .. 0.30), n = 30
  rewards = [round(r.reward, 2) for _, r in chosen]
  n = 30
  expected = [0.01 * (p + 1) for p in list(range(6)) + [math.ceil(n / 2) - 3 + i for i in range(6)]
              + list(range(n - 6, n))]
  assert rewards == [round(e, 2) for e in expected]
  assert len(chosen) == 18
  assert (34, rows[34]) in chosen  # the duplicate kept is the last row (index 34), not row 1
  assert all(i != 1 for i, _ in chosen)
  small = fixed.select_hypothesis2([row(i, 0.1 * (i + 1)) for i in range(8)])
  assert [i for i, _ in small] == list(range(8))  # fewer than 18 rows: every row once, ascending
  with pytest.raises(DataError, match="no row with reward > 0"):
    fixed.select_hypothesis2([row(0, 0.0)])


def test_resolve_nets_precedence(tmp_path):
  rows = [row(i, 0.1 * (i + 1)) for i in range(3)]
  (tmp_path / "rb.csv").write_text(logs.replay_buffer_text(rows))
  assert fixed.resolve_nets(net=" [C(8,3,1,1,1),SM(4)]", replay_buffer_csv=str(tmp_path / "rb.csv"), index=1) == (
      [(-1, "[C(8,3,1,1,1), SM(4)]")], None)
  nets, chosen = fixed.resolve_nets(replay_buffer_csv=str(tmp_path / "rb.csv"), index=1)
  assert nets == [(1, rows[1].net)] and chosen == [(1, rows[1])]
  nets, chosen = fixed.resolve_nets(replay_buffer_csv=str(tmp_path / "rb.csv"))
  assert [i for i, _ in nets] == [0, 1, 2]
  with pytest.raises(ConfigError, match="fixed.index=5"):
    fixed.resolve_nets(replay_buffer_csv=str(tmp_path / "rb.csv"), index=5)
  with pytest.raises(ConfigError, match="net string"):
    fixed.resolve_nets()


@needs_io
def test_run_fixed_writes_rows_and_checkpoints_that_reproduce_accuracy(tmp_path):
  from flax import serialization
  data = ev.stripe_data(64, 32, 16)
  evaluator = ev.Evaluator(data, CONFIG)
  chosen = [(4, row(0, 0.5, NETS[0])), (9, row(1, 0.4, NETS[1]))]
  rows = fixed.run_fixed(evaluator, [(i, r.net) for i, r in chosen], [0, 1], tmp_path, chosen=chosen,
                         in_channels=1, image_size=8)
  assert [(r["index"], r["seed"]) for r in rows] == [(4, 0), (4, 1), (9, 0), (9, 1)]
  text = (tmp_path / "fixed_net.csv").read_text().splitlines()
  assert text[0] == ",net,acc_best_val,acc_val_all_epochs,acc_train_all_epochs,acc_test_last,seed" and len(text) == 5
  assert (tmp_path / "chosen_to_train.csv").read_text().splitlines()[1].startswith("4,1.0,0.5,")
  assert (tmp_path / "seed_spread.png").is_file() and (tmp_path / "seed_spread.pdf").is_file()
  # the stored classifier of (row 9, seed 1) gives the logged final validation accuracy on that seed's embedding
  blob = (tmp_path / "checkpoints" / "9" / "seed_1.msgpack").read_bytes()
  variables = serialization.msgpack_restore(blob)
  assert len(list((tmp_path / "checkpoints").rglob("*.msgpack"))) == 4
  _, val, _ = evaluator.embed(NETS[1], [1])
  classifier = dp.DeepPriorClassifier(4, (), CONFIG.bn_epsilon)
  logits = classifier.apply({"params": variables["params"]}, val[0])
  accuracy = 100 * np.mean(np.argmax(logits, -1) == data.val_y)
  assert accuracy == pytest.approx(rows[3]["acc_val_all_epochs"][-1], abs=1e-3)


def test_stored_embeddings_in_both_layouts(tmp_path):
  data = ev.stripe_data(20, 8, 6)
  evaluator = ev.Evaluator(data, CONFIG)
  info = emb.store_embeddings(evaluator, NETS[0], 5, tmp_path)
  assert info["width"] == 8 * 4 * 4 and info["counts"] == {"train": 20, "val": 8, "test": 6}
  direct = [e[0] for e in evaluator.embed(NETS[0], [5])]
  arrays = stored.read_arrays(tmp_path)
  reference = stored.read_reference_layout(tmp_path)
  for split, x, y in zip(emb.SPLITS, direct, (data.train_y, data.val_y, data.test_y)):
    np.testing.assert_array_equal(arrays[split][0], x)
    np.testing.assert_array_equal(arrays[split][1], y)
    np.testing.assert_array_equal(reference[split][0], x)
    np.testing.assert_array_equal(reference[split][1], y)
  first = data.train_y[0]
  assert (tmp_path / "train" / f"{first:06d}" / "000001.npy").is_file()
  assert len(list((tmp_path / "val").rglob("*.npy"))) == 8
  # as the data source of the continual runner: val merged into train, features as (N, 1, 1, D)
  splits = load_dataset(default_data_config(source="embeddings", path=str(tmp_path)))
  assert splits.train.images.shape == (28, 1, 1, 128) and splits.test.num_classes == 4
  np.testing.assert_array_equal(splits.train.images[:20].reshape(20, -1), direct[0])
  np.testing.assert_array_equal(splits.train.images[20:].reshape(8, -1), direct[1])
  with pytest.raises(DataError, match="no such embedding folder"):
    stored.read_reference_layout(tmp_path / "missing")
  with pytest.raises(ConfigError, match="layout"):
    emb.store_embeddings(evaluator, NETS[0], 5, tmp_path, layout="zip")
