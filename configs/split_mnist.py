"""Split MNIST: 5 tasks of 2 digits ({0,1}, {2,3}, ...), task-incremental (a head per task) or class-incremental.

Command (reduced scale, offline, real MNIST test split carved into 8,000 train / 2,000 test):
  python launch.py --config configs/split_mnist.py --workdir /tmp/split_mnist          # task-IL
  python launch.py --config configs/split_mnist.py:class --workdir /tmp/split_mnist_c  # class-IL
  python launch.py --config configs/split_mnist.py:quick --workdir /tmp/split_mnist_q  # smoke test (seconds)

Expected figure and its source: van de Ven & Tolias (2019), "Three scenarios for continual learning", Table 2
(full MNIST, 60k train, MLP 2x400, Adam lr 1e-3, 2,000 iterations per task of batch 128): average task-IL test
accuracy after all tasks EWC 98.64, online EWC 99.12, SI 99.09, fine-tuning ("None") 87.19; MAS 99.22 (their
follow-up with MAS). Class-IL: every one of these penalties stays near 20% (the last task's two classes),
fine-tuning too; only replay methods escape. A faithful reproduction shows both.

Here (reduced scale): the same network and optimiser with 8k training images (~1,600 per task) and 2k test
images carved from the 10k MNIST test split, 4 epochs per task (~50 iterations per task). Expected time: about
2-3 minutes on 2 CPU cores for the six methods (measured 127-143 s). Measured numbers: docs/results_continual.md.
"""

from nas_forgetting.continual.experiment import default_config
from nas_forgetting.paths import shared_data


def get_config(arg: str | None = None):
  variant = arg or "task"
  config = default_config()
  config.seed = 0
  config.methods = ("finetune", "ewc", "online_ewc", "si", "mas", "joint")
  config.data.source = "idx"
  config.data.path = shared_data("mnist")
  config.data.train_size = 8000
  config.data.test_size = 2000
  config.stream.kind = "split"
  config.stream.num_tasks = 5
  config.stream.classes_per_task = 2
  config.stream.scenario = "task"
  config.model.name = "mlp"
  config.model.hidden = (400, 400)
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-3
  config.train.epochs = 4
  config.train.batch_size = 128
  config.strength.ewc = 5000.0  # van de Ven & Tolias' EWC lambda for Split MNIST
  config.strength.online_ewc = 5000.0
  config.importance.online_ewc_gamma = 1.0
  config.strength.si = 1.0
  config.importance.si_xi = 0.1
  config.strength.mas = 1.0
  config.importance.num_examples = 1000  # Fisher / Omega on 1,000 training examples of the task
  if variant in ("class", "class_quick"):
    config.stream.scenario = "class"  # same strengths as task-IL (one 10-way head over all classes)
  if variant in ("quick", "class_quick"):
    config.data.train_size = 500
    config.data.test_size = 200
    config.stream.num_tasks = 2
    config.methods = ("ewc",)
    config.model.hidden = (32,)
    config.train.epochs = 1
    config.train.batch_size = 32
    config.importance.num_examples = 64
  elif variant not in ("task", "class"):
    raise ValueError(f"unknown variant {arg!r} of configs/split_mnist.py; valid: task, class, quick, class_quick")
  return config
