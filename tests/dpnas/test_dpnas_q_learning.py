"""Q-learning: Bellman updates on a hand-made two-step chain, epsilon-greedy choice, replay, CSV rows."""

import collections

import numpy as np
import pytest

from nas_forgetting.dpnas import q_learning as ql
from nas_forgetting.dpnas.state_space import SearchSpace
from nas_forgetting.errors import ArchitectureError, DataError

# image 3, only 1x1 convs of 8 or 16 features, max depth 1, no fitting pool: start -> C(f,1,1,0,1) -> SM(2)
CHAIN = SearchSpace(image_size=3, num_classes=2, conv_sizes=(1,), conv_features=(8,), pool_sizes=(2,),
                    pool_strides=(2,), min_conv=1, max_conv=1)
NET = "[C(8,1,1,0,1), SM(2)]"


def test_chain_has_two_steps():
  states = CHAIN.net_to_states(NET)
  assert len(states) == 3
  assert CHAIN.actions(states[0]) == [states[1]]
  assert CHAIN.actions(states[1]) == [states[2]]


@pytest.mark.parametrize("discount", [1.0, 0.5])
def test_two_step_chain_updates_by_hand(discount):
  table = ql.QTable(CHAIN, init_utility=0.15)
  start, conv, term = CHAIN.net_to_states(NET)
  lr, r = 0.1, 0.9
  q_last, q_first = 0.15, 0.15
  for _ in range(3):
    table.update_sequence([start, conv, term], r, lr, discount)
    q_last = q_last + lr * (r - q_last)  # terminal: max over next = 0
    q_first = q_first + lr * (0.0 + discount * q_last - q_first)  # reverse order: uses the fresh q_last
    assert table.value(conv, term) == pytest.approx(q_last, abs=1e-12)
    assert table.value(start, conv) == pytest.approx(q_first, abs=1e-12)
  assert table.value(conv, term) == pytest.approx(0.225 + 0.1 * 0.675 + 0.1 * (0.9 - 0.2925), abs=1e-12)
  for _ in range(400):
    table.update_sequence([start, conv, term], r, lr, discount)
  assert table.value(conv, term) == pytest.approx(r, abs=1e-9)
  assert table.value(start, conv) == pytest.approx(discount * r, abs=1e-9)


def test_greedy_follows_the_update_and_ties_are_uniform():
  space = SearchSpace(**{**CHAIN.__dict__, "conv_features": (8, 16)})
  table = ql.QTable(space, init_utility=0.15)
  rng = np.random.default_rng(0)
  # all utilities tied: greedy choice is uniform over the two convs
  counts = collections.Counter(table.sample_net(0.0, rng) for _ in range(400))
  assert set(counts) == {"[C(8,1,1,0,1), SM(2)]", "[C(16,1,1,0,1), SM(2)]"}
  assert 150 < counts["[C(16,1,1,0,1), SM(2)]"] < 250
  table.update_sequence(space.net_to_states("[C(16,1,1,0,1), SM(2)]"), 1.0, 0.1, 1.0)
  assert {table.sample_net(0.0, rng) for _ in range(50)} == {"[C(16,1,1,0,1), SM(2)]"}
  # epsilon 1 ignores the utilities
  assert len({table.sample_net(1.0, rng) for _ in range(50)}) == 2


def test_a_net_replayed_often_outranks_a_better_net_found_once():
  """Why the quick DP-NAS search's greedy phase re-picks a 0.49 net after a 0.86 one was found (configs/dpnas_mnist.py
  docstring): each replay moves a Q-value 10 % toward the next state's best value, so the first transition of a net
  replayed 6 times is worth more than that of a better net replayed once, until the latter is replayed enough."""
  space = SearchSpace(**{**CHAIN.__dict__, "conv_features": (8, 16)})
  table = ql.QTable(space, init_utility=0.15)
  often, once = "[C(8,1,1,0,1), SM(2)]", "[C(16,1,1,0,1), SM(2)]"
  lr = 0.1

  def by_hand(reward, replays, last=0.15, first=0.15):
    for _ in range(replays):
      last += lr * (reward - last)
      first += lr * (last - first)
    return last, first

  for _ in range(6):
    table.update_sequence(space.net_to_states(often), 0.49, lr, 1.0)
  table.update_sequence(space.net_to_states(once), 0.86, lr, 1.0)
  start, conv8, _ = space.net_to_states(often)
  _, conv16, _ = space.net_to_states(once)
  assert table.value(start, conv8) == pytest.approx(by_hand(0.49, 6)[1], abs=1e-12)
  assert table.value(start, conv16) == pytest.approx(by_hand(0.86, 1)[1], abs=1e-12)
  assert by_hand(0.49, 6)[1] > by_hand(0.86, 1)[1]
  rng = np.random.default_rng(0)
  assert {table.sample_net(0.0, rng) for _ in range(20)} == {often}  # the greedy walk takes the worse net
  # the better net takes over once replayed enough: after n replays with n found by hand
  n = next(k for k in range(1, 100) if by_hand(0.86, k)[1] > by_hand(0.49, 6)[1])
  for _ in range(n - 2):  # replays 2 .. n-1
    table.update_sequence(space.net_to_states(once), 0.86, lr, 1.0)
  assert {table.sample_net(0.0, rng) for _ in range(20)} == {often}
  table.update_sequence(space.net_to_states(once), 0.86, lr, 1.0)
  assert {table.sample_net(0.0, rng) for _ in range(20)} == {once} and n > 3


def test_reference_duplicates_double_the_random_choice_of_1x1():
  base = dict(image_size=4, num_classes=2, conv_sizes=(1, 3), conv_features=(8,), min_conv=1, max_conv=1,
              pool_sizes=(), pool_strides=(2,))
  for dedupe, expected in ((True, 1 / 4), (False, 2 / 5)):
    table = ql.QTable(SearchSpace(**base, dedupe_k1_padding=dedupe))
    rng = np.random.default_rng(1)
    first = [table.walk(1.0, rng)[1] for _ in range(4000)]
    share = np.mean([s.filter_size == 1 for s in first])
    assert share == pytest.approx(expected, abs=0.03)


def test_seeded_walks_repeat():
  space = SearchSpace(image_size=28)
  a = [ql.QTable(space).sample_net(1.0, np.random.default_rng(7)) for _ in range(2)]
  assert a[0] == a[1]
  for net in a:
    assert space.net_to_states(net)[-1].terminate == 1


def test_replay_update_newest_first_then_uniform_with_replacement():
  table = ql.QTable(CHAIN)
  buffer = ql.ReplayBuffer()
  buffer.append(ql.ReplayRow(1.0, NET, True, 0.9, 91.0, (90.0, 91.0), (88.0, 89.0), 90.5))
  nets = ql.replay_update(table, buffer, np.random.default_rng(0), replay_number=50, learning_rate=0.1, discount=1.0)
  assert nets == [NET] * 50
  start, conv, term = CHAIN.net_to_states(NET)
  assert table.value(conv, term) == pytest.approx(0.9 + (0.15 - 0.9) * 0.9 ** 50, abs=1e-12)


def test_replay_update_equals_sequential_updates_of_the_replayed_nets():
  space = SearchSpace(**{**CHAIN.__dict__, "conv_features": (8, 16, 32)})
  buffer = ql.ReplayBuffer()
  for i, f in enumerate((8, 16, 32)):
    buffer.append(ql.ReplayRow(1.0, f"[C({f},1,1,0,1), SM(2)]", True, 0.2 * (i + 1), 0.0, (0.0,), (0.0,), 0.0))
  buffer.append_duplicate("[C(8,1,1,0,1), SM(2)]", 0.5)
  assert len(buffer) == 4 and buffer.rows[-1].epsilon == 0.5 and buffer.rows[-1].reward == 0.2
  table = ql.QTable(space)
  nets = ql.replay_update(table, buffer, np.random.default_rng(3), replay_number=20, learning_rate=0.1, discount=1.0)
  assert len(nets) == 20 and nets[0] == buffer.rows[-1].net and len(set(nets)) == 3
  oracle = ql.QTable(space)
  for net in nets:
    oracle.update_sequence(space.net_to_states(net), buffer.find(net).reward, 0.1, 1.0)
  assert oracle.table == table.table


def test_q_rows_round_trip_through_strings():
  space = SearchSpace(**{**CHAIN.__dict__, "conv_features": (8, 16)})
  table = ql.QTable(space)
  table.update_sequence(space.net_to_states("[C(16,1,1,0,1), SM(2)]"), 0.7, 0.1, 1.0)
  rows = table.to_rows()
  assert list(rows[0]) == list(ql.Q_VALUE_COLUMNS) and len(ql.Q_VALUE_COLUMNS) == 19
  loaded = ql.QTable(space)
  loaded.load_rows([{k: str(v) for k, v in row.items()} for row in rows])
  assert loaded.table == table.table
  with pytest.raises(DataError, match="missing columns"):
    loaded.load_rows([{"utility": "0.1"}])


def test_transition_outside_the_space_is_named():
  table = ql.QTable(CHAIN)
  with pytest.raises(ArchitectureError, match="not an action of the search space"):
    table.update_sequence(CHAIN.net_to_states("[C(64,1,1,0,1), SM(2)]"), 0.5, 0.1, 1.0)


def test_reference_schedule():
  schedule = ql.reference_epsilon_schedule()
  assert schedule[0] == (1.0, 1500) and schedule[-1] == (0.0, 3)
  assert [e for e, _ in schedule[1:-1]] == [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
  assert sum(n for _, n in schedule) == 2403
