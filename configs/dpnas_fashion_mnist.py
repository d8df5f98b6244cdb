"""DP-NAS on FashionMNIST (the reference's default data set), through tensorflow-datasets.

Commands:
  python launch.py --config configs/dpnas_fashion_mnist.py --workdir /tmp/dpnas_fashion
  python launch.py --config configs/dpnas_fashion_mnist.py:quick --workdir /tmp/dpnas_fashion_quick
Variants: as configs/dpnas_mnist.py (quick, fixed, hypothesis2, full_training, store_embedding, readme,
reference_bn, reference_duplicates, reference_feasibility).
Data: tfds `fashion_mnist` (needs TensorFlow for the stock builder: `pip install nas_forgetting[tf]`, and network
access or prepared tfds data; not available offline). 60k train (90/10 train/val, seeded), 10k test.
Expected (reference behaviour): the moving-average reward climbs from about 0.65 during exploration to about 0.90.
"""

import ml_collections

from configs.dpnas_mnist import build
from nas_forgetting.data.datasets import default_data_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return build(default_data_config(source="tfds", name="fashion_mnist"), arg)
