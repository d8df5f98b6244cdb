"""The DP-NAS experiment's config: every field declared, with its meaning, once.

`default_config(data)` is the whole config of `nas_forgetting.dpnas.experiment` on the `data` group given (declared
by `nas_forgetting.data.datasets.default_data_config`), which gets the reference's preprocessing (images resized to
28x28, grey-scale). Defaults are the reference's search (MetaQNN-style Q-learning over deep-prior encoders, 70
classifier epochs per net). The files in `configs/` change only what their setup changes; `experiment.validate_config`
checks every value before any work.
"""

from __future__ import annotations

import ml_collections

from nas_forgetting.dpnas.q_learning import reference_epsilon_schedule


def default_config(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Every field of the DP-NAS experiment, with its meaning, on the data set `data`."""
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
  # kaiming-normal | kaiming-uniform | xavier-normal | xavier-uniform | orthogonal
  c.evaluator.weight_init = "kaiming-normal"
  c.evaluator.dropout_rate = 0.0  # dropout before the classifier (reference --drop-out-drop)
  c.evaluator.full_training = False  # train the encoder too (hypothesis 3 / conventional NAS)
  c.evaluator.bn_mode = "calibrate"  # calibrate (same BN statistics for all splits) | reference (train/eval mismatch)
  c.evaluator.bn_calibration_size = 1024  # training examples whose statistics calibrate BatchNorm
  c.evaluator.embed_chunk_size = 0  # examples per embedding chunk; 0 = sized from free device memory
  c.evaluator.memory_fraction = 0.5  # share of free device memory one embedding chunk may use
  c.evaluator.cpu_memory_budget = 1 << 30  # bytes assumed free on devices without memory statistics (CPU)
  c.evaluator.eval_batch_size = 1024  # chunk of validation/test forward passes
  c.evaluator.seed_batching = "auto"  # seeds on one device: vmap | map (sequential) | auto (map on CPU, vmap elsewhere)
  # geometric (pad widths to 2^k / 3*2^(k-1): classifier compiled once per bucket) | exact
  c.evaluator.bucket = "geometric"
  # convolutions, equal up to float rounding (deep_prior.CONVS): xla | matmul (large stride-1 layers as one matrix
  # product per kernel offset) | cpu (matmul's products, and unpadded stride-1 layers as a 1x1 product, products per
  # kernel offset from 64 input channels, or the centre of a zero-padded convolution: the forms XLA's CPU backend
  # runs fastest) | auto (cpu on the CPU, xla elsewhere)
  c.evaluator.conv = "auto"

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
  # initialisations per net (reward = their mean); set to the device count to fill them
  c.search.seeds_per_architecture = 1
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

  return c
