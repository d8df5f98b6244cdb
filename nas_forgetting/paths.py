"""Where data lives when a config does not name it explicitly."""

import os
import pathlib

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def shared_data_dir() -> pathlib.Path:
  """The folder of real data sets used by offline runs, tests and benchmarks.

  `$SHARED_DATA` when set; otherwise `../shared/data` beside the repository checkout.
  """
  env = os.environ.get("SHARED_DATA")
  if env:
    return pathlib.Path(env)
  return _REPO_ROOT.parent / "shared" / "data"


def shared_data(*parts: str) -> str:
  """A path under `shared_data_dir()` as a string (for config files)."""
  return str(shared_data_dir().joinpath(*parts))
