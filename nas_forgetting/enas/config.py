"""The ENAS config groups, built in one place: every field declared and commented here, once.

`default_config(network, data, **groups)` returns the whole experiment config (the shape every ENAS config file
has: experiment, seed, mode, network, load_workdir, dag_path and the groups data, search, rnn, cnn, shared,
controller, train, wpl). Each group starts from its `default_*_config()` (the public PyTorch ENAS defaults for the
recurrent search; the micro-CNN fields default to the ENAS paper's micro search at reduced width) and takes
per-experiment overrides as a mapping, e.g. `default_config("micro_cnn", data, shared={"lr": 0.05})`. Unknown
fields are rejected, so a config file can only change what is declared here. `override(config, groups)` applies
further group overrides (size variants such as `quick`) with the same check.

The references' deviations from the papers are declared as options, off by default: `rnn.next_hidden='last_node'`,
`cnn.sep_conv='depthwise'`, `cnn.cell_output='last_node'`, `controller.derive_reference_logits=True`. The reference's
BatchNorm on the RNN cell output exists at the model level only (`models.enas_rnn.EnasRnn(batchnorm_output=True)`):
the shared training does not carry its running averages, so no config field offers it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import ml_collections

from nas_forgetting.errors import ConfigError
from nas_forgetting.wpl.state import default_wpl_config

# Variants that select a mode of nas_forgetting.enas.experiment (the config files accept them by name).
MODE_VARIANTS = ("derive", "evaluate", "train_scratch", "single", "ablation_activation", "ablation_node",
                 "rank_correlation")


def _set(config: ml_collections.ConfigDict, group: str, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Sets declared fields only; a mapping given for a nested group (e.g. data.image) updates it field by field."""
  for key, value in overrides.items():
    if key not in config:
      raise ConfigError(f"unknown {group} config field {key!r}; valid fields: {', '.join(sorted(config.keys()))}")
    if isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
      _set(config[key], f"{group}.{key}", value)
    else:
      config[key] = value
  return config


def default_data_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "ptb"  # data set name shown in summaries
  c.path = ""  # rnn: folder with train.txt (optional offline), valid.txt, test.txt; unused by micro_cnn
  c.reward_fraction = 0.1  # rnn without train.txt: share of valid.txt kept for controller rewards; micro_cnn: share
  #                          of the training images held out for controller rewards
  c.eval_max_tokens = 0  # rnn: evaluate on the first tokens of test.txt only (smoke runs); 0 = all
  return _set(c, "data", overrides)


def default_search_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "orig"  # rnn: orig | flexible | hardcoded | random (unused by micro_cnn)
  c.topology = "chain"  # rnn, hardcoded mode: chain | tree
  c.num_blocks = 12  # nodes of the cell (micro_cnn: per cell)
  c.min_nodes = 3  # rnn, flexible mode: fewest nodes the controller may pick
  return _set(c, "search", overrides)


def default_rnn_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()  # network='rnn' only
  c.hidden_size = 1000  # embedding = hidden size (tied decoder)
  c.dropout_embedding = 0.1  # embedding-row dropout (reference shared_dropoute)
  c.dropout_input = 0.65  # locked dropout on inputs (shared_dropouti)
  c.dropout_output = 0.4  # locked dropout on outputs (shared_dropout)
  c.weight_drop = 0.5  # DropConnect on the recurrent weights W_hh, W_hc (shared_wdrop)
  c.max_hidden_norm = 25.0  # hidden rows with a larger norm are rescaled to it (0 = off)
  c.init_range = 0.025  # shared weights start uniform in +-init_range
  c.next_hidden = "average"  # average (paper: mean of loose ends) | last_node (reference quirk)
  c.ar_alpha = 0.0  # activation-regularisation coefficient (0 = off)
  c.tar_beta = 0.0  # temporal activation-regularisation coefficient (0 = off)
  return _set(c, "rnn", overrides)


def default_cnn_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()  # network='micro_cnn' only
  c.features = 20  # width of the first module (doubles at each reduction)
  c.num_modules = 3  # modules, with a reduction cell between consecutive ones
  c.num_repeat_normal = 2  # normal cells per module
  c.sep_conv_stacks = 2  # ReLU-sepconv-BN stacks per separable-conv op
  c.sep_conv = "separable"  # separable (paper: depthwise -> pointwise) | depthwise (WPL reference: grouped conv
  #                           without pointwise; with sep_conv_stacks=1 the reference's op)
  c.cell_output = "loose_ends"  # loose_ends (paper: 1x1 conv of the concatenated loose ends) | last_node (WPL
  #                               reference: the last node alone)
  c.dropout = 0.0  # dropout before the classifier
  c.pad = 4  # random-crop padding
  c.flip = True  # random horizontal flips
  c.cutout = 0  # cutout square size (0 = off; 16 in the paper's final training)
  return _set(c, "cnn", overrides)


def default_shared_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.batch_size = 64  # rnn: columns of the training stream; micro_cnn: images per shared step
  c.bptt = 35  # rnn: truncated back-propagation length
  c.steps_per_epoch = 400  # shared steps per epoch, one new architecture per burst (0 = one pass over the data)
  c.lr = 20.0  # SGD learning rate
  c.decay = 0.96  # learning-rate decay per epoch after decay_after
  c.decay_after = 15  # epochs at full learning rate
  c.l2_reg = 1e-7  # L2 weight decay
  c.grad_clip = 0.25  # global-norm gradient clip (0 = off)
  c.momentum = 0.0  # SGD momentum (0 = plain SGD)
  c.nesterov = False  # Nesterov momentum
  return _set(c, "shared", overrides)


def default_controller_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.hidden_size = 100  # LSTM width
  c.temperature = 5.0  # logits are divided by it
  c.tanh_c = 2.5  # logits squashed to tanh_c * tanh(logits) (0 = off)
  c.derive_reference_logits = False  # True: derive samples from logits / temperature without the tanh_c squashing
  #                                    (the reference's derive mode); the search always squashes
  c.init_range = 0.1  # parameters start uniform in +-init_range
  c.lr = 3.5e-4  # Adam learning rate
  c.grad_clip = 0.0  # global-norm clip (0 = off)
  c.ema_decay = 0.95  # baseline EMA decay
  c.entropy_coeff = 1e-4  # entropy bonus
  c.entropy_mode = "reward"  # reward (bonus added to each decision's reward) | regularizer
  c.num_samples = 1  # architectures per controller step, each with its own reward
  c.steps_per_epoch = 2000  # controller steps per epoch
  c.reward_c = 80.0  # rnn: reward = reward_c / valid perplexity; micro_cnn: reward = reward_c * accuracy
  c.ppl_square = False  # rnn: reward = reward_c / perplexity^2
  c.reward_batch_size = 0  # micro_cnn: held-out images per reward batch (unused by rnn)
  return _set(c, "controller", overrides)


def default_train_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.max_epoch = 150  # epochs (search, or training of a fixed cell)
  c.log_every = 50  # steps between metric lines
  c.draw_every = 50  # controller steps between drawings of a sampled cell (0 = never)
  c.draw_backend = "auto"  # auto (graphviz dot when installed) | dot | matplotlib
  c.gif_max_frames = 50  # frames of networks.gif
  c.save_every = 4  # epochs between checkpoints
  c.max_to_keep = 4  # checkpoints kept
  c.derive_every = 4  # epochs between derive + evaluation during the search (0 = only at the end)
  c.derive_num_sample = 100  # candidates scored by derive
  c.rank_num_archs = 8  # rank_correlation: architectures sampled
  c.rank_epochs = 10  # rank_correlation: epochs each architecture is trained alone
  c.eval_batch_size = 10  # rnn: columns for whole-split evaluation (reference: 1, much slower); micro_cnn: images
  #                         per evaluation batch
  return _set(c, "train", overrides)


_GROUPS = {"search": default_search_config, "rnn": default_rnn_config, "cnn": default_cnn_config,
           "shared": default_shared_config, "controller": default_controller_config, "train": default_train_config}


def default_config(network: str, data: ml_collections.ConfigDict, **groups: Mapping[str, Any]
                   ) -> ml_collections.ConfigDict:
  """The whole ENAS config for `network` ('rnn' | 'micro_cnn') with the `data` group given; `groups` maps group
  names (search, rnn, cnn, shared, controller, train) to overrides of their defaults."""
  unknown = set(groups) - set(_GROUPS)
  if unknown:
    raise ConfigError(f"unknown ENAS config groups {sorted(unknown)}; expected some of {', '.join(_GROUPS)}")
  c = ml_collections.ConfigDict()
  c.experiment = "enas"  # experiment registry name
  c.seed = 12345  # seed of every random draw (weights, architectures, dropout, data order)
  c.mode = "train"  # train | derive | evaluate | train_scratch | single | ablation_activation | ablation_node |
  #                   rank_correlation (ablations: rnn only)
  c.network = network  # rnn (language model) | micro_cnn (image classifier)
  c.load_workdir = ""  # trained run read by derive/evaluate/train_scratch/ablation_*/rank_correlation ('' = this
  #                      workdir)
  c.dag_path = ""  # JSON DAG file (reference format; micro_cnn: {"normal": [...], "reduction": [...]}) for single;
  #                  overrides the derived cell in evaluate/ablation_*
  c.data = data
  for name, build in _GROUPS.items():
    c[name] = build(**groups.get(name, {}))
  # Weight plasticity loss (nas_forgetting.wpl.state.default_wpl_config documents every field). Off here
  # (enabled=False): plain ENAS, one architecture per shared step (num_batch_per_iter=1); the forgetting
  # measurement (measure_forgetting) works with WPL on or off. configs/wpl_enas_*.py switch it on.
  c.wpl = default_wpl_config(enabled=False, num_batch_per_iter=1)
  return c


def override(config: ml_collections.ConfigDict, groups: Mapping[str, Mapping[str, Any]]) -> ml_collections.ConfigDict:
  """Sets `groups[group][field]` in `config` (in place; returned); only declared groups and fields."""
  groups_of = {k for k, v in config.items() if isinstance(v, ml_collections.ConfigDict)}
  unknown = set(groups) - groups_of
  if unknown:
    raise ConfigError(f"unknown ENAS config groups {sorted(unknown)}; expected some of {', '.join(sorted(groups_of))}")
  for group, values in groups.items():
    _set(config[group], group, values)
  return config


def split_variants(arg: str | None) -> list[str]:
  """The comma-separated variants of a `--config file.py:variants` argument, stripped, empties dropped."""
  return [v.strip() for v in (arg or "").split(",") if v.strip()]


def wpl_config(base_get_config: Callable[[str], ml_collections.ConfigDict], arg: str | None, *,
               wpl: ml_collections.ConfigDict, reference: Mapping[str, Mapping[str, Any]], archs_per_epoch: int,
               base_sizes: Mapping[str, Mapping[str, Mapping[str, Any]]],
               sizes: Mapping[str, Mapping[str, Mapping[str, Any]]],
               size_archs_per_epoch: Mapping[str, int]) -> ml_collections.ConfigDict:
  """An ENAS config with the weight plasticity loss (configs/wpl_enas_*.py).

  The base config (`base_get_config` with every variant of `arg` except `nowpl` and the size variants) gets the WPL
  group `wpl` and the reference command line's other settings `reference`, and `archs_per_epoch` bursts of
  `wpl.num_batch_per_iter` shared steps per epoch. A size variant applies the base config's overrides of that name
  (`base_sizes`), then its WPL ones (`sizes`), with `size_archs_per_epoch[size]` bursts per epoch. `nowpl` switches
  WPL off and changes nothing else (the baseline of a with/without comparison).
  """
  variants = split_variants(arg)
  c = base_get_config(",".join(v for v in variants if v != "nowpl" and v not in sizes))
  c.wpl = wpl
  override(c, reference)
  c.shared.steps_per_epoch = archs_per_epoch * c.wpl.num_batch_per_iter
  for size in (v for v in variants if v in sizes):
    override(c, base_sizes[size])
    override(c, sizes[size])
    c.shared.steps_per_epoch = size_archs_per_epoch[size] * c.wpl.num_batch_per_iter
  if "nowpl" in variants:
    c.wpl.enabled = False
  return c
