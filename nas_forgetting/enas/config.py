"""The ENAS config groups, built in one place: every field declared and commented here, once.

`default_config(network, data, **groups)` returns the whole experiment config (the shape every ENAS config file
has: experiment, seed, mode, network, load_workdir, dag_path and the groups data, search, rnn or cnn (the
network's own), shared, controller, train, multi_model, wpl). Each group starts from its `default_*_config()` (the
public PyTorch ENAS defaults for the recurrent search; the micro-CNN fields default to the ENAS paper's micro search at
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

from typing import Any, Callable, Mapping

import ml_collections

from nas_forgetting import config_schema as cc
from nas_forgetting.errors import ConfigError
from nas_forgetting.wpl import enas_fisher
from nas_forgetting.wpl.state import default_wpl_config
from nas_forgetting.wpl.state import validate_wpl_config

# Variants that select a mode of nas_forgetting.enas.experiment (the config files accept them by name).
MODE_VARIANTS = ("derive", "evaluate", "train_scratch", "single", "ablation_activation", "ablation_node",
                 "rank_correlation", "multi_model")


def default_data_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "ptb"  # data set name shown in summaries
  c.path = ""  # rnn: folder with train.txt (optional offline), valid.txt, test.txt; unused by micro_cnn
  c.reward_fraction = 0.1  # rnn without train.txt: share of valid.txt kept for controller rewards; micro_cnn: share
  #                          of the training images held out for controller rewards
  c.eval_max_tokens = 0  # rnn: evaluate on the first tokens of test.txt only (smoke runs); 0 = all
  return cc.override(c, overrides, group="data")


def default_search_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "orig"  # rnn: orig | flexible | hardcoded | random (unused by micro_cnn)
  c.topology = "chain"  # rnn, hardcoded mode: chain | tree
  c.num_blocks = 12  # nodes of the cell (micro_cnn: per cell)
  c.min_nodes = 3  # rnn, flexible mode: fewest nodes the controller may pick
  return cc.override(c, overrides, group="search")


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
  return cc.override(c, overrides, group="rnn")


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
  return cc.override(c, overrides, group="cnn")


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
  return cc.override(c, overrides, group="shared")


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
  return cc.override(c, overrides, group="controller")


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
  return cc.override(c, overrides, group="train")


def default_multi_model_config(**overrides: Any) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()  # mode 'multi_model' only (nas_forgetting.enas.multi_model)
  c.num_archs = 4  # architectures sampled once from the seed, trained round-robin in bursts of wpl.num_batch_per_iter
  c.max_rounds = 20  # rounds (one burst per architecture each)
  c.patience = 0  # > 0 ("strict"): stop when the mean end-of-round metric has not improved for this many rounds;
  #                 0 ("loose"): run max_rounds rounds
  c.min_rounds = 0  # strict: the patience criterion is checked from this many rounds on (a penalty that slows the
  #                   first rounds' progress must not count as convergence before the loose budget has been run)
  c.eval_width = 1  # the fixed validation batch every score uses is this many reward batches wide (RNN: the reward
  #                  split's first window over eval_width x shared.batch_size columns; CNN: the first
  #                  eval_width x controller.reward_batch_size held-out images)
  c.stand_alone = False  # also train each architecture alone (fresh shared weights, no WPL, the same bursts and
  #                        learning rates it got in the round-robin) and report Kendall's tau between its ranking
  #                        with the shared weights and alone (doubles the run's training; may be switched on for a
  #                        finished run, whose relaunch then adds only this)
  return cc.override(c, overrides, group="multi_model")


_GROUPS = {"search": default_search_config, "rnn": default_rnn_config, "cnn": default_cnn_config,
           "shared": default_shared_config, "controller": default_controller_config, "train": default_train_config,
           "multi_model": default_multi_model_config}
NETWORK_GROUP = {"rnn": "rnn", "micro_cnn": "cnn"}  # the model group of each network (a config has its own only)


def default_config(network: str, data: ml_collections.ConfigDict, **groups: Mapping[str, Any]
                   ) -> ml_collections.ConfigDict:
  """The whole ENAS config for `network` ('rnn' | 'micro_cnn') with the `data` group given; `groups` maps group
  names (search, shared, controller, train, multi_model, and the network's own model group: rnn or cnn) to
  overrides of their defaults. The other network's model group is not part of the config."""
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
  #                   rank_correlation | multi_model (ablations: rnn only)
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
  cc.override(c, reference)
  bursts = archs_per_epoch
  for size in (v for v in variants if v in sizes):
    cc.override(c, base_sizes[size])
    cc.override(c, sizes[size])
    bursts = size_archs_per_epoch[size]
  c.shared.steps_per_epoch = c.wpl.get_ref("num_batch_per_iter") * bursts
  if "nowpl" in variants:
    c.wpl.enabled = False
  return c


# ----------------------------------------------------------------------------------------------------------------
# Validation: every field of a resolved ENAS config, checked before any work is done
# ----------------------------------------------------------------------------------------------------------------

MODES = ("train", "derive", "evaluate", "train_scratch", "single", "ablation_activation", "ablation_node",
         "rank_correlation", "multi_model")
NETWORKS = ("rnn", "micro_cnn")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field of a resolved ENAS config (ranges, signs, finiteness, choices, non-empty paths) and raises
  ConfigError naming the first bad field, e.g. "shared.bptt=0; expected an integer >= 1" (the checks of
  nas_forgetting.config_schema). Runs no computation and reads no file, so it can be called before the workdir
  exists."""
  c = config
  if cc.get(c, "experiment") != "enas":
    raise ConfigError(f"experiment={c.experiment!r}; this is the ENAS experiment ('enas')")
  cc.integer(c, "seed", minimum=0, maximum=2**31 - 1)
  mode = cc.choice(c, "mode", MODES)
  network = cc.choice(c, "network", NETWORKS)
  rnn = network == "rnn"
  cc.text(c, "load_workdir")
  dag_path = cc.text(c, "dag_path")
  if mode == "single" and not dag_path.strip():
    raise ConfigError("dag_path is empty; mode 'single' needs a JSON DAG file")
  if mode.startswith("ablation_") and not rnn:
    raise ConfigError(f"mode={mode!r} applies to the recurrent cell (network='rnn'), not to network={network!r}")

  # data
  cc.text(c, "data.name", non_empty="the data set's name")
  if rnn:
    cc.text(c, "data.path", non_empty="the folder of the text corpus (train.txt, valid.txt, test.txt)")
    cc.integer(c, "data.eval_max_tokens", minimum=0)
  elif "image" not in c.data:
    raise ConfigError("data.image is missing; network 'micro_cnn' needs an image data group "
                      "(nas_forgetting.data.datasets)")
  cc.number(c, "data.reward_fraction", above=0.0, below=1.0)

  # search space
  blocks = cc.integer(c, "search.num_blocks", minimum=1)
  if rnn:
    search_mode = cc.choice(c, "search.mode", ("orig", "flexible", "hardcoded", "random"))
    cc.choice(c, "search.topology", ("chain", "tree"))
    if search_mode == "flexible":
      cc.integer(c, "search.min_nodes", minimum=1, maximum=blocks)
    else:
      cc.integer(c, "search.min_nodes", minimum=1)

  # models
  if rnn:
    cc.integer(c, "rnn.hidden_size", minimum=1)
    for name in ("dropout_embedding", "dropout_input", "dropout_output", "weight_drop"):
      cc.number(c, f"rnn.{name}", minimum=0.0, below=1.0)
    cc.number(c, "rnn.max_hidden_norm", minimum=0.0)
    cc.number(c, "rnn.init_range", above=0.0)
    cc.choice(c, "rnn.next_hidden", ("average", "last_node"))
    cc.number(c, "rnn.ar_alpha", minimum=0.0)
    cc.number(c, "rnn.tar_beta", minimum=0.0)
  else:
    cc.integer(c, "cnn.features", minimum=1)
    cc.integer(c, "cnn.num_modules", minimum=1)
    cc.integer(c, "cnn.num_repeat_normal", minimum=1)
    cc.integer(c, "cnn.sep_conv_stacks", minimum=1)
    cc.choice(c, "cnn.sep_conv", ("separable", "depthwise"))
    cc.choice(c, "cnn.cell_output", ("loose_ends", "last_node"))
    cc.number(c, "cnn.dropout", minimum=0.0, below=1.0)
    cc.integer(c, "cnn.pad", minimum=0)
    cc.boolean(c, "cnn.flip")
    cc.integer(c, "cnn.cutout", minimum=0)

  # shared weights
  cc.integer(c, "shared.batch_size", minimum=1)
  if rnn:
    cc.integer(c, "shared.bptt", minimum=1)
  cc.integer(c, "shared.steps_per_epoch", minimum=0)
  cc.number(c, "shared.lr", above=0.0)
  cc.number(c, "shared.decay", above=0.0)
  cc.integer(c, "shared.decay_after", minimum=0)
  cc.number(c, "shared.l2_reg", minimum=0.0)
  cc.number(c, "shared.grad_clip", minimum=0.0)
  cc.number(c, "shared.momentum", minimum=0.0, below=1.0)
  cc.boolean(c, "shared.nesterov")

  # controller
  cc.integer(c, "controller.hidden_size", minimum=1)
  cc.number(c, "controller.temperature", above=0.0)
  cc.number(c, "controller.tanh_c", minimum=0.0)
  cc.boolean(c, "controller.derive_reference_logits")
  cc.number(c, "controller.init_range", above=0.0)
  cc.number(c, "controller.lr", above=0.0)
  cc.number(c, "controller.grad_clip", minimum=0.0)
  cc.number(c, "controller.ema_decay", minimum=0.0, maximum=1.0)
  cc.number(c, "controller.entropy_coeff", minimum=0.0)
  cc.choice(c, "controller.entropy_mode", ("reward", "regularizer"))
  cc.integer(c, "controller.num_samples", minimum=1)
  cc.integer(c, "controller.steps_per_epoch", minimum=0)
  cc.number(c, "controller.reward_c", above=0.0)
  cc.boolean(c, "controller.ppl_square")
  cc.integer(c, "controller.reward_batch_size", minimum=0 if rnn else 1)

  # schedule and outputs
  cc.integer(c, "train.max_epoch", minimum=1)
  cc.integer(c, "train.log_every", minimum=1)
  cc.integer(c, "train.draw_every", minimum=0)
  cc.choice(c, "train.draw_backend", ("auto", "dot", "matplotlib"))
  cc.integer(c, "train.gif_max_frames", minimum=1)
  cc.integer(c, "train.save_every", minimum=1)
  cc.integer(c, "train.max_to_keep", minimum=1)
  cc.integer(c, "train.derive_every", minimum=0)
  cc.integer(c, "train.derive_num_sample", minimum=1)
  cc.integer(c, "train.rank_num_archs", minimum=2)
  cc.integer(c, "train.rank_epochs", minimum=1)
  cc.integer(c, "train.eval_batch_size", minimum=1)
  cc.integer(c, "multi_model.num_archs", minimum=2)
  cc.integer(c, "multi_model.max_rounds", minimum=1)
  cc.integer(c, "multi_model.patience", minimum=0)
  cc.integer(c, "multi_model.min_rounds", minimum=0)
  cc.integer(c, "multi_model.eval_width", minimum=1)
  cc.boolean(c, "multi_model.stand_alone")

  # weight plasticity loss

  validate_wpl_config(c.wpl)
  if c.network != "rnn" and c.wpl.proximal:
    raise ConfigError("wpl.proximal=True is available for the RNN supernet only")
  if c.network != "rnn" and c.wpl.monitor != "edges":
    raise ConfigError(f"wpl.monitor={c.wpl.monitor!r} is available for the RNN supernet only; the micro-CNN's WPL "
                      "monitors its edge ops ('edges')")
  if c.wpl.enabled and c.wpl.estimator not in enas_fisher.ENAS_ESTIMATORS:
    raise ConfigError(f"wpl.estimator={c.wpl.estimator!r} is not available for the ENAS supernets; expected one of "
                      f"{', '.join(enas_fisher.ENAS_ESTIMATORS)}")
