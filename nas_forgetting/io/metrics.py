"""Metrics on disk: one JSON line per logged step (plus TensorBoard scalars), and CSV tables written atomically.

`MetricsLogger(workdir).log(step, {"train/loss": 0.3})` appends `{"step": step, "train/loss": 0.3}` to
`<workdir>/metrics.jsonl` and the scalars to `<workdir>/tensorboard/`. A resumed run appends to the same JSONL
file; a line cut short by a crash is dropped when the file is reopened, and with `purge_step` (the first step
the resumed run logs again) the records of the lost steps are dropped from both outputs. In a run of several
processes only process 0 writes (`distributed.is_writer`); on the others the logger checks and discards.
"""

import csv
import io
import itertools
import json
import os
import pathlib
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from nas_forgetting import distributed
from nas_forgetting.errors import DataError
from nas_forgetting.io._steps import as_step
from nas_forgetting.io.atomic import atomic_write_text

PathLike = str | os.PathLike
TENSORBOARD_DIR = "tensorboard"
_EVENT_FILES = itertools.count()  # tensorboardX names event files by second and host: make each name unique


def _summary_writer(logdir: pathlib.Path, purge_step: int | None):
  """tensorboardX's SummaryWriter (no TensorFlow needed); with `purge_step`, TensorBoard hides the events of
  earlier files from that step on (a resumed run's steps are not shown twice)."""
  # tensorboardX imports torch when it is installed, only to accept torch tensors (never passed here): seconds of
  # a short run's start. torch is hidden during that import (an ImportError to tensorboardX) unless already loaded.
  hide_torch = "torch" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("TensorBoard logging needs tensorboardX (`pip install tensorboardX`); or pass "
                      "tensorboard=False") from e
  finally:
    if hide_torch:
      del sys.modules["torch"]
  return SummaryWriter(logdir=str(logdir), purge_step=purge_step, flush_secs=10,
                       filename_suffix=f".{os.getpid()}.{next(_EVENT_FILES)}")


def _image_array(tag: str, image: np.ndarray | bytes) -> tuple[np.ndarray, str]:
  """An image as tensorboardX takes it: uint8 (or float in [0, 1]) pixels and their layout."""
  if isinstance(image, (bytes, bytearray)):
    from PIL import Image  # pylint: disable=import-outside-toplevel
    image = np.asarray(Image.open(io.BytesIO(bytes(image))))
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[2] == 2:  # Grey + alpha: TensorBoard shows grey.
    image = image[..., 0]
  if image.ndim == 2:
    return image, "HW"
  if image.ndim == 3 and image.shape[2] in (1, 3, 4):
    return image, "HWC"
  raise ValueError(f"image {tag!r} has shape {image.shape}; expected (H, W) or (H, W, C) with C in 1, 3, 4")


def _python_number(array: np.ndarray) -> int | float | bool:
  """The Python number of a one-element array; float32/float16 as the shortest decimal that round-trips them."""
  if array.dtype.kind not in "biuf":  # bfloat16 and other ml_dtypes floats.
    array = array.astype(np.float32)
  scalar = array.reshape(())[()]
  if array.dtype.kind == "f" and array.dtype.itemsize < 8:
    return float(str(scalar))  # float32(0.1) -> 0.1, not 0.10000000149011612.
  return scalar.item()


def _scalar(key: str, value: Any) -> int | float | bool:
  """A JSON-able Python number from a Python, numpy or jax scalar."""
  if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
    return value
  array = np.asarray(value)
  if array.shape != () and array.size != 1:
    raise ValueError(f"metric {key!r} has shape {array.shape}; expected a scalar")
  if not (array.dtype.kind in "biuf" or "float" in array.dtype.name):
    raise ValueError(f"metric {key!r} is {value!r} (dtype {array.dtype}); expected a number")
  return _python_number(array)


def _drop_partial_last_line(path: pathlib.Path) -> None:
  """Truncates a trailing line without its newline (a write cut short by a crash)."""
  if not path.exists() or path.stat().st_size == 0:
    return
  with open(path, "rb+") as f:
    f.seek(-1, os.SEEK_END)
    if f.read(1) == b"\n":
      return
    f.seek(0)
    data = f.read()
    f.truncate(data.rfind(b"\n") + 1)


class MetricsLogger:
  """Appends `{"step": s, **metrics}` lines to `<workdir>/<filename>` and scalars/images to TensorBoard.

  Each `log` call is flushed to the JSONL file at once; TensorBoard events (tensorboardX) are buffered and
  flushed every 10 s and on `flush()`/`close()`. With `tensorboard=False` nothing is written to TensorBoard and
  `image()` does nothing.

  A run resumed from a checkpoint passes `purge_step`, the first step it will log again: records with
  `step >= purge_step` (logged after that checkpoint, before the run stopped) are removed from the JSONL file
  and hidden in TensorBoard, so that the resumed run's outputs equal those of an uninterrupted run.
  """

  def __init__(self, workdir: PathLike, *, tensorboard: bool = True, filename: str = "metrics.jsonl",
               purge_step: int | None = None):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / filename
    if not distributed.is_writer():  # another process of the run writes: lines are checked, then discarded
      self._file, self._events = open(os.devnull, "w", encoding="utf-8"), None  # pylint: disable=consider-using-with
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    _drop_partial_last_line(self.path)
    if purge_step is not None:
      purge_step = as_step(purge_step)
      if self.path.exists():
        kept = [r for r in read_jsonl(self.path) if not (isinstance(r.get("step"), int) and r["step"] >= purge_step)]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    self._file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    self._events = _summary_writer(self.workdir / TENSORBOARD_DIR, purge_step) if tensorboard else None

  def log(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Writes one JSON line and one TensorBoard scalar per metric (NaN/inf are written as NaN/Infinity)."""
    step = as_step(step)
    if self._file is None:
      raise ValueError(f"metrics logger for {self.path} is closed")
    if "step" in metrics:
      raise ValueError(f"metrics hold a key 'step' (step {step}); it is reserved for the step number")
    values = {}
    for key, value in metrics.items():
      if not isinstance(key, str) or not key:
        raise ValueError(f"metric name {key!r}; expected a non-empty string")
      values[key] = _scalar(key, value)
    self._file.write(json.dumps({"step": step, **values}) + "\n")
    self._file.flush()
    if self._events is not None:
      for key, value in values.items():
        self._events.add_scalar(key, float(value), step)

  def image(self, tag: str, image: np.ndarray | bytes, step: int) -> None:
    """Logs an image to TensorBoard ((H, W, C) uint8 array or PNG bytes)."""
    if self._events is not None:
      pixels, layout = _image_array(tag, image)
      self._events.add_image(tag, pixels, as_step(step), dataformats=layout)

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    """Flushes and closes both outputs; closing twice is harmless."""
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._events is not None:
      self._events.close()
      self._events = None

  def __enter__(self) -> "MetricsLogger":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_jsonl(path: PathLike) -> list[dict]:
  """All records of a JSONL file (blank lines skipped; a last line cut short by a crash is ignored)."""
  path = pathlib.Path(path)
  try:
    text = path.read_text(encoding="utf-8")
  except FileNotFoundError:
    raise DataError(f"{path} does not exist; expected a JSON-lines file") from None
  lines = text.split("\n")
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if number == len(lines):  # No newline after it: a write interrupted part-way.
        break
      raise DataError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    if not isinstance(record, dict):
      raise DataError(f"{path}:{number}: a JSON {type(record).__name__}; expected an object")
    records.append(record)
  return records


def _csv_cell(value: Any) -> Any:
  if value is None:
    return ""
  if isinstance(value, (str, bool, int, float)) and not isinstance(value, np.generic):
    return value
  if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
    array = np.asarray(value)
    if array.size == 1:
      return _python_number(array)
  return value


def write_csv(path: PathLike, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str] | None = None
              ) -> pathlib.Path:
  """Writes `rows` as a CSV table with a header, atomically.

  Args:
    path: the output file (parents created).
    rows: one mapping per row; a missing column is written as an empty cell.
    fieldnames: the column order; default: every key in order of first appearance.

  Returns:
    The path.
  """
  rows = list(rows)
  if fieldnames is None:
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))
  fieldnames = list(fieldnames)
  if len(set(fieldnames)) != len(fieldnames):
    raise ValueError(f"write_csv({path!s}): repeated column names in {fieldnames}")
  known = set(fieldnames)
  for index, row in enumerate(rows):
    extra = [key for key in row if key not in known]
    if extra:
      raise ValueError(f"write_csv({path!s}): row {index} has columns {extra} not in fieldnames {fieldnames}")
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="", lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({key: _csv_cell(value) for key, value in row.items()})
  return atomic_write_text(path, buffer.getvalue())


def read_csv(path: PathLike) -> list[dict[str, str]]:
  """The rows of a CSV file with a header line, as dicts of strings."""
  path = pathlib.Path(path)
  try:
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      rows = list(reader)
  except FileNotFoundError:
    raise DataError(f"{path} does not exist; expected a CSV file with a header line") from None
  for number, row in enumerate(rows, start=2):
    if None in row:
      raise DataError(f"{path}: row {number - 1} has more cells than the {len(reader.fieldnames)} header columns")
  return rows
