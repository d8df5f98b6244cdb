"""Every ENAS config and variant loads, declares the same fields, and rejects unknown variants."""

import pytest

from configs import enas_cifar10, enas_ptb
from nas_forgetting.enas import experiment


def _keys(c, prefix=""):
  out = set()
  for k, v in c.items():
    out |= _keys(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k}
  return out


@pytest.mark.parametrize("module,variants", [
    (enas_ptb, ["", "quick", "quick,wikitext2", "flexible", "chain", "tree", "random", "derive", "evaluate",
                "train_scratch", "single", "ablation_activation", "ablation_node", "rank_correlation"]),
    (enas_cifar10, ["", "quick", "derive", "evaluate", "train_scratch", "single", "rank_correlation"])])
def test_configs_load(module, variants):
  base = _keys(module.get_config())
  for v in variants:
    c = module.get_config(v)
    assert c.experiment == "enas" and isinstance(c.seed, int)
    assert c.mode in experiment.MODES and c.network in experiment.NETWORKS
    assert _keys(c) == base
  with pytest.raises(ValueError, match="unknown variant 'nope'"):
    module.get_config("quick,nope")


def test_rnn_and_cnn_configs_share_their_shape():
  rnn, cnn = _keys(enas_ptb.get_config()), _keys(enas_cifar10.get_config())
  assert rnn - cnn == set() and {k for k in cnn - rnn if not k.startswith("data.image.")} == set()
