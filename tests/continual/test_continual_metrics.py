"""Continual metrics on a hand-written accuracy matrix, computed by hand."""

import numpy as np
import pytest

from nas_forgetting.continual import metrics
from nas_forgetting.errors import ConfigError

# R[i, j] = accuracy on task j after training task i (above the diagonal: tasks not trained yet).
R = np.array([
    [0.90, 0.30, 0.20],
    [0.60, 0.95, 0.40],
    [0.50, 0.70, 0.80],
])


def test_average_accuracy_is_mean_of_last_row():
  assert metrics.average_accuracy(R) == pytest.approx((0.50 + 0.70 + 0.80) / 3)
  assert metrics.average_accuracy_after(R, 1) == pytest.approx((0.60 + 0.95) / 2)


def test_forgetting_chaudhry_by_hand():
  # task 0: max(R[0,0], R[1,0]) = 0.90 -> 0.90 - 0.50 = 0.40; task 1: max(R[1,1]) = 0.95 -> 0.95 - 0.70 = 0.25
  np.testing.assert_allclose(metrics.forgetting_per_task(R), [0.40, 0.25])
  assert metrics.forgetting(R) == pytest.approx(0.325)


def test_forgetting_uses_best_earlier_row_not_the_diagonal():
  # accuracy on task 0 rises after task 1 (0.7 -> 0.9) then drops to 0.6: forgetting is 0.3, BWT only -0.1.
  r = np.array([[0.7, 0.1, 0.0], [0.9, 0.8, 0.0], [0.6, 0.8, 0.9]])
  np.testing.assert_allclose(metrics.forgetting_per_task(r), [0.3, 0.0])
  assert metrics.backward_transfer(r) == pytest.approx(((0.6 - 0.7) + (0.8 - 0.8)) / 2)


def test_backward_transfer_by_hand():
  assert metrics.backward_transfer(R) == pytest.approx(((0.50 - 0.90) + (0.70 - 0.95)) / 2)


def test_forward_transfer_by_hand():
  baseline = [0.1, 0.5, 0.3]
  assert metrics.forward_transfer(R, baseline) == pytest.approx(((0.30 - 0.5) + (0.40 - 0.3)) / 2)


def test_final_drop_and_summary():
  np.testing.assert_allclose(metrics.final_drop_per_task(R), [0.40, 0.25, 0.0])
  s = metrics.summary(R)
  assert set(s) == {"avg_accuracy", "forgetting", "bwt"}
  assert s["bwt"] == pytest.approx(-0.325)


def test_single_task_has_no_forgetting():
  assert metrics.forgetting([[0.7]]) == 0.0 and metrics.backward_transfer([[0.7]]) == 0.0


def test_non_square_matrix_is_rejected():
  with pytest.raises(ConfigError, match="square"):
    metrics.average_accuracy(np.zeros((2, 3)))
