"""Quickstart: catastrophic forgetting and its mitigation in under two minutes on a CPU.

Command:
  python launch.py --config configs/quickstart.py --workdir /tmp/quickstart

Setup: the embedded `font_digits` data set (procedurally rendered digits, needs neither network nor downloads;
4,000 train / 1,000 test images), permuted into 4 tasks (task 0 unpermuted), domain-incremental (one shared
10-way head), MLP 784-256-256-10, Adam lr 1e-3, 4 epochs per task, batch 64; finetune vs EWC (exact Fisher on
1,000 examples per task, lambda 100) vs MAS (per-example Omega, sum accumulation, lambda 0.3).

Expected result (measured, see docs/results_continual.md): finetune forgets visibly (its accuracy on the first
tasks drops as later permutations are learned), EWC and MAS keep clearly more of it (lower forgetting, higher
average accuracy). Measured (seed 0): average accuracy / forgetting / BWT 56.0 / 38.2 / -38.2 % (finetune),
70.4 / 8.9 / -8.3 % (EWC), 59.2 / 7.3 / -7.3 % (MAS). Outputs: <workdir>/comparison.csv, comparison.png, and per
method accuracy_matrix.csv/.png, accuracy_curves.png, metrics.jsonl, tensorboard/, and a checkpoint after each task
(checkpoint.every='task': 12 saves, not 48). Expected time: about 18-20 s on 2 quiet CPU cores (17.8-19.6 s measured
at load 1.6-2.3; 41-52 s with the cores shared, load 6-7); 12.6-14.9 s for a launch with `--compilation_cache=DIR`
after one that filled it.

Variant `quick` (get_config("quick")): 2 tasks, fewer examples (512 / 256), MLP 32, one epoch per task, for smoke
tests: about 10 s on 2 CPU cores, most of it compilation; it barely trains. Command:
  python launch.py --config configs/quickstart.py:quick --workdir /tmp/quickstart_quick
Expected result (seed 0, measured; tests/continual/test_continual_configs.py reruns it):
  quickstart.py:quick  ewc average accuracy 15.6 %, forgetting 0.8 %
  quickstart.py:quick  mas average accuracy 15.8 %, forgetting 0.4 %
"""

from nas_forgetting.continual.config import default_config


def get_config(arg: str | None = None):
  config = default_config()
  config.data.name = "font_digits"
  config.data.train_size = 4000
  config.data.test_size = 1000
  config.stream.kind = "permuted"
  config.stream.num_tasks = 4
  config.stream.scenario = "domain"
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-3
  config.train.epochs = 4
  config.strength.ewc = 100.0
  config.strength.mas = 0.3
  config.importance.num_examples = 1000
  config.checkpoint.every = "task"  # a task's 4 epochs take about a second each: a save per epoch cost a third of it
  if arg == "quick":
    config.data.train_size = 512
    config.data.test_size = 256
    config.stream.num_tasks = 2
    config.methods = ("ewc", "mas")
    config.train.epochs = 1
    config.model.hidden = (32,)
    config.importance.num_examples = 256
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/quickstart.py; valid: 'quick' or none")
  return config
