"""Run folders: the workdir of a launch, locked, holding the run's resolved config and the code's git revision.

`open_run` is what the launcher uses: one run per workdir (a relaunch with other settings, or of another
experiment, is refused), one launch at a time (an exclusive lock), nothing left behind by a failed launch; in a
run of several processes, process 0 alone writes it.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import subprocess
from typing import Any, Iterator, Mapping, Sequence

import ml_collections

from nas_forgetting import distributed
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


LOCK_FILE = ".lock"
LAUNCHER_FILES = (CONFIG_FILE, REVISION_FILE, LOCK_FILE)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars are leaves."""
  if isinstance(tree, Mapping) and tree:
    flat = {}
    for key, value in tree.items():
      flat.update(_flatten(value, f"{prefix}{key}."))
    return flat
  return {prefix[:-1]: tree}


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any],
                       ignore: Sequence[str] = ()) -> list[str]:
  """The fields in which two configs (nested dicts, as in config.json) differ: 'field: stored -> current'.

  A field is ignored when its dotted path equals an entry of `ignore` or lies below one (`'train'` covers
  `'train.epochs'`).
  """
  a, b = _flatten(stored), _flatten(current)
  ignored = lambda key: any(key == p or key.startswith(p + ".") for p in ignore)
  shown = lambda key, flat: json.dumps(flat[key]) if key in flat else "(absent)"
  return [f"{key}: {shown(key, a)} -> {shown(key, b)}" for key in sorted(set(a) | set(b))
          if not ignored(key) and shown(key, a) != shown(key, b)]


def _checked_path(workdir: str | os.PathLike) -> pathlib.Path:
  """The workdir as an absolute path, or a ConfigError saying why it cannot be one (nothing is created)."""
  if not str(workdir).strip():
    raise ConfigError("--workdir is empty; expected a folder path")
  path = pathlib.Path(workdir).expanduser().absolute()
  if path.exists() and not path.is_dir():
    raise ConfigError(f"workdir {path} exists and is not a folder")
  existing = path
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    raise ConfigError(f"workdir {path} lies below {existing}, which is a file, not a folder")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"workdir {path} cannot be written: no write permission on {existing}")
  if path.is_dir() and not (path / CONFIG_FILE).exists():
    others = sorted(p.name for p in path.iterdir() if p.name not in LAUNCHER_FILES)
    if others:
      listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
      raise ConfigError(f"workdir {path} is not empty ({listed}) and holds no run ({CONFIG_FILE} is missing); "
                        "choose a new or empty folder")
  return path


def _make_folders(path: pathlib.Path) -> list[pathlib.Path]:
  """Creates `path` and its missing parents; returns the folders created, deepest first."""
  created = []
  folder = path
  while not folder.exists():
    created.append(folder)
    folder = folder.parent
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"cannot create workdir {path}: {e.strerror or e}") from None
  return created


def _lock(path: pathlib.Path) -> int:
  """An exclusive lock on `path/.lock`, held until the descriptor is closed (the OS releases it if the process dies)."""
  lock_path = path / LOCK_FILE
  try:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise ConfigError(f"cannot write in workdir {path}: {e.strerror or e}") from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.read(fd, 64).decode(errors="replace").strip()
    os.close(fd)
    who = f" (process {holder})" if holder else ""
    raise ConfigError(f"workdir {path} is in use by another launch{who}; wait for it to end or choose another "
                      "--workdir") from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
  return fd


def _check_or_store_config(path: pathlib.Path, config: Any, resume_safe: Sequence[str]) -> None:
  """Stores the config of a new run; for an existing run, refuses other settings (but `resume_safe` fields)."""
  text = config_to_json(config)
  stored_file = path / CONFIG_FILE
  if not stored_file.exists():
    atomic_write_text(stored_file, text)
    return
  try:
    stored = json.loads(stored_file.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise ConfigError(f"{stored_file} cannot be read ({e}); it records the run in this workdir, so the run "
                      "cannot be resumed safely: restore the file or choose another --workdir") from None
  current = json.loads(text)
  if stored.get("experiment") != current.get("experiment"):
    raise ConfigError(f"workdir {path} holds a {stored.get('experiment')!r} run; a {current.get('experiment')!r} "
                      "run needs a workdir of its own")
  differences = config_differences(stored, current, ignore=resume_safe)
  if differences:
    raise ConfigError(f"workdir {path} holds a run with other settings; refusing to mix two runs. Differing "
                      f"fields (stored -> now):\n  " + "\n  ".join(differences) +
                      "\nLaunch with the stored settings to resume that run, or choose another --workdir.")
  if config_differences(stored, current):
    atomic_write_text(stored_file, text)  # Only fields that say how far to run changed: record the new ones.


def _agree(error: Exception | None, config_text: str | None) -> None:
  """Fails every process of a distributed run together: raises this process's `error`, or a ConfigError when
  another process failed or when this process's config differs from process 0's (single process: `error`)."""
  same = distributed.same_as_process_0(config_text or "")
  if error is None and not same:
    error = ConfigError(f"process {distributed.process_index()} was launched with another config than process 0; "
                        "launch every process of the run with the same command")
  if not distributed.all_ok(error is None):
    raise error or ConfigError(f"another process of this run could not start it (its output says why); process "
                               f"{distributed.process_index()} stops too")


@contextlib.contextmanager
def open_run(workdir: str | os.PathLike, config: Any, *, resume_safe: Sequence[str] = ()
             ) -> Iterator[pathlib.Path]:
  """The workdir of one launch, locked and holding this run's config, for the duration of the `with` block.

  On entry: checks the path (empty, a file, below a file, not writable: ConfigError), creates it, takes an
  exclusive lock (a second launch on the same workdir is refused while the first runs; the OS releases the
  lock when the process dies), then writes `config.json` for a new run, or checks it against the stored one
  for an existing run: another experiment, or any differing field except those in `resume_safe` (fields
  that only say how far to run), is refused with the differing fields listed. Writes `git_revision.txt`.

  On an exception from inside the block (including Ctrl-C), a workdir this launch created and in which the
  run wrote nothing is removed again, so a failed launch leaves nothing behind.

  In a run of several processes (`nas_forgetting.distributed`) every process calls it: process 0 does all of the
  above, the others touch nothing; each checks that its config equals process 0's, and when any process fails
  here every process raises (none is left waiting for the others).

  Yields:
    The workdir as an absolute path.
  """
  if not distributed.is_writer():
    error, text = None, None
    try:
      text = config_to_json(config)
    except ConfigError as e:
      error = e
    _agree(error, text)
    yield pathlib.Path(workdir).expanduser().absolute()
    return
  created, fd, path = [], None, None
  try:
    error, text = None, None
    try:
      path = _checked_path(workdir)
      text = config_to_json(config)  # A config that cannot be written fails before anything is created.
      created = _make_folders(path)
      fd = _lock(path)
      _check_or_store_config(path, config, resume_safe)
      atomic_write_text(path / REVISION_FILE, git_revision() + "\n")
    except (ConfigError, OSError) as e:
      error = e
    _agree(error, text)
    yield path
  except BaseException:
    if created and all(p.name in LAUNCHER_FILES for p in path.iterdir()):
      for name in LAUNCHER_FILES:
        with contextlib.suppress(FileNotFoundError):
          (path / name).unlink()
      for folder in created:
        with contextlib.suppress(OSError):
          folder.rmdir()
    raise
  finally:
    if fd is not None:
      os.close(fd)
