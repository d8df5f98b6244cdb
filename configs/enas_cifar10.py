"""ENAS micro-CNN search on CIFAR-10 (normal + reduction cells, the ENAS paper's five operations).

Command (paper-like search):
  python launch.py --config configs/enas_cifar10.py --workdir /tmp/enas_cifar10
Quick run (tiny network on 2,000 JPEG images, about 3 minutes on 2 CPU cores):
  python launch.py --config configs/enas_cifar10.py:quick --workdir /tmp/enas_cifar10_quick
Variants, combinable with commas: quick; derive | evaluate | train_scratch | single | rank_correlation (modes; set
--config.load_workdir / --config.dag_path).
Data: ../shared/data/cifar10 (JPEG image folders: 20,000 training and 10,000 test images). The controller reward
uses 10% of the training images held out (never the test set, unlike the WPL reference). Defaults follow the
ENAS micro search (5 blocks, 20 filters, 150 epochs, SGD with Nesterov momentum, reward = accuracy) with the
reference's controller settings. Expected: the paper reports 2.89% test error with cutout after retraining the
derived cell for 630 epochs on the full training set; offline, reduced-scale runs are not comparable.
"""

import ml_collections

from nas_forgetting.data.datasets import default_data_config
from nas_forgetting.paths import shared_data
from nas_forgetting.wpl.state import default_wpl_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "enas"  # experiment registry name
  c.seed = 12345  # seed of every random draw
  c.mode = "train"  # train | derive | evaluate | train_scratch | single | rank_correlation
  c.network = "micro_cnn"  # rnn | micro_cnn
  c.load_workdir = ""  # trained run read by derive/evaluate/train_scratch ('' = this workdir)
  c.dag_path = ""  # JSON cell file ({"normal": [...], "reduction": [...]}) for single / evaluate

  c.data = ml_collections.ConfigDict()
  c.data.name = "cifar10"  # data set name shown in summaries
  c.data.path = ""  # unused by micro_cnn (text corpora only)
  c.data.reward_fraction = 0.1  # share of the training images held out for controller rewards
  c.data.eval_max_tokens = 0  # unused by micro_cnn (text corpora only)
  # Passed to nas_forgetting.data.datasets.load_dataset; its fields are declared (and commented) there.
  c.data.image = default_data_config(source="image_folder", name="cifar10", path=shared_data("cifar10"))

  c.search = ml_collections.ConfigDict()
  c.search.mode = "orig"  # unused by micro_cnn (the RNN space's modes)
  c.search.topology = "chain"  # unused by micro_cnn
  c.search.num_blocks = 5  # nodes per cell
  c.search.min_nodes = 3  # unused by micro_cnn

  c.rnn = ml_collections.ConfigDict()  # unused by micro_cnn; declared so every ENAS config has one shape
  c.rnn.hidden_size = 1000  # see configs/enas_ptb.py
  c.rnn.dropout_embedding = 0.1  # see configs/enas_ptb.py
  c.rnn.dropout_input = 0.65  # see configs/enas_ptb.py
  c.rnn.dropout_output = 0.4  # see configs/enas_ptb.py
  c.rnn.weight_drop = 0.5  # see configs/enas_ptb.py
  c.rnn.max_hidden_norm = 25.0  # see configs/enas_ptb.py
  c.rnn.init_range = 0.025  # see configs/enas_ptb.py
  c.rnn.next_hidden = "average"  # see configs/enas_ptb.py
  c.rnn.ar_alpha = 0.0  # see configs/enas_ptb.py
  c.rnn.tar_beta = 0.0  # see configs/enas_ptb.py

  c.cnn = ml_collections.ConfigDict()
  c.cnn.features = 20  # width of the first module (doubles at each reduction)
  c.cnn.num_modules = 3  # modules, with a reduction cell between consecutive ones
  c.cnn.num_repeat_normal = 2  # normal cells per module
  c.cnn.sep_conv_stacks = 2  # ReLU-sepconv-BN stacks per separable-conv op
  c.cnn.dropout = 0.1  # dropout before the classifier
  c.cnn.pad = 4  # random-crop padding
  c.cnn.flip = True  # random horizontal flips
  c.cnn.cutout = 0  # cutout square size (0 = off; 16 in the paper's final training)

  c.shared = ml_collections.ConfigDict()
  c.shared.batch_size = 128  # images per shared step
  c.shared.bptt = 35  # unused by micro_cnn
  c.shared.steps_per_epoch = 0  # shared steps per epoch (0 = one pass over the training images)
  c.shared.lr = 0.05  # SGD learning rate
  c.shared.decay = 0.97  # learning-rate decay per epoch after decay_after
  c.shared.decay_after = 10  # epochs at full learning rate
  c.shared.l2_reg = 1e-4  # L2 weight decay
  c.shared.grad_clip = 5.0  # global-norm gradient clip (0 = off)
  c.shared.momentum = 0.9  # SGD momentum
  c.shared.nesterov = True  # Nesterov momentum

  c.controller = ml_collections.ConfigDict()
  c.controller.hidden_size = 100  # LSTM width
  c.controller.temperature = 5.0  # logits are divided by it
  c.controller.tanh_c = 2.5  # logits squashed to tanh_c * tanh(logits) (0 = off)
  c.controller.init_range = 0.1  # parameters start uniform in +-init_range
  c.controller.lr = 3.5e-3  # Adam learning rate
  c.controller.grad_clip = 0.0  # global-norm clip (0 = off)
  c.controller.ema_decay = 0.99  # baseline EMA decay
  c.controller.entropy_coeff = 1e-4  # entropy bonus
  c.controller.entropy_mode = "reward"  # reward | regularizer
  c.controller.num_samples = 5  # architectures per controller step, each with its own reward
  c.controller.steps_per_epoch = 30  # controller steps per epoch
  c.controller.reward_c = 1.0  # reward = reward_c * validation accuracy
  c.controller.ppl_square = False  # unused by micro_cnn
  c.controller.reward_batch_size = 256  # held-out images per reward batch

  c.train = ml_collections.ConfigDict()
  c.train.max_epoch = 150  # epochs
  c.train.log_every = 50  # steps between metric lines
  c.train.draw_every = 10  # controller steps between drawings of a sampled cell pair (0 = never)
  c.train.draw_backend = "auto"  # auto (graphviz dot when installed) | dot | matplotlib
  c.train.gif_max_frames = 50  # frames of networks.gif
  c.train.save_every = 5  # epochs between checkpoints
  c.train.max_to_keep = 3  # checkpoints kept
  c.train.derive_every = 10  # epochs between derive + evaluation (0 = only at the end)
  c.train.derive_num_sample = 100  # candidates scored by derive
  c.train.rank_num_archs = 8  # rank_correlation: architectures sampled
  c.train.rank_epochs = 10  # rank_correlation: epochs each architecture is trained alone
  c.train.eval_batch_size = 500  # images per evaluation batch

  # Weight plasticity loss (nas_forgetting.wpl.state.default_wpl_config documents every field). Off here
  # (enabled=False): plain ENAS, one architecture per shared step (num_batch_per_iter=1); the forgetting
  # measurement (measure_forgetting) works with WPL on or off. configs/wpl_enas_*.py switch it on.
  c.wpl = default_wpl_config(enabled=False, num_batch_per_iter=1)

  for variant in (arg or "").split(","):
    variant = variant.strip()
    if not variant:
      continue
    if variant == "quick":
      c.data.image.max_per_class = 100  # decode 100 images per class and split
      c.data.image.test_size = 500
      c.search.num_blocks = 3
      c.cnn.features = 8
      c.cnn.num_modules = 2
      c.cnn.num_repeat_normal = 1
      c.cnn.sep_conv_stacks = 1
      c.shared.batch_size = 32
      c.shared.steps_per_epoch = 20
      c.controller.hidden_size = 32
      c.controller.num_samples = 2
      c.controller.steps_per_epoch = 5
      c.controller.reward_batch_size = 64
      c.train.max_epoch = 2
      c.train.log_every = 5
      c.train.draw_every = 5
      c.train.save_every = 1
      c.train.derive_every = 0
      c.train.rank_num_archs = 3
      c.train.rank_epochs = 1
      c.train.derive_num_sample = 4
      c.train.eval_batch_size = 100
    elif variant in ("derive", "evaluate", "train_scratch", "single", "rank_correlation"):
      c.mode = variant
    else:
      raise ValueError(f"unknown variant {variant!r} of configs/enas_cifar10.py")
  return c
