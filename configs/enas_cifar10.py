"""ENAS micro-CNN search on CIFAR-10 (normal + reduction cells, the ENAS paper's five operations).

Command (paper-like search):
  python launch.py --config configs/enas_cifar10.py --workdir /tmp/enas_cifar10
Quick run (tiny network on 2,000 JPEG images, about 3 minutes on 2 CPU cores):
  python launch.py --config configs/enas_cifar10.py:quick --workdir /tmp/enas_cifar10_quick
Variants, combinable with commas: quick; tiny (test-sized, seconds; the ENAS smoke tests use it); derive | evaluate |
train_scratch | single | rank_correlation (modes; set --config.load_workdir / --config.dag_path).
Data: ../shared/data/cifar10 (JPEG image folders: 20,000 training and 10,000 test images). The controller reward
uses 10% of the training images held out (never the test set, unlike the WPL reference). Defaults follow the
ENAS micro search (5 blocks, 20 filters, 150 epochs, SGD with Nesterov momentum, reward = accuracy) with the
reference's controller settings. Expected: the paper reports 2.89% test error with cutout after retraining the
derived cell for 630 epochs on the full training set; offline, reduced-scale runs are not comparable.
Every field is declared and commented in nas_forgetting.enas.config; this file sets what CIFAR-10 changes. The WPL
reference's micro cell is available through options there, off by default: --config.cnn.sep_conv=depthwise with
--config.cnn.sep_conv_stacks=1 (ReLU -> grouped conv without pointwise -> BN), --config.cnn.cell_output=last_node
(the cell outputs its last node only), --config.controller.derive_reference_logits=True (derive samples without the
tanh squashing).
"""

import ml_collections

from nas_forgetting.config_schema import override
from nas_forgetting.data.datasets import offline_data_config
from nas_forgetting.enas import config as enas_config

# Size variants, as group overrides (configs/wpl_enas_cifar10.py applies them after its own settings).
QUICK = {
    "data": {"image": {"max_per_class": 100,  # decode 100 images per class and split
                       "test_size": 500}},
    "search": {"num_blocks": 3},
    "cnn": {"features": 8, "num_modules": 2, "num_repeat_normal": 1, "sep_conv_stacks": 1},
    "shared": {"batch_size": 32, "steps_per_epoch": 20},
    "controller": {"hidden_size": 32, "num_samples": 2, "steps_per_epoch": 5, "reward_batch_size": 64},
    "train": {"max_epoch": 2, "log_every": 5, "draw_every": 5, "save_every": 1, "derive_every": 0,
              "rank_num_archs": 3, "rank_epochs": 1, "derive_num_sample": 4, "eval_batch_size": 100},
}
TINY = {
    "data": {"image": {"max_per_class": 12, "test_size": 40}},
    "search": {"num_blocks": 2},
    "cnn": {"features": 4, "num_modules": 1,  # one normal cell
            "num_repeat_normal": 1, "sep_conv_stacks": 1},
    "shared": {"batch_size": 16, "steps_per_epoch": 2},
    "controller": {"hidden_size": 8, "num_samples": 2, "steps_per_epoch": 2, "reward_batch_size": 12},
    "train": {"max_epoch": 1, "log_every": 2, "draw_every": 2, "draw_backend": "matplotlib", "save_every": 1,
              "derive_every": 0, "rank_num_archs": 3, "rank_epochs": 1, "derive_num_sample": 2,
              "eval_batch_size": 12},
}
SIZES = {"quick": QUICK, "tiny": TINY}
CNN_MODES = ("derive", "evaluate", "train_scratch", "single", "rank_correlation")  # the ablations need the RNN


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  data = enas_config.default_data_config(name="cifar10")
  data.reward_fraction = 0.1  # share of the training images held out for controller rewards
  # Passed to nas_forgetting.data.datasets.load_dataset; its fields are declared (and commented) there.
  data.image = offline_data_config("cifar10", name="cifar10")  # JPEG folders under the shared data folder
  c = enas_config.default_config(
      "micro_cnn", data,
      search={"num_blocks": 5},  # nodes per cell (ENAS micro search)
      cnn={"dropout": 0.1},
      shared={"batch_size": 128, "steps_per_epoch": 0,  # one pass over the training images per epoch
              "lr": 0.05, "decay": 0.97, "decay_after": 10, "l2_reg": 1e-4, "grad_clip": 5.0,
              "momentum": 0.9, "nesterov": True},
      controller={"lr": 3.5e-3, "ema_decay": 0.99, "num_samples": 5, "steps_per_epoch": 30,
                  "reward_c": 1.0,  # reward = validation accuracy
                  "reward_batch_size": 256},
      train={"draw_every": 10, "save_every": 5, "max_to_keep": 3, "derive_every": 10, "eval_batch_size": 500})
  for variant in enas_config.split_variants(arg):
    if variant in SIZES:
      override(c, SIZES[variant])
    elif variant in CNN_MODES:
      c.mode = variant
    else:
      raise ValueError(f"unknown variant {variant!r} of configs/enas_cifar10.py; valid (comma-separated): "
                       f"{', '.join([*SIZES, *CNN_MODES])}")
  return c
