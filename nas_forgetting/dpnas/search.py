"""DP-NAS search (task 1): epsilon-greedy Q-learning over deep-prior architectures, with resumable logs.

Per iteration: sample a net with the current epsilon; a net already in the replay buffer is not retrained (its
stored row is appended again under the current epsilon); an infeasible net is logged with reward 0 (accuracy 0,
lists [0.0], train_flag False) without training; otherwise the evaluator trains its classifier. Then the Q-table is
updated from the replay buffer. An architecture counts toward its epsilon's quota only when its reward is > 0.

Files in the search folder, rewritten atomically after every architecture:
`replay_buffer.csv`, `q_values.csv` (the reference's formats, see `logs`), `search_state.json` (schedule position,
exploration RNG state, seeds; the commit point of an iteration) and, every `plot_every` iterations,
`moving_average_reward.{png,pdf}`. A search finds its own `search_state.json` and continues where it stopped, with the
same data split (the split is seeded by the experiment). A search can also continue from the reference's CSVs
(`ContinueFrom`): the Q-table and replay buffer are loaded and the schedule resumes at `epsilon`, iteration `ite`
(1-based, as the reference's `--continue-ite`).

Deep-prior initialisations are seeded: the net of replay row i is initialised from seed
`(seed * 1_000_003 + i) mod 2^31`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Callable, Sequence

import numpy as np

from nas_forgetting.dpnas import logs
from nas_forgetting.dpnas import q_learning as ql
from nas_forgetting.dpnas.state_space import SearchSpace
from nas_forgetting.errors import ArchitectureError, CheckpointError, ConfigError, DataError

STATE_FILE = "search_state.json"
REPLAY_FILE = "replay_buffer.csv"
Q_FILE = "q_values.csv"
PLOT_STEM = "moving_average_reward"


@dataclasses.dataclass(frozen=True)
class QConfig:
  """Q-learning settings (reference defaults)."""

  schedule: tuple = ql.reference_epsilon_schedule()  # ((epsilon, rewarded architectures), ...)
  replay_number: int = 50
  learning_rate: float = 0.1
  discount: float = 1.0
  init_utility: float = 0.15  # the reference starts every Q-value at the early-stopping threshold

  def __post_init__(self):
    schedule = tuple((float(e), int(n)) for e, n in self.schedule)
    object.__setattr__(self, "schedule", schedule)
    if not schedule or any(not 0.0 <= e <= 1.0 or n < 0 for e, n in schedule):
      raise ConfigError(f"schedule {schedule}: expected (epsilon in [0, 1], count >= 0) pairs")
    if self.replay_number < 1:
      raise ConfigError(f"replay_number={self.replay_number} must be >= 1")


@dataclasses.dataclass(frozen=True)
class ContinueFrom:
  """Continue a search from the reference's CSV logs."""

  q_values_csv: str
  replay_buffer_csv: str
  epsilon: float
  ite: int  # 1-based iteration at `epsilon` to run next


def init_seed(seed: int, row_index: int) -> int:
  return (seed * 1_000_003 + row_index) % (2 ** 31)


class Search:
  """A resumable search; `run()` goes on until the schedule ends (or `max_new` architectures were sampled)."""

  def __init__(self, evaluate: Callable[[str, int], ql.ReplayRow], space: SearchSpace, in_channels: int,
               directory: str | pathlib.Path, q_config: QConfig = QConfig(), *, seed: int = 0,
               continue_from: ContinueFrom | None = None, plot_every: int = 1, plot_window: int = 20,
               log: Callable[[str], None] | None = None):
    """`evaluate(net, init_seed) -> ReplayRow` (epsilon is filled in here) trains one feasible net."""
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
    self.table = ql.QTable(space, q_config.init_utility)
    self.buffer = ql.ReplayBuffer()
    self.rng = np.random.default_rng(seed)
    self.position = (0, 0)  # (schedule index, rewarded architectures done at that epsilon)
    self.trained = 0  # architectures actually trained in this process
    if (self.dir / STATE_FILE).is_file():
      self._resume()
    elif continue_from is not None:
      self._continue(continue_from)
    self.position = self._normalise(*self.position)

  def _normalise(self, index: int, ite: int) -> tuple[int, int]:
    """Moves past finished schedule entries."""
    while index < len(self.q.schedule) and ite >= self.q.schedule[index][1]:
      index, ite = index + 1, 0
    return index, ite

  # -- resume ------------------------------------------------------------------------------------------------------

  def _resume(self) -> None:
    path = self.dir / STATE_FILE
    try:
      state = json.loads(path.read_text())
      rows = self._load_logs(self.dir / Q_FILE, self.dir / REPLAY_FILE)
      if len(rows) < state["rows"]:
        raise CheckpointError(f"{self.dir}: {REPLAY_FILE} has {len(rows)} rows, {STATE_FILE} expects {state['rows']}")
      if state["seed"] != self.seed or [list(s) for s in self.q.schedule] != state["schedule"]:
        raise CheckpointError(f"{self.dir}: the saved search used seed {state['seed']} and schedule "
                              f"{state['schedule']}, this run asks for seed {self.seed} and {list(self.q.schedule)}")
      self.buffer = ql.ReplayBuffer(rows[:state["rows"]])
      self.rng.bit_generator.state = state["rng"]
      self.position = tuple(state["position"])
    except (KeyError, ValueError, TypeError) as e:
      raise CheckpointError(f"{path}: cannot resume the search ({e})") from None
    self.log(f"resumed search in {self.dir} at schedule entry {self.position[0]}, iteration {self.position[1]}, "
             f"{len(self.buffer)} rows")

  def _load_logs(self, q_values_csv: str | pathlib.Path, replay_buffer_csv: str | pathlib.Path) -> list[ql.ReplayRow]:
    """Loads the Q-table from `q_values_csv`; returns the rows of `replay_buffer_csv`, each net checked against the
    search space now rather than when it is first replayed (DataError naming the file and row)."""
    q_rows = logs.read_q_values(q_values_csv)
    try:
      self.table.load_rows(q_rows)
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
    epsilons = [e for e, _ in self.q.schedule]
    if float(source.epsilon) not in epsilons:
      raise ConfigError(f"continue epsilon {source.epsilon} is not in the schedule's epsilons {epsilons}")
    index = epsilons.index(float(source.epsilon))
    count = self.q.schedule[index][1]
    if not 1 <= source.ite <= count:
      raise ConfigError(f"continue ite {source.ite} must be in 1..{count} (the count of epsilon {source.epsilon})")
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
    if self.buffer.find(net) is not None:
      row = self.buffer.append_duplicate(net, epsilon)
      source = "duplicate"
    else:
      feasibility = self.space.check_feasible(net, self.in_channels)
      if not feasibility.ok:
        row = ql.ReplayRow(epsilon, net, False, 0.0, 0.0, (0.0,), (0.0,), 0.0)
        source = f"rejected: {feasibility.reason}"
      else:
        row = dataclasses.replace(self.evaluate_fn(net, init_seed(self.seed, len(self.buffer))), epsilon=epsilon)
        self.trained += 1
        source = "trained"
      self.buffer.append(row)
    ql.replay_update(self.table, self.buffer, self.rng, replay_number=self.q.replay_number,
                     learning_rate=self.q.learning_rate, discount=self.q.discount)
    self.position = self._normalise(index, ite + (1 if row.reward > 0 else 0))
    self.save(plot=len(self.buffer) % self.plot_every == 0)
    self.log(f"[{len(self.buffer)}] epsilon {epsilon} {net}: reward {row.reward:.4f} ({source})")
    return row

  def run(self, max_new: int | None = None) -> dict:
    """Runs until the schedule ends or `max_new` more architectures were sampled; returns a summary."""
    from nas_forgetting.io.progress import progress
    start, rows_before = time.time(), len(self.buffer)
    index, ite = self.position
    remaining = sum(n for _, n in self.q.schedule[index:]) - ite
    bar = progress(total=remaining, desc="DP-NAS search", unit="net")
    try:
      while not self.done and (max_new is None or len(self.buffer) - rows_before < max_new):
        row = self.step()
        if row.reward > 0:
          bar.update(1)
        bar.set_postfix(epsilon=row.epsilon, reward=f"{row.reward:.3f}", refresh=False)
    finally:
      bar.close()
    self.save(plot=True)
    rewarded = [r.reward for r in self.buffer.rows if r.reward > 0]
    best = max(self.buffer.rows, key=lambda r: r.reward) if self.buffer.rows else None
    return {"rows": len(self.buffer), "rewarded": len(rewarded), "trained_now": self.trained,
            "done": self.done, "seconds": time.time() - start,
            "best_net": best.net if best else None, "best_reward": best.reward if best else None,
            "mean_reward": float(np.mean(rewarded)) if rewarded else 0.0}

  def save(self, plot: bool = True) -> None:
    from nas_forgetting.io.atomic import atomic_write_text
    logs.write_replay_buffer(self.dir / REPLAY_FILE, self.buffer.rows)
    logs.write_q_values(self.dir / Q_FILE, self.table.to_rows())
    state = {"rows": len(self.buffer), "position": list(self.position), "seed": self.seed,
             "schedule": [list(s) for s in self.q.schedule], "rng": self.rng.bit_generator.state}
    atomic_write_text(str(self.dir / STATE_FILE), json.dumps(state))
    if plot:
      logs.plot_moving_average_reward(self.buffer.rows, self.dir / PLOT_STEM, window=self.plot_window)


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


def read_schedule(pairs: Sequence[Sequence[float]]) -> tuple:
  """A schedule from a config list like [[1.0, 1500], [0.9, 100], ...]."""
  return tuple((float(e), int(n)) for e, n in pairs)
