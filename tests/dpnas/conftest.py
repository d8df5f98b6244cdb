"""Test data for the DP-NAS tests: a seeded synthetic four-class set of 8x8 stripe images."""

import numpy as np
import pytest

from nas_forgetting.dpnas.evaluator import SplitData


def stripe_data(n_train: int, n_val: int, n_test: int, *, seed: int = 0) -> SplitData:
  """A seeded synthetic four-class set of 8x8 grayscale images, easy to learn from a deep prior: noise in [0, 0.5),
  and class c brightens rows 2c and 2c+1 by 1 (tests of the machinery, not of accuracy).
  The three splits are drawn one after another from one generator seeded by `seed`."""
  rng = np.random.default_rng(seed)

  def make(n):
    y = rng.integers(0, 4, n).astype(np.int32)
    x = 0.5 * rng.random((n, 8, 8, 1)).astype(np.float32)
    for i, c in enumerate(y):
      x[i, 2 * c:2 * c + 2, :, 0] += 1.0
    return x, y

  return SplitData(*make(n_train), *make(n_val), *make(n_test), 4)


@pytest.fixture(scope="session")
def stripes():
  """`stripes(n_train, n_val, n_test, seed=0)` -> a `SplitData` of stripe images."""
  return stripe_data


@pytest.fixture(scope="session")
def data():
  """The stripe set most evaluator tests share: 70 / 30 / 20 images."""
  return stripe_data(70, 30, 20)
