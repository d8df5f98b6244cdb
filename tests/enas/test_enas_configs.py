"""Every ENAS config and variant loads, declares the same fields, and rejects unknown variants; derived fields follow
their sources on the command line."""

import pathlib
import sys
from unittest import mock

from absl import flags
from ml_collections import config_flags
import pytest

from configs import enas_cifar10, enas_ptb, wpl_enas_cifar10, wpl_enas_ptb
from nas_forgetting.config_schema import override
from nas_forgetting.enas import config as enas_config
from nas_forgetting.enas import experiment
from nas_forgetting.errors import ConfigError


def _keys(c, prefix=""):
  out = set()
  for k, v in c.items():
    out |= _keys(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k}
  return out


@pytest.mark.parametrize("module,variants", [
    (enas_ptb, ["", "quick", "tiny", "quick,wikitext2", "flexible", "chain", "tree", "random", "derive", "evaluate",
                "train_scratch", "single", "ablation_activation", "ablation_node", "rank_correlation"]),
    (enas_cifar10, ["", "quick", "tiny", "derive", "evaluate", "train_scratch", "single", "rank_correlation"]),
    (wpl_enas_ptb, ["", "quick", "tiny", "quick,nowpl", "nowpl", "wikitext2", "derive"]),
    (wpl_enas_cifar10, ["", "quick", "tiny", "quick,nowpl", "derive"])])
def test_configs_load(module, variants):
  base = _keys(module.get_config())
  for v in variants:
    c = module.get_config(v)
    assert c.experiment == "enas" and isinstance(c.seed, int)
    assert c.mode in experiment.MODES and c.network in experiment.NETWORKS
    assert _keys(c) == base
  with pytest.raises(ValueError, match="unknown variant 'nope'"):
    module.get_config("quick,nope")


def test_rnn_and_cnn_configs_share_their_shape_but_for_their_model_group():
  """Each config carries its own network's model group only (rnn or cnn); every other field is common."""
  rnn, cnn = _keys(enas_ptb.get_config()), _keys(enas_cifar10.get_config())
  assert {k.split(".")[0] for k in rnn - cnn} == {"rnn"}
  assert {k.split(".")[0] for k in cnn - rnn if not k.startswith("data.image.")} == {"cnn"}
  for module in (enas_ptb, wpl_enas_ptb):
    assert "cnn" not in module.get_config() and "rnn" in module.get_config()
  for module in (enas_cifar10, wpl_enas_cifar10):
    assert "rnn" not in module.get_config() and "cnn" in module.get_config()


def test_wpl_group():
  """Plain ENAS configs have WPL off (one architecture per step); the WPL configs follow the reference command lines."""
  for module in (enas_ptb, enas_cifar10):
    c = module.get_config()
    assert not c.wpl.enabled and c.wpl.num_batch_per_iter == 1 and c.wpl.measure_forgetting
  rnn = wpl_enas_ptb.get_config()
  assert rnn.wpl.enabled and rnn.wpl.alpha_fisher == 60 and rnn.wpl.fisher_clip_by_norm == 10
  assert (rnn.wpl.alpha_decay, rnn.wpl.alpha_decay_after, rnn.wpl.set_fisher_zero_per_iter) == (1, 15, 2)
  assert rnn.wpl.num_batch_per_iter == 7 and rnn.controller.reward_c == 80 and rnn.shared.steps_per_epoch == 420
  cnn = wpl_enas_cifar10.get_config()
  assert cnn.wpl.enabled and not cnn.wpl.momentum and cnn.wpl.set_fisher_zero_per_iter == 3
  assert cnn.search.num_blocks == 5 and cnn.cnn.num_repeat_normal == 5 and cnn.wpl.num_batch_per_iter == 7
  for module in (wpl_enas_ptb, wpl_enas_cifar10):  # the baseline differs from the WPL run only in wpl.enabled
    on, off = module.get_config("quick"), module.get_config("quick,nowpl")
    assert on.wpl.enabled and not off.wpl.enabled
    off.wpl.enabled = True
    assert on.to_dict() == off.to_dict()


def test_reference_options_are_off_by_default():
  for module in (enas_ptb, enas_cifar10, wpl_enas_ptb, wpl_enas_cifar10):
    c = module.get_config()
    assert not c.controller.derive_reference_logits
    if c.network == "rnn":
      assert c.rnn.next_hidden == "average"
    else:
      assert c.cnn.sep_conv == "separable" and c.cnn.cell_output == "loose_ends"


def test_builder_rejects_undeclared_fields():
  data = enas_config.default_data_config(name="x")
  with pytest.raises(ConfigError, match="unknown controller config field 'tanh'"):
    enas_config.default_config("rnn", data, controller={"tanh": 1.0})
  with pytest.raises(ConfigError, match="unknown ENAS config groups"):
    enas_config.default_config("rnn", data, optimizer={"lr": 1.0})
  with pytest.raises(ConfigError, match=r"unknown ENAS config groups \['cnn'\] for network='rnn'"):
    enas_config.default_config("rnn", data, cnn={"features": 8})
  c = enas_config.default_config("rnn", data, shared={"lr": 3.0})
  assert c.shared.lr == 3.0 and c.shared.bptt == enas_config.default_shared_config().bptt
  with pytest.raises(ConfigError, match="unknown data.image config field 'nope'"):
    override(enas_cifar10.get_config(), {"data": {"image": {"nope": 1}}})
  with pytest.raises(ConfigError, match="unknown config field 'model'"):
    override(c, {"model": {}})
  with pytest.raises(ConfigError, match="unknown config field 'cnn'"):
    override(c, {"cnn": {"features": 8}})


CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _from_command_line(*args):
  """The config launch.py gets from `--config <file:variant> --config.<path>=<value> ...` (locked, as there;
  config_flags reads the overrides from sys.argv)."""
  argv = ["launch.py", *args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=values, lock_config=True)
  with mock.patch.object(sys, "argv", argv):
    values(argv)
  return values.config


@pytest.mark.parametrize("name, variant, bursts", [("wpl_enas_ptb", "", 60), ("wpl_enas_ptb", "quick", 8),
                                                   ("wpl_enas_cifar10", "tiny", 2)])
def test_wpl_shared_steps_follow_the_burst_length_set_on_the_command_line(name, variant, bursts):
  """Shared steps per epoch = bursts (architectures) per epoch x wpl.num_batch_per_iter, also when the burst length
  is changed by `--config.wpl.num_batch_per_iter` (it once kept the steps computed from the old length, changing the
  architectures per epoch instead: 420 / 5 = 84 instead of 60)."""
  path = f"{CONFIG_DIR / name}.py" + (f":{variant}" if variant else "")
  c = _from_command_line(f"--config={path}")
  assert c.shared.steps_per_epoch == bursts * c.wpl.num_batch_per_iter
  c = _from_command_line(f"--config={path}", "--config.wpl.num_batch_per_iter=5")
  assert (c.wpl.num_batch_per_iter, c.shared.steps_per_epoch) == (5, bursts * 5)
  assert c.to_dict()["shared"]["steps_per_epoch"] == bursts * 5  # what the workdir's config.json records
  # An explicit value of the derived field wins, whatever the order of the flags.
  for order in (["--config.shared.steps_per_epoch=7", "--config.wpl.num_batch_per_iter=5"],
                ["--config.wpl.num_batch_per_iter=5", "--config.shared.steps_per_epoch=7"]):
    c = _from_command_line(f"--config={path}", *order)
    assert (c.wpl.num_batch_per_iter, c.shared.steps_per_epoch) == (5, 7)
