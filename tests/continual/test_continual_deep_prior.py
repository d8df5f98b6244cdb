"""Continual learning on stored deep-prior embeddings (configs/continual_deep_prior.py): a DP-NAS deep prior
embeds real MNIST, the DP-NAS writer stores it, and the continual experiment trains on the stored features."""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from nas_forgetting.continual import config as continual_config
from nas_forgetting.continual import experiment
from nas_forgetting.continual.methods import parse_method
from nas_forgetting.continual.runner import MethodRun
from nas_forgetting.data.datasets import default_data_config, load_dataset
from nas_forgetting.dpnas import evaluator as ev
from nas_forgetting.dpnas.embeddings import store_embeddings
from nas_forgetting.io.checkpoint import Checkpointer

CONFIG_PATH = pathlib.Path(__file__).resolve().parents[2] / "configs" / "continual_deep_prior.py"
NET = "[C(8,3,1,1,1), P(4,4,0,0), SM(10)]"  # 14x14 -> 3x3x8: D = 72 features
D = 72


def load_config_module():
  spec = importlib.util.spec_from_file_location("continual_deep_prior_config", CONFIG_PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_config_declares_every_field_and_its_variants():
  module = load_config_module()
  assert "python launch.py --config configs/continual_deep_prior.py" in module.__doc__
  assert "configs/dpnas_mnist.py:fixed,store_embedding" in module.__doc__ and "Expected" in module.__doc__
  reference = continual_config.default_config()
  for variant in (None, "class", "quick", "class_quick", "class,linear", "quick,linear"):
    config = module.get_config(variant)
    assert set(config.keys()) == set(reference.keys())
    for group in ("data", "train", "strength", "importance", "model", "stream", "checkpoint"):
      assert set(config[group].keys()) == set(reference[group].keys()), (variant, group)
    assert config.data.source == "embeddings" and config.stream.kind == "split"
    assert config.stream.scenario == ("class" if variant and "class" in variant else "task")
    assert ("ewc" in config.methods) and ("finetune" in config.methods)
    for method in config.methods:
      parse_method(method)
  assert module.get_config("class,linear").model.hidden == ()
  with pytest.raises(ValueError, match="unknown variant"):
    module.get_config("no_such_variant")


@pytest.fixture(scope="module")
def stored_embedding(shared_data, tmp_path_factory):
  """The deep prior NET (seed 0) of a DP-NAS evaluator on 500 real 14x14 MNIST images, stored as arrays."""
  splits = load_dataset(default_data_config(source="idx", path=str(shared_data / "mnist"), train_size=400,
                                            test_size=100, image_size=14, seed=0))
  data = ev.SplitData(*ev.split_train_val(splits.train.images, splits.train.labels, val_fraction=0.1, seed=0),
                      splits.test.images, splits.test.labels, 10)
  evaluator = ev.Evaluator(data, ev.EvalConfig(epochs=1, bn_calibration_size=64))
  directory = tmp_path_factory.mktemp("dpnas") / "stored_embedding"
  info = store_embeddings(evaluator, NET, 0, directory, layout="arrays")
  assert info["width"] == D
  return directory


def test_quick_run_on_stored_deep_prior_embedding(stored_embedding, tmp_path):
  config = load_config_module().get_config("quick")
  config.data.path = str(stored_embedding)
  tasks = experiment.load_tasks(config)
  assert [t.classes for t in tasks] == [(0, 1), (2, 3)]
  assert tasks[0].train.images.shape[1:] == (1, 1, D)  # the stored features, as (1, 1, D) "images"
  out = experiment.run(config, str(tmp_path))
  assert not out["stopped"]
  for method in config.methods:
    r = out["methods"][method]["accuracy"]
    assert r.shape == (2, 2) and np.all((r >= 0) & (r <= 1))
    assert r[0, 0] > 0.9  # 0 vs 1 on deep-prior features: far above chance (0.5)
  # the run's network takes the D stored features as its input: its checkpoint restores into a tree whose first
  # kernel is (D, hidden) (a restore into mismatched shapes raises CheckpointError) and was trained away from init
  fresh = MethodRun(config, tasks, "ewc", tmp_path / "shapes").fresh_state()
  assert fresh["params"]["dense_0"]["kernel"].shape == (D, config.model.hidden[0])
  restored = Checkpointer(tmp_path / "ewc" / "checkpoints").restore(None, like=fresh)
  assert restored["params"]["dense_0"]["kernel"].shape == (D, config.model.hidden[0])
  assert not np.allclose(np.asarray(restored["params"]["dense_0"]["kernel"]),
                         np.asarray(jax.device_get(fresh["params"]["dense_0"]["kernel"])))
