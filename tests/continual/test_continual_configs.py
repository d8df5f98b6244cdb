"""Every continual config loads (default and quick variants), its quick variant runs end to end, and the results
its docstring states for its quick variants are what the run gives."""

import collections
import csv
import importlib.util
import pathlib
import re

import numpy as np
import pytest

from nas_forgetting.continual import config as continual_config
from nas_forgetting.continual import experiment
from nas_forgetting.continual import sweep
from nas_forgetting.continual.methods import parse_method

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
CONFIGS = {
    "quickstart": (None, "quick"),
    "split_mnist": (None, "class", "domain", "quick", "class_quick", "domain_quick", "sweep", "class_sweep",
                    "sweep_quick"),
    "permuted_mnist": (None, "domain", "class", "quick", "domain_quick", "class_quick", "sweep", "class_sweep"),
    "mas_demo": (None, "sequence", "reference", "local", "quick"),
    "mas_image_folder": (None, "quick"),
    "ewc_mnist_fashion": (None, "quick"),
}
NEEDS_SHARED = {"split_mnist", "permuted_mnist", "mas_demo", "mas_image_folder", "ewc_mnist_fashion"}
# A docstring line "<file>.py:<variant>  <method> average accuracy X %, forgetting Y %" states a measured result.
STATED = re.compile(r"^\s*(\w+)\.py:(\w+)\s+(\w+) average accuracy (-?[\d.]+) %, forgetting (-?[\d.]+) %", re.M)
TOLERANCE = 2.0  # percentage points (another CPU may round differently)


def stated_results(name):
  """{variant: {method: (average accuracy %, forgetting %)}} from the config's docstring."""
  out = collections.defaultdict(dict)
  for file, variant, method, acc, forgetting in STATED.findall(load(name).__doc__):
    assert file == name
    out[variant][method] = (float(acc), float(forgetting))
  return dict(out)


def check_stated(name, variant, out):
  stated = stated_results(name).get(variant)
  if not stated:
    return
  got = {row["method"]: (100 * row["avg_accuracy"], 100 * row["forgetting"]) for row in out["summary"]}
  assert set(got) == set(stated), (name, variant)
  for method, (acc, forgetting) in stated.items():
    assert abs(got[method][0] - acc) <= TOLERANCE, (name, variant, method, got[method], stated[method])
    assert abs(got[method][1] - forgetting) <= TOLERANCE, (name, variant, method, got[method], stated[method])


def load(name):
  spec = importlib.util.spec_from_file_location(f"continual_config_{name}", CONFIG_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_loads_with_every_field_declared(name):
  module = load(name)
  assert "python launch.py --config configs/" in module.__doc__ and "Expected" in module.__doc__
  reference = continual_config.default_config()
  for variant in CONFIGS[name]:
    config = module.get_config(variant)
    assert config.experiment == "continual" and isinstance(config.seed, int)
    assert set(config.keys()) == set(reference.keys())
    for group in ("train", "strength", "importance", "model", "stream", "checkpoint"):
      assert set(config[group].keys()) == set(reference[group].keys()), (name, variant, group)
    for method in config.methods:
      parse_method(method)
    experiment.validate_config(config)
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
  check_stated(name, "quick", out)


def test_stated_quick_results_are_parsed():
  assert set(stated_results("quickstart")["quick"]) == {"ewc", "mas"}
  assert set(stated_results("split_mnist")) == {"quick", "class_quick", "domain_quick"}
  assert set(stated_results("permuted_mnist")) == {"quick", "domain_quick", "class_quick"}


@pytest.mark.parametrize("name, variant", [("split_mnist", "class_quick"), ("split_mnist", "domain_quick"),
                                           ("permuted_mnist", "domain_quick"), ("permuted_mnist", "class_quick")])
def test_other_quick_variants_give_their_stated_results(name, variant, tmp_path, shared_data):
  out = experiment.run(load(name).get_config(variant), str(tmp_path))
  check_stated(name, variant, out)


SIX_METHODS = ("finetune", "ewc", "online_ewc", "si", "mas", "joint")


def decades(first, last):
  """The log grid first, 10 first, ..., last (powers of ten)."""
  return tuple(10.0 ** k for k in range(round(np.log10(first)), round(np.log10(last)) + 1))


# (config, variant): scenario, epochs per task, and the grid of each penalised method, as the docstrings state them
SWEEP_VARIANTS = {
    ("split_mnist", "sweep"): ("task", 4, {"ewc": decades(1e1, 1e5), "online_ewc": decades(1e1, 1e5),
                                           "si": decades(1e-1, 1e3), "mas": decades(1e-3, 1e1)}),
    ("split_mnist", "class_sweep"): ("class", 4, {"ewc": decades(1e1, 1e5), "online_ewc": decades(1e1, 1e5),
                                                  "si": decades(1e-1, 1e3), "mas": decades(1e-3, 1e1)}),
    ("permuted_mnist", "sweep"): ("task", 2, {"ewc": decades(1e1, 1e4), "online_ewc": decades(1e1, 1e4),
                                              "si": decades(1e0, 1e3), "mas": decades(1e-3, 1e0)}),
    ("permuted_mnist", "class_sweep"): ("class", 2, {"ewc": decades(1e1, 1e4), "online_ewc": decades(1e1, 1e4),
                                                     "si": decades(1e0, 1e3), "mas": decades(1e-3, 1e0)}),
}


@pytest.mark.parametrize("name, variant", sorted(SWEEP_VARIANTS))
def test_sweep_variants_resolve_to_their_grids(name, variant):
  scenario, epochs, grids = SWEEP_VARIANTS[(name, variant)]
  config = load(name).get_config(variant)
  single = load(name).get_config("class" if scenario == "class" else None)
  assert config.stream.scenario == scenario and config.train.epochs == epochs
  assert tuple(config.methods) == SIX_METHODS
  assert tuple(config.sweep.seeds) == (0, 1, 2, 3, 4) and config.sweep.validation_fraction == 0.1
  assert {m: tuple(v) for m, v in config.sweep.strengths.items() if v} == grids
  for method in SIX_METHODS:  # 5 seeds x the method's grid (fine-tuning and joint: the 5 seeds)
    strengths = grids.get(method, (0.0,))
    assert sweep.grid(config, method) == [(s, l) for s in range(5) for l in strengths]
  # everything else is the single run's setting (data, network, optimiser, importance)
  for group in ("data", "stream", "model", "importance"):
    assert config[group].to_dict() == single[group].to_dict(), group
  assert {k: v for k, v in config.train.items() if k != "epochs"} == \
      {k: v for k, v in single.train.items() if k != "epochs"}


def test_sweep_quick_runs_through_launch(tmp_path, shared_data):
  import launch  # pylint: disable=import-outside-toplevel
  config = load("split_mnist").get_config("sweep_quick")
  assert tuple(config.sweep.seeds) == (0, 1) and tuple(config.sweep.strengths.ewc) == (1e2, 1e4)
  workdir = pathlib.Path(launch.run(config, str(tmp_path / "run")))
  table = read_csv(workdir / "sweep_summary.csv")
  assert [(r["method"], float(r["strength"]), int(r["seeds"])) for r in table] == \
      [("finetune", 0.0, 2), ("ewc", 1e2, 2), ("ewc", 1e4, 2)]
  assert sum(r["best"] == "True" for r in table) == 1 and table[0]["best"] == "False"
  members = read_csv(workdir / "sweep_members.csv")
  assert [(r["method"], int(r["seed"])) for r in members] == [("finetune", 0), ("finetune", 1)] + [("ewc", 0)] * 2 + \
      [("ewc", 1)] * 2
  for row in members:
    assert 0.5 < float(row["avg_accuracy"]) <= 1.0  # two-class tasks: above chance
  assert (workdir / "sweep_strength.png").stat().st_size > 0


def read_csv(path):
  with open(path, newline="", encoding="utf-8") as fh:
    return list(csv.DictReader(fh))
