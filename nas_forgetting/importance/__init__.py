"""Importance of parameters for earlier tasks, as pure functions of (apply_fn, params, data).

* `fisher_diagonal`: diagonal Fisher, estimators exact (default) / sampled / empirical / batch (`fisher`).
* `mas_importance`: MAS, per-example (default) or batch, squared-L2 (default) or L1 output norm (`mas`).
* `mas_local_importance`: the MAS paper's local (Hebbian) importance mean |a_i a_j| (`mas`).
* `accumulate`: replace / sum / ema across tasks (`accumulate`).

Two interchangeable paths compute the per-example estimators: "per_layer" (default; Flax Dense/Conv layers at
about the cost of a batched backward pass, everything else by vmap) and "vmap" (any model). See `_engine`.
"""

from nas_forgetting.importance.accumulate import MODES, accumulate
from nas_forgetting.importance.fisher import ESTIMATORS, fisher_diagonal
from nas_forgetting.importance.mas import MAS_ESTIMATORS, NORMS, mas_importance, mas_local_importance
from nas_forgetting.importance._engine import PATHS, discover_layers

__all__ = ["ESTIMATORS", "MAS_ESTIMATORS", "MODES", "NORMS", "PATHS", "accumulate", "discover_layers",
           "fisher_diagonal", "mas_importance", "mas_local_importance"]
