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
from nas_forgetting.dpnas.q_learning import reference_epsilon_schedule

VARIANTS = ("quick", "fixed", "hypothesis2", "full_training", "store_embedding", "readme", "reference_bn",
            "reference_duplicates", "reference_feasibility")
README_NET = "[C(32,5,1,2,1), P(4,4,0,0), C(32,3,1,1,0), C(1024,1,1,0,1), C(512,3,1,0,1), SM(10)]"


def build(data: ml_collections.ConfigDict, arg: str | None, *, num_classes: int = 10) -> ml_collections.ConfigDict:
  """The DP-NAS config on `data` (shared by the MNIST, FashionMNIST and CIFAR-10 configs); `data` gets the
  reference's preprocessing (resized to 28x28, grey-scale)."""
  c = ml_collections.ConfigDict()
  c.experiment = "dpnas"  # experiment registry name
  c.seed = 0  # seeds the train/val split, every deep-prior initialisation and the exploration
  c.task = "search"  # search (task 1) | fixed (task 2: fixed nets, hypotheses 2 and 3)
  c.val_fraction = 0.1  # share of the training split used for validation (the reference's 10 %)
  c.verbose = True  # print one line per architecture
  c.data = data  # nas_forgetting.data config (see nas_forgetting/data/datasets.py)
  c.data.image_size = 28  # the reference's --patch-size: images resized to 28x28
  c.data.grayscale = True  # the reference's --gray-scale True (colour to one luma channel)

  c.evaluator = ml_collections.ConfigDict()
  c.evaluator.epochs = 70  # classifier epochs per architecture (reference --epochs)
  c.evaluator.batch_size = 128  # mini-batch size (reference -b)
  c.evaluator.learning_rate = 1e-3  # Adam learning rate (reference -lr)
  c.evaluator.weight_decay = 0.0  # Adam L2 weight decay (reference -wd)
  c.evaluator.early_stopping_epoch = 10  # stop check after this many epochs; 0 = never stop early
  c.evaluator.early_stopping_thresh = 0.15  # stop when the mean of the last reward_window val accuracies < 100x this
  c.evaluator.reward_window = 5  # reward = mean of the last this-many val accuracies / 100
  c.evaluator.bn_epsilon = 1e-4  # BatchNorm epsilon (reference --batch-norm); 0 disables BatchNorm
  c.evaluator.weight_init = "kaiming-normal"  # kaiming-normal | kaiming-uniform | xavier-normal | xavier-uniform | orthogonal
  c.evaluator.dropout_rate = 0.0  # dropout before the classifier (reference --drop-out-drop)
  c.evaluator.full_training = False  # train the encoder too (hypothesis 3 / conventional NAS)
  c.evaluator.bn_mode = "calibrate"  # calibrate (same BN statistics for all splits) | reference (train/eval mismatch)
  c.evaluator.bn_calibration_size = 1024  # training examples whose statistics calibrate BatchNorm
  c.evaluator.embed_chunk_size = 0  # examples per embedding chunk; 0 = sized from free device memory
  c.evaluator.memory_fraction = 0.5  # share of free device memory one embedding chunk may use
  c.evaluator.cpu_memory_budget = 1 << 30  # bytes assumed free on devices without memory statistics (CPU)
  c.evaluator.eval_batch_size = 1024  # chunk of validation/test forward passes
  c.evaluator.seed_batching = "auto"  # seeds on one device: vmap | map (sequential) | auto (map on CPU, vmap elsewhere)
  c.evaluator.bucket = "geometric"  # geometric (pad widths to 2^k / 3*2^(k-1): classifier compiled once per bucket) | exact

  c.search_space = ml_collections.ConfigDict()
  c.search_space.image_size = 0  # input size seen by the state space; 0 = from the data
  c.search_space.num_classes = 0  # classes written into SM(c); 0 = from the data
  c.search_space.conv_sizes = (1, 3, 5, 7, 9, 11)  # conv kernel sizes
  c.search_space.conv_features = (16, 32, 64, 128, 256, 512, 1024)  # conv output channels
  c.search_space.conv_strides = (1,)  # conv strides (the reference's code: 1 only)
  c.search_space.pool_sizes = (2, 3, 4)  # max-pool kernel sizes
  c.search_space.pool_strides = (2, 3, 4)  # max-pool strides
  c.search_space.fc_sizes = (32, 64, 128)  # hidden FC sizes
  c.search_space.max_fc = 0  # hidden FC layers allowed (0 = none, reference default)
  c.search_space.min_conv = 2  # depth needed before the net may end (the README says 3)
  c.search_space.max_conv = 12  # maximum conv depth
  c.search_space.max_image_size = 8  # largest spatial size allowed into the classifier
  c.search_space.max_fc_input = 20000  # largest embedding (channels*H*W) allowed
  c.search_space.large_kernel_stride = 1  # stride of kernels >= 7 (README variant: 2)
  c.search_space.dedupe_k1_padding = True  # False: the reference's duplicated 1x1 conv actions
  # True: the reference's feasibility check, which never rejects nets with FC layers (it reads the FC state's image
  # size, 0) nor [SM(c)]; False (default): max_image_size / max_fc_input apply to every net's encoder output
  c.search_space.reference_feasibility = False

  c.search = ml_collections.ConfigDict()
  c.search.schedule = reference_epsilon_schedule()  # (epsilon, rewarded nets): 1.0 x1500, 0.9..0.1 x100, 0.0 x3
  c.search.replay_number = 50  # replayed rows per Q update (the newest + 49 uniform draws)
  c.search.q_learning_rate = 0.1  # Q-learning rate (reference --q-learning-rate)
  c.search.q_discount_factor = 1.0  # discount (reference --q-discount-factor)
  c.search.init_utility = 0.15  # initial Q-value (the reference uses the early-stopping threshold)
  c.search.seeds_per_architecture = 1  # initialisations per net (reward = their mean); set to the device count to fill them
  c.search.plot_every = 1  # redraw the moving-average plot every this-many architectures
  c.search.plot_window = 20  # moving-average window
  c.search.max_architectures = 0  # stop after this many sampled nets in this run (0 = until the schedule ends)
  c.search.continue_search = False  # continue from the reference's CSVs (our own runs resume automatically)
  c.search.q_values_csv_path = ""  # q_values CSV to continue from
  c.search.replay_buffer_csv_path = ""  # replay_buffer CSV to continue from
  c.search.continue_epsilon = 1.0  # epsilon to continue at (one of the schedule's)
  c.search.continue_ite = 1  # 1-based iteration at that epsilon to run next

  c.fixed = ml_collections.ConfigDict()
  c.fixed.net = ""  # a net string (takes precedence)
  c.fixed.replay_buffer_csv_path = ""  # a search log: with index >= 0 that row, else the hypothesis-2 selection
  c.fixed.index = -1  # row of replay_buffer_csv_path (by position); -1 = hypothesis-2 selection
  c.fixed.num_seeds = 8  # random initialisations per net, evaluated at once
  c.fixed.save_checkpoints = True  # keep each (net, seed)'s classifier (or net) at its best val epoch; reruns skip them
  c.fixed.store_embedding = False  # write the first net's embedding (seed 0) to stored_embedding/
  c.fixed.embedding_layout = "both"  # reference (<split>/<label>/<index>.npy) | arrays | both

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
