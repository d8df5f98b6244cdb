"""nas_forgetting.statistics: Kendall's tau-b against hand-computed cases, invariances and the NaN contract; the paired
comparison's intervals against hand-computed values."""

import math

import numpy as np
import pytest

from nas_forgetting.statistics import kendall_tau_b, paired_difference, t_half_width
from nas_forgetting.errors import DataError
from nas_forgetting.io.metrics import MetricsLogger, read_jsonl


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
  assert kendall_tau_b(x, y) == pytest.approx(expected)
  assert kendall_tau_b(y, x) == pytest.approx(expected)  # symmetric


def test_kendall_tau_b_invariances():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=20), rng.normal(size=20)
  tau = kendall_tau_b(x, y)
  assert kendall_tau_b(np.exp(x), 3 * y + 1) == pytest.approx(tau)   # monotone maps keep ranks
  assert kendall_tau_b(x, -y) == pytest.approx(-tau)
  perm = rng.permutation(20)
  assert kendall_tau_b(x[perm], y[perm]) == pytest.approx(tau)


def test_kendall_tau_b_degenerate():
  # A constant ranking ranks nothing: tau_b is 0/0, undefined, reported as NaN (in either argument, or both).
  for x, y in (([1, 1, 1], [1, 2, 3]), ([3, 1, 2], [5, 5, 5]), ([2, 2], [2, 2])):
    assert math.isnan(kendall_tau_b(x, y))
  with pytest.raises(DataError, match="at least 2"):
    kendall_tau_b([1], [1])
  with pytest.raises(DataError, match="equal length"):
    kendall_tau_b([1, 2], [1, 2, 3])


def test_undefined_kendall_tau_is_logged_as_nan(tmp_path):
  """The ENAS rank-correlation mode logs tau through MetricsLogger: NaN survives the JSONL round trip."""
  tau = kendall_tau_b([60.0, 60.0, 60.0], [80.0, 95.0, 70.0])
  with MetricsLogger(tmp_path, tensorboard=False) as logger:
    logger.log(3, {"rank/kendall_tau": tau})
  (record,) = read_jsonl(tmp_path / "metrics.jsonl")
  assert record["step"] == 3 and math.isnan(record["rank/kendall_tau"])
  assert f"{tau:.3f}" == "nan"


def test_paired_difference_against_hand_computed_t_interval():
  # d = treated - control = [1, 2, 3, 4, 5]: mean 3, sd sqrt(2.5), se sqrt(0.5), t = 3 / sqrt(0.5) = 4.2426;
  # t_{0.975, 4} = 2.776445 (tables), so the 95 % interval is 3 -+ 2.776445 * 0.707107 = 3 -+ 1.963243.
  r = paired_difference([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
  assert r["n"] == 5 and r["mean"] == pytest.approx(3.0) and r["sd"] == pytest.approx(math.sqrt(2.5))
  assert r["t"] == pytest.approx(3 / math.sqrt(0.5))
  assert (r["t_low"], r["t_high"]) == pytest.approx((3 - 1.963243, 3 + 1.963243), abs=1e-5)
  u = r["t"] / math.sqrt(4 + r["t"] ** 2)  # 4 df in closed form: two-sided p = 1 - u (3 - u^2) / 2
  assert r["p"] == pytest.approx(1 - u * (3 - u * u) / 2)
  assert r["frac_lower"] == 0.0 and r["mean_treated"] == 13.0 and r["mean_control"] == 10.0
  # The bootstrap interval of a mean lies within the data's range and around the mean; it is seeded.
  assert 1.0 <= r["bootstrap_low"] < 3.0 < r["bootstrap_high"] <= 5.0
  assert paired_difference([11, 12, 13, 14, 15], [10] * 5) == r


def test_paired_difference_sign_and_degenerate_cases():
  r = paired_difference([1.0, 2.0, 3.0], [2.0, 4.0, 3.5])  # d = [-1, -2, -0.5]: treated lower
  assert r["mean"] == pytest.approx(-7 / 6) and r["t"] < 0 and r["t_low"] < r["mean"] < 0
  assert r["frac_lower"] == 1.0
  swapped = paired_difference([2.0, 4.0, 3.5], [1.0, 2.0, 3.0])
  assert (swapped["t_low"], swapped["t_high"]) == pytest.approx((-r["t_high"], -r["t_low"]))
  constant = paired_difference([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])  # d = 2 every time
  assert constant["t"] == math.inf and constant["p"] == 0.0
  assert constant["t_low"] == constant["t_high"] == constant["bootstrap_low"] == constant["bootstrap_high"] == 2.0
  with pytest.raises(DataError, match="at least 2 pairs"):
    paired_difference([1.0], [2.0])
  with pytest.raises(DataError, match="equal length"):
    paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])
  with pytest.raises(DataError, match="non-finite"):
    paired_difference([1.0, float("nan")], [1.0, 2.0])


def test_t_half_width_against_tables():
  # t_{0.975, 1} = 12.706205 and t_{0.95, 9} = 1.833113 (tables).
  assert t_half_width(1.0, 2) == pytest.approx(12.706205 / math.sqrt(2), rel=1e-6)
  assert t_half_width(2.0, 10, confidence=0.90) == pytest.approx(1.833113 * 2 / math.sqrt(10), rel=1e-6)
  assert t_half_width(5.0, 1) == 0.0 and t_half_width(0.0, 7) == 0.0
  with pytest.raises(DataError, match="confidence"):
    t_half_width(1.0, 3, confidence=1.0)
  with pytest.raises(DataError, match="confidence"):
    paired_difference([1.0, 2.0], [0.0, 0.0], confidence=0.0)
