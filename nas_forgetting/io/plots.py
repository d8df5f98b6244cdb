"""Figures of runs, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Every function writes `path` atomically: a ".png" path gives a PNG; a ".pdf" path gives the PDF and a PNG beside
it (same name, ".png"), so that a figure can always be previewed. The image size in pixels is exactly
`figsize * dpi` (no tight bounding box), and the functions return the paths written.

Accuracy matrices follow `nas_forgetting.continual.metrics`: `R[i, j]` is the accuracy on task j after training
on tasks 0..i (row = training stage, column = evaluated task); NaN marks a cell not measured (e.g. a task not
trained yet) and is left blank.
"""

import os
import pathlib
import textwrap
from typing import Mapping, Sequence

import numpy as np

from nas_forgetting.errors import DataError
from nas_forgetting.io.atomic import atomic_writer

PathLike = str | os.PathLike
_FORMATS = {".png": "png", ".pdf": "pdf"}


def _figure(figsize: tuple[float, float], dpi: int):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _targets(path: PathLike) -> list[pathlib.Path]:
  path = pathlib.Path(path)
  suffix = path.suffix.lower()
  if suffix not in _FORMATS:
    raise DataError(f"figure path {path} ends in {path.suffix or 'nothing'!r}; expected .png or .pdf")
  return [path] if suffix == ".png" else [path, path.with_suffix(".png")]


def _save(fig, path: PathLike) -> list[pathlib.Path]:
  targets = _targets(path)
  for target in targets:
    with atomic_writer(target, "wb") as f:
      fig.savefig(f, format=_FORMATS[target.suffix.lower()], dpi=fig.dpi)
  return targets


def _set_title(fig, ax, title: str) -> None:
  """The title, wrapped onto several lines where it would be wider than the figure (about 9 characters an inch)."""
  if title:
    width = max(20, int(fig.get_figwidth() * 9))
    ax.set_title("\n".join(textwrap.wrap(title, width)) or title)


def _finish(fig, ax, path: PathLike, *, xlabel: str, ylabel: str, title: str) -> list[pathlib.Path]:
  """Axis labels, grid, legend and title of a line chart, then `_save`."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="best")
  _set_title(fig, ax, title)
  return _save(fig, path)


def _matrix(matrix, task_names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
  r = np.asarray(matrix, np.float64)
  if r.ndim != 2 or r.size == 0:
    raise DataError(f"accuracy matrix has shape {r.shape}; expected (stages, tasks) with both >= 1")
  if task_names is None:
    names = [str(j) for j in range(r.shape[1])]
  else:
    names = [str(n) for n in task_names]
    if len(names) != r.shape[1]:
      raise DataError(f"{len(names)} task names for an accuracy matrix with {r.shape[1]} task columns")
  return r, names


def accuracy_matrix_heatmap(matrix, path: PathLike, *, task_names: Sequence[str] | None = None, title: str = "",
                            value_format: str = "{:.2f}", vmin: float = 0.0, vmax: float | None = None,
                            figsize: tuple[float, float] | None = None, dpi: int = 100) -> list[pathlib.Path]:
  """Heat map of R[i, j] with each value printed in its cell; NaN cells stay blank.

  Args:
    matrix: (stages, tasks) accuracies; row i = after training task i, column j = evaluated task j.
    path: output .png or .pdf.
    task_names: one label per task column (and training stage row when the matrix is square).
    title: figure title.
    value_format: format of the numbers printed in the cells.
    vmin, vmax: colour range; vmax None = 1 for fractions, else the largest value (e.g. percentages).
    figsize: inches; default grows with the number of tasks.
    dpi: pixels per inch.
  """
  r, names = _matrix(matrix, task_names)
  stages, tasks = r.shape
  finite = r[np.isfinite(r)]
  if vmax is None:
    vmax = 1.0 if finite.size == 0 or finite.max() <= 1.0 else float(finite.max())
  if figsize is None:
    figsize = (max(4.0, 0.7 * tasks + 2.0), max(3.5, 0.55 * stages + 1.5))
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot()
  import matplotlib  # pylint: disable=import-outside-toplevel
  cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
  image = ax.imshow(np.ma.masked_invalid(r), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                    interpolation="nearest")
  fig.colorbar(image, ax=ax, label="accuracy")
  middle = (vmin + vmax) / 2
  for i in range(stages):
    for j in range(tasks):
      if np.isfinite(r[i, j]):
        ax.text(j, i, value_format.format(r[i, j]), ha="center", va="center", fontsize=8,
                color="black" if r[i, j] > middle else "white")
  ax.set_xticks(range(tasks), names)
  stage_names = names if stages == tasks else [str(i) for i in range(stages)]
  ax.set_yticks(range(stages), stage_names)
  ax.set_xlabel("evaluated task")
  ax.set_ylabel("after training task")
  _set_title(fig, ax, title)
  return _save(fig, path)


def accuracy_curves(matrix, path: PathLike, *, task_names: Sequence[str] | None = None, title: str = "",
                    ylabel: str = "accuracy", figsize: tuple[float, float] = (6.4, 4.8),
                    dpi: int = 100) -> list[pathlib.Path]:
  """One line per task: its accuracy R[:, j] across the training stages (NaN cells are gaps).

  A dot marks the stage at which each task is trained (the diagonal, when the matrix is square).
  """
  r, names = _matrix(matrix, task_names)
  stages, tasks = r.shape
  stage_names = names if stages == tasks else [str(i) for i in range(stages)]
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot()
  x = np.arange(stages)
  for j in range(tasks):
    (line,) = ax.plot(x, r[:, j], marker=".", label=f"task {names[j]}")
    if stages == tasks and np.isfinite(r[j, j]):
      ax.plot([j], [r[j, j]], marker="o", markersize=8, color=line.get_color(), linestyle="none")
  ax.set_xticks(x, stage_names)
  return _finish(fig, ax, path, xlabel="after training task", ylabel=ylabel, title=title)


def line_plot(path: PathLike, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str,
              ylabel: str, title: str = "", logx: bool = False, logy: bool = False,
              ylim: tuple[float, float] | None = None, markers: bool = False,
              figsize: tuple[float, float] = (6.4, 4.8), dpi: int = 100) -> list[pathlib.Path]:
  """Lines y(x), one per named series, with a legend (NaN values are gaps).

  Args:
    path: output .png or .pdf.
    series: {label: (x, y)} with x and y of equal length.
    xlabel, ylabel, title: axis labels and title.
    logx, logy: logarithmic axes.
    ylim: fixed y range.
    markers: draw a marker at every point.
    figsize, dpi: size in inches and pixels per inch.
  """
  if not series:
    raise DataError(f"line_plot({path!s}): no series to draw")
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot()
  for label, xy in series.items():
    if len(xy) != 2:
      raise DataError(f"line_plot({path!s}): series {label!r} is not an (x, y) pair")
    x, y = (np.asarray(v, np.float64).reshape(-1) for v in xy)
    if x.shape != y.shape:
      raise DataError(f"line_plot({path!s}): series {label!r} has {x.size} x values and {y.size} y values")
    ax.plot(x, y, label=str(label), marker="." if markers else None)
  if logx:
    ax.set_xscale("log")
  if logy:
    ax.set_yscale("log")
  if ylim is not None:
    ax.set_ylim(*ylim)
  return _finish(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title)
