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
rounds; p = 0 ("loose") runs `multi_model.max_rounds` rounds. Both stop at `multi_model.max_rounds`.

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
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from nas_forgetting.enas.outputs import Logs
from nas_forgetting.enas.state import Run, fresh_state
from nas_forgetting.io.metrics import write_csv
from nas_forgetting.numerics import check_finite
from nas_forgetting.statistics import kendall_tau_b
from nas_forgetting.wpl import forgetting as forgetting_lib
from nas_forgetting.wpl import state as wpl_lib


def converged(round_scores: Sequence[float], *, patience: int, higher_is_better: bool) -> bool:
  """The strict criterion: True when none of the last `patience` (> 0) rounds' scores improved on the best score of
  the rounds before them (improving = higher, or lower, per `higher_is_better`); False while fewer than
  `patience` + 1 rounds have been run, and always False for `patience` 0 (loose: a fixed number of rounds)."""
  if patience <= 0 or len(round_scores) <= patience:
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


def round_robin(run: Run, logs: Logs) -> dict[str, Any]:
  """Trains the fixed architectures round-robin until convergence or `multi_model.max_rounds`; writes the outputs
  named in the module docstring and returns the summary (rounds, whether the strict criterion stopped the run, the
  last round's forgetting, the mean over rounds of each forgetting statistic, the architectures' final validation
  and test metrics and, with `multi_model.stand_alone`, Kendall's tau against their stand-alone ranking)."""
  c = run.config
  mm = c.multi_model
  score_batch = run.task.score_batch(mm.eval_width)
  init = jax.random.key(c.seed)
  state = fresh_state(run, init)
  archs = run.sample(state.controller.params, jax.random.key(c.seed + 13), num_samples=mm.num_archs)
  score = lambda params: np.asarray(run.metric(params, score_batch, archs), np.float64)
  hp = run.task.wpl_hp
  higher = run.task.higher_is_better
  m = run.task.metric
  shared, wpl, rng = state.shared, state.wpl, state.rng
  data = run.task.epoch_cursor(0)
  out = run.workdir / "multi_model"
  out.mkdir(parents=True, exist_ok=True)
  arch_strings = [run.space.to_string(a) for a in np.asarray(archs)]
  (out / "archs.txt").write_text("".join(f"{a}\n" for a in arch_strings))
  long_rows, rounds, round_scores, stopped = [], [], [], False
  stiffest, warned = 0.0, False
  for r in range(mm.max_rounds):
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
    long_rows += [{"round": r, "arch": i, "after_burst": t, m: float(matrix[i, t])}
                  for i in range(mm.num_archs) for t in range(mm.num_archs)]
    row = {"round": r, **forgetting_lib.round_forgetting_summary(matrix, higher_is_better=higher)}
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
                        "instead of being held); lower wpl.alpha_fisher or shared.lr", r, stiffness)
    logs.shared.log(r, scalars)
    round_scores.append(float(np.mean(matrix[:, -1])))
    if converged(round_scores, patience=mm.patience, higher_is_better=higher):
      stopped = True
      break
  write_csv(str(out / "metrics.csv"), long_rows, fieldnames=["round", "arch", "after_burst", m])
  write_csv(str(out / "forgetting.csv"), rounds, fieldnames=["round", *forgetting_lib.ROUND_SUMMARY_KEYS])
  final = [{"arch": a, f"shared_{m}": float(v), f"valid_{m}": run.task.evaluate(shared.params, arch, "reward"),
            f"test_{m}": run.task.evaluate(shared.params, arch, "test")}
           for a, arch, v in zip(arch_strings, np.asarray(archs), matrix[:, -1])]
  result = {"wpl_sgd_stiffness_max": stiffest} if hp is not None else {}
  if mm.stand_alone:  # each architecture alone: the bursts and learning rates it got, from the same initial weights
    lrs = [run.lr(r) for r in range(len(rounds))]
    for i, row in enumerate(final):
      start = fresh_state(run, init)  # its WPL state (when WPL is on) has a zero Fisher: a zero penalty
      alone, _, _ = train_bursts(run, start.shared, run.task.epoch_cursor(0), archs[i], jax.random.key(c.seed + 17),
                                 lrs, start.wpl)
      row[f"alone_{m}"] = float(score(alone.params)[i])
    result["kendall_tau"] = kendall_tau_b([row[f"shared_{m}"] for row in final], [row[f"alone_{m}"] for row in final])
  write_csv(str(out / "final.csv"), final)
  keys = [f"{view}/{k}" for view in forgetting_lib.ROUND_VIEWS for k in ("mean_diff", "median_diff", "frac_worse")]
  best = max(round_scores) if higher else min(round_scores)
  return {"rounds": len(rounds), "converged": stopped, f"best_mean_{m}": best,
          f"final_valid_{m}_mean": float(np.mean([row[f"valid_{m}"] for row in final])),
          f"final_test_{m}_mean": float(np.mean([row[f"test_{m}"] for row in final])), **result,
          **{f"forgetting/{k}_last_round": float(rounds[-1][k]) for k in keys},
          **{f"forgetting/{k}_all_rounds": float(np.mean([row[k] for row in rounds])) for k in keys}}
