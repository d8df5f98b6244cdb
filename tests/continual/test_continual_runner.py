"""The continual runner: one trace across tasks, exact resume, outputs, and a penalty invariant."""

import json
import pathlib

import chex
import jax
import numpy as np
import pytest

from nas_forgetting.continual import experiment, metrics
from nas_forgetting.continual.methods import make_optimizer, parse_method
from nas_forgetting.continual.runner import MethodRun
from nas_forgetting.errors import ConfigError
from nas_forgetting.io.metrics import read_csv, read_jsonl


@pytest.fixture(scope="module")
def tasks(tiny_config):
  return experiment.load_tasks(tiny_config())


def test_one_trace_for_all_tasks(tasks, tmp_path, tiny_config):
  # Split tasks have different sizes (padding + invalid batch rows) and different heads: still one trace.
  short = tasks[1].train._replace(images=tasks[1].train.images[:40], labels=tasks[1].train.labels[:40])
  tasks = [tasks[0], tasks[1]._replace(train=short), tasks[2]]
  assert len({len(t.train.labels) for t in tasks}) > 1
  run = MethodRun(tiny_config(), tasks, "ewc", tmp_path / "ewc", max_traces=1)
  result = run.run()
  assert not result["stopped"] and result["epochs_run"] == 6
  assert result["accuracy"].shape == (3, 3) and np.all(result["accuracy"] > 0)


def test_resume_mid_task_equals_uninterrupted(tmp_path, tiny_config):
  config = tiny_config()
  config.methods = ("si",)  # the most state: SI path integral, accumulated Omega, task-start parameters
  full = experiment.run(config, str(tmp_path / "full"))
  interrupted = tiny_config(stop_after_epochs=3)  # killed after epoch 0 of task 1 (mid-task)
  interrupted.methods = ("si",)
  first = experiment.run(interrupted, str(tmp_path / "resumed"))
  assert first["stopped"]
  partial = first["methods"]["si"]["accuracy"]
  assert np.all(partial[1:] == 0) and np.any(partial[0] > 0)
  resumed = experiment.run(config, str(tmp_path / "resumed"))
  assert not resumed["stopped"]
  for method in config.methods:
    np.testing.assert_array_equal(resumed["methods"][method]["accuracy"], full["methods"][method]["accuracy"])
  # final parameters are bit-identical too (read back from the last checkpoints)
  for method in config.methods:
    tasks = experiment.load_tasks(config)
    like = MethodRun(config, tasks, method, tmp_path).fresh_state()
    from nas_forgetting.io.checkpoint import Checkpointer
    a = Checkpointer(tmp_path / "full" / method / "checkpoints").restore(None, like)
    b = Checkpointer(tmp_path / "resumed" / method / "checkpoints").restore(None, like)
    chex.assert_trees_all_equal(a["params"], b["params"])
    chex.assert_trees_all_equal(a["importance"], b["importance"])
    assert int(a["task"]) == 3 and int(b["task"]) == 3


def test_outputs_agree_with_the_accuracy_matrix(tasks, tmp_path, tiny_config):
  config = tiny_config(epochs=1)
  config.methods = ("finetune",)
  out = experiment.run(config, str(tmp_path))
  r = out["methods"]["finetune"]["accuracy"]
  rows = read_csv(tmp_path / "finetune" / "accuracy_matrix.csv")
  np.testing.assert_allclose([[float(row[f"task_{j}"]) for j in range(3)] for row in rows], r, rtol=1e-6)
  summary = json.loads((tmp_path / "finetune" / "summary.json").read_text())
  assert summary["forgetting"] == pytest.approx(metrics.forgetting(r))
  assert summary["bwt"] == pytest.approx(metrics.backward_transfer(r))
  logged = [rec for rec in read_jsonl(tmp_path / "finetune" / "metrics.jsonl") if "eval/task_0/accuracy" in rec]
  assert len(logged) == 3
  np.testing.assert_allclose([[rec[f"eval/task_{j}/accuracy"] for j in range(3)] for rec in logged], r, rtol=1e-6)
  assert list((tmp_path / "finetune" / "tensorboard").iterdir())
  for name in ("accuracy_matrix.png", "accuracy_curves.png"):
    assert (tmp_path / "finetune" / name).stat().st_size > 0
  comparison = read_csv(tmp_path / "comparison.csv")
  assert comparison[0]["method"] == "finetune"
  assert float(comparison[0]["avg_accuracy"]) == pytest.approx(metrics.average_accuracy(r))
  assert "forgetting" in out["table"]


def _trunk_distance(a, b):
  return float(np.sqrt(sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2)
                           for x, y in zip(jax.tree.leaves(a["dense_0"]), jax.tree.leaves(b["dense_0"])))))


def test_strong_l2_keeps_parameters_near_the_anchor(tmp_path, tiny_config):
  # Plain SGD, lr * strength = 0.5: the quadratic pull dominates, the shared layer stays within about g/strength
  # of the task-0 solution, while fine-tuning drifts further with every one of task 1's 30 steps.
  config = tiny_config(optimizer="sgd", learning_rate=0.05, first_task_epochs=2, epochs=10)
  config.stream.num_tasks = 2
  config.strength.l2 = 10.0
  tasks2 = experiment.load_tasks(config)
  finetune = MethodRun(config, tasks2, "finetune", tmp_path / "finetune").run()
  l2 = MethodRun(config, tasks2, "l2", tmp_path / "l2").run()
  anchor = jax.tree.map(lambda a: a[0], l2["anchors"])  # the task-0 solution, the same for both (same seed)
  d_finetune = _trunk_distance(finetune["params"], anchor)
  d_l2 = _trunk_distance(l2["params"], anchor)
  assert d_finetune > 0
  assert d_l2 < 0.2 * d_finetune


def test_unknown_method_is_rejected(tmp_path, tiny_config):
  config = tiny_config()
  config.methods = ("finetune", "ewk")
  with pytest.raises(ConfigError, match="valid methods"):
    experiment.run(config, str(tmp_path))


def test_method_specs_and_bad_options(tiny_config):
  assert parse_method("ewc") == ("ewc", None)
  assert parse_method("ewc@1e4") == ("ewc", 1e4)
  for bad, match in [("ewc@abc", "not a number"), ("finetune@1", "no penalty"), ("sgd", "valid methods"),
                     ("mas@-1", ">= 0")]:
    with pytest.raises(ConfigError, match=match):
      parse_method(bad)
  config = tiny_config(optimizer="rmsprop")
  with pytest.raises(ConfigError, match="rmsprop"):
    make_optimizer(config.train)
