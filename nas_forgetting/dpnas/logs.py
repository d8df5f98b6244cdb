"""The reference's DP-NAS CSV formats, read and written exactly, and the moving-average reward plot.

* Replay buffer (`replay_buffer.csv`): pandas-style, an unnamed index column, then epsilon, net, train_flag, reward,
  acc_best_val, acc_val_all_epochs, acc_train_all_epochs, acc_test_last. Per-epoch lists are Python list literals of
  percentages ("[81.2, 83.0]"), train_flag is True/False, fields with commas are double-quoted. Reading refuses
  (DataError naming the file and row) extra or repeated columns, rows with more or fewer fields than the header,
  and values that no search writes: epsilon or reward outside [0, 1], accuracies outside [0, 100] (up to float32
  rounding), NaN or infinities.
* Q-values (`q_values.csv`): no index, the 19 columns start_* (9), end_* (9), utility (extra columns refused;
  `QTable.load_rows` / `check_against_space` check the values and the table against the search space).
* Fixed nets (`fixed_net.csv`): index, net, acc_best_val, acc_val_all_epochs, acc_train_all_epochs, acc_test_last
  (the reference's columns; this project adds `seed` at the end so several initialisations of one net can be told
  apart), and `chosen_to_train.csv`: index (original row), epsilon, reward, acc_best_val, acc_last_val,
  acc_last_train, acc_test_last, net.

Logs of the reference load here, and these files load in the reference's tools (pandas `read_csv(index_col=0)`).
The search writes one rolling file of each kind, atomically replaced after every architecture (the reference
writes one numbered file per architecture).
"""

from __future__ import annotations

import ast
import csv
import io
import math
import pathlib
from typing import Iterable, Mapping, Sequence

from nas_forgetting.dpnas.q_learning import Q_VALUE_COLUMNS, ReplayRow
from nas_forgetting.errors import DataError
from nas_forgetting.io import plots

REPLAY_COLUMNS = ("epsilon", "net", "train_flag", "reward", "acc_best_val", "acc_val_all_epochs",
                  "acc_train_all_epochs", "acc_test_last")
FIXED_NET_COLUMNS = ("net", "acc_best_val", "acc_val_all_epochs", "acc_train_all_epochs", "acc_test_last", "seed")
CHOSEN_COLUMNS = ("epsilon", "reward", "acc_best_val", "acc_last_val", "acc_last_train", "acc_test_last", "net")


def _number(value: float) -> str:
  """A float as pandas writes it (Python's repr: 0.15, 1.0, 81.25)."""
  return repr(float(value))


def _list(values: Sequence[float]) -> str:
  return "[" + ", ".join(_number(v) for v in values) + "]"


def csv_text(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  """CSV text (header line, then the rows; cells with commas quoted; "\\n" line ends)."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  return buffer.getvalue()


def _read_table(path: str | pathlib.Path, required: Sequence[str], *, index_column: bool = False
                ) -> list[dict[str, str]]:
  """The rows of a CSV with exactly the columns `required` (plus, with `index_column`, the unnamed index column of
  pandas); DataError naming the file (and row) otherwise."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"{path}: no such CSV file")
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    fields = list(reader.fieldnames or [])
    missing = [c for c in required if c not in fields]
    if missing:
      raise DataError(f"{path}: missing columns {missing}; expected {list(required)}")
    allowed = set(required) | ({""} if index_column else set())
    extra = [c for c in fields if c not in allowed]
    if extra or len(fields) != len(set(fields)):
      raise DataError(f"{path}: unexpected or repeated columns {extra or fields}; expected "
                      f"{([''] if index_column else []) + list(required)}")
    rows = []
    for n, row in enumerate(reader):
      if None in row or any(v is None for v in row.values()):
        raise DataError(f"{path} row {n}: {len(fields)} fields expected, found a different number")
      rows.append(row)
    return rows


# float32 accuracies may exceed 100 (and rewards 1) by a rounding error: 100.00000762939453
_ROUNDING = 1e-4


def _finite(text: str, what: str, low: float, high: float) -> float:
  """A float in [low, high] up to float32 rounding (ValueError naming `what` otherwise: NaN, infinities and
  out-of-range values)."""
  value = float(text)
  if not (math.isfinite(value) and low <= value <= high * (1 + _ROUNDING)):
    raise ValueError(f"{what} {text.strip()!r}; expected a finite number in [{low:g}, {high:g}]")
  return value


def _parse_list(text: str, where: str) -> tuple:
  try:
    value = ast.literal_eval(text.strip())
  except (ValueError, SyntaxError):
    raise DataError(f"{where}: expected a list literal like [81.2, 83.0], found {text!r}") from None
  if isinstance(value, (int, float)):
    value = [value]
  try:
    values = tuple(float(v) for v in value)
  except (TypeError, ValueError):
    raise DataError(f"{where}: expected a list literal of numbers like [81.2, 83.0], found {text!r}") from None
  if not values or not all(math.isfinite(v) and 0.0 <= v <= 100.0 * (1 + _ROUNDING) for v in values):
    raise DataError(f"{where}: expected accuracies in [0, 100] (percent), found {text!r}")
  return values


def _parse_bool(text: str, where: str) -> bool:
  if text.strip() in ("True", "true", "1", "1.0"):
    return True
  if text.strip() in ("False", "false", "0", "0.0"):
    return False
  raise DataError(f"{where}: expected True or False, found {text!r}")


# -- replay buffer -------------------------------------------------------------------------------------------------


def replay_buffer_text(rows: Sequence[ReplayRow]) -> str:
  """The replay-buffer CSV text of `rows`."""
  return csv_text([""] + list(REPLAY_COLUMNS), (
      [str(i), _number(r.epsilon), r.net, str(bool(r.train_flag)), _number(r.reward), _number(r.acc_best_val),
       _list(r.acc_val_all_epochs), _list(r.acc_train_all_epochs), _number(r.acc_test_last)]
      for i, r in enumerate(rows)))


def read_replay_buffer(path: str | pathlib.Path) -> list[ReplayRow]:
  """Rows of a replay-buffer CSV (ours or the reference's), in file order."""
  rows = []
  for n, row in enumerate(_read_table(path, REPLAY_COLUMNS, index_column=True)):
    where = f"{path} row {n}"
    try:
      rows.append(ReplayRow(
          epsilon=_finite(row["epsilon"], "epsilon", 0.0, 1.0), net=row["net"],
          train_flag=_parse_bool(row["train_flag"], where),
          reward=_finite(row["reward"], "reward", 0.0, 1.0),
          acc_best_val=_finite(row["acc_best_val"], "acc_best_val", 0.0, 100.0),
          acc_val_all_epochs=_parse_list(row["acc_val_all_epochs"], where),
          acc_train_all_epochs=_parse_list(row["acc_train_all_epochs"], where),
          acc_test_last=_finite(row["acc_test_last"], "acc_test_last", 0.0, 100.0)))
    except DataError:
      raise
    except ValueError as e:
      raise DataError(f"{where}: {e}") from None
  return rows


# -- q-values ------------------------------------------------------------------------------------------------------


def q_values_text(rows: Sequence[Mapping]) -> str:
  """The q-values CSV text of `QTable.to_rows()`."""
  return csv_text(Q_VALUE_COLUMNS, ([_number(r[c]) if c == "utility" else str(r[c]) for c in Q_VALUE_COLUMNS]
                                     for r in rows))


def read_q_values(path: str | pathlib.Path) -> list[dict[str, str]]:
  """Rows of a q-values CSV as strings (give them to `QTable.load_rows`)."""
  return _read_table(path, Q_VALUE_COLUMNS)


# -- task 2 --------------------------------------------------------------------------------------------------------


def fixed_net_text(rows: Sequence[Mapping]) -> str:
  """`fixed_net.csv`: rows with keys index, net, acc_best_val, acc_val_all_epochs, acc_train_all_epochs,
  acc_test_last, seed."""
  return csv_text([""] + list(FIXED_NET_COLUMNS), (
      [str(r["index"]), r["net"], _number(r["acc_best_val"]), _list(r["acc_val_all_epochs"]),
       _list(r["acc_train_all_epochs"]), _number(r["acc_test_last"]), str(int(r["seed"]))] for r in rows))


def chosen_to_train_text(chosen: Sequence[tuple[int, ReplayRow]]) -> str:
  """`chosen_to_train.csv`: the rows a fixed-net run took from a replay buffer, with their original indices."""
  return csv_text([""] + list(CHOSEN_COLUMNS), (
      [str(i), _number(r.epsilon), _number(r.reward), _number(r.acc_best_val),
       _number(r.acc_val_all_epochs[-1]), _number(r.acc_train_all_epochs[-1]), _number(r.acc_test_last), r.net]
      for i, r in chosen))


# -- plots ---------------------------------------------------------------------------------------------------------


def moving_average(values: Sequence[float], window: int) -> list[float]:
  """Trailing means of `window` consecutive values (len(values) - window + 1 of them)."""
  out, total = [], 0.0
  for i, v in enumerate(values):
    total += v
    if i >= window:
      total -= values[i - window]
    if i >= window - 1:
      out.append(total / window)
  return out


def plot_moving_average_reward(rows: Sequence[ReplayRow], path_stem: str | pathlib.Path, *, window: int = 20,
                               title: str = "DP-NAS") -> list[pathlib.Path]:
  """Moving average of the reward of rewarded rows, coloured by epsilon; writes `<stem>.png` and `<stem>.pdf`.

  Returns the written paths (none until more than `window` rewarded architectures exist).
  """
  rewarded = [r for r in rows if r.reward > 0]
  if len(rewarded) <= window:
    return []
  averages = moving_average([r.reward for r in rewarded], window)
  xs = list(range(window, len(rewarded) + 1))
  boundaries = [i + 1 for i in range(1, len(rewarded)) if rewarded[i].epsilon != rewarded[i - 1].epsilon]
  pdf, png = plots.colored_line_plot(
      str(path_stem) + ".pdf", xs, averages, [rewarded[x - 1].epsilon for x in xs], xlabel="rewarded architectures",
      ylabel=f"moving average reward ({window})", colour_label="epsilon", title=title, vlines=boundaries,
      ylim=(0.0, 1.0 if max(averages) <= 1 else math.ceil(max(averages))))
  return [png, pdf]
