"""The derive and evaluate phases: pick the best of sampled cells with the shared weights, evaluate a cell.

Both read the search state and change nothing in it: `derive(run, logger, state, rng)` samples
`train.derive_num_sample` candidates from the derive policy (`controller.derive_reference_logits`), keeps the one
with the best reward on the first reward batch and evaluates it; `report_arch` evaluates one cell on the reward and
test splits, logs the numbers at the state's shared step and writes its folder (dag.json, arch.txt, cell.png).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from nas_forgetting.enas import drawing
from nas_forgetting.enas import search_space as ss
from nas_forgetting.enas import trainer as tr
from nas_forgetting.enas.state import Run, SearchState
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.metrics import MetricsLogger
from nas_forgetting.numerics import check_finite


def best_of_samples(run: Run, state: SearchState, rng: jax.Array) -> tuple[np.ndarray, float]:
  """(architecture, reward) of the best of `train.derive_num_sample` candidates on the first reward batch,
  sampled from the derive policy (`controller.derive_reference_logits`)."""
  archs = run.derive_sample(state.controller.params, rng, num_samples=run.config.train.derive_num_sample)
  rewards, _ = run.score(state.shared.params, run.task.reward_batch(0), archs)
  check_finite({"derive/candidate_reward": np.asarray(rewards)},
               context=f"derive: the {len(archs)} candidates scored on the first reward batch")
  best, reward, _ = tr.pick_best(archs, rewards)
  return best, reward


def derive(run: Run, logger: MetricsLogger, state: SearchState, rng: jax.Array) -> dict[str, Any]:
  """Samples candidates, keeps the best on the first reward batch, evaluates it, writes derived/."""
  best, reward = best_of_samples(run, state, rng)
  return report_arch(run, logger, state, best, "derived", extra={"derive/best_reward": reward})


def report_arch(run: Run, logger: MetricsLogger, state: SearchState, arch, folder: str,
                extra: dict | None = None) -> dict[str, Any]:
  """Evaluates `arch` with the state's shared weights on the reward and test splits; logs the numbers (and `extra`)
  at the shared step and writes <workdir>/<folder>/{dag.json, arch.txt, cell.png}."""
  m = run.task.metric
  params, step = state.shared.params, int(state.shared.step)
  result = {f"eval/reward_split_{m}": run.task.evaluate(params, arch, "reward"),
            f"eval/test_{m}": run.task.evaluate(params, arch, "test"), **(extra or {})}
  check_finite(result, context=f"evaluation of the {folder} architecture {run.space.to_string(arch)}")
  logger.log(step, result)
  out = run.workdir / folder
  out.mkdir(parents=True, exist_ok=True)
  atomic_write_text(out / "dag.json", ss.dag_json(arch, run.space))
  atomic_write_text(out / "arch.txt", run.space.to_string(arch) + "\n")
  png = drawing.draw_architecture(np.asarray(arch), run.space, out / "cell.png",
                                  title=f"{folder}: test {m} {result[f'eval/test_{m}']:.4g} ({run.task.data_tag})",
                                  backend=run.config.train.draw_backend)
  logger.image(f"{folder}/best", png, step)
  return {"arch": run.space.to_string(arch), **result}
