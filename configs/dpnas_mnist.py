"""DP-NAS on MNIST: Q-learning search over random-weight (deep-prior) encoders; only a linear classifier is trained.

Commands:
  python launch.py --config configs/dpnas_mnist.py --workdir /tmp/dpnas_mnist            # reference-size search
  python launch.py --config configs/dpnas_mnist.py:quick --workdir /tmp/dpnas_quick      # ~3 min on 2 CPU cores
  python launch.py --config configs/dpnas_mnist.py:fixed --workdir /tmp/dpnas_fixed      # task 2, README net, 8 seeds
  python launch.py --config configs/dpnas_mnist.py:fixed,full_training --workdir /tmp/h3 # hypothesis 3
  python launch.py --config configs/dpnas_mnist.py:hypothesis2 --workdir /tmp/h2 \
      --config.fixed.replay_buffer_csv_path=/tmp/dpnas_mnist/search/replay_buffer.csv
Variants (combinable with commas): quick, fixed, hypothesis2, full_training, store_embedding, readme (the README's
stride-2 large kernels and min depth 3), reference_bn (the reference's train/eval BatchNorm mismatch),
reference_duplicates (the reference's duplicated 1x1 actions), reference_feasibility (the reference's check, which
never rejects nets with FC layers).
Data: ../shared/data/mnist holds only the 10k test split: 2,000 are carved out as test, the other 8,000 split
90/10 into train/val (seeded); the quick variant takes 900 train (810/90) and 200 test images at 14x14.
Expected (quick, measured: about 3 minutes on 2 CPU cores, deterministic): 28 nets sampled, 24 rewarded; mean reward
0.47 at epsilon 1.0 (12 nets), 0.34 at 0.5 (6), 0.46 at 0.1 (6); best net
[C(16,1,1,0,1), C(32,3,1,1,1), C(32,3,1,1,0), P(2,2,0,0), SM(10)], reward 0.86, test accuracy 78.5 %. The reward
does not rise as epsilon falls at this size, and that is the Q-learning as specified (MetaQNN's, learning rate 0.1,
replays of the buffer), not a defect: each replay moves a Q-value 10 % toward the next state's best value, so a
reward reaches the first transition of a path only after many replays of it; after 24 nets the greedy walk follows
the path replayed most (the first net, reward 0.49, re-picked 5 times; Q of its first transition 0.38) rather than
the 0.86 net found once (Q of its first transition 0.15), see tests/dpnas/test_dpnas_q_learning.py::
test_a_net_replayed_often_outranks_a_better_net_found_once. The rise needs the reference's long exploration (1,500
nets at epsilon 1); the full schedule (2,403 rewarded nets, 70 epochs each) is a GPU job.
Outputs: metrics.jsonl and tensorboard/ (one record per sampled net), search/ (replay_buffer.csv, q_values.csv,
moving_average_reward.png), summary.json; see nas_forgetting/dpnas/experiment.py.
"""

import ml_collections

from nas_forgetting.data.datasets import offline_data_config
from nas_forgetting.dpnas import config as dpnas_config

VARIANTS = ("quick", "fixed", "hypothesis2", "full_training", "store_embedding", "readme", "reference_bn",
            "reference_duplicates", "reference_feasibility")
README_NET = "[C(32,5,1,2,1), P(4,4,0,0), C(32,3,1,1,0), C(1024,1,1,0,1), C(512,3,1,0,1), SM(10)]"


def build(data: ml_collections.ConfigDict, arg: str | None, *, num_classes: int = 10) -> ml_collections.ConfigDict:
  """The DP-NAS config on `data` (nas_forgetting.dpnas.config.default_config) with the variants of `arg` applied
  (shared by the MNIST, FashionMNIST and CIFAR-10 configs); `num_classes` is written into the fixed net's SM(c)."""
  c = dpnas_config.default_config(data)
  for variant in [v for v in (arg or "").split(",") if v]:
    if variant not in VARIANTS:
      raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if variant == "quick":
      c.data.train_size, c.data.test_size, c.data.image_size = 900, 200, 14
      c.evaluator.epochs, c.evaluator.early_stopping_epoch, c.evaluator.reward_window = 6, 3, 2
      c.evaluator.bn_calibration_size = 256
      c.search_space.conv_features = (8, 16, 32)
      c.search_space.conv_sizes = (1, 3, 5)
      c.search_space.max_conv = 4
      c.search.schedule = ((1.0, 12), (0.5, 6), (0.1, 6))
      c.search.replay_number = 10
      c.search.plot_window = 5
      c.fixed.num_seeds = 4
    elif variant == "fixed":
      c.task = "fixed"
      c.fixed.net = README_NET.replace("SM(10)", f"SM({num_classes})")
    elif variant == "hypothesis2":
      c.task = "fixed"
    elif variant == "full_training":
      c.evaluator.full_training = True
    elif variant == "store_embedding":
      c.fixed.store_embedding = True
    elif variant == "readme":
      c.search_space.large_kernel_stride = 2
      c.search_space.min_conv = 3
    elif variant == "reference_bn":
      c.evaluator.bn_mode = "reference"
    elif variant == "reference_duplicates":
      c.search_space.dedupe_k1_padding = False
    elif variant == "reference_feasibility":
      c.search_space.reference_feasibility = True
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return build(offline_data_config("mnist", name="mnist", train_size=0), arg)  # train = all but the 2,000 test
