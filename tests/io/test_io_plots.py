"""Figures: files of the expected size, NaN cells blank, values printed in cells, PDF with a PNG preview."""

import numpy as np
import pytest
from PIL import Image

from nas_forgetting.errors import DataError
from nas_forgetting.io import plots

R = np.array([[0.91, np.nan, np.nan],
              [0.62, 0.95, np.nan],
              [0.40, 0.81, 0.97]])


def _pixels(path):
  with Image.open(path) as image:
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def test_heatmap_size_values_and_blank_cells(tmp_path, monkeypatch):
  drawn = []
  original = plots.new_figure

  def spy(*args):
    fig = original(*args)
    drawn.append(fig)
    return fig

  monkeypatch.setattr(plots, "new_figure", spy)
  (path,) = plots.accuracy_matrix_heatmap(R, tmp_path / "h.png", task_names=["a", "b", "c"], title="EWC",
                                          figsize=(5, 4), dpi=50)
  pixels = _pixels(path)
  assert pixels.shape == (200, 250, 3)
  ax = drawn[0].axes[0]
  texts = sorted(t.get_text() for t in ax.texts)
  assert texts == sorted(["0.91", "0.62", "0.95", "0.40", "0.81", "0.97"])  # One per measured cell, none for NaN.
  assert ax.get_title() == "EWC" and [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
  # The NaN cell (row 0, column 2) is white; a measured cell is coloured.
  data_to_pixels = ax.transData.transform
  height = pixels.shape[0]
  x, y = data_to_pixels((2, 0))
  assert (pixels[int(height - y), int(x)] == 255).all()
  x, y = data_to_pixels((0, 2))
  assert not (pixels[int(height - y), int(x)] == 255).all()


def test_heatmap_default_size_grows_with_tasks(tmp_path):
  (small,) = plots.accuracy_matrix_heatmap(R, tmp_path / "small.png")
  (large,) = plots.accuracy_matrix_heatmap(np.full((10, 10), 0.5), tmp_path / "large.png")
  assert _pixels(small).shape == (350, 410, 3)  # figsize max(4, .7*3+2) x max(3.5, .55*3+1.5) at 100 dpi.
  assert _pixels(large).shape == (700, 900, 3)


def test_accuracy_curves_pdf_and_png(tmp_path):
  written = plots.accuracy_curves(R * 100, tmp_path / "curves.pdf", task_names=["t0", "t1", "t2"],
                                  ylabel="accuracy (%)", figsize=(4, 3), dpi=80)
  assert written == [tmp_path / "curves.pdf", tmp_path / "curves.png"]
  assert (tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")
  assert _pixels(tmp_path / "curves.png").shape == (240, 320, 3)


def test_line_plot_writes_png_of_requested_size(tmp_path):
  x = np.arange(1, 11)
  (path,) = plots.line_plot(tmp_path / "sub" / "l.png", {"WPL": (x, x ** 2), "no WPL": (x, np.where(x > 5, np.nan, x))},
                            xlabel="epoch", ylabel="loss", title="t", logy=True, markers=True, figsize=(6, 4), dpi=60)
  pixels = _pixels(path)
  assert pixels.shape == (240, 360, 3) and pixels.std() > 10  # Not a blank canvas.
  assert sorted(p.name for p in path.parent.iterdir()) == ["l.png"]  # No temporary left behind.


def test_line_plot_band_is_shaded_in_its_series_colour(tmp_path):
  x = np.arange(10.0)
  plain = _pixels(plots.line_plot(tmp_path / "plain.png", {"a": (x, x)}, xlabel="x", ylabel="y")[0])
  banded = _pixels(plots.line_plot(tmp_path / "band.png", {"a": (x, x)}, xlabel="x", ylabel="y",
                                   bands={"a": (x - 3, x + 3)})[0])
  changed = np.any(plain != banded, axis=-1)
  assert changed.mean() > 0.05  # a band covers a visible share of the axes
  r, g, b = (banded[changed].astype(float).mean(axis=0))
  assert b > r and b > g  # tinted with the first series' colour (matplotlib's default blue)
  with pytest.raises(DataError, match=r"bands \['z'\] name no series"):
    plots.line_plot(tmp_path / "x.png", {"a": (x, x)}, xlabel="x", ylabel="y", bands={"z": (x, x)})
  with pytest.raises(DataError, match="the band of 'a' has 2 / 2 values for 10 x values"):
    plots.line_plot(tmp_path / "x.png", {"a": (x, x)}, xlabel="x", ylabel="y", bands={"a": ([0, 1], [1, 2])})


def test_bad_input_is_named(tmp_path):
  with pytest.raises(DataError, match=r"shape \(3,\)"):
    plots.accuracy_curves(np.ones(3), tmp_path / "x.png")
  with pytest.raises(DataError, match="2 task names for an accuracy matrix with 3 task columns"):
    plots.accuracy_matrix_heatmap(R, tmp_path / "x.png", task_names=["a", "b"])
  with pytest.raises(DataError, match="ends in '.svg'; expected .png or .pdf"):
    plots.line_plot(tmp_path / "x.svg", {"a": ([1], [1])}, xlabel="x", ylabel="y")
  with pytest.raises(DataError, match="series 'a' has 2 x values and 3 y values"):
    plots.line_plot(tmp_path / "x.png", {"a": ([1, 2], [1, 2, 3])}, xlabel="x", ylabel="y")
  with pytest.raises(DataError, match="no series"):
    plots.line_plot(tmp_path / "x.png", {}, xlabel="x", ylabel="y")
  assert list(tmp_path.iterdir()) == []


def test_scatter_bar_coloured_line_and_strip_plots(tmp_path):
  paths = plots.scatter_plot(tmp_path / "s.png", [1.0, 2.0, 3.0], [2.0, 1.0, 3.0], xlabel="x", ylabel="y", title="t")
  assert _pixels(paths[0]).shape == (400, 500, 3)
  assert _pixels(plots.bar_plot(tmp_path / "b.png", ["a", "b"], [0.5, 0.7], ylabel="v")[0]).shape == (400, 400, 3)
  pdf, png = plots.colored_line_plot(tmp_path / "c.pdf", [1, 2, 3], [0.1, 0.2, 0.3], [1.0, 0.5, 0.1], xlabel="x",
                                     ylabel="y", colour_label="eps", vlines=[2], ylim=(0, 1))
  assert pdf.read_bytes()[:4] == b"%PDF" and _pixels(png).shape == (540, 960, 3)
  paths = plots.strip_plot(tmp_path / "strip.png", [[0.1, 0.2], [0.3]], labels=["0", "4"], xlabel="row",
                           ylabel="reward", points_label="seeds", marks={1: 0.35}, marks_label="search")
  assert _pixels(paths[0]).shape == (540, 720, 3)
  with pytest.raises(DataError, match="2 names and 1 values"):
    plots.bar_plot(tmp_path / "x.png", ["a", "b"], [1.0], ylabel="v")
  with pytest.raises(DataError, match="3 x values and 2 y values"):
    plots.scatter_plot(tmp_path / "x.png", [1, 2, 3], [1, 2], xlabel="x", ylabel="y")


def test_png_bytes_of_a_new_figure():
  fig = plots.new_figure((2.0, 1.0), dpi=50)
  fig.add_subplot().plot([0, 1], [0, 1])
  assert plots.png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_library_module_selects_a_backend_or_uses_pyplot():
  """Figures go through io/plots.py (Agg canvases of their own): no `matplotlib.use` or pyplot in the library."""
  import pathlib
  import nas_forgetting
  root = pathlib.Path(nas_forgetting.__file__).parent
  offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
               if "matplotlib.use(" in p.read_text() or "matplotlib.pyplot" in p.read_text()]
  assert offenders == []
