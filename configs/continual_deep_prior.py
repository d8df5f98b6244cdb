"""Split MNIST on stored deep-prior embeddings (DP-NAS hypothesis 4): continual learning on the features of a
random-weight encoder that cannot forget, with and without EWC / MAS.

Two commands. First the DP-NAS fixed-net run that evaluates the README's example net (seed 0) and stores its
embedding of the real MNIST test split (carved into 7,200 train / 800 val / 2,000 test) in `stored_embedding/`
(14x14 input: the README net then gives D = 512 features; at the native 28x28 it gives D = 12,800):
  python launch.py --config configs/dpnas_mnist.py:fixed,store_embedding --workdir /tmp/dpnas_deep_prior \
      --config.data.image_size=14 --config.fixed.num_seeds=1 --config.evaluator.epochs=3 \
      --config.evaluator.early_stopping_epoch=0 --config.fixed.embedding_layout=arrays
Then the continual run on it (5 tasks of 2 digits; `data.path` defaults to the folder above):
  python launch.py --config configs/continual_deep_prior.py --workdir /tmp/deep_prior_task          # task-IL
  python launch.py --config configs/continual_deep_prior.py:class --workdir /tmp/deep_prior_class   # class-IL
  python launch.py --config configs/continual_deep_prior.py:quick --workdir /tmp/deep_prior_quick   # smoke test
Another stored embedding (e.g. the reference's `runs/<timestamp>/stored_embedding`): `--config.data.path=<folder>`.
Variants: task (default), class, quick, class_quick; `linear` may be added after a comma (e.g. `class,linear`):
no hidden layer, only the linear heads on the embedding (as DP-NAS's own classifier).
The data source reads the arrays layout (`<split>_embeddings.npy`, `<split>_labels.npy`, `embedding.json`) or
the reference's per-sample `.npy` layout; the stored val split is merged into train (8,000 training examples).

Expected time: under a minute for the DP-NAS run and about a minute for each continual run (three methods) on
2 CPU cores. Expected result (measured once, seed 0: docs/results_deep_prior_continual.md): task-IL average accuracy
98-99 % for every method, fine-tuning included (99.2 %: the frozen encoder leaves little to forget); class-IL:
fine-tuning collapses to the last task (19 %), EWC 22 %, MAS 44 % at these untuned strengths. On the 28x28
embedding (D = 12,800; about 6.5 minutes to store, 5 minutes per continual run) the numbers are close to these.
"""

from nas_forgetting.continual.config import default_config

# Where the first command above writes the embedding.
DEFAULT_EMBEDDING = "/tmp/dpnas_deep_prior/stored_embedding"
VARIANTS = ("task", "class", "quick", "class_quick", "linear")


def get_config(arg: str | None = None):
  tokens = [t for t in (arg or "task").split(",") if t]
  unknown = [t for t in tokens if t not in VARIANTS]
  if unknown or not tokens:
    raise ValueError(f"unknown variant {arg!r} of configs/continual_deep_prior.py; valid (comma-separated): "
                     f"{', '.join(VARIANTS)}")
  config = default_config()
  config.data.source = "embeddings"  # stored feature vectors (nas_forgetting/data/embeddings.py)
  config.data.name = "deep_prior_mnist"
  config.data.path = DEFAULT_EMBEDDING
  config.model.hidden = (256,)  # one shared hidden layer on the D features (the part that can forget)
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-3
  config.train.epochs = 4
  config.train.batch_size = 128
  config.strength.ewc = 5000.0  # as configs/split_mnist.py (van de Ven & Tolias' Split MNIST lambda)
  config.importance.num_examples = 1000  # Fisher / Omega on 1,000 training examples of the task
  if "class" in tokens or "class_quick" in tokens:
    config.stream.scenario = "class"  # one 10-way head over all classes
  if "quick" in tokens or "class_quick" in tokens:
    config.stream.num_tasks = 2
    config.methods = ("finetune", "ewc")
    config.model.hidden = (16,)
    config.train.epochs = 3
    config.train.batch_size = 16
    config.train.learning_rate = 1e-2  # a few dozen steps per task must learn
    config.importance.num_examples = 64
  if "linear" in tokens:
    config.model.hidden = ()
  return config
