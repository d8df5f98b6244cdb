"""Continual-learning metrics from the accuracy matrix.

Convention: `R[i, j]` is the test accuracy on task j after training on tasks 0..i (row = "after task i",
column = "evaluated task j"), a (T, T) array. The runner evaluates every task after every task, so the entries
above the diagonal (j > i, tasks not trained yet) are filled too and give forward transfer; metrics that only
concern seen tasks read the lower triangle. Accuracies are fractions in [0, 1].

With T tasks and the final row R[T-1]:
- average accuracy (ACC): mean_j R[T-1, j].
- forgetting (Chaudhry et al. 2018, "Riemannian Walk"): for each j < T-1, f_j = max_{l < T-1} R[l, j] - R[T-1, j]
  (best accuracy ever reached on j before the last task, minus its final accuracy; the max runs over the rows
  l >= j in the paper, and rows l < j are accuracies before j was trained, so both agree whenever training on j
  does not lower j's accuracy — we use l in [j, T-1) as the paper defines it); forgetting = mean_j f_j over j < T-1.
- backward transfer (Lopez-Paz & Ranzato 2017, GEM): mean over j < T-1 of R[T-1, j] - R[j, j] (negative =
  forgetting).
- forward transfer (GEM): mean over j > 0 of R[j-1, j] - b[j], with b[j] the accuracy of the untrained
  (initial) model on task j; needs those baselines, so it is optional.
- per-task forgetting as in the MAS demo: R[j, j] - R[T-1, j] for every j (the last task's is 0).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nas_forgetting.errors import ConfigError


def _check(matrix) -> np.ndarray:
  r = np.asarray(matrix, np.float64)
  if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] < 1:
    raise ConfigError(f"accuracy matrix must be square (T, T) with T >= 1; got shape {r.shape}")
  return r


def average_accuracy(matrix) -> float:
  """Mean accuracy over all tasks after the last task: mean_j R[T-1, j]."""
  r = _check(matrix)
  return float(r[-1].mean())


def average_accuracy_after(matrix, i: int) -> float:
  """Mean accuracy over the tasks seen after task i: mean_{j <= i} R[i, j]."""
  r = _check(matrix)
  return float(r[i, :i + 1].mean())


def forgetting_per_task(matrix) -> np.ndarray:
  """Chaudhry et al.: f_j = max_{j <= l < T-1} R[l, j] - R[T-1, j] for j < T-1 (length T-1)."""
  r = _check(matrix)
  t = r.shape[0]
  return np.array([r[j:t - 1, j].max() - r[t - 1, j] for j in range(t - 1)])


def forgetting(matrix) -> float:
  """Average forgetting (Chaudhry et al. 2018); 0.0 for a single task."""
  f = forgetting_per_task(matrix)
  return float(f.mean()) if f.size else 0.0


def backward_transfer(matrix) -> float:
  """BWT (Lopez-Paz & Ranzato 2017): mean_{j < T-1} R[T-1, j] - R[j, j]; 0.0 for a single task."""
  r = _check(matrix)
  t = r.shape[0]
  if t == 1:
    return 0.0
  return float(np.mean([r[t - 1, j] - r[j, j] for j in range(t - 1)]))


def forward_transfer(matrix, baseline: Sequence[float]) -> float:
  """FWT (GEM): mean_{j > 0} R[j-1, j] - baseline[j], baseline = accuracies of the initial model; 0.0 if T = 1."""
  r = _check(matrix)
  t = r.shape[0]
  b = np.asarray(baseline, np.float64)
  if b.shape != (t,):
    raise ConfigError(f"forward_transfer: baseline must have one accuracy per task ({t},); got shape {b.shape}")
  if t == 1:
    return 0.0
  return float(np.mean([r[j - 1, j] - b[j] for j in range(1, t)]))


def final_drop_per_task(matrix) -> np.ndarray:
  """R[j, j] - R[T-1, j] for every task j (the MAS demo's per-task forgetting; the last entry is 0)."""
  r = _check(matrix)
  return np.diag(r) - r[-1]


def summary(matrix, baseline: Sequence[float] | None = None) -> dict[str, float]:
  """avg_accuracy, forgetting, bwt (and fwt when `baseline` is given) of a full accuracy matrix."""
  out = {"avg_accuracy": average_accuracy(matrix), "forgetting": forgetting(matrix), "bwt": backward_transfer(matrix)}
  if baseline is not None:
    out["fwt"] = forward_transfer(matrix, baseline)
  return out
