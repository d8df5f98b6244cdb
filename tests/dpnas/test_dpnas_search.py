"""Search loop and logs: reference CSV formats read back identical, duplicates not retrained, infeasible nets not
trained, an interrupted search resumes to exactly the uninterrupted result, continuing from reference CSVs."""

import collections

import pytest

from nas_forgetting.dpnas import logs
from nas_forgetting.models import net_string as ns
from nas_forgetting.dpnas import q_learning as ql
from nas_forgetting.dpnas import search as sr
from nas_forgetting.dpnas.state_space import SearchSpace
from nas_forgetting.errors import CheckpointError, ConfigError, DataError

SPACE = SearchSpace(image_size=8, num_classes=4, conv_sizes=(1, 3, 5), conv_features=(4, 8), pool_sizes=(2, 3),
                    pool_strides=(2, 3), min_conv=1, max_conv=3, max_image_size=4, max_fc_input=64)
Q = sr.QConfig(schedule=((1.0, 12), (0.5, 6), (0.0, 3)), replay_number=5)

# a replay buffer as the reference writes it with pandas (index column, quoted nets and lists)
REFERENCE_REPLAY = '''\
,epsilon,net,train_flag,reward,acc_best_val,acc_val_all_epochs,acc_train_all_epochs,acc_test_last
0,1.0,"[C(8,3,1,0,1), P(3,3,0,0), SM(4)]",True,0.52,55.0,"[40.0, 55.0]","[38.5, 50.25]",53.1
1,1.0,"[C(4,1,1,0,1), SM(4)]",False,0.0,0.0,[0],[0],0.0
2,1.0,"[C(8,3,1,0,1), P(3,3,0,0), SM(4)]",True,0.52,55.0,"[40.0, 55.0]","[38.5, 50.25]",53.1
'''


class FakeEvaluator:
  """Deterministic reward from the net (more conv features, more reward); counts calls."""

  def __init__(self):
    self.calls = collections.Counter()

  def __call__(self, net, seed):
    self.calls[net] += 1
    features = sum(l.features for l in ns.parse_net(net) if isinstance(l, ns.Conv))
    reward = min(0.3 + features / 40, 0.95)
    return ql.ReplayRow(0.0, net, True, reward, 100 * reward, (90.0, 100 * reward), (80.0, 85.5), 50.0 + seed % 7)


def test_reference_replay_csv_loads_and_round_trips(tmp_path):
  path = tmp_path / "replay_buffer_3.csv"
  path.write_text(REFERENCE_REPLAY)
  rows = logs.read_replay_buffer(path)
  assert rows[0] == ql.ReplayRow(1.0, "[C(8,3,1,0,1), P(3,3,0,0), SM(4)]", True, 0.52, 55.0, (40.0, 55.0),
                                 (38.5, 50.25), 53.1)
  assert rows[1].acc_val_all_epochs == (0.0,) and rows[1].train_flag is False
  (tmp_path / "ours.csv").write_text(logs.replay_buffer_text(rows))
  assert logs.read_replay_buffer(tmp_path / "ours.csv") == rows
  # our text equals the reference's except that lists of integers are written as floats
  assert (tmp_path / "ours.csv").read_text() == REFERENCE_REPLAY.replace("[0],[0]", '[0.0],[0.0]')
  with pytest.raises(DataError, match="missing columns.*reward"):
    (tmp_path / "bad.csv").write_text(",epsilon,net\n0,1.0,x\n")
    logs.read_replay_buffer(tmp_path / "bad.csv")


def test_q_values_csv_round_trip(tmp_path):
  table = ql.QTable(SPACE)
  table.update_sequence(SPACE.net_to_states("[C(8,3,1,0,1), P(3,3,0,0), SM(4)]"), 0.52, 0.1, 1.0)
  (tmp_path / "q.csv").write_text(logs.q_values_text(table.to_rows()))
  text = (tmp_path / "q.csv").read_text()
  assert text.splitlines()[0] == ",".join(ql.Q_VALUE_COLUMNS)
  assert "start,0,0,0,0,0,8,0,0,conv,1,8,3,1,0,6,0,0," in text
  loaded = ql.QTable(SPACE)
  loaded.load_rows(logs.read_q_values(tmp_path / "q.csv"))
  assert loaded.table == table.table


def test_search_runs_schedule_without_retraining_duplicates(tmp_path):
  fake = FakeEvaluator()
  search = sr.Search(fake, SPACE, 1, tmp_path, Q, seed=0, plot_every=1000)  # plotted once at the end
  summary = search.run()
  rows = search.buffer.rows
  assert summary["done"] and summary["rewarded"] == 12 + 6 + 3
  assert max(fake.calls.values()) == 1  # every net trained at most once
  rejected = [r for r in rows if r.reward == 0]
  for r in rejected:
    assert not SPACE.check_feasible(r.net, 1).ok and fake.calls[r.net] == 0
  assert [r.epsilon for r in rows if r.reward > 0] == [1.0] * 12 + [0.5] * 6 + [0.0] * 3
  unique = {r.net for r in rows}
  assert len(rows) > len(unique)  # duplicates were sampled (greedy walks repeat) ...
  assert sum(fake.calls.values()) == len([n for n in unique if SPACE.check_feasible(n, 1).ok])  # ... not retrained
  for r in rows:  # a duplicate carries the stored results of the first row with its net
    first = search.buffer.find(r.net)
    assert (r.reward, r.acc_val_all_epochs, r.acc_test_last) == (first.reward, first.acc_val_all_epochs,
                                                                 first.acc_test_last)
  assert logs.read_replay_buffer(tmp_path / sr.REPLAY_FILE) == rows
  assert (tmp_path / "moving_average_reward.png").is_file() is (len([r for r in rows if r.reward > 0]) > 20)


def test_interrupted_search_resumes_to_the_same_result(tmp_path):
  full = sr.Search(FakeEvaluator(), SPACE, 1, tmp_path / "full", Q, seed=3, plot_window=100)
  full.run()
  first = sr.Search(FakeEvaluator(), SPACE, 1, tmp_path / "parts", Q, seed=3, plot_window=100)
  first.run(max_new=7)
  assert not first.done and len(first.buffer) == 7
  second = sr.Search(FakeEvaluator(), SPACE, 1, tmp_path / "parts", Q, seed=3, plot_window=100)
  assert len(second.buffer) == 7 and second.position == first.position
  second.run()
  for name in (sr.REPLAY_FILE, sr.Q_FILE):
    assert (tmp_path / "parts" / name).read_text() == (tmp_path / "full" / name).read_text()
  with pytest.raises(CheckpointError, match="seed 3"):
    sr.Search(FakeEvaluator(), SPACE, 1, tmp_path / "parts", Q, seed=4)


def test_continue_from_reference_csvs(tmp_path):
  (tmp_path / "replay.csv").write_text(REFERENCE_REPLAY)
  table = ql.QTable(SPACE)
  for row in logs.read_replay_buffer(tmp_path / "replay.csv"):
    table.update_sequence(SPACE.net_to_states(row.net), row.reward, 0.1, 1.0)
  (tmp_path / "q.csv").write_text(logs.q_values_text(table.to_rows()))
  source = sr.ContinueFrom(str(tmp_path / "q.csv"), str(tmp_path / "replay.csv"), epsilon=0.5, ite=4)
  search = sr.Search(FakeEvaluator(), SPACE, 1, tmp_path / "run", Q, seed=0, continue_from=source, plot_window=100)
  assert search.position == (1, 3) and len(search.buffer) == 3 and search.table.table == table.table
  search.run()
  new = search.buffer.rows[3:]
  assert [r.epsilon for r in new if r.reward > 0] == [0.5] * 3 + [0.0] * 3  # iterations 4..6 at 0.5, then 0.0
  for bad, message in (((0.7, 1), "not in the schedule"), ((0.5, 7), "must be in 1..6")):
    with pytest.raises(ConfigError, match=message):
      sr.Search(FakeEvaluator(), SPACE, 1, tmp_path / "bad", Q, continue_from=sr.ContinueFrom(
          str(tmp_path / "q.csv"), str(tmp_path / "replay.csv"), *bad))


def test_continue_from_missing_or_corrupt_csvs_fails_before_any_training(tmp_path):
  (tmp_path / "replay.csv").write_text(REFERENCE_REPLAY)
  table = ql.QTable(SPACE)
  table.update_sequence(SPACE.net_to_states("[C(8,3,1,0,1), P(3,3,0,0), SM(4)]"), 0.52, 0.1, 1.0)
  (tmp_path / "q.csv").write_text(logs.q_values_text(table.to_rows()))
  header, *lines = REFERENCE_REPLAY.splitlines()

  def start(q="q.csv", replay="replay.csv"):
    fake = FakeEvaluator()
    with pytest.raises(DataError) as info:
      sr.Search(fake, SPACE, 1, tmp_path / "run", Q, continue_from=sr.ContinueFrom(
          str(tmp_path / q), str(tmp_path / replay), epsilon=0.5, ite=1))
    assert not fake.calls and not (tmp_path / "run" / sr.STATE_FILE).exists()
    return str(info.value)

  assert "missing.csv: no such CSV file" in start(q="missing.csv")
  assert "missing.csv: no such CSV file" in start(replay="missing.csv")
  corrupt = {
      "list": lines[0].replace('"[40.0, 55.0]"', '"[40.0, 5"'),  # a cut-off per-epoch list
      "net": lines[0].replace("C(8,3,1,0,1)", "C(8,3,1,0)"),  # a malformed net string
      "space": lines[0].replace("C(8,3,1,0,1)", "C(8,7,1,0,1)"),  # kernel 7: not in this search space
  }
  for name, line in corrupt.items():
    (tmp_path / f"{name}.csv").write_text("\n".join([header, lines[1], line]) + "\n")
  assert "list.csv row 1: expected a list literal" in start(replay="list.csv")
  message = start(replay="net.csv")
  assert "net.csv row 1" in message and "C takes 5 numbers" in message
  message = start(replay="space.csv")
  assert "space.csv row 1" in message and "not an action of the search space" in message
  q_text = (tmp_path / "q.csv").read_text().splitlines()
  (tmp_path / "q_bad.csv").write_text("\n".join([q_text[0], q_text[1].rsplit(",", 1)[0] + ",high"]) + "\n")
  message = start(q="q_bad.csv")
  assert "q_bad.csv: q-values row 0" in message and "'high'" in message


def test_moving_average_and_plot(tmp_path):
  assert logs.moving_average([1, 2, 3, 4], 2) == [1.5, 2.5, 3.5]
  rows = [ql.ReplayRow(1.0 if i < 30 else 0.5, f"n{i}", True, 0.2 + i / 100, 0, (0,), (0,), 0) for i in range(50)]
  paths = logs.plot_moving_average_reward(rows, tmp_path / "plot", window=20)
  assert [p.name for p in paths] == ["plot.png", "plot.pdf"]
  assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:4] == b"%PDF"
  assert logs.plot_moving_average_reward(rows[:20], tmp_path / "none") == []


def test_several_seeds_per_architecture_average():
  from nas_forgetting.dpnas.eval_result import EvalResult

  class Fake:
    def evaluate(self, net, seeds):
      return [EvalResult(s, 0.1 * (s % 10), True, 50.0 + s % 10, [40.0, 50.0 + s % 10], [30.0, 60.0], [1.0, 2.0], 70.0)
              for s in seeds]

  one = sr.evaluator_fn(Fake())("[C(4,1,1,0,1), SM(4)]", 2)
  assert one.reward == pytest.approx(0.2) and one.acc_val_all_epochs == (40.0, 52.0)
  row = sr.evaluator_fn(Fake(), 3)("[C(4,1,1,0,1), SM(4)]", 2)  # seeds 2, 3, 4
  assert row.reward == pytest.approx(0.3) and row.acc_val_all_epochs == (40.0, 53.0) and row.acc_best_val == 53.0
  assert row.train_flag and row.acc_test_last == 70.0
  with pytest.raises(ConfigError, match="seeds_per_architecture"):
    sr.evaluator_fn(Fake(), 0)
