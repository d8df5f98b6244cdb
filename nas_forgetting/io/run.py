"""Run folders: create the workdir and record what produced it (the resolved config and the code's git revision)."""

import json
import os
import pathlib
import subprocess
from typing import Any, Mapping

import ml_collections

from nas_forgetting.errors import ConfigError
from nas_forgetting.io.atomic import atomic_write_text

CONFIG_FILE = "config.json"
REVISION_FILE = "git_revision.txt"
_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent


def _git(directory: pathlib.Path, *args: str) -> str:
  out = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=20,
                       check=True, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
  return out.stdout.strip()


def git_revision(directory: str | os.PathLike | None = None) -> str:
  """The commit checked out in the git work tree holding `directory` (default: this package's source).

  Returns the full commit hash, with "-dirty" appended when tracked files differ from that commit, or
  "unknown" outside a git checkout (an installed package, no git executable).
  """
  directory = pathlib.Path(directory) if directory is not None else _PACKAGE_DIR
  try:
    if _git(directory, "rev-parse", "--is-inside-work-tree") != "true":
      return "unknown"
    revision = _git(directory, "rev-parse", "--verify", "HEAD")
    dirty = _git(directory, "status", "--porcelain", "--untracked-files=no")
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return f"{revision}-dirty" if dirty else revision


def config_to_json(config: Any) -> str:
  """The resolved config as indented JSON (field references resolved; unserialisable values written as text)."""
  if isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    return config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
  if isinstance(config, Mapping):
    return json.dumps(dict(config), indent=2, sort_keys=True, default=repr) + "\n"
  raise ConfigError(f"config is a {type(config).__name__}; expected an ml_collections.ConfigDict or a mapping")


def prepare_workdir(workdir: str | os.PathLike, config: Any) -> pathlib.Path:
  """Creates `workdir` (and parents) and writes `config.json` (resolved config) and `git_revision.txt` into it.

  Calling it again on the same folder (a resumed run) rewrites both files atomically.

  Returns:
    The workdir as an absolute path.
  """
  if not str(workdir):
    raise ConfigError("workdir is empty; expected a folder path")
  path = pathlib.Path(workdir).expanduser().absolute()
  if path.exists() and not path.is_dir():
    raise ConfigError(f"workdir {path} exists and is not a folder")
  text = config_to_json(config)
  path.mkdir(parents=True, exist_ok=True)
  atomic_write_text(path / CONFIG_FILE, text)
  atomic_write_text(path / REVISION_FILE, git_revision() + "\n")
  return path
