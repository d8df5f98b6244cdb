"""The two-model WPL experiment's config (`nas_forgetting.wpl.two_model`): every field declared, with its meaning,
once.

`default_config()` is the paper-size demonstration on the offline MNIST; configs/wpl_two_model.py changes only what
its variants change, and `two_model.validate_config` checks every value before any work. The `data` group is
declared by `nas_forgetting.data.datasets.default_data_config`. (The `wpl` group of the ENAS configs is another one:
`nas_forgetting.wpl.state.default_wpl_config`.)
"""

from __future__ import annotations

import ml_collections

from nas_forgetting.data.datasets import offline_data_config


def default_config() -> ml_collections.ConfigDict:
  """Every field of the two-model experiment, with its meaning."""
  config = ml_collections.ConfigDict()
  config.experiment = "wpl_two_model"  # nas_forgetting.wpl.two_model:run
  config.seed = 0  # seeds initialisation, batch order, the data split and the Fisher's label sampling

  # MNIST test split (the only MNIST split available offline), carved into 8,000 train / 2,000 eval by a seeded split.
  config.data = offline_data_config("mnist", name="mnist", grayscale=True)

  config.model = ml_collections.ConfigDict()
  config.model.hidden = 256  # width of every hidden layer of A (4 layers) and B (6 layers)

  config.shared_layers = [1, 2, 3]  # values of k: B shares A's first k layers (1..3), one run and figure per k

  config.train_a = ml_collections.ConfigDict()
  config.train_a.optimizer = "adam"  # 'adam' | 'sgd'
  config.train_a.learning_rate = 1e-3  # step size of A's optimiser
  config.train_a.momentum = 0.0  # SGD momentum (only with optimizer='sgd'; 0 = none)
  config.train_a.batch_size = 128  # examples per step
  config.train_a.epochs = 30  # at most this many epochs ("to convergence")
  config.train_a.target_loss = 1e-3  # stop early once the mean training loss of an epoch is below this

  config.train_b = ml_collections.ConfigDict()
  config.train_b.optimizer = "sgd"  # 'sgd' | 'adam' (B's shared and own layers; Adam's per-parameter scaling makes a
  #                                  stiff quadratic penalty jitter, so SGD is the default, as in the WPL reference)
  config.train_b.learning_rate = 0.03  # SGD step; keep lr * alpha_fisher * max Fisher small (logged; >= 2 warned)
  config.train_b.momentum = 0.9  # SGD momentum (only with optimizer='sgd'; 0 = none)
  config.train_b.batch_size = 128  # examples per step
  config.train_b.steps = 1500  # training iterations of B (the paper's figure shows 1500)
  config.train_b.eval_every = 50  # evaluate A and B on the eval split every this many iterations

  config.wpl = ml_collections.ConfigDict()
  config.wpl.alpha_fisher = 1000.0  # WPL strength alpha: B's loss + alpha/2 * sum_shared F_A (theta - theta_A*)^2
  config.wpl.estimator = "exact"  # Fisher of A: 'exact' | 'sampled' | 'empirical' (per-example) | 'batch' (reference)
  config.wpl.fisher_num_examples = 2000  # A's training examples used for its Fisher (0 = all)
  return config
