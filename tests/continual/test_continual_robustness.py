"""A diverged run stops naming quantity, step and task; bad config values are refused up front, naming the field;
a finished run relaunched does nothing; resumed logs equal an uninterrupted run's."""

import json
import pathlib

import pytest

from nas_forgetting.continual import config as continual_config
from nas_forgetting.continual import experiment
from nas_forgetting.continual.runner import MethodRun
from nas_forgetting.errors import ConfigError, DivergenceError
from nas_forgetting.io.metrics import read_csv, read_jsonl

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _two_tasks(tiny_config, methods=("ewc",), **train):
  config = tiny_config(**{"epochs": 1, **train})
  config.stream.num_tasks = 2
  config.methods = methods
  return config


def test_too_large_learning_rate_stops_with_divergence_error_naming_quantity_step_and_task(tiny_config, tmp_path):
  # A finite learning rate that validate_config accepts, but that overflows the first update.
  config = _two_tasks(tiny_config, optimizer="sgd", learning_rate=1e30)
  with pytest.raises(DivergenceError, match=r"train/update_norm is inf at step 0, task 0 .*epoch 0 of method 'ewc'"):
    experiment.run(config, str(tmp_path))
  assert not (tmp_path / "ewc" / "checkpoints").exists()  # nothing of the diverged epoch was saved
  assert read_jsonl(tmp_path / "ewc" / "metrics.jsonl") == []


def test_nan_strength_past_validation_is_caught_inside_the_epoch(tiny_config, tmp_path):
  # MethodRun directly (no validate_config): the in-step check names the penalty; steps count over the run.
  config = _two_tasks(tiny_config)
  config.strength.ewc = float("nan")
  tasks = experiment.load_tasks(config)
  with pytest.raises(DivergenceError, match=r"train/penalty is nan at step 0, task 0"):
    MethodRun(config, tasks, "ewc", tmp_path).run()


@pytest.mark.parametrize("field, value, match", [
    ("train.learning_rate", float("nan"), "train.learning_rate=nan"),
    ("train.learning_rate", float("inf"), "train.learning_rate=inf"),
    ("train.learning_rate", 0.0, "train.learning_rate=0.0"),
    ("strength.ewc", float("nan"), "strength.ewc=nan"),
    ("strength.ewc", -1e6, "strength.ewc=-1000000.0"),
    ("train.eval_batch_size", 0, "train.eval_batch_size=0"),
    ("train.eval_batch_size", -3, "train.eval_batch_size=-3"),
    ("train.batch_size", 0, "train.batch_size=0"),
    ("train.epochs", 0, "train.epochs=0"),
    ("train.momentum", 1.5, "train.momentum=1.5"),
    ("train.stop_after_epochs", -1, "train.stop_after_epochs=-1"),
    ("model.hidden", (0,), r"model.hidden=\(0,\)"),
    ("model.dropout", 1.0, "model.dropout=1.0"),
    ("importance.chunk_size", 0, "importance.chunk_size=0"),
    ("importance.num_examples", -5, "importance.num_examples=-5"),
    ("importance.si_xi", 0.0, "importance.si_xi=0.0"),
    ("importance.online_ewc_gamma", float("nan"), "importance.online_ewc_gamma=nan"),
    ("importance.mas_batch_size", -1, "importance.mas_batch_size=-1"),
    ("importance.mas_batch_size", 200, "applies to importance.mas_estimator='batch' only"),
    ("seed", -1, "seed=-1"),
    ("checkpoint.max_to_keep", 0, "checkpoint.max_to_keep=0"),
    ("checkpoint.every", "step", "checkpoint.every='step'; expected one of epoch, task"),
    ("stream.classes_per_task", 0, "stream.classes_per_task=0"),
    ("data.train_size", -2, "data.train_size=-2"),
    ("data.num_classes", 10, "applies to source 'idx' only"),
    ("methods", (), "methods=()"),
    ("methods", ("ewc@nan",), "finite number >= 0"),
    ("methods", ("ewc@-1",), "finite number >= 0"),
    ("methods", ("ewc", "ewc"), "repeats a method"),
])
def test_bad_values_are_refused_before_any_work_naming_the_field(field, value, match, tiny_config, tmp_path):
  config = tiny_config()
  node = config
  *groups, name = field.split(".")
  for g in groups:
    node = node[g]
  node[name] = value
  with pytest.raises(ConfigError, match=match):
    experiment.validate_config(config)
  with pytest.raises(ConfigError, match=match):  # run() validates first: no folder, no data loaded
    experiment.run(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_every_continual_config_validates():
  import importlib.util
  for path in sorted((ROOT / "configs").glob("*.py")):
    spec = importlib.util.spec_from_file_location(f"cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      continue
    config = module.get_config(None)
    if config.experiment == "continual":
      experiment.validate_config(config)


def test_resume_safe_fields_are_config_fields():
  config = continual_config.default_config()
  for dotted in experiment.RESUME_SAFE_FIELDS:
    node = config
    for part in dotted.split("."):
      node = node[part]


def _outputs(workdir, methods):
  """What a run leaves on disk, less wall-clock fields."""
  out = {"comparison": [{k: v for k, v in r.items() if k != "seconds"} for r in read_csv(workdir / "comparison.csv")]}
  for m in methods:
    out[m] = {"metrics": read_jsonl(workdir / m / "metrics.jsonl"),
              "matrix": read_csv(workdir / m / "accuracy_matrix.csv"),
              "per_task": read_csv(workdir / m / "per_task.csv"),
              "summary": {k: v for k, v in json.loads((workdir / m / "summary.json").read_text()).items()
                          if k != "seconds"}}
  return out


def test_relaunching_a_finished_run_does_nothing_and_seconds_add_up(tiny_config, tmp_path, capsys):
  config = _two_tasks(tiny_config, stop_after_epochs=1)
  first = experiment.run(config, str(tmp_path))  # stops after task 0
  assert first["stopped"]
  config.train.stop_after_epochs = 0
  done = experiment.run(config, str(tmp_path))
  assert not done["stopped"] and not done["already_finished"]
  seconds = json.loads((tmp_path / "ewc" / "summary.json").read_text())["seconds"]
  assert seconds > 0
  before = _outputs(tmp_path, ["ewc"])
  stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
  capsys.readouterr()
  again = experiment.run(config, str(tmp_path))
  assert again["already_finished"] and again["methods"]["ewc"]["epochs_run"] == 0
  assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps  # nothing rewritten
  assert _outputs(tmp_path, ["ewc"]) == before
  assert again["methods"]["ewc"]["seconds"] == pytest.approx(seconds)
  assert "ewc" in capsys.readouterr().out  # the result table is shown again
  # the total covers both launches: at least the two epochs' checkpointed times
  assert seconds == pytest.approx(float(read_csv(tmp_path / "comparison.csv")[0]["seconds"]))


def test_result_block_names_data_and_scenario(tiny_config, tmp_path, capsys):
  config = _two_tasks(tiny_config, methods=("finetune",))
  experiment.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "data" in out and "font_digits (embedded, 300 train / 120 test)" in out
  assert "split, 2 tasks of 2 classes, task-incremental (a head per task)" in out
  assert "avg acc %" in out


def test_resume_after_a_kill_between_logging_and_checkpoint_has_no_duplicate_steps(tiny_config, tmp_path):
  config = _two_tasks(tiny_config, methods=("finetune",))
  experiment.run(config, str(tmp_path / "full"))
  # Simulate a kill after task 1's records were logged but before its checkpoint: drop the last checkpoint.
  experiment.run(config, str(tmp_path / "killed"))
  import shutil
  ckpts = sorted((tmp_path / "killed" / "finetune" / "checkpoints").iterdir(), key=lambda p: p.name)
  shutil.rmtree(ckpts[-1])
  (tmp_path / "killed" / "finetune" / "summary.json").unlink()
  experiment.run(config, str(tmp_path / "killed"))
  records = read_jsonl(tmp_path / "killed" / "finetune" / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 1, 2, 2]
  assert records == read_jsonl(tmp_path / "full" / "finetune" / "metrics.jsonl")


def test_killed_at_every_write_boundary_resumes_to_the_uninterrupted_outputs(tiny_config, write_faults, tmp_path):
  config = _two_tasks(tiny_config)
  full = tmp_path / "full"
  writes = write_faults.count(lambda: experiment.run(config, str(full)))
  expected = _outputs(full, config.methods)
  assert writes >= 12  # per epoch 2 records + a checkpoint, then 5 method outputs and 2 comparison files
  for k in range(1, writes + 1):
    workdir = tmp_path / f"kill_{k}"
    assert write_faults.kill_after(k, lambda: experiment.run(config, str(workdir)))
    experiment.run(config, str(workdir))
    assert _outputs(workdir, config.methods) == expected, f"killed after write {k}"
  assert write_faults.count(lambda: experiment.run(config, str(full))) == 0  # finished: nothing written


def test_checkpoint_every_task_is_refused_with_a_sweep(tiny_config):
  config = tiny_config()
  config.sweep.seeds = (0, 1)
  config.checkpoint.every = "task"
  with pytest.raises(ConfigError, match="checkpoint.every='task' applies to single runs"):
    experiment.validate_config(config)


def _checkpoint_steps(workdir, method):
  return sorted(int(p.name) for p in (workdir / method / "checkpoints").iterdir() if p.name.isdigit())


def test_checkpoint_every_task_killed_mid_task_resumes_to_the_uninterrupted_outputs(tiny_config, write_faults,
                                                                                    tmp_path):
  # 2 tasks of 2 epochs: a checkpoint only after epochs 2 and 4 (the tasks' ends), so a kill mid-task restarts it.
  config = _two_tasks(tiny_config, epochs=2)
  config.checkpoint.every = "task"
  full = tmp_path / "full"
  writes = write_faults.count(lambda: experiment.run(config, str(full)))
  expected = _outputs(full, config.methods)
  assert _checkpoint_steps(full, "ewc") == [2, 4]
  # task 0: epoch 0's record (1), epoch 1's two records (2, 3), checkpoint 2 (4); task 1 likewise (5-8); outputs
  assert writes == 15
  for k in (1, 5, 7):  # mid-task 0 (no checkpoint yet), mid-task 1, between task 1's records and its checkpoint
    workdir = tmp_path / f"kill_{k}"
    assert write_faults.kill_after(k, lambda: experiment.run(config, str(workdir)))
    experiment.run(config, str(workdir))
    assert _outputs(workdir, config.methods) == expected, f"killed after write {k}"


def test_checkpoint_every_task_stopped_mid_task_resumes_to_the_uninterrupted_outputs(tiny_config, tmp_path):
  # A stop saves its epoch's checkpoint even mid-task; launches of one epoch each end with the uninterrupted outputs.
  config = _two_tasks(tiny_config, epochs=2)
  config.checkpoint.every = "task"
  experiment.run(config, str(tmp_path / "full"))
  config.train.stop_after_epochs = 1
  launches = []
  while not launches or launches[-1]["stopped"]:
    launches.append(experiment.run(config, str(tmp_path / "stopped")))
    if len(launches) == 1:
      assert _checkpoint_steps(tmp_path / "stopped", "ewc") == [1]  # the stop after epoch 0 of task 0
  assert len(launches) == 5  # 4 epochs, one per launch, then the last launch finds the stream trained
  assert _outputs(tmp_path / "stopped", config.methods) == _outputs(tmp_path / "full", config.methods)
