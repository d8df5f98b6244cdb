"""Shared fixtures. Real data comes from ../shared/data (or $SHARED_DATA)."""

import os

os.environ.setdefault("NAS_FORGETTING_NO_PROGRESS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pathlib

import pytest

from nas_forgetting import paths


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real-data folder; under CI its absence is a failure, elsewhere a skip."""
  root = paths.shared_data_dir()
  if not (root / "mnist").is_dir():
    if os.environ.get("CI"):
      pytest.fail(f"real data folder {root} is missing (expected ../shared/data beside the checkout)")
    pytest.skip(f"real data folder {root} not found")
  return root


class SimulatedKill(BaseException):
  """Stands in for kill -9 at a write boundary (a BaseException, so the run's own `except Exception` cannot catch it)."""


class WriteFaults:
  """Interrupts a run at each boundary between its durable writes, to prove that resuming is exact.

  The writes counted are the ones a run's on-disk state is made of: atomic file replacements
  (`nas_forgetting.io.atomic`, which every CSV/JSON/state file goes through), checkpoint saves
  (`Checkpointer.save`) and metrics lines (`MetricsLogger.log`). `count(fn)` runs `fn` and returns how
  many such writes it made; `kill_after(k, fn)` runs `fn` and raises `SimulatedKill` right after its k-th
  write completes (as a kill between two writes would leave the disk), returning True if the kill happened.
  """

  def __init__(self, monkeypatch: pytest.MonkeyPatch):
    import os as real_os
    from nas_forgetting.io import atomic, checkpoint, metrics

    self.writes = 0
    self.kill_at: int | None = None
    faults = self

    def completed(what: str) -> None:
      faults.writes += 1
      if faults.kill_at is not None and faults.writes == faults.kill_at:
        raise SimulatedKill(f"killed after write {faults.writes} ({what})")

    class _OsWithCountedReplace:
      def __getattr__(self, name):
        return getattr(real_os, name)

      @staticmethod
      def replace(src, dst, *args, **kwargs):
        real_os.replace(src, dst, *args, **kwargs)
        completed(f"replace {dst}")

    monkeypatch.setattr(atomic, "os", _OsWithCountedReplace())
    original_save, original_log = checkpoint.Checkpointer.save, metrics.MetricsLogger.log

    def save(self, step, *args, **kwargs):
      result = original_save(self, step, *args, **kwargs)
      self.wait()
      completed(f"checkpoint {self.directory} step {step}")
      return result

    def log(self, step, *args, **kwargs):
      result = original_log(self, step, *args, **kwargs)
      completed(f"metrics {self.path} step {step}")
      return result

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    monkeypatch.setattr(metrics.MetricsLogger, "log", log)

  def count(self, fn) -> int:
    """Runs `fn()` to the end and returns the number of durable writes it made."""
    self.writes, self.kill_at = 0, None
    fn()
    return self.writes

  def kill_after(self, k: int, fn) -> bool:
    """Runs `fn()`, killing it right after its k-th durable write; True if it was killed."""
    self.writes, self.kill_at = 0, k
    try:
      fn()
    except SimulatedKill:
      return True
    finally:
      self.kill_at = None
    return False


@pytest.fixture
def write_faults(monkeypatch) -> WriteFaults:
  """A `WriteFaults` active for the test (see its docstring)."""
  return WriteFaults(monkeypatch)
