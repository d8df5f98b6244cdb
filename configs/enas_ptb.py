"""ENAS recurrent-cell search on Penn Treebank (defaults: the public PyTorch ENAS, paper-size).

Command (paper-size search, then derive):
  python launch.py --config configs/enas_ptb.py --workdir /tmp/enas_ptb
Quick run (tiny sizes, about 2 minutes on 2 CPU cores):
  python launch.py --config configs/enas_ptb.py:quick --workdir /tmp/enas_ptb_quick
Variants, combinable with commas (e.g. `configs/enas_ptb.py:quick,flexible`):
  quick                tiny model and few steps (smoke runs, CI)
  wikitext2            WikiText-2 instead of PTB
  flexible | chain | tree | random   search-space modes (controller picks the node count; fixed chain/tree
                       topology with searched activations; uniformly random architectures, no controller)
  derive | evaluate | train_scratch | single | ablation_activation | ablation_node | rank_correlation
                       the other modes (set --config.load_workdir to the trained run, --config.dag_path to a
                       JSON DAG for single)
Data: ../shared/data/ptb holds only valid.txt and test.txt. Offline, the shared weights train on the first 90% of
valid.txt, the controller reward uses the remaining 10%, and evaluation is on test.txt; summary.json and every
plot title say so. Expected: the quick run finishes with a derived cell and a test perplexity in the hundreds
(tiny model, 74k training tokens); the paper reports 55.8 test perplexity (56.3 after the authors' evaluation fix)
with train.txt and the final retraining, i.e. not comparable to offline runs. A paper-size epoch (400 shared +
2000 controller steps) takes minutes on a GPU and is impractical on a CPU.
"""

import ml_collections

from nas_forgetting.paths import shared_data
from nas_forgetting.wpl.state import default_wpl_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "enas"  # experiment registry name
  c.seed = 12345  # seed of every random draw (weights, architectures, dropout)
  c.mode = "train"  # train | derive | evaluate | train_scratch | single | ablation_activation | ablation_node | rank_correlation
  c.network = "rnn"  # rnn (language model) | micro_cnn (image classifier)
  c.load_workdir = ""  # trained run read by derive/evaluate/train_scratch/ablation_* ('' = this workdir)
  c.dag_path = ""  # JSON DAG file (reference format) for single; overrides the derived cell in evaluate/ablation_*

  c.data = ml_collections.ConfigDict()
  c.data.name = "ptb"  # data set name shown in summaries
  c.data.path = shared_data("ptb")  # folder with train.txt (optional offline), valid.txt, test.txt
  c.data.reward_fraction = 0.1  # without train.txt: share of valid.txt kept for controller rewards
  c.data.eval_max_tokens = 0  # evaluate on the first tokens of test.txt only (smoke runs); 0 = all

  c.search = ml_collections.ConfigDict()
  c.search.mode = "orig"  # orig | flexible | hardcoded | random
  c.search.topology = "chain"  # hardcoded mode: chain | tree
  c.search.num_blocks = 12  # nodes of the cell
  c.search.min_nodes = 3  # flexible mode: fewest nodes the controller may pick

  c.rnn = ml_collections.ConfigDict()
  c.rnn.hidden_size = 1000  # embedding = hidden size (tied decoder)
  c.rnn.dropout_embedding = 0.1  # embedding-row dropout (reference shared_dropoute)
  c.rnn.dropout_input = 0.65  # locked dropout on inputs (shared_dropouti)
  c.rnn.dropout_output = 0.4  # locked dropout on outputs (shared_dropout)
  c.rnn.weight_drop = 0.5  # DropConnect on the recurrent weights W_hh, W_hc (shared_wdrop)
  c.rnn.max_hidden_norm = 25.0  # hidden rows with a larger norm are rescaled to it (0 = off)
  c.rnn.init_range = 0.025  # shared weights start uniform in +-init_range
  c.rnn.next_hidden = "average"  # average (paper: mean of loose ends) | last_node (reference quirk)
  c.rnn.ar_alpha = 0.0  # activation-regularisation coefficient (0 = off)
  c.rnn.tar_beta = 0.0  # temporal activation-regularisation coefficient (0 = off)

  c.cnn = ml_collections.ConfigDict()  # unused by network='rnn'; declared so every ENAS config has one shape
  c.cnn.features = 20  # width of the first module
  c.cnn.num_modules = 3  # modules (a reduction cell between consecutive ones)
  c.cnn.num_repeat_normal = 2  # normal cells per module
  c.cnn.sep_conv_stacks = 2  # ReLU-sepconv-BN stacks per separable-conv op
  c.cnn.dropout = 0.0  # dropout before the classifier
  c.cnn.pad = 4  # random-crop padding
  c.cnn.flip = True  # random horizontal flips
  c.cnn.cutout = 0  # cutout square size (0 = off)

  c.shared = ml_collections.ConfigDict()
  c.shared.batch_size = 64  # columns of the training stream
  c.shared.bptt = 35  # truncated back-propagation length
  c.shared.steps_per_epoch = 400  # shared steps per epoch, one new architecture each (0 = one pass over the data)
  c.shared.lr = 20.0  # SGD learning rate
  c.shared.decay = 0.96  # learning-rate decay per epoch after decay_after
  c.shared.decay_after = 15  # epochs at full learning rate
  c.shared.l2_reg = 1e-7  # L2 weight decay
  c.shared.grad_clip = 0.25  # global-norm gradient clip (0 = off)
  c.shared.momentum = 0.0  # SGD momentum (0 = plain SGD)
  c.shared.nesterov = False  # Nesterov momentum

  c.controller = ml_collections.ConfigDict()
  c.controller.hidden_size = 100  # LSTM width
  c.controller.temperature = 5.0  # logits are divided by it
  c.controller.tanh_c = 2.5  # logits squashed to tanh_c * tanh(logits) (0 = off)
  c.controller.init_range = 0.1  # parameters start uniform in +-init_range
  c.controller.lr = 3.5e-4  # Adam learning rate
  c.controller.grad_clip = 0.0  # global-norm clip (0 = off)
  c.controller.ema_decay = 0.95  # baseline EMA decay
  c.controller.entropy_coeff = 1e-4  # entropy bonus
  c.controller.entropy_mode = "reward"  # reward (bonus added to each decision's reward) | regularizer
  c.controller.num_samples = 1  # architectures per controller step, each with its own reward
  c.controller.steps_per_epoch = 2000  # controller steps per epoch
  c.controller.reward_c = 80.0  # reward = reward_c / valid perplexity
  c.controller.ppl_square = False  # reward = reward_c / perplexity^2
  c.controller.reward_batch_size = 0  # micro_cnn only: images per reward batch (unused by rnn)

  c.train = ml_collections.ConfigDict()
  c.train.max_epoch = 150  # epochs (search, or training of a fixed cell)
  c.train.log_every = 50  # steps between metric lines
  c.train.draw_every = 50  # controller steps between drawings of a sampled cell (0 = never)
  c.train.draw_backend = "auto"  # auto (graphviz dot when installed) | dot | matplotlib
  c.train.gif_max_frames = 50  # frames of networks.gif
  c.train.save_every = 4  # epochs between checkpoints
  c.train.max_to_keep = 4  # checkpoints kept
  c.train.derive_every = 4  # epochs between derive + evaluation during the search (0 = only at the end)
  c.train.derive_num_sample = 100  # candidates scored by derive
  c.train.rank_num_archs = 8  # rank_correlation: architectures sampled
  c.train.rank_epochs = 10  # rank_correlation: epochs each architecture is trained alone
  c.train.eval_batch_size = 10  # columns for whole-split evaluation (reference: 1, much slower)

  # Weight plasticity loss (nas_forgetting.wpl.state.default_wpl_config documents every field). Off here
  # (enabled=False): plain ENAS, one architecture per shared step (num_batch_per_iter=1); the forgetting
  # measurement (measure_forgetting) works with WPL on or off. configs/wpl_enas_*.py switch it on.
  c.wpl = default_wpl_config(enabled=False, num_batch_per_iter=1)

  for variant in (arg or "").split(","):
    variant = variant.strip()
    if not variant:
      continue
    if variant == "quick":
      c.search.num_blocks = 4
      c.rnn.hidden_size = 32
      c.shared.lr = 5.0  # the clip (0.25) x lr bounds each update; 20 is too large for a 32-wide model
      c.shared.batch_size = 16
      c.shared.bptt = 20
      c.shared.steps_per_epoch = 40
      c.controller.hidden_size = 32
      c.controller.steps_per_epoch = 20
      c.train.max_epoch = 2
      c.train.log_every = 10
      c.train.draw_every = 10
      c.train.save_every = 1
      c.train.derive_every = 0
      c.train.rank_num_archs = 3
      c.train.rank_epochs = 1
      c.train.derive_num_sample = 8
      c.train.eval_batch_size = 16
    elif variant == "wikitext2":
      c.data.name = "wikitext2"
      c.data.path = shared_data("wikitext2")
    elif variant in ("flexible", "random"):
      c.search.mode = variant
    elif variant in ("chain", "tree"):
      c.search.mode = "hardcoded"
      c.search.topology = variant
    elif variant in ("derive", "evaluate", "train_scratch", "single", "ablation_activation", "ablation_node",
                     "rank_correlation"):
      c.mode = variant
    else:
      raise ValueError(f"unknown variant {variant!r} of configs/enas_ptb.py")
  return c
