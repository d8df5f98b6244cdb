"""Split MNIST: 5 tasks of 2 digits ({0,1}, {2,3}, ...), task-incremental (a head per task) or class-incremental.

Command (reduced scale, offline, real MNIST test split carved into 8,000 train / 2,000 test):
  python launch.py --config configs/split_mnist.py --workdir /tmp/split_mnist          # task-IL
  python launch.py --config configs/split_mnist.py:class --workdir /tmp/split_mnist_c  # class-IL
  python launch.py --config configs/split_mnist.py:domain --workdir /tmp/split_mnist_d # domain-IL
  python launch.py --config configs/split_mnist.py:quick --workdir /tmp/split_mnist_q  # smoke test (seconds)
  python launch.py --config configs/split_mnist.py:sweep --workdir /tmp/split_mnist_sweep          # task-IL sweep
  python launch.py --config configs/split_mnist.py:class_sweep --workdir /tmp/split_mnist_csweep   # class-IL sweep
  python launch.py --config configs/split_mnist.py:sweep_quick --workdir /tmp/split_mnist_sq       # sweep smoke test

Expected figure and its source: van de Ven & Tolias (2019), "Three scenarios for continual learning", Table 2
(full MNIST, 60k train, MLP 2x400, Adam lr 1e-3, 2,000 iterations per task of batch 128): average task-IL test
accuracy after all tasks EWC 98.64, online EWC 99.12, SI 99.09, fine-tuning ("None") 87.19; MAS 99.22 +- 0.21
(Hsu et al. 2018, Table 2, same MLP 2x400, Adam 1e-3, 4 epochs per task). Class-IL: every one of these penalties stays near 20% (the last task's two classes),
fine-tuning too; only replay methods escape. A faithful reproduction shows both. Domain-IL (variant `domain`: one
2-way head, each task's digits labelled 0/1 by position) lies in between in the same table.

Here (reduced scale): the same network and optimiser with 8k training images (~1,600 per task) and 2k test
images carved from the 10k MNIST test split, 4 epochs per task (~50 iterations per task). Expected time: about
2-3 minutes on 2 CPU cores for the six methods (measured 127-143 s). Measured numbers: docs/results_continual.md.

Sweep variants `sweep` (task-IL) and `class_sweep` (class-IL): the same setting and the six methods, each run for
seeds 0-4 (initialisation, batch order and importance subset; the task stream is seed 0's) in one compiled program
per method (`nas_forgetting.continual.sweep`), the penalties over log grids (SWEEP_GRID: EWC and online EWC lambda
1e1..1e5, SI c 1e-1..1e3, MAS lambda 1e-3..1e1, one value per decade); 0.1 of each task's training data is held
out as the validation split on which each method's best strength is picked (the members train on the other 0.9;
the test split is never used for the choice). Outputs: sweep_summary.csv (mean +- std over seeds per strength, the
best marked), sweep_members.csv, <method>/sweep_accuracy.csv, sweep_strength.png. Measured wall on the 2 shared
CPU cores: `sweep` 8.4 min (425 s user CPU, 4.3 GB peak memory), `class_sweep` 12.4 min (409 s user CPU; the
machine was loaded). In class-IL the validation split picks EWC, online EWC and SI at the top of their grids (see
the docs). `sweep_quick`: fine-tuning and EWC at 1e2 and 1e4,
seeds 0 and 1, at the quick scale below (about 15 s). Results: docs/results_continual.md, "Sweeps over strengths
and seeds".

Quick variants (smoke tests: EWC alone, 500 / 200 images, 2 tasks, MLP 32, one epoch; 5-10 s each on 2 CPU cores,
most of it compilation). Expected results (seed 0, measured; tests/continual/test_continual_configs.py reruns them):
  split_mnist.py:quick         ewc average accuracy 95.5 %, forgetting 0.0 %
  split_mnist.py:class_quick   ewc average accuracy 69.3 %, forgetting -14.3 %
  split_mnist.py:domain_quick  ewc average accuracy 84.1 %, forgetting 0.0 %
(at this scale the class-IL head is still learning task 0's digits while training task 1: negative forgetting.)
"""

import ml_collections

from nas_forgetting.continual.config import default_config
from nas_forgetting.data.datasets import offline_data_config


def reduced_mnist(kind: str) -> ml_collections.ConfigDict:
  """What Split and Permuted MNIST (configs/permuted_mnist.py) share: the six methods, 5 tasks of the `kind` stream,
  task-IL, on the offline MNIST (8,000 train / 2,000 test images), MLP 2x400, Adam lr 1e-3, 4 epochs per task of
  batch 128, importance on 1,000 examples, online EWC without decay. The strengths are each config's own."""
  config = default_config()
  config.methods = ("finetune", "ewc", "online_ewc", "si", "mas", "joint")
  config.data = offline_data_config("mnist")  # 8,000 train / 2,000 test carved from the MNIST test split
  config.stream.kind = kind
  config.model.hidden = (400, 400)
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-3
  config.train.epochs = 4
  config.train.batch_size = 128
  config.importance.num_examples = 1000  # Fisher / Omega on 1,000 training examples of the task
  return config


def quick(config: ml_collections.ConfigDict, method: str) -> None:
  """The smoke-test scale of the quick variants (here and in configs/permuted_mnist.py): `method` alone, 500 / 200
  images, 2 tasks, MLP 32, 1 epoch of batch 32, importance on 64 examples."""
  config.methods = (method,)
  config.data = offline_data_config("mnist", train_size=500, test_size=200)
  config.stream.num_tasks = 2
  config.model.hidden = (32,)
  config.train.epochs = 1
  config.train.batch_size = 32
  config.importance.num_examples = 64


def sweep(config: ml_collections.ConfigDict, strengths: dict[str, tuple[float, ...]],
          seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> None:
  """The sweep variants (here and in configs/permuted_mnist.py): every method of `config.methods` for each of
  `seeds`, each penalised method over its `strengths` (a log grid), 0.1 of each task's training data held out as
  the validation split that picks each method's best strength (the test split is never used for it)."""
  config.sweep.seeds = tuple(seeds)
  for method, grid in strengths.items():
    config.sweep.strengths[method] = tuple(float(s) for s in grid)
  config.sweep.validation_fraction = 0.1


SWEEP_GRID = {  # the log grids of the sweep variants (task-IL and class-IL alike)
    "ewc": (1e1, 1e2, 1e3, 1e4, 1e5),
    "online_ewc": (1e1, 1e2, 1e3, 1e4, 1e5),
    "si": (1e-1, 1e0, 1e1, 1e2, 1e3),
    "mas": (1e-3, 1e-2, 1e-1, 1e0, 1e1),
}
VARIANTS = ("task", "class", "domain", "quick", "class_quick", "domain_quick", "sweep", "class_sweep", "sweep_quick")


def get_config(arg: str | None = None):
  variant = arg or "task"
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r} of configs/split_mnist.py; valid: {', '.join(VARIANTS)}")
  config = reduced_mnist("split")
  config.strength.ewc = 5000.0  # van de Ven & Tolias' EWC lambda for Split MNIST
  config.strength.online_ewc = 5000.0
  if variant in ("class", "class_quick", "class_sweep"):
    config.stream.scenario = "class"  # same strengths as task-IL (one 10-way head over all classes)
  if variant in ("domain", "domain_quick"):
    config.stream.scenario = "domain"  # same strengths; one 2-way head, labels 0/1 by position in the task
  if variant in ("quick", "class_quick", "domain_quick"):
    quick(config, "ewc")
  if variant in ("sweep", "class_sweep"):
    sweep(config, SWEEP_GRID)
  if variant == "sweep_quick":  # the sweep at smoke-test scale: fine-tuning and EWC, 2 seeds x 2 strengths
    quick(config, "ewc")
    config.methods = ("finetune", "ewc")
    sweep(config, {"ewc": (1e2, 1e4)}, seeds=(0, 1))
  return config
