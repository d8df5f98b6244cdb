"""What an ENAS run writes besides checkpoints: metrics on two step axes, divergence checks, cell drawings, curves.

Metrics: the shared weights' (and evaluations') on the shared-step axis in <workdir>, the controller's on its own
step axis in <workdir>/controller (`Logs`); a resumed run drops the records logged after its checkpoint (`open_logs`).
`log_steps` brings a logging interval's per-step values to the host, checks them (DivergenceError) and logs their
means. The curves figures are drawn from the points the search state holds (`add_points`, `plot_curves`); a resumed
search reads the points logged before its checkpoint back once (`curves_from_logs`), as it does forgetting.csv's
rows (`forgetting_rows`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping, NamedTuple

import jax
import numpy as np

from nas_forgetting.enas import drawing
from nas_forgetting.enas import trainer as tr
from nas_forgetting.enas.state import Curve, Run
from nas_forgetting.io import plots
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.metrics import MetricsLogger, read_csv, read_jsonl
from nas_forgetting.numerics import check_finite

CONTROLLER_DIR = "controller"  # the controller's metrics.jsonl and tensorboard/ (its own step axis)
SUMMARY_FILE = "summary.json"
# The logged quantities the curves figures draw (each on its own step axis).
SHARED_CURVES = ("shared/perplexity", "shared/accuracy", "eval/reward_split_perplexity", "eval/test_perplexity",
                 "eval/reward_split_accuracy", "eval/test_accuracy")
CONTROLLER_CURVES = ("controller/reward", "controller/baseline")


class Logs(NamedTuple):
  """The metrics loggers of one folder: the shared-step axis, and the controller's (None when not trained)."""

  shared: MetricsLogger
  controller: MetricsLogger | None = None


def open_logs(folder: pathlib.Path, *, shared_step: int | None = None, controller_step: int | None = None,
              controller: bool = False) -> Logs:
  """The loggers of `folder` (with `controller`, the controller's in folder/controller too).

  `shared_step` / `controller_step`: the steps of the checkpoint a resumed run starts from (None for a fresh
  start). Whatever was logged after them (by a launch that stopped before its next checkpoint) is dropped from
  metrics.jsonl and hidden in TensorBoard, so the resumed run's logs equal an uninterrupted run's."""

  def purge(where: pathlib.Path, step: int | None) -> int | None:
    if step is None and not (where / "metrics.jsonl").exists():
      return None  # a fresh run in a fresh folder: nothing to drop
    return 0 if step is None else step + 1

  shared = MetricsLogger(str(folder), purge_step=purge(folder, shared_step))
  if not controller:
    return Logs(shared)
  where = folder / CONTROLLER_DIR
  return Logs(shared, MetricsLogger(str(where), purge_step=purge(where, controller_step)))


def close_logs(logs: Logs) -> None:
  for logger in logs:
    if logger is not None:
      logger.close()


def check_steps(run: Run, host: list[dict[str, Any]], first_step: int, where: str,
                archs: list[jax.Array] | None = None) -> None:
  """DivergenceError for the earliest step of `host` (per-step metrics on the host, the first one being step
  `first_step`) with a non-finite value or a False `*/params_finite` flag."""
  if not host:
    return
  first_bad = {}
  for k in host[0]:
    values = np.asarray([h[k] for h in host])
    bad = ~values.astype(bool) if k in tr.PARAMS_FINITE else ~np.isfinite(values.astype(np.float64))
    if bad.any():
      first_bad[k] = (int(np.argmax(bad)), values)
  if not first_bad:
    return
  index = min(i for i, _ in first_bad.values())
  # At one step, name a quantity of the step before the parameters it produced.
  name = min((k for k, (i, _) in first_bad.items() if i == index), key=lambda k: k in tr.PARAMS_FINITE)
  values = first_bad[name][1]
  if name in tr.PARAMS_FINITE:
    name = f"{name.split('/')[0]} parameters or optimizer state after the step"
    values = values.astype(bool)
  context = where
  if archs is not None and index < len(archs) and archs[index] is not None:
    context += f", architecture {run.space.to_string(np.asarray(archs[index]))}"
  check_finite({name: values}, context=context, first_step=first_step)


def log_steps(run: Run, logger: MetricsLogger, step: int, history: list[dict[str, jax.Array]],
              extra: dict[str, float] | None = None, *, where: str,
              archs: list[jax.Array] | None = None) -> dict[str, float]:
  """Checks and logs the steps of `history` (ending at `step`) as their means, plus `extra`; returns what it logged.

  The per-step values come to the host here, once per logging interval: a non-finite loss or metric, or a
  `*/params_finite` flag that is False, stops the run with a DivergenceError naming the quantity, the step and
  `where` (and the step's architecture, `archs`)."""
  host = jax.device_get(history)
  check_steps(run, host, step - len(host) + 1, where, archs)
  means = {}
  for k in host[0] if host else {}:
    if k in tr.PARAMS_FINITE:
      continue
    values = np.asarray([h[k] for h in host], np.float64)
    # Perplexities are averaged geometrically (= exp of the mean cross-entropy), everything else arithmetically.
    means[k] = float(np.exp(np.mean(np.log(values)))) if k.endswith("perplexity") else float(values.mean())
  if extra:
    check_finite(extra, context=f"the end of {where}")
  if not means and not any(k != "epoch" for k in (extra or {})):
    return {}
  means.update(extra or {})
  logger.log(step, means)
  return means


def draw(run: Run, logger: MetricsLogger, arch, name: str, title: str, tag: str, step: int) -> pathlib.Path:
  """networks/<name>.png, also logged as image `tag` at `step`."""
  path = run.workdir / "networks" / f"{name}.png"
  png = drawing.draw_architecture(np.asarray(arch), run.space, path, title=title,
                                  backend=run.config.train.draw_backend)
  logger.image(tag, png, step)
  return path


def write_gif(run: Run) -> None:
  """networks.gif from the sampled cells drawn in networks/."""
  frames = sorted((run.workdir / "networks").glob("*.png"))
  frames = [f for f in frames if not f.stem.endswith("best")]
  if frames:
    drawing.make_gif(frames, run.workdir / "networks.gif", labels=[f"step: {f.stem}" for f in frames],
                     max_frames=run.config.train.gif_max_frames)


def add_points(curves: Mapping[str, Curve], step: int, values: Mapping[str, Any],
               keys: tuple[str, ...] = SHARED_CURVES) -> dict[str, Curve]:
  """`curves` with the `keys` of `values` logged at `step` appended (a new mapping; `curves` is not changed)."""
  new = {k: float(values[k]) for k in keys if k in values}
  if not new:
    return dict(curves)
  return {**curves, **{k: curves.get(k, ()) + ((int(step), v),) for k, v in new.items()}}


def curves_from_logs(workdir: pathlib.Path) -> dict[str, Curve]:
  """The curve points a search logged before the checkpoint it resumes from (its metrics files, once purged)."""
  curves: dict[str, Curve] = {}
  for path, keys in ((workdir / "metrics.jsonl", SHARED_CURVES),
                     (workdir / CONTROLLER_DIR / "metrics.jsonl", CONTROLLER_CURVES)):
    for record in read_jsonl(path) if path.exists() else []:
      curves = add_points(curves, record["step"], record, keys)
  return curves


def plot_curves(run: Run, curves: Mapping[str, Curve]) -> None:
  """curves_shared.png (training perplexity or accuracy of the sampled cells, and the derived cells' evaluations on
  the reward and test splits at their shared steps) and curves_controller.png (reward, baseline)."""
  m = run.task.metric
  keys = ("shared/perplexity" if run.config.network == "rnn" else "shared/accuracy", f"eval/reward_split_{m}",
          f"eval/test_{m}")
  series = {k: tuple(zip(*curves[k])) for k in keys if curves.get(k)}
  if keys[0] in series:
    plots.line_plot(run.workdir / "curves_shared.png", series, xlabel="shared step", ylabel=m,
                    logy=run.config.network == "rnn", markers=True,
                    title=f"shared weights: sampled cells (training) and derived cells (evaluation) "
                          f"({run.task.data_tag})")
  ctrl = {k: tuple(zip(*curves[k])) for k in CONTROLLER_CURVES if curves.get(k)}
  if ctrl:
    plots.line_plot(run.workdir / "curves_controller.png", ctrl, xlabel="controller step", ylabel="reward",
                    title=f"controller ({run.task.data_tag})")


def forgetting_rows(workdir: pathlib.Path, next_epoch: int) -> tuple[dict[str, float], ...]:
  """The forgetting rows of the epochs before `next_epoch` from forgetting.csv (a resumed search)."""
  path = workdir / "forgetting.csv"
  if next_epoch == 0 or not path.exists():
    return ()
  counts = ("epoch", "num_architectures")
  return tuple({k: int(float(v)) if k in counts else float(v) for k, v in r.items()}
               for r in read_csv(path) if int(float(r["epoch"])) < next_epoch)


def summary_record(run: Run, results: dict[str, Any]) -> dict[str, Any]:
  """The summary.json record of a run: mode, network, data, total seconds, then the mode's results."""
  return {"mode": run.config.mode, "network": run.config.network, "data_note": run.task.data_note,
          "seconds": round(run.clock.elapsed(), 1), **results}


def write_summary(run: Run, summary: dict[str, Any]) -> None:
  atomic_write_text(run.workdir / SUMMARY_FILE, json.dumps(summary, indent=2, default=float))
