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
