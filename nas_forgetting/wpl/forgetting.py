"""Measuring multi-model forgetting in weight-sharing training, and ranking agreement.

Protocol (as in the WPL paper): within an epoch, every architecture trained is evaluated on one fixed validation
batch right after its training burst ("after burst"), and again at the end of the epoch, after all later
architectures of that epoch have moved the shared weights ("end of epoch"). The difference is the forgetting that
the later training caused.

Sign convention: **positive means forgetting** for every metric.
  lower-is-better metrics (perplexity, loss): forgetting = end_of_epoch - after_burst
  higher-is-better metrics (accuracy):        forgetting = after_burst - end_of_epoch
The reference logs raw differences end - after for both (so its CNN "Mean difference" is negative when the model
forgets); our accuracy figures are the negation of the reference's.

Per epoch we report mean, max (worst), std (population, ddof=0), median (robust to an architecture whose
perplexity explodes) and the fraction of architectures that got worse (forgetting > 0) over the epoch's
architectures, plus the mean metric at both times. `ForgettingTracker` collects one epoch at a time for a trainer;
`write_forgetting_csv` and `plot_forgetting_comparison` write the CSV and the with/without-WPL figure
(docs/results_wpl.md) through `nas_forgetting.io`.

The paper's full definition, for a round in which every architecture is evaluated after every burst, is
`round_forgetting_summary` over the (architectures x bursts) matrix of metrics: each architecture's metric right
after its own burst versus right after the NEXT architecture's burst ("after_next/...") and at the end of the round
("end/..."). (Kendall's tau between shared-weight and stand-alone rankings is the ENAS rank-correlation
mode's: `nas_forgetting.statistics.kendall_tau_b`.)
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from nas_forgetting.errors import DataError
from nas_forgetting.io import metrics as metrics_lib
from nas_forgetting.io import plots

SUMMARY_KEYS = ("mean_diff", "max_diff", "std_diff", "median_diff", "frac_worse", "mean_after_burst",
                "mean_end_of_epoch", "num_architectures")
# The two comparisons of a round (`round_forgetting_summary`), each prefixing forgetting_summary's keys.
ROUND_VIEWS = ("after_next", "end")
ROUND_SUMMARY_KEYS = tuple(f"{view}/{k}" for view in ROUND_VIEWS for k in SUMMARY_KEYS)


def forgetting_differences(after_burst: Sequence[float], end_of_epoch: Sequence[float], *,
                           higher_is_better: bool) -> np.ndarray:
  """Per-architecture forgetting (positive = forgetting; see the module docstring for the sign)."""
  before = np.asarray(after_burst, np.float64)
  after = np.asarray(end_of_epoch, np.float64)
  if before.ndim != 1 or before.shape != after.shape:
    raise DataError(f"after_burst has shape {before.shape} and end_of_epoch {after.shape}; expected two 1-D "
                    "sequences of the same length (one value per architecture)")
  if not (np.all(np.isfinite(before)) and np.all(np.isfinite(after))):
    raise DataError("forgetting measurement got a non-finite metric value (after_burst or end_of_epoch)")
  return before - after if higher_is_better else after - before


def forgetting_summary(after_burst: Sequence[float], end_of_epoch: Sequence[float], *,
                       higher_is_better: bool) -> dict[str, float]:
  """mean/max/std/median of the forgetting, the fraction of architectures with forgetting > 0, and the mean metric
  before/after, for one epoch (keys: SUMMARY_KEYS)."""
  diff = forgetting_differences(after_burst, end_of_epoch, higher_is_better=higher_is_better)
  if diff.size == 0:
    raise DataError("forgetting summary of an epoch without any architecture")
  return {
      "mean_diff": float(np.mean(diff)),
      "max_diff": float(np.max(diff)),
      "std_diff": float(np.std(diff)),
      "median_diff": float(np.median(diff)),
      "frac_worse": float(np.mean(diff > 0)),
      "mean_after_burst": float(np.mean(after_burst)),
      "mean_end_of_epoch": float(np.mean(end_of_epoch)),
      "num_architectures": int(diff.size),
  }


def round_views(metrics: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(after own burst, after the next architecture's burst, end of round) from a round's metric matrix.

  Args:
    metrics: shape (n, n); metrics[i, t] is the metric of the round's i-th architecture on the fixed validation
      batch after burst t, where burst t trains architecture t (training order), n >= 2.

  Returns:
    metrics[i, i] for every i (n values), metrics[i, i + 1] for i < n - 1 (the last architecture has no next
    burst in its round: n - 1 values), and metrics[i, n - 1] for every i (n values).
  """
  m = np.asarray(metrics, np.float64)
  if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
    raise DataError(f"round metrics have shape {m.shape}; expected (n, n) with n >= 2: architectures in training "
                    "order x the burst after which each was evaluated")
  n = m.shape[0]
  return np.diagonal(m).copy(), m[np.arange(n - 1), np.arange(1, n)], m[:, -1].copy()


def round_forgetting_summary(metrics: Any, *, higher_is_better: bool) -> dict[str, float]:
  """The paper's forgetting for one round (keys: ROUND_SUMMARY_KEYS; `metrics` as in `round_views`).

  "after_next/<k>" compares each architecture after its own burst with after the next architecture's burst (the
  round's last architecture has none and is left out); "end/<k>" with the end of the round; <k> are SUMMARY_KEYS
  (mean_after_burst / mean_end_of_epoch are the mean metric at the two compared times).
  """
  own, after_next, end = round_views(metrics)
  views = {"after_next": (own[:-1], after_next), "end": (own, end)}
  return {f"{view}/{k}": v for view in ROUND_VIEWS
          for k, v in forgetting_summary(*views[view], higher_is_better=higher_is_better).items()}


class ForgettingTracker:
  """Collects one epoch of (architecture, metric after its burst) and the end-of-epoch re-evaluation.

  Use in a trainer:
    tracker.begin_epoch(epoch)
    for each architecture:  train burst; tracker.record_after_burst(arch, eval(arch))
    values = [eval(a) for a in tracker.architectures]       # same fixed batch, after the whole epoch
    row = tracker.end_epoch(values)                          # {'epoch': e, 'mean_diff': ..., ...}
  `rows` keeps every epoch's summary (for CSV and plots).
  """

  def __init__(self, *, higher_is_better: bool):
    self.higher_is_better = higher_is_better
    self.rows: list[dict[str, float]] = []
    self._epoch: int | None = None
    self._archs: list[Any] = []
    self._after_burst: list[float] = []

  @property
  def architectures(self) -> list[Any]:
    """The architectures recorded in the current epoch, in training order."""
    return list(self._archs)

  def begin_epoch(self, epoch: int) -> None:
    if self._epoch is not None:
      raise DataError(f"begin_epoch({epoch}) while epoch {self._epoch} was not ended")
    self._epoch, self._archs, self._after_burst = int(epoch), [], []

  def record_after_burst(self, arch: Any, value: float) -> None:
    if self._epoch is None:
      raise DataError("record_after_burst before begin_epoch")
    self._archs.append(arch)
    self._after_burst.append(float(value))

  def end_epoch(self, end_of_epoch: Sequence[float]) -> dict[str, float]:
    """Summarises the epoch given the end-of-epoch values (one per recorded architecture, same order)."""
    if self._epoch is None:
      raise DataError("end_epoch before begin_epoch")
    if len(end_of_epoch) != len(self._after_burst):
      raise DataError(f"end_epoch got {len(end_of_epoch)} values for {len(self._after_burst)} architectures "
                      f"trained in epoch {self._epoch}")
    row = {"epoch": self._epoch, **forgetting_summary(self._after_burst, end_of_epoch,
                                                      higher_is_better=self.higher_is_better)}
    self.rows.append(row)
    self._epoch = None
    return row


def write_forgetting_csv(path: str | pathlib.Path, rows: Sequence[Mapping[str, float]]) -> None:
  """One line per epoch: epoch and SUMMARY_KEYS (atomic write)."""
  metrics_lib.write_csv(path, [dict(r) for r in rows], fieldnames=["epoch", *SUMMARY_KEYS])


def plot_forgetting_comparison(path: str | pathlib.Path, runs: Mapping[str, Sequence[Mapping[str, float]]], *,
                               statistic: str = "mean_diff", metric_name: str = "metric", title: str = "") -> None:
  """One figure: the per-epoch forgetting `statistic` of several runs (e.g. {'WPL': rows, 'no WPL': rows})."""
  if statistic not in SUMMARY_KEYS:
    raise DataError(f"statistic {statistic!r}; expected one of {', '.join(SUMMARY_KEYS)}")
  series = {name: ([float(r["epoch"]) for r in rows], [float(r[statistic]) for r in rows])
            for name, rows in runs.items()}
  plots.line_plot(path, series, xlabel="epoch", ylabel=f"forgetting ({statistic}, {metric_name}; > 0 = forgetting)",
            title=title)
