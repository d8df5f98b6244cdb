"""Forgetting measurement against hand-computed cases."""

import math

import numpy as np
import pytest

from nas_forgetting.errors import DataError
from nas_forgetting.wpl import forgetting


def test_accuracy_forgetting_is_drop():
  # Three architectures: 0.9 -> 0.7 (forgot 0.2), 0.8 -> 0.8 (none), 0.5 -> 0.6 (improved: -0.1).
  s = forgetting.forgetting_summary([0.9, 0.8, 0.5], [0.7, 0.8, 0.6], higher_is_better=True)
  assert s["mean_diff"] == pytest.approx((0.2 + 0.0 - 0.1) / 3)
  assert s["max_diff"] == pytest.approx(0.2)
  diffs = np.array([0.2, 0.0, -0.1])
  assert s["std_diff"] == pytest.approx(math.sqrt(np.mean((diffs - diffs.mean()) ** 2)))
  assert s["median_diff"] == pytest.approx(0.0)
  assert s["frac_worse"] == pytest.approx(1 / 3)  # an unchanged architecture did not get worse
  assert s["mean_after_burst"] == pytest.approx(2.2 / 3)
  assert s["mean_end_of_epoch"] == pytest.approx(2.1 / 3)
  assert s["num_architectures"] == 3


def test_perplexity_forgetting_is_rise():
  s = forgetting.forgetting_summary([100.0, 80.0], [130.0, 70.0], higher_is_better=False)
  assert s["mean_diff"] == pytest.approx((30.0 - 10.0) / 2)
  assert s["max_diff"] == pytest.approx(30.0)
  assert s["std_diff"] == pytest.approx(20.0)
  assert s["median_diff"] == pytest.approx(10.0)


def test_tracker_hand_sequence():
  """Two epochs of a hand-made sequence: the trainer's calls, and the rows they give."""
  t = forgetting.ForgettingTracker(higher_is_better=True)
  t.begin_epoch(0)
  for arch, acc in [("a", 0.5), ("b", 0.6), ("a", 0.55)]:
    t.record_after_burst(arch, acc)
  assert t.architectures == ["a", "b", "a"]
  row0 = t.end_epoch([0.4, 0.6, 0.5])
  t.begin_epoch(1)
  t.record_after_burst("c", 0.7)
  row1 = t.end_epoch([0.75])
  assert row0["epoch"] == 0 and row1["epoch"] == 1
  assert row0["mean_diff"] == pytest.approx((0.1 + 0.0 + 0.05) / 3)
  assert row0["max_diff"] == pytest.approx(0.1)
  assert row1["mean_diff"] == pytest.approx(-0.05) and row1["std_diff"] == 0.0
  assert [r["epoch"] for r in t.rows] == [0, 1]


def test_tracker_errors_name_the_problem():
  t = forgetting.ForgettingTracker(higher_is_better=False)
  with pytest.raises(DataError, match="before begin_epoch"):
    t.record_after_burst("a", 1.0)
  t.begin_epoch(3)
  t.record_after_burst("a", 1.0)
  with pytest.raises(DataError, match="1 architectures trained in epoch 3"):
    t.end_epoch([1.0, 2.0])
  with pytest.raises(DataError, match="non-finite"):
    forgetting.forgetting_summary([1.0], [float("nan")], higher_is_better=False)


def test_forgetting_csv_and_comparison_plot(tmp_path):
  from nas_forgetting.io import metrics as metrics_lib
  runs = {}
  for name, drops in (("WPL", [0.01, 0.02]), ("no WPL", [0.1, 0.2])):
    t = forgetting.ForgettingTracker(higher_is_better=True)
    for epoch, d in enumerate(drops):
      t.begin_epoch(epoch)
      t.record_after_burst("a", 0.9)
      t.record_after_burst("b", 0.8)
      t.end_epoch([0.9 - d, 0.8])
    runs[name] = t.rows
  forgetting.write_forgetting_csv(tmp_path / "forgetting.csv", runs["no WPL"])
  rows = metrics_lib.read_csv(tmp_path / "forgetting.csv")
  assert [int(r["epoch"]) for r in rows] == [0, 1]
  assert [float(r["mean_diff"]) for r in rows] == pytest.approx([0.05, 0.1])
  assert [float(r["max_diff"]) for r in rows] == pytest.approx([0.1, 0.2])
  forgetting.plot_forgetting_comparison(tmp_path / "forgetting.png", runs, metric_name="accuracy")
  assert (tmp_path / "forgetting.png").stat().st_size > 1000
  with pytest.raises(DataError, match="statistic"):
    forgetting.plot_forgetting_comparison(tmp_path / "x.png", runs, statistic="median")


def _round_robin_losses(optima, lr, w0):
  """One shared weight w; architecture i has loss (w - optima[i])**2 and one SGD step (jax.grad) as its burst,
  bursts in the order of `optima`; every architecture's loss after every burst: the (architectures x bursts) matrix."""
  import jax
  import jax.numpy as jnp

  losses = [lambda w, c=c: (w - c) ** 2 for c in optima]
  w, columns = jnp.float32(w0), []
  for loss in losses:
    w = w - lr * jax.grad(loss)(w)
    columns.append([float(f(w)) for f in losses])
  return np.array(columns).T


def test_round_forgetting_two_architectures_by_hand():
  """w0 = 0, A's optimum 1, B's optimum -1, lr 0.25, one step each, A then B.
  A's burst: w = 0 - 0.25 * 2 * (0 - 1) = 0.5; loss A = 0.25, loss B = 2.25.
  B's burst: w = 0.5 - 0.25 * 2 * (0.5 + 1) = -0.25; loss A = 1.5625, loss B = 0.5625.
  A: after own 0.25, after next (B) 1.5625, end 1.5625 -> forgot 1.3125; B: after own 0.5625 = end -> 0."""
  m = _round_robin_losses([1.0, -1.0], lr=0.25, w0=0.0)
  np.testing.assert_allclose(m, [[0.25, 1.5625], [2.25, 0.5625]], rtol=1e-6)
  s = forgetting.round_forgetting_summary(m, higher_is_better=False)
  assert set(s) == set(forgetting.ROUND_SUMMARY_KEYS)
  assert s["after_next/mean_diff"] == pytest.approx(1.3125)
  assert s["after_next/median_diff"] == pytest.approx(1.3125)
  assert s["after_next/frac_worse"] == 1.0
  assert s["after_next/num_architectures"] == 1  # B has no next burst in the round
  assert s["after_next/mean_after_burst"] == pytest.approx(0.25)
  assert s["after_next/mean_end_of_epoch"] == pytest.approx(1.5625)
  assert s["end/mean_diff"] == pytest.approx(1.3125 / 2)
  assert s["end/median_diff"] == pytest.approx(1.3125 / 2)
  assert s["end/frac_worse"] == 0.5
  assert s["end/num_architectures"] == 2


def test_round_forgetting_after_next_differs_from_end():
  """Three architectures (optima 1, -1, 1), lr 0.25, w0 = 0: w = 0.5, -0.25, 0.375 after the three bursts.
  A: own (0.5-1)^2 = 0.25, after B (-1.25)^2 = 1.5625, end (-0.625)^2 = 0.390625.
  B: own (0.75)^2 = 0.5625, after C = end = (1.375)^2 = 1.890625.  C: own = end = 0.390625."""
  m = _round_robin_losses([1.0, -1.0, 1.0], lr=0.25, w0=0.0)
  own, after_next, end = forgetting.round_views(m)
  np.testing.assert_allclose(own, [0.25, 0.5625, 0.390625], rtol=1e-6)
  np.testing.assert_allclose(after_next, [1.5625, 1.890625], rtol=1e-6)
  np.testing.assert_allclose(end, [0.390625, 1.890625, 0.390625], rtol=1e-6)
  s = forgetting.round_forgetting_summary(m, higher_is_better=False)
  assert s["after_next/mean_diff"] == pytest.approx((1.3125 + 1.328125) / 2)
  assert s["after_next/frac_worse"] == 1.0
  assert s["end/mean_diff"] == pytest.approx((0.140625 + 1.328125 + 0.0) / 3)
  assert s["end/median_diff"] == pytest.approx(0.140625)
  assert s["end/frac_worse"] == pytest.approx(2 / 3)
  # An accuracy-like metric (higher is better) flips the sign: the same matrix "improved" where the loss rose.
  acc = forgetting.round_forgetting_summary(-m, higher_is_better=True)
  assert acc["end/mean_diff"] == pytest.approx(s["end/mean_diff"])


def test_round_forgetting_rejects_bad_shapes():
  with pytest.raises(DataError, match=r"expected \(n, n\) with n >= 2"):
    forgetting.round_views(np.zeros((2, 3)))
  with pytest.raises(DataError, match=r"expected \(n, n\) with n >= 2"):
    forgetting.round_views(np.zeros((1, 1)))
  with pytest.raises(DataError, match="non-finite"):
    forgetting.round_forgetting_summary([[1.0, np.nan], [1.0, 1.0]], higher_is_better=False)
