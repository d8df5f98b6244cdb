"""Figures of runs, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Every function writes `path` atomically: a ".png" path gives a PNG; a ".pdf" path gives the PDF and a PNG beside
it (same name, ".png"), so that a figure can always be previewed. The image size in pixels is exactly
`figsize * dpi` (no tight bounding box), and the functions return the paths written.

Every figure of the project is drawn here (library code never touches pyplot or `matplotlib.use`): continual
accuracy matrices and curves, line plots, the ENAS rank-correlation scatter and ablation bars, the DP-NAS
moving-average reward (`colored_line_plot`) and per-net seed spread (`strip_plot`); `new_figure` and `png_bytes`
serve figures laid out elsewhere (the ENAS cell drawings).

Accuracy matrices follow `nas_forgetting.continual.metrics`: `R[i, j]` is the accuracy on task j after training
on tasks 0..i (row = training stage, column = evaluated task); NaN marks a cell not measured (e.g. a task not
trained yet) and is left blank.
"""

import io
import os
import pathlib
import textwrap
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nas_forgetting.errors import DataError
from nas_forgetting.io.atomic import atomic_writer

PathLike = str | os.PathLike
_FORMATS = {".png": "png", ".pdf": "pdf"}


def new_figure(figsize: tuple[float, float], dpi: int = 100, *, layout: str | None = "constrained") -> Figure:
  """An empty figure on its own Agg canvas (no pyplot: nothing global to close)."""
  fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
  FigureCanvasAgg(fig)
  return fig


def png_bytes(fig: Figure, *, dpi: int | None = None, tight: bool = False) -> bytes:
  """The figure as PNG bytes (for frames assembled by the caller, e.g. an animated GIF)."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=fig.dpi if dpi is None else dpi, bbox_inches="tight" if tight else None)
  return buf.getvalue()


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
  fig = new_figure(figsize, dpi)
  ax = fig.add_subplot()
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
  fig = new_figure(figsize, dpi)
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
              bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
              figsize: tuple[float, float] = (6.4, 4.8), dpi: int = 100) -> list[pathlib.Path]:
  """Lines y(x), one per named series, with a legend (NaN values are gaps), and optional shaded bands.

  Args:
    path: output .png or .pdf.
    series: {label: (x, y)} with x and y of equal length.
    xlabel, ylabel, title: axis labels and title.
    logx, logy: logarithmic axes.
    ylim: fixed y range.
    markers: draw a marker at every point.
    bands: {label: (low, high)}: a band shaded in the colour of the series of that label, over its x values
      (e.g. an interval over seeds).
    figsize, dpi: size in inches and pixels per inch.
  """
  if not series:
    raise DataError(f"line_plot({path!s}): no series to draw")
  bands = dict(bands or {})
  if set(bands) - set(series):
    raise DataError(f"line_plot({path!s}): bands {sorted(set(bands) - set(series))} name no series")
  fig = new_figure(figsize, dpi)
  ax = fig.add_subplot()
  for label, xy in series.items():
    if len(xy) != 2:
      raise DataError(f"line_plot({path!s}): series {label!r} is not an (x, y) pair")
    x, y = (np.asarray(v, np.float64).reshape(-1) for v in xy)
    if x.shape != y.shape:
      raise DataError(f"line_plot({path!s}): series {label!r} has {x.size} x values and {y.size} y values")
    (line,) = ax.plot(x, y, label=str(label), marker="." if markers else None)
    if label in bands:
      low, high = (np.asarray(v, np.float64).reshape(-1) for v in bands[label])
      if low.shape != x.shape or high.shape != x.shape:
        raise DataError(f"line_plot({path!s}): the band of {label!r} has {low.size} / {high.size} values for "
                        f"{x.size} x values")
      ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
  if logx:
    ax.set_xscale("log")
  if logy:
    ax.set_yscale("log")
  if ylim is not None:
    ax.set_ylim(*ylim)
  return _finish(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title)


def scatter_plot(path: PathLike, x: Sequence[float], y: Sequence[float], *, xlabel: str, ylabel: str,
                 title: str = "", figsize: tuple[float, float] = (5.0, 4.0), dpi: int = 100) -> list[pathlib.Path]:
  """Points (x[i], y[i]) of paired samples (e.g. shared-weight vs stand-alone scores)."""
  x, y = (np.asarray(v, np.float64).reshape(-1) for v in (x, y))
  if x.shape != y.shape:
    raise DataError(f"scatter_plot({path!s}): {x.size} x values and {y.size} y values")
  fig = new_figure(figsize, dpi)
  ax = fig.add_subplot()
  ax.scatter(x, y, color="#3182bd")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  _set_title(fig, ax, title)
  return _save(fig, path)


def bar_plot(path: PathLike, names: Sequence[str], values: Sequence[float], *, ylabel: str, title: str = "",
             dpi: int = 100) -> list[pathlib.Path]:
  """One bar per name; the first bar (the reference, e.g. the original architecture) is grey, the others blue."""
  values = np.asarray(values, np.float64).reshape(-1)
  if len(names) != values.size or values.size == 0:
    raise DataError(f"bar_plot({path!s}): {len(names)} names and {values.size} values (expected equal, >= 1)")
  fig = new_figure((max(4.0, 0.8 * len(names)), 4.0), dpi)
  ax = fig.add_subplot()
  ax.bar(range(len(names)), values, color=["0.4"] + ["#6baed6"] * (len(names) - 1))
  ax.set_xticks(range(len(names)), [str(n) for n in names], rotation=45, ha="right", fontsize=8)
  ax.set_ylabel(ylabel)
  _set_title(fig, ax, title)
  return _save(fig, path)


def colored_line_plot(path: PathLike, x: Sequence[float], y: Sequence[float], colour: Sequence[float], *,
                      xlabel: str, ylabel: str, colour_label: str, title: str = "",
                      vlines: Sequence[float] = (), ylim: tuple[float, float] | None = None,
                      colour_range: tuple[float, float] = (0.0, 1.0), figsize: tuple[float, float] = (8.0, 4.5),
                      dpi: int = 120) -> list[pathlib.Path]:
  """A grey line through points coloured by a third value (colour bar), with dashed vertical lines at `vlines`."""
  x, y, colour = (np.asarray(v, np.float64).reshape(-1) for v in (x, y, colour))
  if not x.shape == y.shape == colour.shape:
    raise DataError(f"colored_line_plot({path!s}): {x.size} x, {y.size} y and {colour.size} colour values")
  fig = new_figure(figsize, dpi)
  ax = fig.add_subplot()
  ax.plot(x, y, color="0.7", linewidth=0.8, zorder=1)
  points = ax.scatter(x, y, c=colour, cmap="viridis", vmin=colour_range[0], vmax=colour_range[1], s=8, zorder=2)
  fig.colorbar(points, ax=ax, label=colour_label)
  for v in vlines:
    ax.axvline(v, color="k", linestyle="--", linewidth=0.6)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if ylim is not None:
    ax.set_ylim(*ylim)
  _set_title(fig, ax, title)
  return _save(fig, path)


def strip_plot(path: PathLike, groups: Sequence[Sequence[float]], *, labels: Sequence[str], xlabel: str,
               ylabel: str, points_label: str, marks: Mapping[int, float] | None = None, marks_label: str = "",
               title: str = "", dpi: int = 120) -> list[pathlib.Path]:
  """Every value of each group in its own column (e.g. the seeds of a net), and an optional cross per column."""
  if len(labels) != len(groups) or not groups:
    raise DataError(f"strip_plot({path!s}): {len(labels)} labels for {len(groups)} groups (expected equal, >= 1)")
  fig = new_figure((max(6.0, 0.45 * len(groups) + 2), 4.5), dpi)
  ax = fig.add_subplot()
  for k, values in enumerate(groups):
    ax.scatter([k] * len(values), values, s=12, color="tab:blue", alpha=0.7, label=points_label if k == 0 else None)
  if marks:
    keys = sorted(marks)
    ax.scatter(keys, [marks[k] for k in keys], marker="x", color="tab:red", label=marks_label)
  ax.set_xticks(range(len(groups)), [str(n) for n in labels], rotation=90, fontsize=7)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.legend(loc="lower right", fontsize=8)
  _set_title(fig, ax, title)
  return _save(fig, path)
