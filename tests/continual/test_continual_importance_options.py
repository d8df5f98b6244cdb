"""Importance options reachable from a config: the MAS `batch` estimator per reference batch
(`importance.mas_batch_size`) and the local (Hebbian) MAS (`methods=('mas_local',)`), checked on the runner's
consolidated importance after task 0."""

import jax
import numpy as np

from nas_forgetting import importance as imp
from nas_forgetting.continual import experiment
from nas_forgetting.continual.runner import MethodRun
from nas_forgetting.io.checkpoint import Checkpointer


def _after_task_0(config, method, workdir):
  config.train.stop_after_epochs = 1  # task 0 (one epoch) trained and consolidated, then stop
  tasks = experiment.load_tasks(config)
  run = MethodRun(config, tasks, method, workdir)
  assert run.run()["stopped"]
  state = Checkpointer(workdir / "checkpoints").restore(None, run.fresh_state())
  return run, state, tasks


def test_mas_batch_size_gives_the_reference_per_batch_estimate(tiny_config, tmp_path):
  config = tiny_config(epochs=1)
  config.stream.num_tasks = 2
  config.importance.mas_estimator = "batch"
  config.importance.mas_batch_size = 20
  config.importance.num_examples = 0
  experiment.validate_config(config)
  run, state, tasks = _after_task_0(config, "mas", tmp_path)
  tree, mask = run._importance_tree(state, 0)
  images = tasks[0].train.images
  omega = {b: imp.mas_importance(run.model.importance_apply, tree, images, estimator="batch", batch_size=b,
                                 mask=mask)["params"] for b in (20, 0)}
  stored = jax.tree.map(lambda x: x[0], state["importance"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9), stored, omega[20])
  assert not np.allclose(stored["dense_0"]["kernel"], omega[0]["dense_0"]["kernel"])  # the batches matter


def test_mas_local_method_stores_mean_abs_input_times_activation(tiny_config, tmp_path):
  config = tiny_config(epochs=1)
  config.stream.num_tasks = 2
  config.methods = ("mas_local",)
  config.importance.num_examples = 0
  experiment.validate_config(config)
  run, state, tasks = _after_task_0(config, "mas_local", tmp_path)
  params = jax.tree.map(lambda p: np.asarray(p, np.float64), state["params"])
  x = tasks[0].train.images.reshape(len(tasks[0].train.labels), -1).astype(np.float64)
  h = np.maximum(x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"], 0.0)  # ReLU after the hidden layer
  head = params["heads"]["head_0"]
  y = h @ head["kernel"] + head["bias"]  # identity after the task's head
  omega = jax.tree.map(lambda o: np.asarray(o[0]), state["importance"])
  np.testing.assert_allclose(omega["dense_0"]["kernel"], np.abs(x).T @ h / len(x), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(omega["dense_0"]["bias"], h.mean(axis=0), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(omega["heads"]["head_0"]["kernel"], h.T @ np.abs(y) / len(x), rtol=1e-4, atol=1e-7)
  # task 1's head is not task 0's: no importance
  assert all(np.all(v == 0) for v in jax.tree.leaves(omega["heads"]["head_1"]))
