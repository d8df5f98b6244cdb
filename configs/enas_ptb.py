"""ENAS recurrent-cell search on Penn Treebank (defaults: the public PyTorch ENAS, paper-size).

Command (paper-size search, then derive):
  python launch.py --config configs/enas_ptb.py --workdir /tmp/enas_ptb
Quick run (small sizes, about 2 minutes on 2 CPU cores):
  python launch.py --config configs/enas_ptb.py:quick --workdir /tmp/enas_ptb_quick
Variants, combinable with commas (e.g. `configs/enas_ptb.py:quick,flexible`):
  quick                small model and few steps (a first look, about 2 minutes)
  tiny                 test-sized smoke run (about 20 s on 2 CPU cores, most of it compilation; the ENAS tests use
                       it): 1 epoch of 6 shared and 4 controller steps on a 16-wide model is no training, so the
                       derived cell's test perplexity is about 7,000, near the 7,596-word vocabulary of the offline
                       PTB files (a uniform guess): a check that everything runs, not a result
  reduced              6 nodes, hidden 128, lr 10, dropouts 0.2, 12 epochs of 100 shared + 30 controller steps: the
                       stable reduced-width search of BENCHMARKS.md (about 20 minutes on 2 CPU cores)
  wikitext2            WikiText-2 instead of PTB
  flexible | chain | tree | random   search-space modes (controller picks the node count; fixed chain/tree
                       topology with searched activations; uniformly random architectures, no controller)
  derive | evaluate | train_scratch | single | ablation_activation | ablation_node | rank_correlation
                       the other modes (set --config.load_workdir to the trained run, --config.dag_path to a
                       JSON DAG for single)
Data: ../shared/data/ptb holds only valid.txt and test.txt. Offline, the shared weights train on the first 90% of
valid.txt, the controller reward uses the remaining 10%, and evaluation is on test.txt; summary.json and every
plot title say so. Expected: the quick run finishes with a derived cell and a test perplexity in the hundreds
(tiny model, 74k training tokens); the paper reports 55.8 test perplexity (56.3 after the authors' evaluation fix)
with train.txt and the final retraining, i.e. not comparable to offline runs. A paper-size epoch (400 shared +
2000 controller steps) takes minutes on a GPU and is impractical on a CPU.
Every field is declared and commented in nas_forgetting.enas.config; this file sets what PTB changes. The
references' deviations are options there, off by default: --config.rnn.next_hidden=last_node (next hidden state =
last node), --config.controller.derive_reference_logits=True (derive samples without the tanh squashing).
"""

import ml_collections

from nas_forgetting.config_schema import override
from nas_forgetting.enas import config as enas_config
from nas_forgetting.paths import shared_data

# Size variants, as group overrides (configs/wpl_enas_ptb.py applies them after its own settings).
QUICK = {
    "search": {"num_blocks": 4},
    "rnn": {"hidden_size": 32},
    "shared": {"lr": 5.0,  # the clip (0.25) x lr bounds each update; 20 is too large for a 32-wide model
               "batch_size": 16, "bptt": 20, "steps_per_epoch": 40},
    "controller": {"hidden_size": 32, "steps_per_epoch": 20},
    "train": {"max_epoch": 2, "log_every": 10, "draw_every": 10, "save_every": 1, "derive_every": 0,
              "rank_num_archs": 3, "rank_epochs": 1, "derive_num_sample": 8, "eval_batch_size": 16},
}
TINY = {
    "data": {"eval_max_tokens": 6000},  # a full-vocabulary softmax over all 82k test tokens costs seconds
    "search": {"num_blocks": 3},
    "rnn": {"hidden_size": 16},
    "shared": {"lr": 1.0, "batch_size": 8, "bptt": 10, "steps_per_epoch": 6},
    "controller": {"hidden_size": 8, "steps_per_epoch": 4},
    "train": {"max_epoch": 1, "log_every": 2, "draw_every": 2, "draw_backend": "matplotlib", "save_every": 1,
              "derive_every": 0, "rank_num_archs": 3, "rank_epochs": 1, "derive_num_sample": 4,
              "eval_batch_size": 256},
}
REDUCED = {  # the reduced-width offline search of BENCHMARKS.md (ENAS): 20 min on 2 CPU cores, test perplexity ~365
    "search": {"num_blocks": 6},
    "rnn": {"hidden_size": 128, "dropout_input": 0.2, "dropout_output": 0.2, "weight_drop": 0.2},
    "shared": {"lr": 10.0,  # lr 20 with clip 0.25 diverges at this width; the paper's dropouts slow a small model
               "batch_size": 32, "steps_per_epoch": 100},
    "controller": {"steps_per_epoch": 30},
    "train": {"max_epoch": 12, "log_every": 10, "draw_every": 30, "save_every": 1, "derive_every": 3,
              "derive_num_sample": 20},
}
SIZES = {"quick": QUICK, "tiny": TINY, "reduced": REDUCED}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = enas_config.default_config(
      "rnn", enas_config.default_data_config(name="ptb", path=shared_data("ptb")))
  for variant in enas_config.split_variants(arg):
    if variant in SIZES:
      override(c, SIZES[variant])
    elif variant == "wikitext2":
      c.data.name = "wikitext2"
      c.data.path = shared_data("wikitext2")
    elif variant in ("flexible", "random"):
      c.search.mode = variant
    elif variant in ("chain", "tree"):
      c.search.mode = "hardcoded"
      c.search.topology = variant
    elif variant in enas_config.MODE_VARIANTS:
      c.mode = variant
    else:
      valid = [*SIZES, "wikitext2", "flexible", "random", "chain", "tree", *enas_config.MODE_VARIANTS]
      raise ValueError(f"unknown variant {variant!r} of configs/enas_ptb.py; valid (comma-separated): "
                       f"{', '.join(valid)}")
  return c
