"""Multi-model forgetting made measurable: a fixed set of architectures trained round-robin on the shared weights.

Mode 'multi_model' of the ENAS experiment. `multi_model.num_archs` architectures are sampled once (from the seed,
with the untrained controller's policy) and trained in rounds: each round trains every architecture in turn for one
burst of `wpl.num_batch_per_iter` shared steps (with the WPL penalty and Fisher update when WPL is on), and after
every burst ALL the architectures are scored on the same fixed validation batch (`multi_model.eval_width` reward
batches wide: the task's `score_batch`) by one compiled evaluation (the architectures are a traced array). Each round
thus gives an (architectures x bursts) matrix, and `nas_forgetting.wpl.forgetting.round_forgetting_summary` its
forgetting: after the next architecture's burst and at
the round's end (mean, median, fraction that got worse; > 0 = forgetting).

Stopping (`converged`): `multi_model.patience` = p > 0 ("strict" convergence) stops once the round's mean
end-of-round metric (perplexity or accuracy, improving in the task's direction) has not improved on its best for p
rounds, checked from round `multi_model.min_rounds` on; p = 0 ("loose") runs `multi_model.max_rounds` rounds. Both
stop at `multi_model.max_rounds`.

Outputs under <workdir>/multi_model/: archs.txt (the architectures, one per line, in training order), metrics.csv
(round, arch, after_burst, metric: the rounds x architectures x bursts tensor in long form) and forgetting.csv
(round and `ROUND_SUMMARY_KEYS`, one line per round), and final.csv (per architecture: its last end-of-round score
`shared_<metric>`, its metric on the whole reward split `valid_<metric>` and on the test split `test_<metric>` with
the final shared weights, and with `multi_model.stand_alone` its score `alone_<metric>` after training alone: the
same initial weights, bursts and learning rates, no WPL; Kendall's tau-b between the shared and alone columns is
the summary's `kendall_tau`). The per-round summaries also go to the run's metrics logs on the round axis, with WPL
on also `multi_model/wpl_sgd_stiffness` (learning rate x WPL strength x max Fisher, `wpl.state.sgd_stiffness`;
warned once at >= 2, where the penalty shakes the weights it should hold; its maximum is the summary's
`wpl_sgd_stiffness_max`).
The learning rate of round r is the shared schedule's at epoch r (`shared.decay_after` counts rounds).

Resuming: the round loop is checkpointed in <workdir>/multi_model/checkpoints every `train.save_every` rounds and
after the last (`RoundState`); a relaunch restores the latest checkpoint, reads the earlier rounds back from
metrics.csv and forgetting.csv, drops whatever was logged after the checkpoint, and ends with outputs equal to an
uninterrupted run's. A relaunch of a finished run (summary.json written for its last round) says so and writes
nothing; `multi_model.max_rounds` may be raised on a relaunch to continue a run exactly as if launched with it, and
`multi_model.stand_alone` switched on for a finished run: the relaunch trains the architectures alone from the
final checkpoint's run and rewrites final.csv and summary.json with the alone column and Kendall's tau (the
round-robin's numbers unchanged; the stand-alone training does not depend on them).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from nas_forgetting.enas import outputs
from nas_forgetting.enas.outputs import Logs
from nas_forgetting.enas.state import Run, fresh_state, uncommitted
from nas_forgetting.enas.tasks import DataCursor
from nas_forgetting.errors import CheckpointError, ConfigError
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.checkpoint import Checkpointer
from nas_forgetting.io.metrics import read_csv, write_csv
from nas_forgetting.numerics import check_finite
from nas_forgetting.statistics import kendall_tau_b
from nas_forgetting.wpl import forgetting as forgetting_lib
from nas_forgetting.wpl import state as wpl_lib


def converged(round_scores: Sequence[float], *, patience: int, higher_is_better: bool, min_rounds: int = 0) -> bool:
  """The strict criterion: True when none of the last `patience` (> 0) rounds' scores improved on the best score of
  the rounds before them (improving = higher, or lower, per `higher_is_better`); False while fewer than
  max(`patience` + 1, `min_rounds`) rounds have been run, and always False for `patience` 0 (loose: a fixed number
  of rounds)."""
  if patience <= 0 or len(round_scores) <= patience or len(round_scores) < min_rounds:
    return False
  scores = np.asarray(round_scores, np.float64)
  before, recent = scores[:-patience], scores[-patience:]
  return bool(np.max(recent) <= np.max(before)) if higher_is_better else bool(np.min(recent) >= np.min(before))


def train_bursts(run: Run, shared: Any, data: Any, arch: Any, rng: jax.Array, lrs: Sequence[float],
                 wpl: Any = None) -> tuple[Any, Any, jax.Array]:
  """One burst of `wpl.num_batch_per_iter` shared steps of `arch` per learning rate in `lrs` (with the WPL penalty
  when `wpl` is a state); returns (shared, data cursor, rng)."""
  for lr in lrs:
    lr = jnp.asarray(lr, jnp.float32)
    for _ in range(run.config.wpl.num_batch_per_iter):
      rng, k_step = jax.random.split(rng)
      shared, data, _ = run.task.shared_step(shared, data, arch, k_step, lr, wpl)
  return shared, data, rng


class RoundState(NamedTuple):
  """What the round loop changes, checkpointed after every `train.save_every` rounds and after the last: the shared
  weights with their optimizer state, the WPL state, the data cursor (the RNN hidden state included: it is carried
  across rounds), the rng, the largest WPL stiffness so far and whether it was warned about. The rows of
  metrics.csv and forgetting.csv are read back from the files on resume."""

  shared: Any
  wpl: Any
  data: DataCursor
  rng: jax.Array
  stiffest: float = 0.0
  warned: bool = False


def _round_scores(matrices: Sequence[np.ndarray]) -> list[float]:
  """Each round's mean end-of-round metric (the strict criterion's score) from its (architecture x burst) matrix."""
  return [float(np.mean(matrix[:, -1])) for matrix in matrices]


def _checkpoint_tree(state: RoundState, last_round: int, seconds: float) -> dict[str, Any]:
  tree = {"shared": state.shared, "rng": np.asarray(jax.random.key_data(state.rng)),
          "data_position": np.int64(state.data.position), "round": np.int32(last_round),
          "stiffest": np.float64(state.stiffest), "warned": np.bool_(state.warned), "seconds": np.float64(seconds)}
  if state.data.hidden is not None:
    tree["data_hidden"] = state.data.hidden
  if state.wpl is not None:
    tree["wpl"] = state.wpl
  return tree


def _restore(run: Run, ckpt: Checkpointer, fresh: RoundState) -> tuple[RoundState, int]:
  """(the state after the latest checkpointed round, the next round), or (`fresh`, 0) without a checkpoint."""
  if ckpt.latest_step() is None:
    return fresh, 0
  tree = uncommitted(ckpt.restore(None, _checkpoint_tree(fresh, 0, 0.0)))
  run.clock.before = float(tree["seconds"])
  state = RoundState(tree["shared"], tree.get("wpl"), DataCursor(int(tree["data_position"]), tree.get("data_hidden")),
                     jax.random.wrap_key_data(jnp.asarray(tree["rng"])), float(tree["stiffest"]), bool(tree["warned"]))
  return state, int(tree["round"]) + 1


def _rows_before(path: pathlib.Path, next_round: int, columns: Sequence[str]) -> list[dict[str, Any]]:
  """The rows of an earlier launch's CSV for the rounds before `next_round` (the ones its checkpoint covers), as
  numbers; an empty list for a fresh run."""
  if next_round == 0:
    return []
  number = lambda text: int(text) if text.lstrip("-").isdigit() else float(text)  # as written: ints stay ints
  rows = [{k: number(row[k]) for k in columns} for row in read_csv(path) if int(row["round"]) < next_round]
  if len({row["round"] for row in rows}) != next_round:
    raise CheckpointError(f"{path} lacks rounds its checkpoint covers (rounds 0-{next_round - 1}); the workdir was "
                          "changed by hand: launch the run in a fresh workdir")
  return rows


def round_robin(run: Run) -> dict[str, Any]:
  """Trains the fixed architectures round-robin until convergence or `multi_model.max_rounds`, resuming from the
  latest checkpoint in <workdir>/multi_model/checkpoints; writes the outputs named in the module docstring and
  summary.json, and returns the summary (rounds, whether the strict criterion stopped the run, the last round's
  forgetting, the mean over rounds of each forgetting statistic, the architectures' final validation and test
  metrics and, with `multi_model.stand_alone`, Kendall's tau against their stand-alone ranking). A relaunch of a
  finished run says so and writes nothing (unless `multi_model.stand_alone` is newly on: then only the stand-alone
  part is added); a resumed one drops what was logged after its checkpoint and ends with outputs equal to an
  uninterrupted run's; `multi_model.max_rounds` may be raised on a relaunch."""
  c = run.config
  mm = c.multi_model
  m = run.task.metric
  higher = run.task.higher_is_better
  score_batch = run.task.score_batch(mm.eval_width)
  init = jax.random.key(c.seed)
  fresh = fresh_state(run, init)
  archs = run.sample(fresh.controller.params, jax.random.key(c.seed + 13), num_samples=mm.num_archs)
  score = lambda params: np.asarray(run.metric(params, score_batch, archs), np.float64)
  out = run.workdir / "multi_model"
  out.mkdir(parents=True, exist_ok=True)
  arch_strings = [run.space.to_string(a) for a in np.asarray(archs)]
  atomic_write_text(out / "archs.txt", "".join(f"{a}\n" for a in arch_strings))
  ckpt = Checkpointer(str(out / "checkpoints"), max_to_keep=c.train.max_to_keep)
  state, start = _restore(run, ckpt, RoundState(fresh.shared, fresh.wpl, run.task.epoch_cursor(0), fresh.rng))
  if start > mm.max_rounds:
    ckpt.close()
    raise ConfigError(f"multi_model.max_rounds={mm.max_rounds}, but the run in {run.workdir} has already trained "
                      f"{start} rounds; launch it with multi_model.max_rounds >= {start}")
  long_columns, round_columns = ["round", "arch", "after_burst", m], ["round", *forgetting_lib.ROUND_SUMMARY_KEYS]
  long_rows = _rows_before(out / "metrics.csv", start, long_columns)
  rounds = _rows_before(out / "forgetting.csv", start, round_columns)
  matrices = [np.array([[row[m] for row in long_rows if row["round"] == r and row["arch"] == i]
                        for i in range(mm.num_archs)]) for r in range(start)]
  done = lambda: len(rounds) == mm.max_rounds or converged(_round_scores(matrices), patience=mm.patience,
                                                           higher_is_better=higher, min_rounds=mm.min_rounds)
  summary_path = run.workdir / outputs.SUMMARY_FILE
  if start and done() and summary_path.exists():
    stored = json.loads(summary_path.read_text(encoding="utf-8"))
    if stored.get("rounds") == start and (not mm.stand_alone or "kendall_tau" in stored):
      ckpt.close()
      print(f"The round-robin run in {run.workdir} has finished ({start} rounds); nothing to do (its results are in "
            f"{summary_path}; launch with a larger multi_model.max_rounds to continue it).", flush=True)
      return dict(stored, finished_before=True)
  logs = outputs.open_logs(run.workdir, shared_step=start - 1 if start else None)
  try:
    state = _train_rounds(run, logs, ckpt, state, archs, score, long_rows, rounds, matrices, done)
    ckpt.wait()
  finally:
    ckpt.close()
    outputs.close_logs(logs)
  summary = outputs.summary_record(run, _final(run, state, init, archs, arch_strings, score, rounds, matrices))
  outputs.write_summary(run, summary)
  return summary


def _train_rounds(run: Run, logs: Logs, ckpt: Checkpointer, state: RoundState, archs: jax.Array, score, long_rows,
                  rounds, matrices, done) -> RoundState:
  """The rounds from len(rounds) on until `done()`: trains, scores, logs, rewrites the CSVs (appending to the row
  lists and the per-round matrices in place) and checkpoints."""
  c = run.config
  mm = c.multi_model
  hp = run.task.wpl_hp
  m = run.task.metric
  out = run.workdir / "multi_model"
  shared, wpl, data, rng, stiffest, warned = state
  while not done():
    r = len(rounds)
    if hp is not None:
      wpl = wpl_lib.begin_epoch(wpl, r, hp)
    columns = []
    for i in range(mm.num_archs):
      shared, data, rng = train_bursts(run, shared, data, archs[i], rng, [run.lr(r)], wpl)
      if hp is not None:
        wpl = run.task.end_burst(wpl, shared.params, archs[i], data,
                                 r * mm.num_archs + i if c.wpl.shared_valid_fisher else None)
      columns.append(score(shared.params))
    matrix = np.stack(columns, axis=1)  # [architecture, burst after which it was scored]
    check_finite({f"multi_model/{m}": matrix}, context=f"round {r} of the round-robin training")
    matrices.append(matrix)
    long_rows += [{"round": r, "arch": i, "after_burst": t, m: float(matrix[i, t])}
                  for i in range(mm.num_archs) for t in range(mm.num_archs)]
    row = {"round": r, **forgetting_lib.round_forgetting_summary(matrix, higher_is_better=run.task.higher_is_better)}
    rounds.append(row)
    scalars = {f"multi_model/{k}": float(row[k]) for k in forgetting_lib.ROUND_SUMMARY_KEYS}
    if hp is not None:
      stiffness = wpl_lib.sgd_stiffness(wpl.fisher, float(wpl_lib.penalty_strength(wpl, hp)), run.lr(r))
      scalars["multi_model/wpl_sgd_stiffness"] = stiffness
      stiffest = max(stiffest, stiffness)
      if stiffness >= 2.0 and not warned:
        warned = True
        logging.warning("round %d: learning rate x WPL strength x max Fisher = %.3g >= 2: plain SGD on the penalty "
                        "overshoots its anchor on the stiffest weights (they oscillate within the gradient clip "
                        "instead of being held); lower wpl.alpha_fisher or shared.lr, or set wpl.proximal=True",
                        r, stiffness)
    logs.shared.log(r, scalars)
    write_csv(str(out / "metrics.csv"), long_rows, fieldnames=["round", "arch", "after_burst", m])
    write_csv(str(out / "forgetting.csv"), rounds, fieldnames=["round", *forgetting_lib.ROUND_SUMMARY_KEYS])
    state = RoundState(shared, wpl, data, rng, stiffest, warned)
    if (r + 1) % c.train.save_every == 0 or done():
      logs.shared.flush()
      ckpt.save(r, _checkpoint_tree(state, r, run.clock.elapsed()))
  return state


def _final(run: Run, state: RoundState, init: jax.Array, archs: jax.Array, arch_strings: Sequence[str], score,
           rounds, matrices: Sequence[np.ndarray]) -> dict[str, Any]:
  """final.csv (and the stand-alone training with `multi_model.stand_alone`) and the summary's results."""
  c = run.config
  mm = c.multi_model
  m = run.task.metric
  higher = run.task.higher_is_better
  params = state.shared.params
  final = [{"arch": a, f"shared_{m}": float(v), f"valid_{m}": run.task.evaluate(params, arch, "reward"),
            f"test_{m}": run.task.evaluate(params, arch, "test")}
           for a, arch, v in zip(arch_strings, np.asarray(archs), matrices[-1][:, -1])]
  result = {"wpl_sgd_stiffness_max": state.stiffest} if run.task.wpl_hp is not None else {}
  if mm.stand_alone:  # each architecture alone: the bursts and learning rates it got, from the same initial weights
    lrs = [run.lr(r) for r in range(len(rounds))]
    for i, row in enumerate(final):
      start = fresh_state(run, init)  # its WPL state (when WPL is on) has a zero Fisher: a zero penalty
      alone, _, _ = train_bursts(run, start.shared, run.task.epoch_cursor(0), archs[i], jax.random.key(c.seed + 17),
                                 lrs, start.wpl)
      row[f"alone_{m}"] = float(score(alone.params)[i])
    result["kendall_tau"] = kendall_tau_b([row[f"shared_{m}"] for row in final], [row[f"alone_{m}"] for row in final])
  write_csv(str(run.workdir / "multi_model" / "final.csv"), final)
  keys = [f"{view}/{k}" for view in forgetting_lib.ROUND_VIEWS for k in ("mean_diff", "median_diff", "frac_worse")]
  round_scores = _round_scores(matrices)
  best = max(round_scores) if higher else min(round_scores)
  stopped = converged(round_scores, patience=mm.patience, higher_is_better=higher, min_rounds=mm.min_rounds)
  return {"rounds": len(rounds), "converged": stopped, f"best_mean_{m}": best,
          f"final_valid_{m}_mean": float(np.mean([row[f"valid_{m}"] for row in final])),
          f"final_test_{m}_mean": float(np.mean([row[f"test_{m}"] for row in final])), **result,
          **{f"forgetting/{k}_last_round": float(rounds[-1][k]) for k in keys},
          **{f"forgetting/{k}_all_rounds": float(np.mean([row[k] for row in rounds])) for k in keys}}
