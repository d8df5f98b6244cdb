"""MNIST then FashionMNIST with EWC at strengths 1e3, 1e4, 1e5 (the public EWC tutorial notebook's experiment).

Setup as the tutorial: MLP 784-256-128-10 with BatchNorm + ReLU, one shared 10-way head (both data sets use
labels 0-9: domain-incremental), Adam lr 1e-4, 4 epochs per task, batch 100. Differences, on purpose: the
tutorial's Fisher is the square of a batch-mean gradient over 2 batches, computed with an indexing bug (see
shared spec); here the exact diagonal Fisher over 1,000 training examples (`importance.fisher_estimator`
'exact'; 'batch' with `importance.num_examples` 200 is the closest to the tutorial's, without the bug).

Command (needs MNIST and FashionMNIST through tensorflow-datasets, i.e. `pip install nas_forgetting[tf]` and
network access, or prepared tfds data in data.data_dir):
  python launch.py --config configs/ewc_mnist_fashion.py --workdir /tmp/ewc_mnist_fashion
Offline smoke variant (the embedded font digits, then the real MNIST test split as the second data set; same
code path as the sequence, no TensorFlow needed):
  python launch.py --config configs/ewc_mnist_fashion.py:quick --workdir /tmp/ewc_mf_q

Expected figure and its source: the tutorial's final accuracies (MNIST / FashionMNIST, %): fine-tuning
28.1 / 86.2; EWC 1e3 85.9 / 85.7; 1e4 93.9 / 84.7; 1e5 96.6 / 83.9 — MNIST retained better and FashionMNIST
learned slightly worse as the strength grows. Here: comparison.csv and each method's accuracy_matrix.csv (row 1).
Expected time: about 3 minutes on 2 CPU cores for the full data once downloaded. Offline, only the MNIST half
exists (shared/data/mnist is the 10k test split), so this figure was not measured here.
"""

from nas_forgetting.continual.config import default_config
from nas_forgetting.data.datasets import default_data_config, offline_data_config


def get_config(arg: str | None = None):
  config = default_config()
  config.methods = ("finetune", "ewc@1e3", "ewc@1e4", "ewc@1e5")
  config.data = default_data_config(source="tfds", name="mnist")
  config.data_sequence.d1_fashion_mnist = default_data_config(source="tfds", name="fashion_mnist")
  config.stream.kind = "sequence"
  config.stream.scenario = "domain"
  config.model.hidden = (256, 128)
  config.model.batch_norm = True
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-4
  config.train.epochs = 4
  config.train.batch_size = 100
  config.train.eval_batch_size = 1000
  config.importance.num_examples = 1000
  if arg == "quick":
    config.methods = ("ewc@1e4",)
    config.data = default_data_config(source="embedded", train_size=300, test_size=100)
    config.data_sequence.d1_fashion_mnist = offline_data_config("mnist", train_size=300, test_size=100)
    config.model.hidden = (32, 16)
    config.train.epochs = 1
    config.train.batch_size = 50
    config.train.eval_batch_size = 100
    config.importance.num_examples = 64
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/ewc_mnist_fashion.py; valid: quick or none")
  return config
