"""Run outputs: run folders, checkpoints, metrics (JSONL, CSV, TensorBoard), plots (progress bars: nas_forgetting.progress).

Modules (imported on their own, so that a light import does not pull in orbax or matplotlib):
  atomic       atomic file writes (temporary sibling + os.replace)
  run          open_run: the locked workdir of a launch (config.json, git_revision.txt), git_revision
  metrics      MetricsLogger (JSONL + TensorBoard scalars/images through tensorboardX), write_csv / read_csv /
               read_jsonl
  checkpoint   Checkpointer over orbax-checkpoint (typed PRNG keys, Python scalars, strict structure checks)
  report       result_block(): the result lines every run prints when it ends
  plots        accuracy-matrix heat map, per-task accuracy curves, line plots (matplotlib Agg; PNG/PDF)
"""
