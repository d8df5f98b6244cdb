"""DP-NAS on CIFAR-10 (grey-scale by default, as the reference's --gray-scale True), from an image folder.

Commands:
  python launch.py --config configs/dpnas_cifar10.py --workdir /tmp/dpnas_cifar10
  python launch.py --config configs/dpnas_cifar10.py:quick --workdir /tmp/dpnas_cifar10_quick
  python launch.py --config configs/dpnas_cifar10.py:quick --config.data.grayscale=False --workdir /tmp/c10rgb
Variants: as configs/dpnas_mnist.py.
Data: ../shared/data/cifar10 (JPEG export: 20k train = first 2,000 per class, 10k test), resized to the reference's
patch size 28. Expected: rewards far lower than on MNIST (grey-scale CIFAR-10 with random encoders; roughly
0.3-0.45 for good deep priors); a quick search takes a few minutes on 2 CPU cores.
"""

import ml_collections

from configs.dpnas_mnist import build
from nas_forgetting.data.datasets import offline_data_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = build(offline_data_config("cifar10", name="cifar10"), arg)
  if "quick" in (arg or "").split(","):
    config.data.max_per_class = 120  # decode only the first 120 JPEGs per class and split
  return config
