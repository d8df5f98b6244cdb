"""Task 2 (fixed nets, hypothesis-2 selection, checkpoints) and stored embeddings."""

import dataclasses
import importlib.util
import functools
import math

import jax
import numpy as np
import pytest

from nas_forgetting.data import embeddings as stored
from nas_forgetting.data.datasets import default_data_config, load_dataset
from nas_forgetting.dpnas import embeddings as emb
from nas_forgetting.dpnas import evaluator as ev
from nas_forgetting.dpnas import fixed
from nas_forgetting.dpnas import logs
from nas_forgetting.dpnas.q_learning import ReplayRow
from nas_forgetting.errors import CheckpointError, ConfigError, DataError
from nas_forgetting.models import deep_prior as dp

NETS = ("[C(8,3,1,1,1), P(2,2,0,0), SM(4)]", "[C(4,3,1,0,1), P(3,3,0,0), SM(4)]")
needs_io = pytest.mark.skipif(importlib.util.find_spec("nas_forgetting.io.atomic") is None,
                              reason="nas_forgetting.io.atomic not available yet")


CONFIG = ev.EvalConfig(epochs=3, batch_size=16, learning_rate=1e-2, early_stopping_epoch=0, reward_window=2,
                       bn_calibration_size=32)
# with noisy_stripes(): the validation accuracy goes down again after its best epoch (a high learning rate on
# partly wrong training labels)
BUMPY = dataclasses.replace(CONFIG, epochs=5, learning_rate=0.5)


def noisy_stripes(stripes):
  """The stripe data with 40 % of the training labels replaced by seeded random ones."""
  data = stripes(64, 32, 16)
  rng = np.random.default_rng(0)
  labels = np.where(rng.random(64) < 0.4, rng.integers(0, 4, 64), data.train_y).astype(np.int32)
  return data._replace(train_y=labels)


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


class CountingEvaluator:
  """An evaluator that records which seeds it was asked to evaluate."""

  def __init__(self, evaluator):
    self.inner, self.calls = evaluator, []

  def __getattr__(self, name):
    return getattr(self.inner, name)

  def evaluate(self, net, seeds, **kw):
    self.calls.append((net, list(seeds)))
    return self.inner.evaluate(net, seeds, **kw)


def accuracy(logits, labels):
  return 100 * np.mean(np.argmax(np.asarray(logits), -1) == labels)


@needs_io
def test_run_fixed_keeps_one_best_epoch_checkpoint_per_net_seed_and_variant_and_resumes(tmp_path, stripes):
  data = noisy_stripes(stripes)
  evaluator = CountingEvaluator(ev.Evaluator(data, BUMPY))
  chosen = [(4, row(0, 0.5, NETS[0])), (9, row(1, 0.4, NETS[1]))]
  nets = [(i, r.net) for i, r in chosen]
  rows = fixed.run_fixed(evaluator, nets, [0, 1], tmp_path, chosen=chosen, in_channels=1, image_size=8)
  assert [(r["index"], r["seed"]) for r in rows] == [(4, 0), (4, 1), (9, 0), (9, 1)]
  text = (tmp_path / "fixed_net.csv").read_text().splitlines()
  assert text[0] == ",net,acc_best_val,acc_val_all_epochs,acc_train_all_epochs,acc_test_last,seed" and len(text) == 5
  assert (tmp_path / "chosen_to_train.csv").read_text().splitlines()[1].startswith("4,1.0,0.5,")
  assert (tmp_path / "seed_spread.png").is_file() and (tmp_path / "seed_spread.pdf").is_file()
  # two nets x two seeds: four checkpoints in four distinct places, one folder per net
  saved = sorted(p for p in (tmp_path / "checkpoints").rglob("seed_*") if p.is_dir())
  assert len(saved) == 4 and len({p.parent for p in saved}) == 2
  assert all(p.parent.parent.name == "deep_prior" for p in saved)
  # each restored classifier, applied to its seed's validation embedding, scores the recorded best accuracy
  best_not_last = 0
  for r in rows:
    folder = fixed.checkpoint_folder(tmp_path, r["index"], r["net"], full_training=False)
    assert folder.name.startswith(f"row{r['index']}_")
    _, val, _ = evaluator.embed(r["net"], [r["seed"]])
    classifier = dp.DeepPriorClassifier(4, (), BUMPY.bn_epsilon)
    like = {"params": jax.eval_shape(classifier.init, jax.random.key(0), val[0])["params"], "batch_stats": {}}
    variables, record = fixed.load_checkpoint(folder, r["seed"], like)
    assert record["row"] == r and record["identity"]["seed"] == r["seed"]
    assert r["acc_val_all_epochs"][record["best_epoch"]] == r["acc_best_val"] == max(r["acc_val_all_epochs"])
    best_not_last += r["acc_best_val"] > r["acc_val_all_epochs"][-1]
    logits = classifier.apply({"params": variables["params"]}, val[0])
    assert accuracy(logits, data.val_y) == pytest.approx(r["acc_best_val"], abs=1e-3)
  assert best_not_last  # the oracle above tells the best epoch from the last one

  # a rerun evaluates nothing again and leaves every file as it was; a new seed is the only one evaluated
  before = {p: p.read_bytes() for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()}
  evaluator.calls.clear()
  again = fixed.run_fixed(evaluator, nets, [0, 1], tmp_path, chosen=chosen, in_channels=1, image_size=8)
  assert again == rows and evaluator.calls == []
  assert {p: p.read_bytes() for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()} == before
  more = fixed.run_fixed(evaluator, nets[:1], [0, 1, 2], tmp_path, in_channels=1, image_size=8)
  assert evaluator.calls == [(NETS[0], [2])] and more[:2] == rows[:2]
  # other settings at the same place: refused, nothing overwritten
  other = ev.Evaluator(data, dataclasses.replace(BUMPY, epochs=BUMPY.epochs + 1))
  with pytest.raises(CheckpointError, match="differs in evaluator.*refusing to overwrite"):
    fixed.run_fixed(other, nets, [0], tmp_path, in_channels=1, image_size=8)
  assert all(p.read_bytes() == b for p, b in before.items())


@needs_io
def test_full_training_checkpoints_hold_the_whole_net_at_its_best_epoch_beside_the_deep_prior_ones(tmp_path, stripes):
  data = noisy_stripes(stripes)
  net = NETS[0]
  deep = fixed.run_fixed(ev.Evaluator(data, BUMPY), [(-1, net)], [3], tmp_path, in_channels=1, image_size=8)
  full_config = dataclasses.replace(BUMPY, full_training=True)
  full = fixed.run_fixed(ev.Evaluator(data, full_config), [(-1, net)], [3], tmp_path, in_channels=1, image_size=8)
  paths = sorted(p.relative_to(tmp_path).parts for p in (tmp_path / "checkpoints").rglob("seed_3") if p.is_dir())
  assert [p[1] for p in paths] == ["deep_prior", "full_training"] and paths[0][2] == paths[1][2]
  assert paths[0][2].startswith("net_")
  model = dp.DeepPriorNet(net, full_config.bn_epsilon, full_config.weight_init)
  like = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), data.val_x)
  variables, record = fixed.load_checkpoint(fixed.checkpoint_folder(tmp_path, -1, net, True), 3, like)
  assert record["identity"]["variant"] == "full_training" and full[0] != deep[0]
  logits = model.apply(variables, data.val_x, train=False)
  assert accuracy(logits, data.val_y) == pytest.approx(full[0]["acc_best_val"], abs=1e-3)
  assert full[0]["acc_best_val"] > full[0]["acc_val_all_epochs"][-1]  # the best epoch is not the last


def test_checkpoint_records_that_cannot_be_read_name_the_file(tmp_path, stripes):
  with pytest.raises(CheckpointError, match="seed_0.json: no such checkpoint record"):
    fixed.load_checkpoint(tmp_path, 0, {})
  evaluator = ev.Evaluator(stripes(16, 8, 8), CONFIG)
  folder = fixed.checkpoint_folder(tmp_path, 2, NETS[0], False)
  folder.mkdir(parents=True)
  (folder / "seed_0.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="seed_0.json: unreadable checkpoint record"):
    fixed.run_fixed(evaluator, [(2, NETS[0])], [0], tmp_path, in_channels=1, image_size=8)


def test_stored_embeddings_in_both_layouts(tmp_path, stripes):
  data = stripes(20, 8, 6)
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
