"""The ENAS search loop: shared and controller epochs over one `SearchState`, checkpoints, resume; and the training
of one cell alone (the same shared epochs with a fixed architecture).

Each phase takes the run's context, a logger and the state, and returns the new state:
  shared_epoch      one epoch of shared training (an architecture sampled per burst of `wpl.num_batch_per_iter`
                    steps; WPL penalty, Fisher update and anchor refresh; forgetting measured per epoch)
  controller_epoch  `controller.steps_per_epoch` REINFORCE steps with the shared weights fixed
  derive            (`nas_forgetting.enas.derive`) the best of sampled cells, evaluated; the state is unchanged
`train` runs them for `train.max_epoch` epochs from the latest checkpoint. The last epoch's derive, drawings and
summary.json come before its checkpoint, so a search whose last checkpoint is the final epoch's has finished:
relaunching it says so and writes nothing. A run resumed from an earlier checkpoint drops the records logged after
it and ends with outputs equal to an uninterrupted run's.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_forgetting.enas import drawing
from nas_forgetting.enas import outputs
from nas_forgetting.enas import search_space as ss
from nas_forgetting.enas.derive import derive, report_arch
from nas_forgetting.enas.state import Run, SearchState, checkpoint_tree, restore
from nas_forgetting.errors import CheckpointError, ConfigError
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.checkpoint import Checkpointer
from nas_forgetting.io.metrics import MetricsLogger
from nas_forgetting.progress import progress
from nas_forgetting.numerics import check_finite
from nas_forgetting.wpl import forgetting as forgetting_lib
from nas_forgetting.wpl import state as wpl_lib


def scores(run: Run, params, batch, archs) -> np.ndarray:
  """Scores of many architectures on one batch, in chunks of a fixed size (one compilation)."""
  chunk = run.config.train.derive_num_sample
  n = len(archs)
  pad = (-n) % chunk
  archs = jnp.concatenate([archs, jnp.repeat(archs[:1], pad, axis=0)]) if pad else archs
  out = [np.asarray(run.metric(params, batch, archs[i:i + chunk])) for i in range(0, len(archs), chunk)]
  return np.concatenate(out)[:n]


def shared_epoch(run: Run, logger: MetricsLogger, state: SearchState, *, fixed_arch=None,
                 desc: str = "shared") -> SearchState:
  """Epoch `state.epoch` of shared training. A search samples one architecture per burst of
  `wpl.num_batch_per_iter` steps; with WPL on, each step adds the penalty and each burst ends with the Fisher update
  and anchor refresh (`wpl.state.end_burst`). With `wpl.measure_forgetting`, every architecture is scored on a fixed
  reward batch right after its burst and again at the end of the epoch (forgetting/* metrics, forgetting.csv).
  `fixed_arch` trains that cell alone (no WPL update, no forgetting measured)."""

  c = run.config
  epoch = state.epoch
  steps = c.shared.steps_per_epoch or run.task.steps_per_pass
  search = fixed_arch is None
  burst = c.wpl.num_batch_per_iter if search else 1
  hp = run.task.wpl_hp
  lr = jnp.asarray(run.lr(epoch), jnp.float32)
  measure = c.wpl.measure_forgetting and search
  update_wpl = hp is not None and search  # a cell trained alone keeps a zero Fisher: no penalty
  shared, wpl, rng, curves = state.shared, state.wpl, state.rng, state.curves
  data = run.task.epoch_cursor(state.data.position)
  if update_wpl:
    wpl = wpl_lib.begin_epoch(wpl, epoch, hp)
  tracker = forgetting_lib.ForgettingTracker(higher_is_better=run.task.higher_is_better)
  if measure:
    tracker.begin_epoch(epoch)
  fixed_batch = run.task.reward_batch(0)
  step = int(shared.step)  # counted on the host: no device synchronisation per step
  arch = fixed_arch
  history, archs = [], []  # each step's metrics and architecture (device arrays), named when a step diverges
  where = f"epoch {epoch}, {'shared training' if search else f'training {desc}'}"
  for k in progress(range(steps), total=steps, desc=f"{desc} epoch {epoch}", unit="step"):
    rng, k_arch, k_step = jax.random.split(rng, 3)
    if search and k % burst == 0:
      arch = run.sample(state.controller.params, k_arch, num_samples=1)[0]
    shared, data, metrics = run.task.shared_step(shared, data, arch, k_step, lr, wpl)
    if search and ((k + 1) % burst == 0 or k == steps - 1):  # the end of this architecture's burst
      if update_wpl:
        valid = step // burst if c.wpl.shared_valid_fisher else None
        wpl = run.task.end_burst(wpl, shared.params, arch, data, valid)
      if measure:  # score right after this architecture's training burst, on a fixed validation batch
        tracker.record_after_burst(arch, float(run.metric(shared.params, fixed_batch, arch[None])[0]))
    history.append(metrics)
    archs.append(arch)
    step += 1
    if step % c.train.log_every == 0:
      curves = outputs.add_points(curves, step, outputs.log_steps(run, logger, step, history, {"epoch": epoch},
                                                                  where=where, archs=archs))
      history, archs = [], []
  extra = {"epoch": epoch}
  if update_wpl:
    extra.update({k: float(v) for k, v in wpl_lib.fisher_statistics(wpl).items()})
    extra["wpl/alpha"] = float(wpl_lib.penalty_strength(wpl, hp))
  forgetting = state.forgetting
  if measure:
    after = scores(run, shared.params, fixed_batch, jnp.stack(tracker.architectures))
    row = tracker.end_epoch(list(after))
    extra.update({f"forgetting/{k}": float(row[k]) for k in forgetting_lib.SUMMARY_KEYS})
    check_finite({f"forgetting/{k}": row[k] for k in forgetting_lib.SUMMARY_KEYS}, context=where)
    forgetting = forgetting + (row,)
    forgetting_lib.write_forgetting_csv(run.workdir / "forgetting.csv", forgetting)
  curves = outputs.add_points(curves, step, outputs.log_steps(run, logger, step, history, extra, where=where,
                                                              archs=archs))
  return state._replace(shared=shared, wpl=wpl, data=data, rng=rng, forgetting=forgetting, curves=curves)


def controller_epoch(run: Run, logger: MetricsLogger, state: SearchState) -> SearchState:
  """`controller.steps_per_epoch` REINFORCE steps on successive reward batches, the shared weights fixed; every
  `train.draw_every` controller steps a sampled cell is drawn into networks/."""

  c = run.config
  epoch = state.epoch
  cstate, rng, curves = state.controller, state.rng, state.curves
  history = []
  where = f"epoch {epoch}, controller training"
  global_step = int(cstate.step)  # counted on the host: no device synchronisation per step
  for _ in progress(range(c.controller.steps_per_epoch), desc=f"controller epoch {epoch}", unit="step"):
    rng, key = jax.random.split(rng)
    cstate, metrics = run.controller_step(cstate, state.shared.params, run.task.reward_batch(global_step), key)
    history.append(metrics)
    global_step += 1
    if global_step % c.train.log_every == 0:
      logged = outputs.log_steps(run, logger, global_step, history, {"epoch": epoch}, where=where)
      curves = outputs.add_points(curves, global_step, logged, outputs.CONTROLLER_CURVES)
      history = []
    if c.train.draw_every and global_step % c.train.draw_every == 0:
      rng, key = jax.random.split(rng)
      arch = run.sample(cstate.params, key, num_samples=1)[0]
      outputs.draw(run, logger, arch, f"{epoch:03d}-{global_step:06d}",
                   f"epoch {epoch}, controller step {global_step}, reward {float(metrics['controller/reward']):.4f}",
                   "controller/sample", global_step)
  logged = outputs.log_steps(run, logger, global_step, history, {"epoch": epoch}, where=where)
  curves = outputs.add_points(curves, global_step, logged, outputs.CONTROLLER_CURVES)
  return state._replace(controller=cstate, rng=rng, curves=curves)


def train(run: Run) -> dict[str, Any]:
  """The search: shared and controller phases for train.max_epoch epochs, then derive and evaluate."""
  c = run.config
  ckpt, state = restore(run, run.workdir / "checkpoints", jax.random.key(c.seed))
  start = state.epoch
  if start > c.train.max_epoch:
    raise ConfigError(f"train.max_epoch={c.train.max_epoch}, but the search in {run.workdir} has already trained "
                      f"{start} epochs; launch it with train.max_epoch >= {start}")
  if start == c.train.max_epoch:
    ckpt.close()
    return finished(run, start)
  run.clock.before = state.seconds
  resumed = start > 0
  logs = outputs.open_logs(run.workdir, shared_step=int(state.shared.step) if resumed else None,
                           controller_step=int(state.controller.step) if resumed else None,
                           controller=run.trains_controller)
  try:
    if resumed:  # the values logged before the checkpoint, for forgetting.csv and the figures
      state = state._replace(forgetting=outputs.forgetting_rows(run.workdir, start),
                             curves=outputs.curves_from_logs(run.workdir))
    summary = {}
    for epoch in range(start, c.train.max_epoch):
      state = shared_epoch(run, logs.shared, state)
      if run.trains_controller:
        state = controller_epoch(run, logs.controller, state)
      elif c.train.draw_every:
        rng, key = jax.random.split(state.rng)
        state = state._replace(rng=rng)
        step = int(state.shared.step)
        outputs.draw(run, logs.shared, run.sample(state.controller.params, key, num_samples=1)[0],
                     f"{epoch:03d}-{step:06d}", f"epoch {epoch} (random)", "shared/sample", step)
      last = epoch == c.train.max_epoch - 1
      derive_now = bool(c.train.derive_every) and (epoch + 1) % c.train.derive_every == 0
      if last:
        # The final derive takes the key a longer run's derive at this epoch would take, and advances the stored
        # rng only where that derive would: a relaunch with a larger train.max_epoch continues like the longer run.
        if derive_now:
          rng, key = jax.random.split(state.rng)
          state = state._replace(rng=rng)
        else:
          key = jax.random.split(state.rng)[1]
        summary = finish_search(run, logs.shared, state, key)
      elif derive_now:
        rng, key = jax.random.split(state.rng)
        state = state._replace(rng=rng)
        results = derive(run, logs.shared, state, key)
        state = state._replace(curves=outputs.add_points(state.curves, int(state.shared.step), results))
      state = state._replace(epoch=epoch + 1)
      save_epoch(run, ckpt, state, last)  # after everything that draws from rng: exact resume
    ckpt.wait()
    ckpt.close()
    return summary
  finally:
    outputs.close_logs(logs)


def save_epoch(run: Run, ckpt: Checkpointer, state: SearchState, last: bool) -> None:
  """Checkpoints the state after epoch `state.epoch - 1` every `train.save_every` epochs and after the last one."""
  if state.epoch % run.config.train.save_every == 0 or last:
    ckpt.save(state.epoch - 1, checkpoint_tree(state, run.clock.elapsed()))


def finish_search(run: Run, logger: MetricsLogger, state: SearchState, key: jax.Array) -> dict[str, Any]:
  """The end of the last epoch: derive and evaluate, the GIF and curves, summary.json (before the checkpoint)."""
  results = derive(run, logger, state, key)
  if run.config.wpl.measure_forgetting and state.forgetting:
    rows = state.forgetting
    results["forgetting/mean_diff_last_epoch"] = float(rows[-1]["mean_diff"])
    results["forgetting/mean_diff_all_epochs"] = float(np.mean([r["mean_diff"] for r in rows]))
  outputs.write_gif(run)
  outputs.plot_curves(run, outputs.add_points(state.curves, int(state.shared.step), results))
  summary = outputs.summary_record(run, results)
  outputs.write_summary(run, summary)
  return summary


def finished(run: Run, epochs: int) -> dict[str, Any]:
  """A relaunch of a finished search: says so, writes nothing, returns the stored summary."""
  path = run.workdir / outputs.SUMMARY_FILE
  if not path.exists():
    raise CheckpointError(f"the search in {run.workdir} has finished all {epochs} epochs (its last checkpoint is "
                          f"the final one) but {path} is missing; run mode 'derive' with load_workdir={run.workdir} "
                          "in another workdir to derive its cell again")
  summary = json.loads(path.read_text(encoding="utf-8"))
  print(f"The ENAS search in {run.workdir} has finished all {epochs} epochs; nothing to do (its results are in "
        f"{path}; launch with a larger train.max_epoch to continue it).", flush=True)
  return dict(summary, finished_before=True)


def train_alone(run: Run, arch: np.ndarray, folder: str, epochs: int | None = None) -> dict[str, Any]:
  """Trains `arch` alone from fresh shared weights for `epochs` (default train.max_epoch); metrics, checkpoints
  and result.json go to <workdir>/<folder>. As the search: the report comes before the last checkpoint, a
  resumed training drops the records logged after its checkpoint, and a finished one returns its result.json."""

  c = run.config
  epochs = c.train.max_epoch if epochs is None else epochs
  out = run.workdir / folder
  out.mkdir(parents=True, exist_ok=True)
  ckpt, state = restore(run, out / "checkpoints", jax.random.key(c.seed + 1))
  if folder in ("single", "scratch"):  # the mode's own training: its seconds count toward the run's total
    run.clock.before = state.seconds
  if state.epoch >= epochs and (out / "result.json").exists():
    ckpt.close()
    return json.loads((out / "result.json").read_text(encoding="utf-8"))
  if state.epoch >= epochs:
    raise CheckpointError(f"{out} holds a finished training of {state.epoch} epochs but no result.json; remove "
                          f"{out} to train the cell again")
  atomic_write_text(out / "dag.json", ss.dag_json(arch, run.space))
  drawing.draw_architecture(arch, run.space, out / "dag.png", title=run.space.to_string(arch)[:80],
                            backend=c.train.draw_backend)
  logs = outputs.open_logs(out, shared_step=int(state.shared.step) if state.epoch > 0 else None)
  result = {}
  try:
    arch_j = jnp.asarray(arch)
    for epoch in range(state.epoch, epochs):
      state = shared_epoch(run, logs.shared, state, fixed_arch=arch_j, desc=folder)._replace(epoch=epoch + 1)
      last = epoch == epochs - 1
      if last:
        result = report_arch(run, logs.shared, state, arch, folder)
        atomic_write_text(out / "result.json", json.dumps(result, indent=2, default=float))
      save_epoch(run, ckpt, state, last)
    ckpt.wait()
    ckpt.close()
    return result
  finally:
    outputs.close_logs(logs)
