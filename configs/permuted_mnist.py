"""Permuted MNIST: each task applies a fixed pixel permutation (task 0 unpermuted).

Command (reduced scale, offline, real MNIST test split carved into 8,000 train / 2,000 test):
  python launch.py --config configs/permuted_mnist.py --workdir /tmp/permuted_mnist          # task-IL
  python launch.py --config configs/permuted_mnist.py:domain --workdir /tmp/permuted_mnist_d # domain-IL
  python launch.py --config configs/permuted_mnist.py:class --workdir /tmp/permuted_mnist_c  # class-IL
  python launch.py --config configs/permuted_mnist.py:quick --workdir /tmp/permuted_mnist_q  # smoke test
  python launch.py --config configs/permuted_mnist.py:sweep --workdir /tmp/permuted_mnist_sweep         # task-IL sweep
  python launch.py --config configs/permuted_mnist.py:class_sweep --workdir /tmp/permuted_mnist_csweep  # class-IL

Expected figure and its source: van de Ven & Tolias (2019), "Three scenarios for continual learning", Table 2
(full MNIST, 10 permutations, MLP 2x1000, Adam lr 1e-4, 5,000 iterations per task of batch 128): task-IL
average accuracy EWC 94.74, online EWC 95.96, SI 94.75, fine-tuning 81.79 (domain-IL: 70-80 for the penalties).

Here (reduced scale): 5 permutations of 8k training images, MLP 2x400, Adam lr 1e-3, 4 epochs per task; the
smaller network and data make absolute numbers lower; the ordering (penalties well above fine-tuning, below
joint) is what should reproduce. Expected time: about 3-5 minutes on 2 CPU cores. Measured numbers:
docs/results_continual.md. Class-IL (variant `class`): one head over 10 classes per task (task t's digit y is
class 10 t + y, 50 outputs for 5 tasks), the hardest of the three scenarios in the same table.

Sweep variants `sweep` (task-IL) and `class_sweep` (class-IL): the six methods for seeds 0-4 (initialisation,
batch order and importance subset; the permutations are seed 0's) in one compiled program per method
(`nas_forgetting.continual.sweep`), the penalties over log grids of 4 strengths (SWEEP_GRID: EWC and online EWC
lambda 1e1..1e4, SI c 1e0..1e3, MAS lambda 1e-3..1e0, one value per decade, centred on the best strengths of a
one-seed pilot over two more decades), 0.1 of each task's training data held out as the validation split on which
each method's best strength is picked (never the test split). Reduced to fit about 20 minutes on 2 CPU cores (each
task has 5x the training images of a Split MNIST task): **2 epochs per task** (SWEEP_EPOCHS; the single runs above
train 4) and 4 strengths per method (Split MNIST's sweep has 5). Outputs as in configs/split_mnist.py's sweep.
Measured wall on the 2 shared CPU cores (load average ~7): `sweep` 16.3 min (724 s user CPU, 4.4 GB peak memory),
`class_sweep` 13.1 min (700 s user CPU, 5.0 GB). Every picked strength lies inside its grid in both.
Results: docs/results_continual.md, "Sweeps over strengths and seeds".

Quick variants (smoke tests: online EWC alone, 500 / 200 images, 2 tasks, MLP 32, one epoch; 2-8 s each on 2 CPU
cores). Expected results (seed 0, measured; tests/continual/test_continual_configs.py reruns them):
  permuted_mnist.py:quick         online_ewc average accuracy 41.2 %, forgetting 2.5 %
  permuted_mnist.py:domain_quick  online_ewc average accuracy 40.0 %, forgetting 1.5 %
  permuted_mnist.py:class_quick   online_ewc average accuracy 29.5 %, forgetting -2.0 %
"""

from configs.split_mnist import quick, reduced_mnist, sweep

SWEEP_GRID = {  # the log grids of the sweep variants (task-IL and class-IL alike): 4 strengths per method
    "ewc": (1e1, 1e2, 1e3, 1e4),
    "online_ewc": (1e1, 1e2, 1e3, 1e4),
    "si": (1e0, 1e1, 1e2, 1e3),
    "mas": (1e-3, 1e-2, 1e-1, 1e0),
}
SWEEP_EPOCHS = 2  # epochs per task of the sweep variants (the single runs train 4)
VARIANTS = ("task", "domain", "class", "quick", "domain_quick", "class_quick", "sweep", "class_sweep")


def get_config(arg: str | None = None):
  variant = arg or "task"
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r} of configs/permuted_mnist.py; valid: {', '.join(VARIANTS)}")
  config = reduced_mnist("permuted")  # the setting shared with configs/split_mnist.py
  config.strength.ewc = 500.0
  config.strength.online_ewc = 500.0
  config.strength.si = 0.3
  config.strength.mas = 0.3
  if variant in ("domain", "domain_quick"):
    config.stream.scenario = "domain"
  if variant in ("class", "class_quick", "class_sweep"):
    config.stream.scenario = "class"  # one head over 10 classes per task: task t's digit y is class 10 t + y
  if variant in ("quick", "domain_quick", "class_quick"):
    quick(config, "online_ewc")
  if variant in ("sweep", "class_sweep"):
    sweep(config, SWEEP_GRID)
    config.train.epochs = SWEEP_EPOCHS
  return config
