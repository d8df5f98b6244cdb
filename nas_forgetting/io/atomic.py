"""Atomic file writes: a temporary file in the target's folder, flushed to disk, then `os.replace`d over the target.

A reader never sees a half-written file, and a failure part-way (an exception, a full disk, a kill) leaves the
previous content of the target untouched and no temporary file behind (except after a hard kill, when a hidden
`.<name>.*.tmp` sibling may remain; it is never mistaken for the target).

In a run of several processes only process 0 writes (`distributed.is_writer`): on the others every write here is
checked and formatted as usual, then discarded.
"""

import contextlib
import io
import os
import pathlib
import tempfile
from typing import IO, Iterator

from nas_forgetting import distributed

PathLike = str | os.PathLike


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: str = "w", *, encoding: str = "utf-8") -> Iterator[IO]:
  """Opens a temporary sibling of `path` for writing; on a clean exit it replaces `path`, on an exception it vanishes.

  Args:
    path: the target file; its parent folders are created.
    mode: "w" (text) or "wb" (binary).
    encoding: text encoding for mode "w".

  Yields:
    The open temporary file (on a process other than process 0 of a distributed run: an in-memory file that is
    discarded, nothing is written).
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"mode={mode!r}; expected 'w' or 'wb'")
  target = pathlib.Path(path)
  if target.is_dir():
    raise IsADirectoryError(f"{target} is a directory; expected a file path")
  if not distributed.is_writer():
    with (io.StringIO() if mode == "w" else io.BytesIO()) as sink:
      yield sink
    return
  target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
  try:
    # mkstemp creates the file 0600; give it the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    with os.fdopen(fd, mode, **({"encoding": encoding, "newline": ""} if mode == "w" else {})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def atomic_write_bytes(path: PathLike, data: bytes) -> pathlib.Path:
  """Writes `data` to `path` atomically; returns the path."""
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise TypeError(f"atomic_write_bytes({path!s}): data is {type(data).__name__}; expected bytes")
  with atomic_writer(path, "wb") as f:
    f.write(data)
  return pathlib.Path(path)


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8") -> pathlib.Path:
  """Writes `text` to `path` atomically (no newline translation); returns the path."""
  if not isinstance(text, str):
    raise TypeError(f"atomic_write_text({path!s}): text is {type(text).__name__}; expected str")
  with atomic_writer(path, "w", encoding=encoding) as f:
    f.write(text)
  return pathlib.Path(path)
