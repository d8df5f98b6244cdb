"""Statistics the experiments report: rank agreement (Kendall's tau-b) and paired comparisons with intervals.

`kendall_tau_b` ranks shared-weight scores against stand-alone scores (ENAS modes 'rank_correlation' and
'multi_model'); `paired_difference` summarises a paired comparison of two arms run on the same seeds (e.g. the
forgetting with WPL minus without) with a paired-t and a percentile-bootstrap confidence interval; `t_half_width` is
the t interval of a mean (also the per-round bands of the multi-model report).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

from nas_forgetting.errors import DataError


def _paired_samples(name: str, x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """Two float64 1-D samples of equal length >= 2, all finite (DataError naming `name` otherwise)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 1 or x.shape != y.shape:
    raise DataError(f"{name} needs two 1-D samples of equal length; got shapes {x.shape} and {y.shape}")
  if x.size < 2:
    raise DataError(f"{name} needs at least 2 pairs; got {x.size}")
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise DataError(f"{name} got a non-finite value")
  return x, y


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
  """Kendall's tau-b rank correlation of two paired samples (ties handled; NaN when one sample is constant).

  tau_b = (n_c - n_d) / sqrt((n_0 - n_x) (n_0 - n_y)), n_0 = n(n-1)/2 pairs, n_x / n_y the pairs tied in x / y,
  computed by `scipy.stats.kendalltau(variant='b')` (this function adds the input checks and the NaN contract).
  Scores must be oriented the same way (e.g. both accuracies, or both negative perplexities).

  A constant sample (every pair tied: n_x = n_0 or n_y = n_0, e.g. all architectures scoring the same perplexity
  with shared weights) ranks nothing, and tau_b is undefined (0/0): the result is then NaN, not 0 (which would
  claim "no agreement"). Callers test it with `math.isnan` and report it as undefined; it is safe to log:
  `nas_forgetting.io.MetricsLogger` writes NaN to the JSONL (read back as NaN by `read_jsonl`) and to TensorBoard,
  and it prints as 'nan'.
  """
  x, y = _paired_samples("kendall_tau_b", x, y)
  return float(stats.kendalltau(x, y, variant="b").statistic)


def t_half_width(sd: float, n: int, confidence: float = 0.95) -> float:
  """Half the width of the t confidence interval of a mean of `n` values with sample sd `sd` (ddof=1):
  t_{(1+confidence)/2, n-1} sd / sqrt(n); 0 for n < 2 (a single value has no spread to estimate)."""
  if not 0 < confidence < 1:
    raise DataError(f"confidence={confidence}; expected a value in (0, 1)")
  if n < 2:
    return 0.0
  return float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / np.sqrt(n))


def paired_difference(treated: Sequence[float], control: Sequence[float], *, confidence: float = 0.95,
                      resamples: int = 10_000, seed: int = 0) -> dict[str, float]:
  """The paired differences d_i = treated_i - control_i (one pair per seed) summarised with two intervals.

  Returns n, mean, sd (ddof=1), the paired t statistic mean / (sd / sqrt(n)) and its two-sided p value (n - 1
  degrees of freedom), the t interval mean -+ t_{(1+confidence)/2, n-1} sd / sqrt(n) (`t_low`, `t_high`), the
  percentile-bootstrap interval of the mean over `resamples` resamples of the n pairs drawn with a generator seeded
  by `seed` (`bootstrap_low`, `bootstrap_high`), the fraction of pairs with d < 0 (`frac_lower`), and the mean of
  each arm. With sd = 0 the t statistic is +-inf (or NaN when the mean is 0 too) and the t interval is the point.
  """
  a, b = _paired_samples("paired_difference", treated, control)
  d = a - b
  n, mean, sd = d.size, float(np.mean(d)), float(np.std(d, ddof=1))
  se = sd / np.sqrt(n)
  with np.errstate(divide="ignore", invalid="ignore"):
    t = float(np.divide(mean, se))
  p = float(2 * stats.t.sf(abs(t), n - 1)) if np.isfinite(t) else (0.0 if mean != 0 else float("nan"))
  half = t_half_width(sd, n, confidence)
  means = np.random.default_rng(seed).choice(d, size=(resamples, n), replace=True).mean(axis=1)
  tail = (1 - confidence) / 2
  low, high = np.quantile(means, [tail, 1 - tail])
  return {"n": n, "mean": mean, "sd": sd, "t": t, "p": p, "t_low": mean - half, "t_high": mean + half,
          "bootstrap_low": float(low), "bootstrap_high": float(high), "frac_lower": float(np.mean(d < 0)),
          "mean_treated": float(np.mean(a)), "mean_control": float(np.mean(b))}
