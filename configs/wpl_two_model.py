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

from nas_forgetting.wpl.config import default_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default_config()
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
