"""ENAS micro-CNN search on the CIFAR-10 subset with the weight plasticity loss (WPL) in shared training.

The reference WPL command line (CNN): alpha 60, Fisher norm clip 10, plain (non-momentum) Fisher accumulation,
Fisher reset every 3 epochs, 7 batches per sampled architecture, 5 blocks per cell, 5 normal cells per stage,
batch 32, softmax temperature 8, baseline EMA 0.99, controller lr 0.0035, entropy weight 1e-4, 310 epochs of 70
architectures (70 x 7 = 490 shared steps per epoch). Everything else is configs/enas_cifar10.py.

Commands:
  python launch.py --config configs/wpl_enas_cifar10.py --workdir /tmp/wpl_enas_cifar10          # paper-size, GPU
  python launch.py --config configs/wpl_enas_cifar10.py:quick --workdir /tmp/wpl_enas_cifar10_q  # ~3-5 min, CPU
  python launch.py --config configs/wpl_enas_cifar10.py:quick,nowpl --workdir /tmp/nowpl_cnn_q   # baseline
Variants (commas): quick (small model, 2 epochs of 6 architectures x 3 batches); tiny (test-sized: 1 epoch of 2
architectures x 2 batches); nowpl (WPL off, everything else identical); any variant of configs/enas_cifar10.py.
The reference's micro cell itself (grouped conv without pointwise, last-node output) is off by default; see the
cnn options in configs/enas_cifar10.py.
Outputs: as configs/enas_cifar10.py, plus forgetting.csv (per epoch accuracy drop of each architecture between
right after its burst and the epoch end; > 0 = forgetting) and forgetting/*, wpl/* scalars. Expected: less
forgetting with WPL (the paper: CIFAR-10 error 4.87% -> 3.81% after retraining; subset runs are not comparable).
"""

import ml_collections

from configs import enas_cifar10
from nas_forgetting.enas import config as enas_config
from nas_forgetting.wpl.state import reference_cnn_wpl_config

# The reference WPL command line outside the wpl group.
REFERENCE = {
    "search": {"num_blocks": 5},
    "cnn": {"num_repeat_normal": 5},
    "shared": {"batch_size": 32},
    "controller": {"temperature": 8.0, "ema_decay": 0.99, "lr": 0.0035, "entropy_coeff": 1e-4},
    "train": {"max_epoch": 310},
}
# Applied after configs/enas_cifar10.py's size variant of the same name.
SIZES = {"quick": {"wpl": {"num_batch_per_iter": 3}, "train": {"max_epoch": 2}},
         "tiny": {"wpl": {"num_batch_per_iter": 2}, "controller": {"steps_per_epoch": 1},
                  "train": {"max_epoch": 1, "draw_every": 0}}}
ARCHS_PER_EPOCH = {"quick": 6, "tiny": 2}  # sampled architectures (bursts) per epoch


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  # wpl.estimator stays 'empirical' (per-image Fisher, 1.33x a plain step with the burst amortised: BENCHMARKS.md);
  # 'batch' (square of the batch-mean gradient) reproduces the reference's estimate.
  return enas_config.wpl_config(
      enas_cifar10.get_config, arg,
      wpl=reference_cnn_wpl_config(),  # alpha 60, clip 10, no momentum, reset every 3 epochs, 7 batches
      reference=REFERENCE, archs_per_epoch=70, base_sizes=enas_cifar10.SIZES, sizes=SIZES,
      size_archs_per_epoch=ARCHS_PER_EPOCH)
