"""Forgetting measurement and Kendall's tau-b against hand-computed cases."""

import math

import numpy as np
import pytest

from nas_forgetting.errors import DataError
from nas_forgetting.io.metrics import MetricsLogger, read_jsonl
from nas_forgetting.wpl import forgetting


def test_accuracy_forgetting_is_drop():
  # Three architectures: 0.9 -> 0.7 (forgot 0.2), 0.8 -> 0.8 (none), 0.5 -> 0.6 (improved: -0.1).
  s = forgetting.forgetting_summary([0.9, 0.8, 0.5], [0.7, 0.8, 0.6], higher_is_better=True)
  assert s["mean_diff"] == pytest.approx((0.2 + 0.0 - 0.1) / 3)
  assert s["max_diff"] == pytest.approx(0.2)
  diffs = np.array([0.2, 0.0, -0.1])
  assert s["std_diff"] == pytest.approx(math.sqrt(np.mean((diffs - diffs.mean()) ** 2)))
  assert s["median_diff"] == pytest.approx(0.0)
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


@pytest.mark.parametrize("x, y, expected", [
    ([1, 2, 3], [1, 2, 3], 1.0),
    ([1, 2, 3], [3, 2, 1], -1.0),
    ([1, 2, 3], [1, 3, 2], 1.0 / 3.0),            # pairs: c, c, d
    ([1, 2, 3, 4], [2, 1, 4, 3], 2.0 / 6.0),       # 4 concordant, 2 discordant
    ([1, 2, 2, 3], [1, 2, 3, 3], 0.8),             # nc=4, nd=0, 1 tie in x, 1 in y: 4 / sqrt(5 * 5)
    ([1, 1, 2], [1, 2, 3], 2.0 / math.sqrt(2 * 3)),  # nc=2, tie in x only: 2 / sqrt((3-1) * 3)
    ([1, 1, 2, 2], [1, 1, 2, 2], 1.0),             # ties shared by both samples
])
def test_kendall_tau_b_hand_cases(x, y, expected):
  assert forgetting.kendall_tau_b(x, y) == pytest.approx(expected)
  assert forgetting.kendall_tau_b(y, x) == pytest.approx(expected)  # symmetric


def test_kendall_tau_b_invariances():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=20), rng.normal(size=20)
  tau = forgetting.kendall_tau_b(x, y)
  assert forgetting.kendall_tau_b(np.exp(x), 3 * y + 1) == pytest.approx(tau)   # monotone maps keep ranks
  assert forgetting.kendall_tau_b(x, -y) == pytest.approx(-tau)
  perm = rng.permutation(20)
  assert forgetting.kendall_tau_b(x[perm], y[perm]) == pytest.approx(tau)


def test_kendall_tau_b_degenerate():
  # A constant ranking ranks nothing: tau_b is 0/0, undefined, reported as NaN (in either argument, or both).
  for x, y in (([1, 1, 1], [1, 2, 3]), ([3, 1, 2], [5, 5, 5]), ([2, 2], [2, 2])):
    assert math.isnan(forgetting.kendall_tau_b(x, y))
  with pytest.raises(DataError, match="at least 2"):
    forgetting.kendall_tau_b([1], [1])
  with pytest.raises(DataError, match="equal length"):
    forgetting.kendall_tau_b([1, 2], [1, 2, 3])


def test_undefined_kendall_tau_is_logged_as_nan(tmp_path):
  """The ENAS rank-correlation mode logs tau through MetricsLogger: NaN survives the JSONL round trip."""
  tau = forgetting.kendall_tau_b([60.0, 60.0, 60.0], [80.0, 95.0, 70.0])
  with MetricsLogger(tmp_path, tensorboard=False) as logger:
    logger.log(3, {"rank/kendall_tau": tau})
  (record,) = read_jsonl(tmp_path / "metrics.jsonl")
  assert record["step"] == 3 and math.isnan(record["rank/kendall_tau"])
  assert f"{tau:.3f}" == "nan"


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
