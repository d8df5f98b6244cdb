"""MAS on an image-folder data set split into groups of classes, AlexNet-style network with frozen layers.

The third-party MAS setup (wannabeOG/MAS-PyTorch): Tiny-ImageNet in 4 tasks of 50 classes, pretrained AlexNet
with its first layers frozen, a head per task, MAS lambda 0.01, SGD lr 1e-3, 10 epochs; it prints a per-task
forgetting table and reports 10.2 / 7.6 / 4.1 / 0 % forgetting (first to last task).

Offline here: the CIFAR-10 JPEG subset (`shared/data/cifar10`, image folders) in 5 tasks of 2 classes, 32x32,
200 training images per class, 1,000 test images in all, an AlexNet-style network at a quarter of AlexNet's
width, conv_0 and conv_1 frozen (random, not pretrained: no ImageNet weights are available offline, so the frozen
layers are fixed random features), one head per task, Adam lr 1e-3 (plain SGD barely moves in 3 epochs from a
random start), 4 epochs per task, no dropout, MAS lambda 1. The per-task forgetting table is <workdir>/<method>/per_task.csv (columns accuracy_when_learned,
final_accuracy, final_drop, forgetting); fine-tuning runs alongside for contrast.

Command:
  python launch.py --config configs/mas_image_folder.py --workdir /tmp/mas_cifar
  python launch.py --config configs/mas_image_folder.py:quick --workdir /tmp/mas_cifar_q   # smoke test

Expected result: MAS forgets less than fine-tuning on every earlier task (the reference's figures are for a
different data set and a pretrained network, so only the ordering transfers). Expected time: about 16 minutes
for both methods on 2 shared CPU cores (CPU convolutions are slow; a GPU takes seconds). Measured numbers:
docs/results_continual.md (fine-tuning forgets 17 / 9 / 10 points on the first three tasks, MAS under 2.5).
"""

from nas_forgetting.continual.config import default_config
from nas_forgetting.data.datasets import offline_data_config


def get_config(arg: str | None = None):
  config = default_config()
  config.methods = ("finetune", "mas")
  # 200 images decoded per class and split (first 200 by name), 1,000 test images in all
  config.data = offline_data_config("cifar10", max_per_class=200, test_size=1000)
  config.model.name = "alexnet"
  config.model.width = 0.25
  config.model.fc_units = 256
  config.model.dropout = 0.0  # AlexNet's 0.5 slows learning too much at 400 images and 4 epochs per task
  config.model.frozen = ("conv_0", "conv_1")
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-3
  config.train.epochs = 4
  config.train.batch_size = 32
  config.train.eval_batch_size = 250
  config.importance.num_examples = 200
  config.importance.chunk_size = 100
  if arg == "quick":
    config.methods = ("mas",)
    config.data.max_per_class = 20
    config.data.image_size = 16
    config.data.test_size = 100
    config.stream.num_tasks = 2
    config.model.width = 0.125
    config.model.fc_units = 32
    config.train.epochs = 1
    config.train.batch_size = 16
    config.train.eval_batch_size = 25
    config.importance.num_examples = 32
    config.importance.chunk_size = 32
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/mas_image_folder.py; valid: quick or none")
  return config
