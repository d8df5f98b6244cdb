"""Cell drawings (graph content, PNG output of the pure-Python renderer) and the GIF of sampled cells."""

from PIL import Image

from nas_forgetting.enas import drawing
from nas_forgetting.enas import search_space as ss

PNG = b"\x89PNG\r\n\x1a\n"


def test_rnn_graph_matches_the_dag():
  space = ss.RnnSearchSpace(num_blocks=4)
  arch = space.from_string("0:tanh(x,h) 1:ReLU(0) 2:identity(0) 3:sigmoid(1)")
  g = drawing.rnn_graph(arch, space)
  assert g.nodes["3"][0] == "3: sigmoid" and g.nodes["3"][1] == drawing.ACTIVATION_COLOURS["sigmoid"]
  assert set(g.edges) == {("x", "0", ""), ("h", "0", ""), ("0", "1", ""), ("0", "2", ""), ("1", "3", ""),
                          ("2", "avg", ""), ("3", "avg", ""), ("avg", "out", "")}
  dot = drawing._to_dot([g], "t")
  assert dot.count("->") == len(g.edges)


def test_cnn_graphs_and_png(tmp_path):
  space = ss.CnnSearchSpace(num_blocks=2)
  arch = space.from_string("normal: 2=sep_conv_3x3(0)+identity(1) 3=max_pool_3x3(2)+avg_pool_3x3(0) | "
                           "reduction: 2=sep_conv_5x5(1)+identity(1) 3=identity(0)+identity(1)")
  normal, reduction = drawing.cnn_graphs(arch, space)
  assert ("0", "2", "sep_conv_3x3") in normal.edges and ("3", "out", "") in normal.edges
  assert {e for e in reduction.edges if e[1] == "out"} == {("2", "out", ""), ("3", "out", "")}
  png = drawing.draw_architecture(arch, space, tmp_path / "cell.png", title="micro", backend="matplotlib")
  assert png.startswith(PNG) and (tmp_path / "cell.png").read_bytes() == png


def test_gif_of_sampled_cells(tmp_path):
  space = ss.RnnSearchSpace(num_blocks=3)
  frames = [drawing.draw_architecture(space.from_string(s), space, backend="matplotlib")
            for s in ("0:tanh(x,h) 1:ReLU(0) 2:tanh(1)", "0:ReLU(x,h) 1:ReLU(0) 2:tanh(0)",
                      "0:sigmoid(x,h) 1:identity(0) 2:tanh(0)")]
  n = drawing.make_gif(frames, tmp_path / "cells.gif", labels=["step: 0", "step: 1", "step: 2"], max_frames=2)
  assert n == 2
  with Image.open(tmp_path / "cells.gif") as gif:
    assert gif.n_frames == 2
