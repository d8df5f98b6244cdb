"""What one evaluation gives (`EvalResult` per seed) and how it fails (`EvaluationDiverged`).

Inside the compiled functions the embeddings, every training loss, the parameters after every epoch and the
accuracies are checked for finiteness (traced flags, no host sync per step); `raise_if_diverged` reads them on the
host once per evaluation and raises `EvaluationDiverged` (a `DivergenceError` naming the quantity, the epoch, the
net and the seed; a search marks the net diverged instead).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from nas_forgetting.errors import DivergenceError
from nas_forgetting.numerics import check_finite


@dataclasses.dataclass
class EvalResult:
  """One seed's outcome (accuracies in percent, as the reference logs them)."""

  seed: int
  reward: float
  train_flag: bool
  acc_best_val: float
  acc_val_all_epochs: list
  acc_train_all_epochs: list
  acc_test_all_epochs: list
  acc_test_last: float


class EvaluationDiverged(DivergenceError):
  """An evaluation produced NaN or infinite values: `quantity` (embeddings, training loss, parameters, accuracies)
  of architecture `net` with initialisation `seed`. A search marks the architecture diverged; elsewhere it stops."""

  def __init__(self, message: str, *, net: str, seed: int, quantity: str):
    super().__init__(message)
    self.net, self.seed, self.quantity = net, int(seed), quantity


def raise_if_diverged(net: str, seeds: Sequence[int], embeddings_ok: np.ndarray | None,
                       per_epoch: dict, first_epoch: int = 0) -> None:
  """Host-side check, once per evaluation: raises `EvaluationDiverged` for the first seed with non-finite embeddings
  (`embeddings_ok`, one flag per seed) or a non-finite per-epoch quantity (`per_epoch`: name -> (seeds, epochs)
  flags, or (seeds, epochs, k) values); the message names the quantity, the epoch, the net and the seed."""
  def fail(quantity: str, value: np.ndarray, where: str, seed: int) -> None:
    try:
      check_finite({quantity: value}, context=where)
    except DivergenceError as error:
      raise EvaluationDiverged(str(error), net=net, seed=seed, quantity=quantity) from None

  for i, seed in enumerate(seeds):
    seed = int(seed)
    context = f"architecture {net}, seed {seed}"
    if embeddings_ok is not None and not bool(embeddings_ok[i]):
      fail("embeddings", np.asarray(False), context, seed)
    for quantity, values in per_epoch.items():
      values = np.asarray(values[i])
      flat = values.reshape(values.shape[0], -1)
      bad = ~flat if flat.dtype == bool else ~np.isfinite(flat.astype(np.float64))
      epochs = bad.any(axis=1)
      if epochs.any():
        e = int(np.argmax(epochs))
        shown = np.asarray(False) if flat.dtype == bool else flat[e][bad[e]][0]
        fail(quantity, shown, f"epoch {first_epoch + e}, {context}", seed)
