"""Timing shared by the benchmark scripts (run as `python benchmarks/<name>.py`, so this imports as `timing`)."""

import time
from typing import Callable


def seconds_per_call(fn: Callable[[], object], n: int) -> float:
  """Seconds per call of fn() (which must block on its result), after one warm-up call."""
  fn()
  start = time.perf_counter()
  for _ in range(n):
    fn()
  return (time.perf_counter() - start) / n


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
  """The shortest of `repeats` timed calls of fn() (which must block on its result), after one warm-up call."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best
