"""DP-NAS search (task 1): epsilon-greedy Q-learning over deep-prior architectures, with resumable logs.

Per iteration: sample a net with the current epsilon; a net already in the replay buffer is not retrained (its
stored row is appended again under the current epsilon); an infeasible net is logged with reward 0 (accuracy 0,
lists [0.0], train_flag False) without training; otherwise the evaluator trains its classifier. Then the Q-table is
updated from the replay buffer. An architecture counts toward its epsilon's quota only when its reward is > 0.

Files in the search folder, after every architecture (each written atomically, in this order):

1. `state/replay_buffer_<g>.csv` and `state/q_values_<g>.csv`: generation `g` (= the number of replay rows) of the
   search's state, in the reference's formats (see `logs`);
2. `search_state.json` (schedule position, exploration RNG state, seeds, the diverged architectures, the run's
   seconds, and `generation: g`): written last, it is the commit point of an iteration; a search resumes from the
   generation it names, so a kill between any two writes resumes exactly (an uncommitted generation is discarded
   and its iteration re-run from the same RNG state);
3. the user-facing copies of the committed generation, `replay_buffer.csv` and `q_values.csv`, and `diverged.csv`
   (net, seed, quantity, reason of every architecture whose evaluation diverged: it is logged with reward 0, as an
   infeasible one, and the search goes on); then the older generations are deleted. A resumed search rewrites these
   copies from its committed generation, so they are current again after a kill between 2 and 3;
4. every `plot_every` iterations, `moving_average_reward.{png,pdf}`.

With `metrics_dir`, one record per sampled architecture (`step` = its replay row) is appended to
`<metrics_dir>/metrics.jsonl` (and TensorBoard) before the commit; a resumed search drops the records of
uncommitted rows, so the file equals an uninterrupted run's.

A search finds its own `search_state.json` and continues where it stopped, with the same data split (the split is
seeded by the experiment). A search can also continue from the reference's CSVs (`ContinueFrom`): the Q-table and
replay buffer are loaded, checked against the search space (every state's actions exactly the space's, finite
utilities, rewards in [0, 1]), and the schedule resumes at `epsilon`, iteration `ite` (1-based, as the reference's
`--continue-ite`).

Deep-prior initialisations are seeded: the net of replay row i is initialised from seed
`(seed * 1_000_003 + i) mod 2^31`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Callable, Sequence

import ml_collections
import numpy as np

from nas_forgetting import config_schema as cc
from nas_forgetting import distributed
from nas_forgetting.dpnas import logs
from nas_forgetting.dpnas import q_learning as ql
from nas_forgetting.dpnas.state_space import SearchSpace
from nas_forgetting.errors import ArchitectureError, CheckpointError, ConfigError, DataError, DivergenceError
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.metrics import MetricsLogger
from nas_forgetting.progress import progress

STATE_FILE = "search_state.json"
REPLAY_FILE = "replay_buffer.csv"
Q_FILE = "q_values.csv"
DIVERGED_FILE = "diverged.csv"
DIVERGED_COLUMNS = ("row", "net", "seed", "quantity", "reason")
GENERATIONS_DIR = "state"
PLOT_STEM = "moving_average_reward"
GROUP = "search"  # the config group a `QConfig` is built from (named in its error messages)


@dataclasses.dataclass(frozen=True)
class QConfig:
  """Q-learning settings (reference defaults); the fields of the config's `search` group of the same names."""

  schedule: tuple = ql.reference_epsilon_schedule()  # ((epsilon, rewarded architectures), ...)
  replay_number: int = 50
  q_learning_rate: float = 0.1
  q_discount_factor: float = 1.0
  init_utility: float = 0.15  # the reference starts every Q-value at the early-stopping threshold

  def __post_init__(self):
    """Every field checked here, so an object built directly is guarded as the config's `search` group is; the
    schedule is stored as ((float epsilon, int count), ...)."""
    object.__setattr__(self, "schedule", _checked_schedule(self.schedule))
    cc.integer(self, "replay_number", minimum=1, group=GROUP)
    cc.number(self, "q_learning_rate", above=0.0, maximum=1.0, group=GROUP)
    cc.number(self, "q_discount_factor", minimum=0.0, maximum=1.0, group=GROUP)
    cc.number(self, "init_utility", group=GROUP)

  @classmethod
  def from_config(cls, search: ml_collections.ConfigDict) -> "QConfig":
    """The Q-learning settings of a config's `search` group (which holds the search loop's fields too)."""
    return cls(**{f.name: search[f.name] for f in dataclasses.fields(cls)})


def _checked_schedule(schedule) -> tuple:
  """`schedule` as ((epsilon, count), ...); ConfigError unless it is (epsilon in [0, 1], integer count >= 0) pairs
  with at least one count >= 1."""
  pairs = None
  if not isinstance(schedule, (str, bytes)):
    try:
      pairs = [(float(eps), n) for eps, n in schedule]
    except (TypeError, ValueError):
      pairs = None
  if (not pairs or any(not (math.isfinite(eps) and 0.0 <= eps <= 1.0) or isinstance(n, bool) or not isinstance(n, int)
                       or n < 0 for eps, n in pairs) or not any(n > 0 for _, n in pairs)):
    raise ConfigError(f"{GROUP}.schedule={schedule!r}; expected (epsilon in [0, 1], count >= 0) pairs with at least "
                      "one count >= 1")
  return tuple(pairs)


@dataclasses.dataclass(frozen=True)
class ContinueFrom:
  """Continue a search from the reference's CSV logs."""

  q_values_csv: str
  replay_buffer_csv: str
  epsilon: float
  ite: int  # 1-based iteration at `epsilon` to run next


def init_seed(seed: int, row_index: int) -> int:
  return (seed * 1_000_003 + row_index) % (2 ** 31)


def check_continue(schedule: Sequence[tuple], epsilon: float, ite: int, *, prefix: str = "continue ") -> int:
  """The schedule index at which a continued search starts; ConfigError when (`epsilon`, `ite`) is not in it."""
  epsilons = [float(e) for e, _ in schedule]
  if not math.isfinite(float(epsilon)) or float(epsilon) not in epsilons:
    raise ConfigError(f"{prefix}epsilon {epsilon} is not in the schedule's epsilons {epsilons}")
  index = epsilons.index(float(epsilon))
  count = int(schedule[index][1])
  if not 1 <= ite <= count:
    raise ConfigError(f"{prefix}ite {ite} must be in 1..{count} (the count of epsilon {epsilon})")
  return index


class Search:
  """A resumable search; `run()` goes on until the schedule ends (or `max_new` architectures were sampled)."""

  def __init__(self, evaluate: Callable[[str, int], ql.ReplayRow], space: SearchSpace, in_channels: int,
               directory: str | pathlib.Path, q_config: QConfig = QConfig(), *, seed: int = 0,
               continue_from: ContinueFrom | None = None, plot_every: int = 1, plot_window: int = 20,
               log: Callable[[str], None] | None = None, metrics_dir: str | pathlib.Path | None = None,
               started: float | None = None):
    """`evaluate(net, init_seed) -> ReplayRow` (epsilon is filled in here) trains one feasible net; it may raise
    `DivergenceError` (the architecture is logged as diverged, with reward 0) or `ArchitectureError` (logged as
    rejected, with reward 0). `started`: when this launch began (time.time(); default now), for the run's seconds."""
    self.evaluate_fn = evaluate
    self.space = space
    self.in_channels = in_channels
    self.dir = pathlib.Path(directory)
    self.dir.mkdir(parents=True, exist_ok=True)
    self.q = q_config
    self.seed = seed
    self.plot_every = plot_every
    self.plot_window = plot_window
    self.log = log or (lambda message: None)
    self.started = time.time() if started is None else started
    self.seconds_before = 0.0  # seconds of earlier launches (committed)
    self.table = ql.QTable(space, q_config.init_utility)
    self.buffer = ql.ReplayBuffer()
    self.diverged: list[dict] = []
    self.rng = np.random.default_rng(seed)
    self.position = (0, 0)  # (schedule index, rewarded architectures done at that epsilon)
    self.trained = 0  # architectures actually trained in this process
    self._committed = -1  # generation of the last commit (-1: none)
    if (self.dir / STATE_FILE).is_file():
      self._resume()
    elif continue_from is not None:
      self._continue(continue_from)
    self.position = self._normalise(*self.position)
    self.metrics = None
    if metrics_dir is not None:
      self.metrics = MetricsLogger(metrics_dir, purge_step=len(self.buffer))

  def _normalise(self, index: int, ite: int) -> tuple[int, int]:
    """Moves past finished schedule entries."""
    while index < len(self.q.schedule) and ite >= self.q.schedule[index][1]:
      index, ite = index + 1, 0
    return index, ite

  def close(self) -> None:
    """Closes the metrics logger (flushes TensorBoard)."""
    if self.metrics is not None:
      self.metrics.close()

  @property
  def seconds(self) -> float:
    """The run's seconds over all its launches (earlier launches up to their last commit, plus this one)."""
    return self.seconds_before + (time.time() - self.started)

  # -- resume ------------------------------------------------------------------------------------------------------

  def _generation_paths(self, generation: int) -> tuple[pathlib.Path, pathlib.Path]:
    folder = self.dir / GENERATIONS_DIR
    return folder / f"q_values_{generation}.csv", folder / f"replay_buffer_{generation}.csv"

  def _resume(self) -> None:
    path = self.dir / STATE_FILE
    try:
      state = json.loads(path.read_text())
      generation = state.get("generation")
      if generation is None:  # a search saved before generations existed: its CSVs were written before the state
        q_path, replay_path = self.dir / Q_FILE, self.dir / REPLAY_FILE
      else:
        q_path, replay_path = self._generation_paths(int(generation))
        if not (q_path.is_file() and replay_path.is_file()):
          raise CheckpointError(f"{self.dir}: {STATE_FILE} names generation {generation}, but {q_path.name} or "
                                f"{replay_path.name} is missing from {q_path.parent}")
      rows = self._load_logs(q_path, replay_path)
      expected = state["rows"]
      if len(rows) < expected or (generation is not None and len(rows) != expected):
        raise CheckpointError(f"{self.dir}: {replay_path.name} has {len(rows)} rows, {STATE_FILE} expects {expected}")
      if state["seed"] != self.seed or [list(s) for s in self.q.schedule] != state["schedule"]:
        raise CheckpointError(f"{self.dir}: the saved search used seed {state['seed']} and schedule "
                              f"{state['schedule']}, this run asks for seed {self.seed} and {list(self.q.schedule)}")
      self.buffer = ql.ReplayBuffer(rows[:expected])
      self.rng.bit_generator.state = state["rng"]
      self.position = tuple(state["position"])
      self.diverged = list(state.get("diverged", []))
      self.seconds_before = float(state.get("seconds", 0.0))
    except (KeyError, ValueError, TypeError) as e:
      raise CheckpointError(f"{path}: cannot resume the search ({e})") from None
    self._committed = len(self.buffer)
    self._publish()
    self.log(f"resumed search in {self.dir} at schedule entry {self.position[0]}, iteration {self.position[1]}, "
             f"{len(self.buffer)} rows")

  def _load_logs(self, q_values_csv: str | pathlib.Path, replay_buffer_csv: str | pathlib.Path) -> list[ql.ReplayRow]:
    """Loads the Q-table from `q_values_csv` (checked against the search space); returns the rows of
    `replay_buffer_csv`, each net checked against the search space now rather than when it is first replayed
    (DataError naming the file and row)."""
    q_rows = logs.read_q_values(q_values_csv)
    try:
      self.table.load_rows(q_rows)
      self.table.check_against_space()
    except DataError as e:
      raise DataError(f"{q_values_csv}: {e}") from None
    rows = logs.read_replay_buffer(replay_buffer_csv)
    for n, row in enumerate(rows):
      try:
        self.table.check_sequence(self.space.net_to_states(row.net))
      except ArchitectureError as e:
        raise DataError(f"{replay_buffer_csv} row {n}: {e}") from None
    return rows

  def _continue(self, source: ContinueFrom) -> None:
    index = check_continue(self.q.schedule, source.epsilon, source.ite)
    self.buffer = ql.ReplayBuffer(self._load_logs(source.q_values_csv, source.replay_buffer_csv))
    self.position = (index, source.ite - 1)
    self.log(f"continuing from {source.replay_buffer_csv} ({len(self.buffer)} rows) at epsilon {source.epsilon}, "
             f"iteration {source.ite}")

  # -- loop --------------------------------------------------------------------------------------------------------

  @property
  def done(self) -> bool:
    return self.position[0] >= len(self.q.schedule)

  def step(self) -> ql.ReplayRow:
    """Samples, evaluates (or reuses) and learns from one architecture; saves the logs."""
    index, ite = self.position
    epsilon = self.q.schedule[index][0]
    net = self.table.sample_net(epsilon, self.rng)
    failed = ql.ReplayRow(epsilon, net, False, 0.0, 0.0, (0.0,), (0.0,), 0.0)
    flags = {"duplicate": 0, "feasible": 1, "diverged": 0}
    if self.buffer.find(net) is not None:
      row = self.buffer.append_duplicate(net, epsilon)
      source = "duplicate"
      flags["duplicate"] = 1
    else:
      feasibility = self.space.check_feasible(net, self.in_channels)
      if not feasibility.ok:
        row, source = failed, f"rejected: {feasibility.reason}"
        flags["feasible"] = 0
      else:
        seed = init_seed(self.seed, len(self.buffer))
        try:
          row = dataclasses.replace(self.evaluate_fn(net, seed), epsilon=epsilon)
          source = "trained"
        except DivergenceError as e:  # the architecture is marked, the search goes on
          self.diverged.append({"row": len(self.buffer), "net": net, "seed": int(getattr(e, "seed", seed)),
                                "quantity": str(getattr(e, "quantity", "")), "reason": str(e)})
          row, source = failed, f"diverged: {e}"
          flags["diverged"] = 1
        except ArchitectureError as e:  # e.g. too large for the device memory
          row, source = failed, f"rejected: {e}"
          flags["feasible"] = 0
        self.trained += 1
      self.buffer.append(row)
    ql.replay_update(self.table, self.buffer, self.rng, replay_number=self.q.replay_number,
                     learning_rate=self.q.q_learning_rate, discount=self.q.q_discount_factor)
    self.position = self._normalise(index, ite + (1 if row.reward > 0 else 0))
    if self.metrics is not None:
      self.metrics.log(len(self.buffer) - 1, {
          "epsilon": row.epsilon, "reward": row.reward, "acc_best_val": row.acc_best_val,
          "acc_test_last": row.acc_test_last, "train_flag": int(bool(row.train_flag)), **flags,
          "rewarded": sum(1 for r in self.buffer.rows if r.reward > 0)})
    self.save(plot=len(self.buffer) % self.plot_every == 0)
    self.log(f"[{len(self.buffer)}] epsilon {epsilon} {net}: reward {row.reward:.4f} ({source})")
    return row

  def run(self, max_new: int | None = None) -> dict:
    """Runs until the schedule ends or `max_new` more architectures were sampled; returns a summary."""
    index, ite = self.position
    remaining = sum(n for _, n in self.q.schedule[index:]) - ite
    bar = progress(total=remaining, desc="DP-NAS search", unit="net")
    rows_before = len(self.buffer)
    try:
      while not self.done and (max_new is None or len(self.buffer) - rows_before < max_new):
        row = self.step()
        if row.reward > 0:
          bar.update(1)
        bar.set_postfix(epsilon=row.epsilon, reward=f"{row.reward:.3f}", refresh=False)
    finally:
      bar.close()
    self.save(plot=True)
    return self.summary()

  def summary(self) -> dict:
    """Counts, the run's seconds over all launches, and the best rows (by reward; ties: the first)."""
    rows = self.buffer.rows
    rewarded = [r.reward for r in rows if r.reward > 0]
    best = max(rows, key=lambda r: r.reward) if rows else None
    order = sorted(range(len(rows)), key=lambda i: (-rows[i].reward, i))
    top, seen = [], set()
    for i in order:
      if rows[i].reward > 0 and rows[i].net not in seen:
        seen.add(rows[i].net)
        top.append({"row": i, "net": rows[i].net, "reward": rows[i].reward, "acc_best_val": rows[i].acc_best_val,
                    "acc_test_last": rows[i].acc_test_last})
      if len(top) == 3:
        break
    return {"rows": len(rows), "rewarded": len(rewarded), "trained_now": self.trained, "diverged": len(self.diverged),
            "done": self.done, "seconds": self.seconds,
            "best_net": best.net if best else None, "best_reward": best.reward if best else None,
            "best_test_accuracy": best.acc_test_last if best else None, "top": top,
            "mean_reward": float(np.mean(rewarded)) if rewarded else 0.0}

  def save(self, plot: bool = True) -> None:
    """Commits the current generation (see the module docstring), if not committed yet; plots with `plot`."""
    generation = len(self.buffer)
    if generation != self._committed:
      replay_text = logs.replay_buffer_text(self.buffer.rows)
      q_text = logs.q_values_text(self.table.to_rows())
      q_path, replay_path = self._generation_paths(generation)
      atomic_write_text(str(replay_path), replay_text)
      atomic_write_text(str(q_path), q_text)
      state = {"generation": generation, "rows": generation, "position": list(self.position), "seed": self.seed,
               "schedule": [list(s) for s in self.q.schedule], "rng": self.rng.bit_generator.state,
               "diverged": self.diverged, "seconds": self.seconds}
      atomic_write_text(str(self.dir / STATE_FILE), json.dumps(state))
      self._committed = generation
      self._publish(replay_text, q_text)
    if plot:
      logs.plot_moving_average_reward(self.buffer.rows, self.dir / PLOT_STEM, window=self.plot_window)

  def _publish(self, replay_text: str | None = None, q_text: str | None = None) -> None:
    """The user-facing copies of the committed generation (rewritten only where they differ), then the other
    generations deleted."""
    texts = {REPLAY_FILE: replay_text if replay_text is not None else logs.replay_buffer_text(self.buffer.rows),
             Q_FILE: q_text if q_text is not None else logs.q_values_text(self.table.to_rows())}
    if self.diverged or (self.dir / DIVERGED_FILE).exists():
      texts[DIVERGED_FILE] = logs.csv_text(DIVERGED_COLUMNS, ([str(d[c]) for c in DIVERGED_COLUMNS]
                                                             for d in self.diverged))
    for name, text in texts.items():
      path = self.dir / name
      if not (path.is_file() and path.read_text() == text):
        atomic_write_text(str(path), text)
    keep = {p.name for p in self._generation_paths(self._committed)}
    folder = self.dir / GENERATIONS_DIR
    if folder.is_dir() and distributed.is_writer():  # (the other processes of a distributed run write nothing)
      for path in folder.iterdir():
        if path.name not in keep:
          path.unlink(missing_ok=True)


def row_from_result(net: str, result) -> ql.ReplayRow:
  """A replay row (epsilon filled in by the search) from an evaluator `EvalResult`."""
  return ql.ReplayRow(0.0, net, result.train_flag, result.reward, result.acc_best_val,
                      tuple(result.acc_val_all_epochs), tuple(result.acc_train_all_epochs), result.acc_test_last)


def evaluator_fn(evaluator, seeds_per_architecture: int = 1) -> Callable[[str, int], ql.ReplayRow]:
  """The `evaluate` callback of a `Search` from a deep-prior `Evaluator`.

  With `seeds_per_architecture` k > 1 every net is evaluated with k initialisations at once (seeds
  init_seed, init_seed + 1, ...; they fill the devices that one seed would leave idle), and its row holds the mean
  reward and the mean per-epoch accuracies over the seeds (train_flag: every seed ran all epochs).
  """
  if seeds_per_architecture < 1:
    raise ConfigError(f"seeds_per_architecture={seeds_per_architecture} must be >= 1")

  def evaluate(net: str, seed: int) -> ql.ReplayRow:
    results = evaluator.evaluate(net, [(seed + k) % (2 ** 31) for k in range(seeds_per_architecture)])
    if len(results) == 1:
      return row_from_result(net, results[0])
    epochs = min(len(r.acc_val_all_epochs) for r in results)
    mean = lambda lists: tuple(float(v) for v in np.mean([l[:epochs] for l in lists], axis=0))
    val = mean([r.acc_val_all_epochs for r in results])
    return ql.ReplayRow(0.0, net, all(r.train_flag for r in results), float(np.mean([r.reward for r in results])),
                        max(val), val, mean([r.acc_train_all_epochs for r in results]),
                        float(np.mean([r.acc_test_last for r in results])))

  return evaluate
