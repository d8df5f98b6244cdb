"""WPL inside ENAS shared training: quick searches (offline PTB, CIFAR-10 subset) with forgetting measured, and an
exact resume of the WPL state (importance and anchors) from the checkpoint."""

import jax
import numpy as np
import pytest

from configs import wpl_enas_cifar10, wpl_enas_ptb
from nas_forgetting.enas import experiment
from nas_forgetting.enas import state
from nas_forgetting.io.metrics import read_csv, read_jsonl
from nas_forgetting.wpl.forgetting import SUMMARY_KEYS


def tiny_wpl_rnn_config(shared_data, *variants):
  c = wpl_enas_ptb.get_config(",".join(("tiny",) + variants))  # 3 architectures x 3 batches per epoch, 2 epochs
  c.data.path = str(shared_data / "ptb")
  return c


def _wpl_state(config, workdir):
  ckpt, restored = state.restore(state.Run(config, workdir), workdir / "checkpoints", jax.random.key(config.seed))
  ckpt.close()
  return restored.wpl


@pytest.fixture(scope="module")
def runs(shared_data, tmp_path_factory):
  """A 2-epoch WPL search run straight; the same run stopped after epoch 1 and resumed."""
  c = tiny_wpl_rnn_config(shared_data)
  straight_dir = tmp_path_factory.mktemp("wpl_straight")
  straight = experiment.run(c, str(straight_dir))
  resumed_dir = tmp_path_factory.mktemp("wpl_resumed")
  c1 = tiny_wpl_rnn_config(shared_data)
  c1.train.max_epoch = 1
  experiment.run(c1, str(resumed_dir))
  resumed = experiment.run(c, str(resumed_dir))
  return c, straight_dir, straight, resumed_dir, resumed


def test_wpl_search_writes_forgetting_and_penalises(runs):
  c, workdir, summary, _, _ = runs
  assert np.isfinite(summary["eval/test_perplexity"])
  rows = read_csv(workdir / "forgetting.csv")
  assert [int(r["epoch"]) for r in rows] == [0, 1]
  assert all(int(r["num_architectures"]) == 3 for r in rows)
  assert all(np.isfinite(float(r[k])) for r in rows for k in SUMMARY_KEYS)
  metrics = read_jsonl(workdir / "metrics.jsonl")
  assert sorted(r["epoch"] for r in metrics if "forgetting/mean_diff" in r) == [0, 1]
  assert any(r.get("wpl/fisher_sum", 0) > 0 for r in metrics)
  penalties = [r["shared/wpl_penalty"] for r in metrics if "shared/wpl_penalty" in r]
  assert penalties and penalties[0] == 0.0 and max(penalties) > 0  # zero before the first burst, then on
  wpl = _wpl_state(c, workdir)
  assert int(wpl.epoch) == 1 and int(wpl.num_updates) == 6  # one Fisher update per architecture


def test_resume_restores_the_wpl_state_exactly(runs):
  c, straight_dir, straight, resumed_dir, resumed = runs
  a, b = _wpl_state(c, straight_dir), _wpl_state(c, resumed_dir)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert read_csv(straight_dir / "forgetting.csv") == read_csv(resumed_dir / "forgetting.csv")
  assert resumed["arch"] == straight["arch"]


def test_bad_wpl_settings_are_rejected(shared_data, tmp_path):
  c = tiny_wpl_rnn_config(shared_data)
  c.wpl.estimator = "exact"
  with pytest.raises(Exception, match="wpl.estimator='exact'"):
    experiment.run(c, str(tmp_path / "a"))


def test_wpl_micro_cnn_search(shared_data, tmp_path, capsys):
  c = wpl_enas_cifar10.get_config("tiny")  # 1 epoch of 2 architectures x 2 batches
  c.data.image.path = str(shared_data / "cifar10")
  summary = experiment.run(c, str(tmp_path))
  block = capsys.readouterr().out  # the result block names WPL, the data, the cell and the forgetting measured
  assert "ENAS search (with WPL) on cifar10" in block and "micro-CNN supernet" in block
  assert "forgetting, last epoch (mean diff)" in block and summary["arch"] in block
  assert summary["forgetting/mean_diff_last_epoch"] == pytest.approx(float(read_csv(tmp_path / "forgetting.csv")[0]["mean_diff"]))
  assert 0.0 <= summary["eval/test_accuracy"] <= 1.0
  rows = read_csv(tmp_path / "forgetting.csv")
  assert len(rows) == 1 and int(rows[0]["num_architectures"]) == 2
  wpl = _wpl_state(c, tmp_path)
  assert int(wpl.num_updates) == 2 and float(sum(np.sum(f) for f in jax.tree.leaves(wpl.fisher))) > 0


def test_a_training_data_fisher_uses_the_window_the_bursts_last_step_read(shared_data, tmp_path):
  """wpl.shared_valid_fisher False: the Fisher after a burst is computed on the training window that the burst's last
  step read, also across the end of the split (the data cursor wraps to window 0 with a zero hidden state)."""
  run = state.Run(tiny_wpl_rnn_config(shared_data), tmp_path)  # the integration runs' sizes: compiled code is shared
  task = run.task
  fresh = state.fresh_state(run, jax.random.key(0))
  arch = run.sample(fresh.controller.params, jax.random.key(1), num_samples=1)[0]
  shared, cursor = fresh.shared, task.epoch_cursor(task.windows_train - 1)
  for read in (task.windows_train - 1, 0):  # the last window of the split, then the first one again
    shared, cursor, _ = task.shared_step(shared, cursor, arch, jax.random.key(2), jax.numpy.float32(0.5), fresh.wpl)
    got = task.end_burst(fresh.wpl, shared.params, arch, cursor, None)
    want = task._end_burst(fresh.wpl, shared.params, task.train, jax.numpy.int32(read * task.bptt), arch)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert cursor.position == 1
