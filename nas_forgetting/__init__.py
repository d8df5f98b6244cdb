"""nas_forgetting: forgetting in neural networks, studied and fought in JAX.

Sub-packages (the arrow goes one way: experiments -> {models, importance, penalties, data, io}):
  data/        data sets (tfds and local files), task streams, text corpora, on-device batching
  models/      Flax Linen modules
  importance   Fisher diagonals, MAS importances, accumulation across tasks (pure functions)
  penalties    quadratic consolidation penalties and their optax-style transform (pure functions)
  continual/   task-sequence runner, accuracy matrix, forgetting metrics
  enas/        ENAS search state, tasks, search loop, REINFORCE, derive, modes, outputs
  dpnas/       DP-NAS state space, Q-learning, search, deep-prior evaluator, fixed nets
  io/          run folders, checkpoints, metrics (JSONL/CSV/TensorBoard), plots, drawings
  config_schema  override(config, values), the one way code changes declared config fields, and the value checks
  experiments  experiment name -> run, validate_config, resume-safe fields
  device_memory  a device's free memory and the host's available RAM
  progress     progress bars (tqdm with ETA), a leaf that data/ and the experiments both use
  distributed  several processes: jax.distributed.initialize, arrays placed over / gathered from every process's
               devices, which process writes the workdir (process 0)
"""

__version__ = "0.1.0"
