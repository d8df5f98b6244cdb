"""Two-model multi-model-forgetting demonstration on MNIST, with and without WPL.

  python launch.py --config configs/wpl_two_model.py --workdir runs/wpl_two_model
  python launch.py --config configs/wpl_two_model.py:quick --workdir /tmp/wpl_two_model_quick

Model A (4 dense layers) is trained to convergence; model B (6 dense layers) sharing A's first k layers
(k = 1, 2, 3) is then trained with and without the WPL penalty; A's and B's accuracy over B's iterations go
to `two_model_k<k>.png` / `.csv` in the workdir, beside A trained alone and B trained alone.
Data: the MNIST test split from ../shared/data (10k images) carved into 8k train / 2k eval (seeded).

Expected (default, 2-core CPU): about 2-4 minutes. A reaches ~96% eval accuracy; without WPL, A loses about
0.5-2 points on average over B's training; with WPL (alpha 1000) about 0.2-0.4, while B ends within about
0.3 points of its no-WPL accuracy (docs/results_wpl.md has the measured figures).
Quick variant: 3k/1k examples, width 128, 300 iterations of B, about 1 minute; A ~94%, the same picture.
"""

import ml_collections

from nas_forgetting.data.datasets import offline_data_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
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

  if arg == "quick":
    config.data.train_size = 3000
    config.data.test_size = 1000
    config.model.hidden = 128
    config.train_a.epochs = 20
    config.train_b.steps = 300
    config.train_b.eval_every = 25
    config.wpl.fisher_num_examples = 1000
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r} of configs/wpl_two_model.py; expected '' or 'quick'")
  return config
