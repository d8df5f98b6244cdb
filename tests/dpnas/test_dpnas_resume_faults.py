"""Fault injection: a DP-NAS search (and a fixed-net run) killed right after any of its durable writes resumes to
exactly the uninterrupted run (same nets, Q-values, rewards, diverged records, metrics records)."""

import json

import pytest

from nas_forgetting.models import net_string as ns
from nas_forgetting.dpnas import q_learning as ql
from nas_forgetting.dpnas import search as sr
from nas_forgetting.dpnas.state_space import SearchSpace
from nas_forgetting.errors import DivergenceError
from nas_forgetting.io.metrics import read_jsonl

SPACE = SearchSpace(image_size=8, num_classes=4, conv_sizes=(1, 3, 5), conv_features=(4, 8), pool_sizes=(2, 3),
                    pool_strides=(2, 3), min_conv=1, max_conv=3, max_image_size=4, max_fc_input=64)
Q = sr.QConfig(schedule=((1.0, 2), (0.3, 1)), replay_number=4)


class FakeEvaluator:
  """A deterministic reward from the net; nets whose conv features sum to 12 'diverge' (DivergenceError)."""

  def __call__(self, net, seed):
    features = sum(l.features for l in ns.parse_net(net) if isinstance(l, ns.Conv))
    if features == 12:
      error = DivergenceError(f"the run diverged: training loss is not finite at epoch 1, architecture {net}")
      error.seed, error.quantity = seed, "training loss"
      raise error
    reward = min(0.3 + features / 40, 0.95)
    return ql.ReplayRow(0.0, net, True, reward, 100 * reward, (90.0, 100 * reward), (80.0, 85.5), 50.0 + seed % 7)


def run_search(directory):
  search = sr.Search(FakeEvaluator(), SPACE, 1, directory, Q, seed=3, plot_every=10 ** 6, plot_window=10 ** 6,
                     metrics_dir=directory)
  try:
    return search.run()
  finally:
    search.close()


def outputs(directory):
  """Everything a resumed search must reproduce (wall-clock seconds left out)."""
  state = json.loads((directory / sr.STATE_FILE).read_text())
  state.pop("seconds")
  files = {name: (directory / name).read_text() for name in (sr.REPLAY_FILE, sr.Q_FILE, sr.DIVERGED_FILE)
           if (directory / name).exists()}
  return {"state": state, "files": files, "metrics": read_jsonl(directory / "metrics.jsonl"),
          "generations": sorted(p.name for p in (directory / sr.GENERATIONS_DIR).iterdir())}


def test_search_killed_after_every_write_resumes_to_the_uninterrupted_search(tmp_path, write_faults):
  writes = write_faults.count(lambda: run_search(tmp_path / "full"))
  expected = outputs(tmp_path / "full")
  rows = expected["metrics"]
  assert expected["files"][sr.DIVERGED_FILE].count("\n") >= 2  # the fake exercises the diverged path
  assert [r["step"] for r in rows] == list(range(len(rows)))
  assert expected["generations"] == [f"q_values_{len(rows)}.csv", f"replay_buffer_{len(rows)}.csv"]
  for k in range(1, writes + 1):
    directory = tmp_path / f"kill{k}"
    assert write_faults.kill_after(k, lambda: run_search(directory)), k
    run_search(directory)
    assert outputs(directory) == expected, f"killed after write {k}"


def test_kill_between_the_q_values_and_the_state_does_not_apply_an_update_twice(tmp_path, write_faults):
  """The window of the original bug: the CSVs of the next iteration written, its state not yet."""
  run_search(tmp_path / "full")
  directory = tmp_path / "parts"
  search = sr.Search(FakeEvaluator(), SPACE, 1, directory, Q, seed=3, plot_every=10 ** 6, plot_window=10 ** 6)
  search.run(max_new=3)
  q_before = (directory / sr.Q_FILE).read_text()
  # the next step writes replay_buffer_4.csv, q_values_4.csv, then the state: kill after the Q-values
  assert write_faults.kill_after(2, search.step)
  assert json.loads((directory / sr.STATE_FILE).read_text())["generation"] == 3
  resumed = sr.Search(FakeEvaluator(), SPACE, 1, directory, Q, seed=3, plot_every=10 ** 6, plot_window=10 ** 6)
  assert len(resumed.buffer) == 3 and (directory / sr.Q_FILE).read_text() == q_before
  resumed.run()
  for name in (sr.REPLAY_FILE, sr.Q_FILE):
    assert (directory / name).read_text() == (tmp_path / "full" / name).read_text()


def test_a_search_saved_before_generations_existed_resumes(tmp_path):
  """Workdirs of earlier versions: search_state.json without `generation`, the CSVs beside it (written before it)."""
  run_search(tmp_path / "full")
  directory = tmp_path / "old"
  search = sr.Search(FakeEvaluator(), SPACE, 1, directory, Q, seed=3, plot_every=10 ** 6, plot_window=10 ** 6)
  search.run(max_new=3)
  state = json.loads((directory / sr.STATE_FILE).read_text())
  del state["generation"], state["diverged"], state["seconds"]
  (directory / sr.STATE_FILE).write_text(json.dumps(state))
  for path in (directory / sr.GENERATIONS_DIR).iterdir():
    path.unlink()
  resumed = sr.Search(FakeEvaluator(), SPACE, 1, directory, Q, seed=3, plot_every=10 ** 6, plot_window=10 ** 6)
  assert len(resumed.buffer) == 3
  resumed.run()
  for name in (sr.REPLAY_FILE, sr.Q_FILE):
    assert (directory / name).read_text() == (tmp_path / "full" / name).read_text()
