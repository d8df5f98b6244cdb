"""Every continual config loads (default and quick variants) and its quick variant runs end to end."""

import importlib.util
import pathlib

import numpy as np
import pytest

from nas_forgetting.continual import experiment
from nas_forgetting.continual.runner import parse_method

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
CONFIGS = {
    "quickstart": (None, "quick"),
    "split_mnist": (None, "class", "quick", "class_quick"),
    "permuted_mnist": (None, "domain", "quick", "domain_quick"),
    "mas_demo": (None, "sequence", "reference", "local", "quick"),
    "mas_image_folder": (None, "quick"),
    "ewc_mnist_fashion": (None, "quick"),
}
NEEDS_SHARED = {"split_mnist", "permuted_mnist", "mas_demo", "mas_image_folder", "ewc_mnist_fashion"}


def load(name):
  spec = importlib.util.spec_from_file_location(f"continual_config_{name}", CONFIG_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_loads_with_every_field_declared(name):
  module = load(name)
  assert "python launch.py --config configs/" in module.__doc__ and "Expected" in module.__doc__
  reference = experiment.default_config()
  for variant in CONFIGS[name]:
    config = module.get_config(variant)
    assert config.experiment == "continual" and isinstance(config.seed, int)
    assert set(config.keys()) == set(reference.keys())
    for group in ("train", "strength", "importance", "model", "stream", "checkpoint"):
      assert set(config[group].keys()) == set(reference[group].keys()), (name, variant, group)
    for method in config.methods:
      parse_method(method)
  with pytest.raises(ValueError, match="unknown variant"):
    module.get_config("no_such_variant")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_quick_variant_runs(name, tmp_path, request):
  if name in NEEDS_SHARED:
    request.getfixturevalue("shared_data")
  config = load(name).get_config("quick")
  out = experiment.run(config, str(tmp_path))
  assert not out["stopped"]
  assert [row["method"] for row in out["summary"]] == list(config.methods)
  for method in config.methods:
    r = out["methods"][method]["accuracy"]
    assert r.shape == (len(out["task_names"]),) * 2
    assert np.all((r >= 0) & (r <= 1)) and np.any(r > 0)
  assert (tmp_path / "comparison.csv").exists() and (tmp_path / "comparison.png").exists()
