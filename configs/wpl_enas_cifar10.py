"""ENAS micro-CNN search on the CIFAR-10 subset with the weight plasticity loss (WPL) in shared training.

The reference WPL command line (CNN): alpha 60, Fisher norm clip 10, plain (non-momentum) Fisher accumulation,
Fisher reset every 3 epochs, 7 batches per sampled architecture, 5 blocks per cell, 5 normal cells per stage,
batch 32, softmax temperature 8, baseline EMA 0.99, controller lr 0.0035, entropy weight 1e-4, 310 epochs of 70
architectures (70 x 7 = 490 shared steps per epoch). Everything else is configs/enas_cifar10.py.

Commands:
  python launch.py --config configs/wpl_enas_cifar10.py --workdir /tmp/wpl_enas_cifar10          # paper-size, GPU
  python launch.py --config configs/wpl_enas_cifar10.py:quick --workdir /tmp/wpl_enas_cifar10_q  # ~3-5 min, CPU
  python launch.py --config configs/wpl_enas_cifar10.py:quick,nowpl --workdir /tmp/nowpl_cnn_q   # baseline
Variants (commas): quick (tiny model, 2 epochs of 6 architectures x 3 batches); nowpl (WPL off, everything else
identical); any variant of configs/enas_cifar10.py.
Outputs: as configs/enas_cifar10.py, plus forgetting.csv (per epoch accuracy drop of each architecture between
right after its burst and the epoch end; > 0 = forgetting) and forgetting/*, wpl/* scalars. Expected: less
forgetting with WPL (the paper: CIFAR-10 error 4.87% -> 3.81% after retraining; subset runs are not comparable).
"""

import ml_collections

from configs import enas_cifar10
from nas_forgetting.wpl.state import reference_cnn_wpl_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = [v.strip() for v in (arg or "").split(",") if v.strip()]
  own = {"nowpl"}
  c = enas_cifar10.get_config(",".join(v for v in variants if v not in own))
  c.wpl = reference_cnn_wpl_config()  # alpha 60, clip 10, no momentum, reset every 3 epochs, 7 batches
  c.wpl.estimator = "batch"  # the reference's estimate; 'empirical' needs one backward pass per image
  c.search.num_blocks = 5
  c.cnn.num_repeat_normal = 5
  c.shared.batch_size = 32
  c.controller.temperature = 8.0
  c.controller.ema_decay = 0.99
  c.controller.lr = 0.0035
  c.controller.entropy_coeff = 1e-4
  c.train.max_epoch = 310
  c.shared.steps_per_epoch = 70 * c.wpl.num_batch_per_iter  # 70 architectures per epoch
  if "quick" in variants:
    q = enas_cifar10.get_config("quick")
    c.search.num_blocks = q.search.num_blocks
    c.cnn.num_repeat_normal = q.cnn.num_repeat_normal
    c.wpl.num_batch_per_iter = 3
    c.shared.steps_per_epoch = 6 * c.wpl.num_batch_per_iter
    c.train.max_epoch = 2
  if "nowpl" in variants:
    c.wpl.enabled = False
  return c
