"""ENAS runs killed after the first and the last write of every kind in an epoch's save path resume to exactly the
uninterrupted run's outputs (metrics of the shared weights and of the controller, TensorBoard scalars as TensorBoard
shows them, forgetting.csv, derived cell, summary, the points of the curves figures); a finished search relaunched does nothing; summary.json's seconds total over launches; the
run ends with a result block naming data, network and headline numbers."""

import json
import pathlib

import pytest


from configs import enas_ptb, wpl_enas_ptb
from nas_forgetting.enas import experiment
from nas_forgetting.enas import outputs as enas_outputs
from nas_forgetting.enas import search
from nas_forgetting.enas import state
from nas_forgetting.io import atomic, checkpoint, metrics
from nas_forgetting.io.metrics import read_csv, read_jsonl

CONFIGS = {"enas_ptb": enas_ptb, "wpl_enas_ptb": wpl_enas_ptb}
WALL_CLOCK = ("seconds", "finished_before")


def tiny_config(shared_data, name):
  """configs/<name>.py:tiny over 2 epochs (a checkpoint after each), without drawings (not durable state)."""
  c = CONFIGS[name].get_config("tiny")
  c.data.path = str(shared_data / c.data.name)
  c.train.max_epoch = 2
  c.train.save_every = 1
  c.train.draw_every = 0
  return c


def tensorboard_scalars(logdir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} as TensorBoard shows a run folder: event files in the order they were written,
  a session restart (SessionLog START) at step s dropping the earlier events at steps >= s of every tag."""
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")

  def order(path):  # events.out.tfevents.<seconds>.<host>.<pid>.<counter>
    parts = path.name.split(".")
    return int(parts[3]), int(parts[-2]), int(parts[-1])

  scalars: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(logdir.glob("events.out.tfevents.*"), key=order):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      length = int.from_bytes(data[offset:offset + 8], "little")
      event = event_pb2.Event()
      event.ParseFromString(data[offset + 12:offset + 12 + length])
      offset += 16 + length
      if event.HasField("session_log") and event.session_log.status == event.session_log.START:
        scalars = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in scalars.items()}
      for value in event.summary.value:
        if value.WhichOneof("value") == "simple_value":
          scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


def outputs(workdir: pathlib.Path) -> dict:
  """Everything a run leaves that must not depend on interruptions (wall-clock fields removed)."""
  summary = json.loads((workdir / "summary.json").read_text())
  out = {"metrics": read_jsonl(workdir / "metrics.jsonl"),
         "controller": read_jsonl(workdir / "controller" / "metrics.jsonl"),
         "tensorboard": tensorboard_scalars(workdir / "tensorboard"),
         "controller_tensorboard": tensorboard_scalars(workdir / "controller" / "tensorboard"),
         "dag": (workdir / "derived" / "dag.json").read_text(),
         "arch": (workdir / "derived" / "arch.txt").read_text(),
         "summary": {k: v for k, v in summary.items() if k not in WALL_CLOCK}}
  if (workdir / "forgetting.csv").exists():
    out["forgetting"] = read_csv(workdir / "forgetting.csv")
  return out


def record_write_kinds(monkeypatch, write_faults) -> dict[int, str]:
  """{write number: kind} of the durable writes `write_faults` counts, filled as a run writes ('metrics <file>'
  relative to the run folder, 'replace <file name>', 'checkpoint')."""
  kinds = {}
  counted_log, counted_save = metrics.MetricsLogger.log, checkpoint.Checkpointer.save

  def log(self, step, *args, **kwargs):
    counted_log(self, step, *args, **kwargs)
    name = self.path.name if self.path.parent.name != "controller" else f"controller/{self.path.name}"
    kinds[write_faults.writes] = f"metrics {name}"

  def save(self, step, *args, **kwargs):
    result = counted_save(self, step, *args, **kwargs)
    kinds[write_faults.writes] = "checkpoint"
    return result

  class Os:
    counted = atomic.os

    def __getattr__(self, name):
      return getattr(self.counted, name)

    def replace(self, src, dst, *args, **kwargs):
      self.counted.replace(src, dst, *args, **kwargs)
      kinds[write_faults.writes] = f"replace {pathlib.Path(dst).name}"

  monkeypatch.setattr(metrics.MetricsLogger, "log", log)
  monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
  monkeypatch.setattr(atomic, "os", Os())
  return kinds


@pytest.mark.parametrize("name", ["enas_ptb", "wpl_enas_ptb"])
def test_a_kill_at_every_kind_of_write_of_the_last_epoch_resumes_exactly(name, shared_data, tmp_path, write_faults,
                                                                 monkeypatch):
  config = tiny_config(shared_data, name)
  config.data.eval_max_tokens = 2000
  # The curves figures are drawn at the end from the points the run holds (a resumed run reads the points of its
  # earlier launches back once): the points are compared, the drawing (and the GIF) left out for speed.
  curves = []
  monkeypatch.setattr(enas_outputs, "plot_curves", lambda run, points: curves.append(points))
  monkeypatch.setattr(enas_outputs, "write_gif", lambda run: None)
  saved_at = []  # the write count right after each checkpoint
  counted_save = checkpoint.Checkpointer.save

  def save(self, step, *args, **kwargs):
    result = counted_save(self, step, *args, **kwargs)
    saved_at.append(write_faults.writes)
    return result

  monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
  kinds = record_write_kinds(monkeypatch, write_faults)
  straight_dir = tmp_path / "straight"
  straight = {}
  total = write_faults.count(lambda: straight.update(experiment.run(config, str(straight_dir))))
  assert len(saved_at) == 2 and saved_at[-1] == total  # the final checkpoint is the run's last write
  expected = outputs(straight_dir)
  (expected_curves,) = curves
  assert len(expected_curves["shared/perplexity"]) >= 2 and expected_curves["controller/reward"]
  steps = [r["step"] for r in expected["metrics"] if "shared/loss" in r]
  assert steps == sorted(set(steps))  # one record per logged step
  # The boundaries from the first epoch's checkpoint to the end: the first and the last write of every kind (the
  # second epoch's logs, forgetting.csv, the final derive's record, dag.json and arch.txt, summary.json, the final
  # checkpoint), and right after the first epoch's checkpoint.
  after_first = {k: kind for k, kind in kinds.items() if k > saved_at[0]}
  assert {"metrics metrics.jsonl", "metrics controller/metrics.jsonl", "replace dag.json", "replace arch.txt",
          "replace summary.json", "checkpoint"} <= set(after_first.values())
  boundaries = {saved_at[0], total}
  for kind in set(after_first.values()):
    at = [k for k, w in after_first.items() if w == kind]
    boundaries |= {min(at), max(at)}
  assert len(boundaries) >= 10 and max(boundaries) == total
  for k in sorted(boundaries):
    workdir = tmp_path / f"killed_after_{k}"
    assert write_faults.kill_after(k, lambda: experiment.run(config, str(workdir))), k
    curves.clear()
    resumed = experiment.run(config, str(workdir))
    assert outputs(workdir) == expected, f"killed after write {k} of {total}"
    assert curves in ([], [expected_curves]), f"killed after write {k} of {total}"  # [] when it had finished
    assert {k2: v for k2, v in resumed.items() if k2 not in WALL_CLOCK} == expected["summary"]


def test_a_finished_search_relaunched_says_so_and_writes_nothing(shared_data, tmp_path, capsys):
  config = tiny_config(shared_data, "enas_ptb")
  config.train.max_epoch = 1
  config.wpl.measure_forgetting = False
  summary = experiment.run(config, str(tmp_path))
  block = capsys.readouterr().out
  # The result block: data, network, derived cell and its numbers (not only the summary's key names).
  assert "ENAS search (without WPL) on ptb" in block
  assert "trained on the first 90% of valid.txt" in block and "first 6000 tokens" in block
  assert "recurrent cell supernet: 3 nodes" in block and "hidden size 16" in block
  assert f"derived cell" in block and summary["arch"] in block
  assert f"{summary['eval/test_perplexity']:.4g}" in block

  def state():
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("config.json", "git_revision.txt"))
    return {str(p.relative_to(tmp_path)): p.read_bytes() for p in files}

  before = state()
  again = experiment.run(config, str(tmp_path))
  assert state() == before  # no record, event file, checkpoint or summary written
  out = capsys.readouterr().out
  assert "has finished all 1 epochs; nothing to do" in out and "finished earlier; nothing was run" in out
  assert again["finished_before"] and again["arch"] == summary["arch"]
  assert again["eval/test_perplexity"] == summary["eval/test_perplexity"]


class _Clock:
  """A stand-in for the time module of the run's clock: `now` seconds, advanced by the test."""

  def __init__(self, now: float):
    self.now = now

  def time(self) -> float:
    return self.now


def test_summary_seconds_are_the_total_over_launches(shared_data, tmp_path, monkeypatch):
  """A search stopped after its first epoch (100 s) and resumed for the second (20 s) reports 120 s, not the
  last launch's 20 s."""
  config = tiny_config(shared_data, "enas_ptb")
  config.wpl.measure_forgetting = False
  clock = _Clock(1000.0)
  monkeypatch.setattr(state, "time", clock)
  epoch_seconds = [100.0, 20.0]  # the first epoch takes 100 s, the second 20 s
  real_epoch = search.shared_epoch

  def timed_epoch(*args, **kwargs):
    clock.now += epoch_seconds.pop(0)
    return real_epoch(*args, **kwargs)

  monkeypatch.setattr(search, "shared_epoch", timed_epoch)
  real_save = checkpoint.Checkpointer.save

  def stop_after_first_epoch(self, step, tree):
    real_save(self, step, tree)
    raise KeyboardInterrupt

  monkeypatch.setattr(checkpoint.Checkpointer, "save", stop_after_first_epoch)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(config, str(tmp_path))
  monkeypatch.setattr(checkpoint.Checkpointer, "save", real_save)
  clock.now = 50_000.0  # relaunched much later
  summary = experiment.run(config, str(tmp_path))
  assert not epoch_seconds
  assert summary["seconds"] == 120.0
  assert json.loads((tmp_path / "summary.json").read_text())["seconds"] == 120.0


@pytest.mark.parametrize("derive_every", [0, 1])
def test_a_longer_schedule_continues_like_the_longer_run(derive_every, shared_data, tmp_path):
  """train.max_epoch is resume-safe: a finished 1-epoch search relaunched with 2 epochs logs what a 2-epoch search
  logs, except for the shorter run's final derive where the longer run has no derive (derive_every 0); with a
  derive every epoch the logs are identical."""
  config = tiny_config(shared_data, "enas_ptb")
  config.wpl.measure_forgetting = False
  config.train.derive_every = derive_every
  straight = experiment.run(config, str(tmp_path / "straight"))
  config.train.max_epoch = 1
  first = experiment.run(config, str(tmp_path / "extended"))
  config.train.max_epoch = 2
  extended = experiment.run(config, str(tmp_path / "extended"))
  assert extended["arch"] == straight["arch"] and extended["eval/test_perplexity"] == straight["eval/test_perplexity"]
  got, want = outputs(tmp_path / "extended"), outputs(tmp_path / "straight")
  if derive_every == 0:  # the 1-epoch run's final derive, at the end of epoch 0 (shared step 6)
    extra = {k: first[k] for k in ("eval/reward_split_perplexity", "eval/test_perplexity", "derive/best_reward")}
    assert {"step": 6, **extra} in got["metrics"]
    got["metrics"].remove({"step": 6, **extra})
    del got["tensorboard"], want["tensorboard"]  # the same extra record, as TensorBoard scalars
  assert got == want
