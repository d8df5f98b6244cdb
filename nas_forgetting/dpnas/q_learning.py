"""Tabular Q-learning over the DP-NAS state space (MetaQNN): epsilon-greedy walks, replay buffer, Bellman updates.

* `QTable` maps a state to its legal actions (filled lazily from the `SearchSpace`) and their utilities; a new entry
  starts at `init_utility` (the reference uses the early-stopping threshold, 0.15).
* A walk starts at the start state; each transition is a uniformly random legal action with probability epsilon,
  otherwise an arg-max action with ties broken uniformly; it ends at the terminal state.
* `ReplayBuffer` holds one `ReplayRow` per sampled architecture (duplicates appended again with their stored
  results, never retrained).
* `replay_update`: after every architecture, replay the newest row and then `replay_number - 1` rows drawn uniformly
  with replacement from the whole buffer (a net in several rows is drawn more often). Each net is re-parsed into its
  state sequence; in reverse order Q(s,a) <- Q + lr * (r + discount * max_a' Q(s',a') - Q), where the last
  transition gets r = reward and max = 0 (terminal), all earlier ones r = 0.

All randomness comes from a `numpy.random.Generator` the caller seeds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from nas_forgetting.dpnas.state_space import LAYER_TYPES, SearchSpace, State
from nas_forgetting.errors import ArchitectureError, DataError

STATE_FIELDS = State._fields
Q_VALUE_COLUMNS = tuple([f"start_{f}" for f in STATE_FIELDS] + [f"end_{f}" for f in STATE_FIELDS] + ["utility"])


def reference_epsilon_schedule() -> tuple:
  """The reference's schedule: (1.0, 1500), 0.9 ... 0.1 with 100 each, then (0.0, 3): 2403 counted nets."""
  return ((1.0, 1500),) + tuple((round(1.0 - 0.1 * i, 1), 100) for i in range(1, 10)) + ((0.0, 3),)


class QTable:
  """Q-values of (state -> next state) transitions, enumerated lazily from `space`."""

  def __init__(self, space: SearchSpace, init_utility: float = 0.15):
    self.space = space
    self.init_utility = float(init_utility)
    self.table: dict[State, tuple[list[State], list[float]]] = {}

  def entry(self, state: State) -> tuple[list[State], list[float]]:
    """(actions, utilities) of `state`, enumerating it on first use."""
    state = State(*state)
    if state not in self.table:
      actions = self.space.actions(state)
      self.table[state] = (actions, [self.init_utility] * len(actions))
    return self.table[state]

  def value(self, state: State, action: State) -> float:
    actions, utilities = self.entry(state)
    return utilities[self._index(state, actions, action)]

  @staticmethod
  def _index(state: State, actions: list[State], action: State) -> int:
    try:
      return actions.index(State(*action))  # the first copy, as the reference
    except ValueError:
      raise ArchitectureError(
          f"transition {tuple(state)} -> {tuple(action)} is not an action of the search space "
          f"(was the net sampled from a different space?)") from None

  def choose(self, state: State, epsilon: float, rng: np.random.Generator) -> State:
    """Epsilon-greedy choice among the legal actions of `state` (ties of the maximum broken uniformly)."""
    actions, utilities = self.entry(state)
    if not actions:
      raise ArchitectureError(f"state {tuple(state)} is not terminal but has no legal action; rethink the search "
                              f"space options for image size {state.image_size}")
    if rng.random() < epsilon:
      return actions[int(rng.integers(len(actions)))]
    best = max(utilities)
    candidates = [a for a, u in zip(actions, utilities) if u == best]
    return candidates[int(rng.integers(len(candidates)))]

  def walk(self, epsilon: float, rng: np.random.Generator) -> list[State]:
    """A state sequence from the start state to a terminal state."""
    states = [self.space.start_state()]
    while not states[-1].terminate:
      states.append(self.choose(states[-1], epsilon, rng))
    return states

  def sample_net(self, epsilon: float, rng: np.random.Generator) -> str:
    """The net string of one epsilon-greedy walk."""
    return self.space.states_to_net(self.walk(epsilon, rng)[1:])

  def check_sequence(self, states: Sequence[State]) -> None:
    """Raises ArchitectureError unless every transition of `states` is an action of this table (left unchanged)."""
    for state, next_state in zip(states, states[1:]):
      state = State(*state)
      actions = self.table[state][0] if state in self.table else self.space.actions(state)
      self._index(state, actions, next_state)

  def update(self, state: State, next_state: State, reward: float, learning_rate: float, discount: float) -> None:
    """One Bellman step on the transition state -> next_state."""
    actions, utilities = self.entry(state)
    index = self._index(state, actions, next_state)
    if next_state.terminate:
      future = 0.0
    else:
      next_utilities = self.entry(next_state)[1]
      future = max(next_utilities) if next_utilities else 0.0
    utilities[index] += learning_rate * (reward + discount * future - utilities[index])

  def update_sequence(self, states: Sequence[State], reward: float, learning_rate: float, discount: float) -> None:
    """Reverse-order updates along a state sequence: reward on the last transition, 0 on the earlier ones."""
    if len(states) < 2:
      raise ArchitectureError(f"a state sequence needs at least a start and a terminal state, got {len(states)}")
    self.update(states[-2], states[-1], reward, learning_rate, discount)
    for i in reversed(range(len(states) - 2)):
      self.update(states[i], states[i + 1], 0.0, learning_rate, discount)

  # -- the reference's q_values CSV rows --------------------------------------------------------------------------

  def to_rows(self) -> list[dict]:
    """One dict per (state, action) with the 19 columns of the reference's q_values CSV (in table order)."""
    rows = []
    for state, (actions, utilities) in self.table.items():
      for action, utility in zip(actions, utilities):
        row = {f"start_{k}": v for k, v in zip(STATE_FIELDS, state)}
        row.update({f"end_{k}": v for k, v in zip(STATE_FIELDS, action)})
        row["utility"] = utility
        rows.append(row)
    return rows

  def load_rows(self, rows: Iterable[Mapping]) -> None:
    """Replaces the table by the rows of a q_values CSV (values may be strings, as read from a file).

    Every row needs known layer types, integer state fields and a finite utility (DataError naming the row);
    `check_against_space` then compares the table with the search space."""
    table: dict[State, tuple[list[State], list[float]]] = {}
    first_row: dict[State, int] = {}
    for n, row in enumerate(rows):
      missing = [c for c in Q_VALUE_COLUMNS if c not in row]
      if missing:
        raise DataError(f"q-values row {n}: missing columns {missing}; expected {list(Q_VALUE_COLUMNS)}")
      try:
        start = _state_from(row, "start_")
        end = _state_from(row, "end_")
        utility = float(row["utility"])
      except ValueError as e:
        raise DataError(f"q-values row {n}: {e}") from None
      if not math.isfinite(utility):
        raise DataError(f"q-values row {n}: utility {row['utility']!r}; expected a finite number")
      first_row.setdefault(start, n)
      actions, utilities = table.setdefault(start, ([], []))
      actions.append(end)
      utilities.append(utility)
    self.table = table
    self._first_row = first_row

  def check_against_space(self) -> None:
    """Raises DataError unless every state of the table lists exactly the search space's actions of that state,
    in its order (a missing, extra or foreign row; a table of another search space)."""
    rows = getattr(self, "_first_row", {})
    for state, (actions, _) in self.table.items():
      where = f"q-values row {rows.get(state, '?')} (state {tuple(state)})"
      try:
        expected = self.space.actions(state)
      except ArchitectureError as e:
        raise DataError(f"{where}: {e}") from None
      if actions == expected:
        continue
      missing = [tuple(a) for a in expected if a not in actions]
      foreign = [tuple(a) for a in actions if a not in expected]
      if missing:
        detail = f"{len(missing)} action(s) of the search space are missing, e.g. {missing[0]}"
      elif foreign:
        detail = f"action {foreign[0]} is not an action of the search space"
      else:
        detail = (f"{len(actions)} actions listed where the search space has {len(expected)} (repeated rows or "
                  f"another order)")
      raise DataError(f"{where}: {detail}; the table does not belong to this search space")


def _state_from(row: Mapping, prefix: str) -> State:
  values = [row[prefix + f] for f in STATE_FIELDS]
  kind = str(values[0]).strip()
  if kind not in LAYER_TYPES:
    raise ValueError(f"{prefix}layer_type {kind!r} is not a layer type; expected one of {LAYER_TYPES}")
  numbers = []
  for name, value in zip(STATE_FIELDS[1:], values[1:]):
    number = float(value)
    if not (math.isfinite(number) and number.is_integer() and number >= 0):
      raise ValueError(f"{prefix}{name} {value!r}; expected a non-negative integer")
    numbers.append(int(number))
  return State(kind, *numbers)


@dataclasses.dataclass
class ReplayRow:
  """One row of the replay buffer (the reference's columns; accuracies are percentages)."""

  epsilon: float
  net: str
  train_flag: bool
  reward: float
  acc_best_val: float
  acc_val_all_epochs: tuple
  acc_train_all_epochs: tuple
  acc_test_last: float


class ReplayBuffer:
  """The sampled architectures in order, with their results."""

  def __init__(self, rows: Iterable[ReplayRow] = ()):
    self.rows: list[ReplayRow] = list(rows)
    self._first: dict[str, int] = {}
    for i, row in enumerate(self.rows):
      self._first.setdefault(row.net, i)

  def __len__(self) -> int:
    return len(self.rows)

  def find(self, net: str) -> ReplayRow | None:
    """The first row with this net, or None."""
    i = self._first.get(net)
    return None if i is None else self.rows[i]

  def append(self, row: ReplayRow) -> None:
    self._first.setdefault(row.net, len(self.rows))
    self.rows.append(row)

  def append_duplicate(self, net: str, epsilon: float) -> ReplayRow:
    """Appends the stored results of `net` again under the current epsilon (duplicates are not retrained)."""
    found = self.find(net)
    if found is None:
      raise KeyError(net)
    row = dataclasses.replace(found, epsilon=epsilon)
    self.append(row)
    return row


def replay_update(table: QTable, buffer: ReplayBuffer, rng: np.random.Generator, *, replay_number: int,
                  learning_rate: float, discount: float) -> list[str]:
  """Replays the newest row then `replay_number - 1` uniform draws (with replacement); returns the replayed nets."""
  if not len(buffer):
    raise ValueError("replay_update needs a non-empty replay buffer")
  nets = [buffer.rows[-1].net]
  nets += [buffer.rows[int(i)].net for i in rng.integers(len(buffer), size=max(replay_number - 1, 0))]
  for net in nets:
    reward = buffer.find(net).reward
    table.update_sequence(table.space.net_to_states(net), float(reward), learning_rate, discount)
  return nets
