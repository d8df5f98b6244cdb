"""Drawings of ENAS cells (PNG) and an animated GIF of how sampled cells evolve.

A cell becomes a small graph (nodes with labels and colours, labelled edges). It is rendered by graphviz's `dot`
when that binary is on the PATH (no Python package needed), and otherwise by a pure-Python matplotlib layout
(nodes in columns by depth). `backend` forces one or the other.
"""

from __future__ import annotations

import dataclasses
import io as _io
import pathlib
import shutil
import subprocess
from typing import Any, Sequence

import numpy as np

from nas_forgetting.enas import search_space as ss
from nas_forgetting.io import plots

ACTIVATION_COLOURS = {"tanh": "#f4c7c3", "ReLU": "#c6dbef", "identity": "#e5e5e5", "sigmoid": "#c7e9c0"}
OP_COLOURS = {"identity": "#e5e5e5", "sep_conv_3x3": "#c6dbef", "sep_conv_5x5": "#9ecae1",
              "avg_pool_3x3": "#c7e9c0", "max_pool_3x3": "#fdd0a2"}
IO_COLOUR = "#ffffff"


@dataclasses.dataclass
class Graph:
  """Nodes (id -> (label, colour)) and edges (src, dst, label) of one drawing panel."""

  title: str
  nodes: dict[str, tuple[str, str]]
  edges: list[tuple[str, str, str]]


def rnn_graph(arch: Any, space: ss.RnnSearchSpace, title: str = "") -> Graph:
  arch = np.asarray(arch)
  active = [j for j in range(len(arch)) if arch[j, 1] >= 0]
  nodes = {"x": ("x[t]", IO_COLOUR), "h": ("h[t-1]", IO_COLOUR)}
  edges = [("x", "0", ""), ("h", "0", "")]
  for j in active:
    act = space.activations[arch[j, 1]]
    nodes[str(j)] = (f"{j}: {act}", ACTIVATION_COLOURS[act])
    if j > 0:
      edges.append((str(arch[j, 0]), str(j), ""))
  read = {int(arch[j, 0]) for j in active if j > 0}
  nodes["avg"] = ("avg", IO_COLOUR)
  nodes["out"] = ("h[t]", IO_COLOUR)
  edges += [(str(j), "avg", "") for j in active if j not in read] + [("avg", "out", "")]
  return Graph(title, nodes, edges)


def cnn_graphs(arch: Any, space: ss.CnnSearchSpace, title: str = "") -> list[Graph]:
  arch = np.asarray(arch)
  graphs = []
  for c, cell in enumerate(ss.CNN_CELLS):
    nodes = {"0": ("h[i-2]", IO_COLOUR), "1": ("h[i-1]", IO_COLOUR)}
    edges = []
    for b, (i1, o1, i2, o2) in enumerate(arch[c]):
      nodes[str(b + 2)] = (f"node {b + 2}", "#f0f0f0")
      edges += [(str(i1), str(b + 2), space.ops[o1]), (str(i2), str(b + 2), space.ops[o2])]
    nodes["out"] = ("concat", IO_COLOUR)
    edges += [(str(k), "out", "") for k in ss.cnn_loose_ends(arch[c])]
    graphs.append(Graph(f"{title} {cell} cell".strip(), nodes, edges))
  return graphs


def _to_dot(graphs: Sequence[Graph], title: str) -> str:
  lines = ["digraph cell {", '  rankdir=LR; node [shape=box, style="rounded,filled", fontname="Helvetica"];',
           f'  label="{title}"; labelloc=t;']
  for g_i, g in enumerate(graphs):
    lines.append(f'  subgraph cluster_{g_i} {{ label="{g.title}";')
    for node, (label, colour) in g.nodes.items():
      lines.append(f'    "{g_i}_{node}" [label="{label}", fillcolor="{colour}"];')
    for src, dst, label in g.edges:
      lines.append(f'    "{g_i}_{src}" -> "{g_i}_{dst}" [label="{label}", color="{OP_COLOURS.get(label, "black")}"];'
                   if label else f'    "{g_i}_{src}" -> "{g_i}_{dst}";')
    lines.append("  }")
  lines.append("}")
  return "\n".join(lines)


def _depths(g: Graph) -> dict[str, int]:
  depth = {n: 0 for n in g.nodes}
  for _ in range(len(g.nodes)):  # longest path from the sources (graphs are acyclic)
    for src, dst, _ in g.edges:
      depth[dst] = max(depth[dst], depth[src] + 1)
  return depth


def _render_matplotlib(graphs: Sequence[Graph], title: str) -> bytes:
  widths = [1.5 * (max(_depths(g).values()) + 1) for g in graphs]
  heights = [0.9 * max(np.bincount(list(_depths(g).values()))) for g in graphs]
  fig = plots.new_figure((max(4.0, sum(widths)), max(3.0, max(heights) + 1)), dpi=90, layout=None)
  axes = fig.subplots(1, len(graphs), squeeze=False, gridspec_kw={"width_ratios": widths})
  for ax, g in zip(axes[0], graphs):
    depth = _depths(g)
    columns: dict[int, list[str]] = {}
    for node in g.nodes:
      columns.setdefault(depth[node], []).append(node)
    pos = {}
    for d, members in columns.items():
      for k, node in enumerate(members):
        pos[node] = (d, (len(members) - 1) / 2 - k)
    for src, dst, label in g.edges:
      (x0, y0), (x1, y1) = pos[src], pos[dst]
      ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                  arrowprops=dict(arrowstyle="->", color=OP_COLOURS.get(label, "0.3"), lw=1.2,
                                  shrinkA=14, shrinkB=14, connectionstyle="arc3,rad=0.08"))
      if label:
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, fontsize=6, ha="center", va="bottom", color="0.2")
    for node, (label, colour) in g.nodes.items():
      x, y = pos[node]
      ax.text(x, y, label, ha="center", va="center", fontsize=8,
              bbox=dict(boxstyle="round,pad=0.3", facecolor=colour, edgecolor="0.3"))
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.set_title(g.title, fontsize=9)
    ax.axis("off")
  if title:
    fig.suptitle(title, fontsize=10)
  return plots.png_bytes(fig, tight=True)


def has_dot() -> bool:
  return shutil.which("dot") is not None


def render(graphs: Sequence[Graph], title: str = "", backend: str = "auto") -> bytes:
  """PNG bytes of the graphs, side by side. backend: 'auto' (dot when available), 'dot' or 'matplotlib'."""
  if backend not in ("auto", "dot", "matplotlib"):
    raise ValueError(f"backend={backend!r}; expected 'auto', 'dot' or 'matplotlib'")
  if backend == "dot" or (backend == "auto" and has_dot()):
    if not has_dot():
      raise RuntimeError("graphviz's `dot` binary is not on the PATH (install graphviz, or use backend='matplotlib')")
    done = subprocess.run(["dot", "-Tpng"], input=_to_dot(graphs, title).encode(), capture_output=True, check=True)
    return done.stdout
  return _render_matplotlib(graphs, title)


def draw_architecture(arch: Any, space: ss.SearchSpace, path: str | pathlib.Path | None = None, *,
                      title: str = "", backend: str = "auto") -> bytes:
  """Draws an RNN cell or the two micro-CNN cells; writes PNG to `path` (atomically) when given; returns the bytes."""
  graphs = [rnn_graph(arch, space)] if isinstance(space, ss.RnnSearchSpace) else cnn_graphs(arch, space)
  png = render(graphs, title, backend)
  if path is not None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(png)
    tmp.replace(path)
  return png


def make_gif(frames: Sequence[str | pathlib.Path | bytes], path: str | pathlib.Path, *,
             labels: Sequence[str] | None = None, max_frames: int = 50, duration_ms: int = 400) -> int:
  """An animated GIF of PNG frames (paths or bytes), each stamped with its label; evenly thins to `max_frames`.

  Returns the number of frames written.
  """
  from PIL import Image, ImageDraw

  if not frames:
    raise ValueError("make_gif needs at least one frame")
  index = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
  images = []
  for k in index:
    f = frames[k]
    img = Image.open(_io.BytesIO(f) if isinstance(f, bytes) else f).convert("RGB")
    if labels is not None:
      ImageDraw.Draw(img).text((5, 5), labels[k], fill=(0, 0, 0))
    images.append(img)
  width = max(i.width for i in images)
  height = max(i.height for i in images)
  canvas = []
  for img in images:
    c = Image.new("RGB", (width, height), (255, 255, 255))
    c.paste(img, (0, 0))
    canvas.append(c)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  canvas[0].save(path, save_all=True, append_images=canvas[1:], duration=duration_ms, loop=0)
  return len(canvas)
