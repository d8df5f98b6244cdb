"""Kendall's tau-b of the rank-correlation mode against hand-computed cases, invariances and the NaN contract."""

import math

import numpy as np
import pytest

from nas_forgetting.enas.modes import kendall_tau_b
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
