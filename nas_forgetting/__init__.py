"""nas_forgetting: forgetting in neural networks, studied and fought in JAX.

Sub-packages (the arrow goes one way: experiments -> {models, importance, penalties, data, io}):
  data/        data sets (tfds and local files), task streams, text corpora, on-device batching
  models/      Flax Linen modules
  importance   Fisher diagonals, MAS importances, accumulation across tasks (pure functions)
  penalties    quadratic consolidation penalties and their optax-style transform (pure functions)
  continual/   task-sequence runner, accuracy matrix, forgetting metrics
  enas/        ENAS search spaces, controller, shared training, derive, ablations
  dpnas/       DP-NAS net strings, state space, Q-learning, deep-prior evaluator
  io/          run folders, checkpoints, metrics (JSONL/CSV/TensorBoard), plots, drawings
  distributed  several processes: jax.distributed.initialize, arrays placed over / gathered from every process's
               devices, which process writes the workdir (process 0)
"""

__version__ = "0.1.0"
