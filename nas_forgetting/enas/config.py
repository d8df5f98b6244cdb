"""The ENAS config groups, built in one place: every field declared and commented here, once.

`default_config(network, data, **groups)` returns the whole experiment config (the shape every ENAS config file
has: experiment, seed, mode, network, load_workdir, dag_path and the groups data, search, rnn or cnn (the
network's own), shared, controller, train, wpl). Each group starts from its `default_*_config()` (the public
PyTorch ENAS defaults for the recurrent search; the micro-CNN fields default to the ENAS paper's micro search at
reduced width) and takes per-experiment overrides as a mapping, e.g.
`default_config("micro_cnn", data, shared={"lr": 0.05})`. Unknown fields are rejected, so a config file can only
change what is declared here; config files apply further group overrides (size variants such as `quick`) with
`nas_forgetting.config_schema.override`, which has the same check.
A config carries the model group of its network only: `rnn` for network='rnn', `cnn` for network='micro_cnn'.

The references' deviations from the papers are declared as options, off by default: `rnn.next_hidden='last_node'`,
`cnn.sep_conv='depthwise'`, `cnn.cell_output='last_node'`, `controller.derive_reference_logits=True`. The reference's
BatchNorm on the RNN cell output is not offered.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import ml_collections

from nas_forgetting.config_schema import override
from nas_forgetting.errors import ConfigError
from nas_forgetting.wpl import enas_fisher
from nas_forgetting.wpl.state import default_wpl_config
from nas_forgetting.wpl.state import validate_wpl_config

# Variants that select a mode of nas_forgetting.enas.experiment (the config files accept them by name).
MODE_VARIANTS = ("derive", "evaluate", "train_scratch", "single", "ablation_activation", "ablation_node",
                 "rank_correlation")


def default_data_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "ptb"  # data set name shown in summaries
  c.path = ""  # rnn: folder with train.txt (optional offline), valid.txt, test.txt; unused by micro_cnn
  c.reward_fraction = 0.1  # rnn without train.txt: share of valid.txt kept for controller rewards; micro_cnn: share
  #                          of the training images held out for controller rewards
  c.eval_max_tokens = 0  # rnn: evaluate on the first tokens of test.txt only (smoke runs); 0 = all
  return override(c, overrides, group="data")


def default_search_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "orig"  # rnn: orig | flexible | hardcoded | random (unused by micro_cnn)
  c.topology = "chain"  # rnn, hardcoded mode: chain | tree
  c.num_blocks = 12  # nodes of the cell (micro_cnn: per cell)
  c.min_nodes = 3  # rnn, flexible mode: fewest nodes the controller may pick
  return override(c, overrides, group="search")


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
  return override(c, overrides, group="rnn")


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
  return override(c, overrides, group="cnn")


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
  return override(c, overrides, group="shared")


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
  return override(c, overrides, group="controller")


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
  return override(c, overrides, group="train")


_GROUPS = {"search": default_search_config, "rnn": default_rnn_config, "cnn": default_cnn_config,
           "shared": default_shared_config, "controller": default_controller_config, "train": default_train_config}
NETWORK_GROUP = {"rnn": "rnn", "micro_cnn": "cnn"}  # the model group of each network (a config has its own only)


def default_config(network: str, data: ml_collections.ConfigDict, **groups: Mapping[str, Any]
                   ) -> ml_collections.ConfigDict:
  """The whole ENAS config for `network` ('rnn' | 'micro_cnn') with the `data` group given; `groups` maps group
  names (search, shared, controller, train, and the network's own model group: rnn or cnn) to overrides of their
  defaults. The other network's model group is not part of the config."""
  if network not in NETWORK_GROUP:
    raise ConfigError(f"network={network!r}; expected one of {', '.join(NETWORK_GROUP)}")
  names = [g for g in _GROUPS if g not in NETWORK_GROUP.values() or g == NETWORK_GROUP[network]]
  unknown = set(groups) - set(names)
  if unknown:
    raise ConfigError(f"unknown ENAS config groups {sorted(unknown)} for network={network!r}; expected some of "
                      f"{', '.join(names)}")
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
  for name in names:
    c[name] = _GROUPS[name](**groups.get(name, {}))
  # Weight plasticity loss (nas_forgetting.wpl.state.default_wpl_config documents every field). Off here
  # (enabled=False): plain ENAS, one architecture per shared step (num_batch_per_iter=1); the forgetting
  # measurement (measure_forgetting) works with WPL on or off. configs/wpl_enas_*.py switch it on.
  c.wpl = default_wpl_config(enabled=False, num_batch_per_iter=1)
  return c


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

  `shared.steps_per_epoch` is derived: a FieldReference to bursts per epoch x `wpl.num_batch_per_iter`, so changing
  `wpl.num_batch_per_iter` (e.g. `--config.wpl.num_batch_per_iter=5`) keeps the architectures per epoch and changes
  the shared steps; setting `shared.steps_per_epoch` itself gives that many steps, whatever the burst length.
  """
  variants = split_variants(arg)
  c = base_get_config(",".join(v for v in variants if v != "nowpl" and v not in sizes))
  c.wpl = wpl
  override(c, reference)
  bursts = archs_per_epoch
  for size in (v for v in variants if v in sizes):
    override(c, base_sizes[size])
    override(c, sizes[size])
    bursts = size_archs_per_epoch[size]
  c.shared.steps_per_epoch = c.wpl.get_ref("num_batch_per_iter") * bursts
  if "nowpl" in variants:
    c.wpl.enabled = False
  return c


# ----------------------------------------------------------------------------------------------------------------
# Validation: every field of a resolved ENAS config, checked before any work is done
# ----------------------------------------------------------------------------------------------------------------

MODES = ("train", "derive", "evaluate", "train_scratch", "single", "ablation_activation", "ablation_node",
         "rank_correlation")
NETWORKS = ("rnn", "micro_cnn")


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
  node = config
  for part in path.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, Mapping)) or part not in node:
      raise ConfigError(f"{path} is missing from the config; expected the fields of nas_forgetting.enas.config")
    node = node[part]
  return node


def _integer(config, path: str, minimum: int, maximum: int | None = None) -> int:
  value = _get(config, path)
  if isinstance(value, bool) or not isinstance(value, int):
    raise ConfigError(f"{path}={value!r}; expected an integer")
  if value < minimum or (maximum is not None and value > maximum):
    wanted = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
    raise ConfigError(f"{path}={value}; expected an integer {wanted}")
  return value


def _number(config, path: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False) -> float:
  """A finite real number in the interval given (open or closed at each end); NaN and infinities are refused."""
  value = _get(config, path)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ConfigError(f"{path}={value!r}; expected a number")
  parts = []
  if low is not None:
    parts.append(f"{'>' if low_open else '>='} {low:g}")
  if high is not None:
    parts.append(f"{'<' if high_open else '<='} {high:g}")
  wanted = "a finite number" + (" " + " and ".join(parts) if parts else "")
  if not math.isfinite(value):
    raise ConfigError(f"{path}={value}; expected {wanted}")
  if low is not None and (value < low or (low_open and value == low)):
    raise ConfigError(f"{path}={value:g}; expected {wanted}")
  if high is not None and (value > high or (high_open and value == high)):
    raise ConfigError(f"{path}={value:g}; expected {wanted}")
  return float(value)


def _choice(config, path: str, choices: tuple) -> Any:
  value = _get(config, path)
  if value not in choices:
    raise ConfigError(f"{path}={value!r}; expected one of {', '.join(map(str, choices))}")
  return value


def _boolean(config, path: str) -> bool:
  value = _get(config, path)
  if not isinstance(value, bool):
    raise ConfigError(f"{path}={value!r}; expected True or False")
  return value


def _text(config, path: str, *, non_empty: bool = False, why: str = "") -> str:
  value = _get(config, path)
  if not isinstance(value, str):
    raise ConfigError(f"{path}={value!r}; expected a string")
  if non_empty and not value.strip():
    raise ConfigError(f"{path} is empty; expected {why or 'a non-empty string'}")
  return value


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field of a resolved ENAS config (ranges, signs, finiteness, choices, non-empty paths) and raises
  ConfigError naming the first bad field, e.g. "shared.bptt=0; expected an integer >= 1". Runs no computation and
  reads no file, so it can be called before the workdir exists."""
  c = config
  if _get(c, "experiment") != "enas":
    raise ConfigError(f"experiment={c.experiment!r}; this is the ENAS experiment ('enas')")
  _integer(c, "seed", 0, 2**31 - 1)
  mode = _choice(c, "mode", MODES)
  network = _choice(c, "network", NETWORKS)
  rnn = network == "rnn"
  _text(c, "load_workdir")
  dag_path = _text(c, "dag_path")
  if mode == "single" and not dag_path.strip():
    raise ConfigError("dag_path is empty; mode 'single' needs a JSON DAG file")
  if mode.startswith("ablation_") and not rnn:
    raise ConfigError(f"mode={mode!r} applies to the recurrent cell (network='rnn'), not to network={network!r}")

  # data
  _text(c, "data.name", non_empty=True, why="the data set's name")
  if rnn:
    _text(c, "data.path", non_empty=True, why="the folder of the text corpus (train.txt, valid.txt, test.txt)")
    _integer(c, "data.eval_max_tokens", 0)
  elif "image" not in c.data:
    raise ConfigError("data.image is missing; network 'micro_cnn' needs an image data group "
                      "(nas_forgetting.data.datasets)")
  _number(c, "data.reward_fraction", low=0.0, high=1.0, low_open=True, high_open=True)

  # search space
  blocks = _integer(c, "search.num_blocks", 1)
  if rnn:
    search_mode = _choice(c, "search.mode", ("orig", "flexible", "hardcoded", "random"))
    _choice(c, "search.topology", ("chain", "tree"))
    if search_mode == "flexible":
      _integer(c, "search.min_nodes", 1, blocks)
    else:
      _integer(c, "search.min_nodes", 1)

  # models
  if rnn:
    _integer(c, "rnn.hidden_size", 1)
    for name in ("dropout_embedding", "dropout_input", "dropout_output", "weight_drop"):
      _number(c, f"rnn.{name}", low=0.0, high=1.0, high_open=True)
    _number(c, "rnn.max_hidden_norm", low=0.0)
    _number(c, "rnn.init_range", low=0.0, low_open=True)
    _choice(c, "rnn.next_hidden", ("average", "last_node"))
    _number(c, "rnn.ar_alpha", low=0.0)
    _number(c, "rnn.tar_beta", low=0.0)
  else:
    _integer(c, "cnn.features", 1)
    _integer(c, "cnn.num_modules", 1)
    _integer(c, "cnn.num_repeat_normal", 1)
    _integer(c, "cnn.sep_conv_stacks", 1)
    _choice(c, "cnn.sep_conv", ("separable", "depthwise"))
    _choice(c, "cnn.cell_output", ("loose_ends", "last_node"))
    _number(c, "cnn.dropout", low=0.0, high=1.0, high_open=True)
    _integer(c, "cnn.pad", 0)
    _boolean(c, "cnn.flip")
    _integer(c, "cnn.cutout", 0)

  # shared weights
  _integer(c, "shared.batch_size", 1)
  if rnn:
    _integer(c, "shared.bptt", 1)
  _integer(c, "shared.steps_per_epoch", 0)
  _number(c, "shared.lr", low=0.0, low_open=True)
  _number(c, "shared.decay", low=0.0, low_open=True)
  _integer(c, "shared.decay_after", 0)
  _number(c, "shared.l2_reg", low=0.0)
  _number(c, "shared.grad_clip", low=0.0)
  _number(c, "shared.momentum", low=0.0, high=1.0, high_open=True)
  _boolean(c, "shared.nesterov")

  # controller
  _integer(c, "controller.hidden_size", 1)
  _number(c, "controller.temperature", low=0.0, low_open=True)
  _number(c, "controller.tanh_c", low=0.0)
  _boolean(c, "controller.derive_reference_logits")
  _number(c, "controller.init_range", low=0.0, low_open=True)
  _number(c, "controller.lr", low=0.0, low_open=True)
  _number(c, "controller.grad_clip", low=0.0)
  _number(c, "controller.ema_decay", low=0.0, high=1.0)
  _number(c, "controller.entropy_coeff", low=0.0)
  _choice(c, "controller.entropy_mode", ("reward", "regularizer"))
  _integer(c, "controller.num_samples", 1)
  _integer(c, "controller.steps_per_epoch", 0)
  _number(c, "controller.reward_c", low=0.0, low_open=True)
  _boolean(c, "controller.ppl_square")
  _integer(c, "controller.reward_batch_size", 0 if rnn else 1)

  # schedule and outputs
  _integer(c, "train.max_epoch", 1)
  _integer(c, "train.log_every", 1)
  _integer(c, "train.draw_every", 0)
  _choice(c, "train.draw_backend", ("auto", "dot", "matplotlib"))
  _integer(c, "train.gif_max_frames", 1)
  _integer(c, "train.save_every", 1)
  _integer(c, "train.max_to_keep", 1)
  _integer(c, "train.derive_every", 0)
  _integer(c, "train.derive_num_sample", 1)
  _integer(c, "train.rank_num_archs", 2)
  _integer(c, "train.rank_epochs", 1)
  _integer(c, "train.eval_batch_size", 1)

  # weight plasticity loss

  validate_wpl_config(c.wpl)
  if c.wpl.enabled and c.wpl.estimator not in enas_fisher.ENAS_ESTIMATORS:
    raise ConfigError(f"wpl.estimator={c.wpl.estimator!r} is not available for the ENAS supernets; expected one of "
                      f"{', '.join(enas_fisher.ENAS_ESTIMATORS)}")
