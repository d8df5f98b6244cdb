"""Which shared ENAS weights WPL monitors, and which of them an architecture uses (as traced boolean masks).

The WPL state covers a *view* of the supernet's parameters (`*_monitored(params)`, a pure function, so the penalty's
gradient flows back into the full parameter tree), and `*_active_mask(arch, ...)` gives the matching masks: leaves
of booleans aligned with the leading dims of each monitored tensor (see `nas_forgetting.wpl.state`). Everything is
jnp on the traced architecture, so one compilation serves all architectures.

RNN supernet (`models.enas_rnn.EnasRnn`): as in the reference, the per-edge hidden-to-hidden weights W^c_ij and
W^h_ij; they are stored stacked as `edges[e] = [W^c | W^h]` and viewed as two leaves `edges_c`, `edges_h` of shape
(E, H, H), so that norm clipping treats each edge's W^c and W^h as separate tensors, like the reference. Node 0's
input and recurrent weights and the embedding/decoder are not monitored (nor in the reference), unless
`monitor='all'` (`wpl.monitor`): then the view also holds them under "shared" (one tensor each, active for every
architecture, since every architecture uses them).

Micro-CNN supernet (`models.enas_cnn.EnasCnn`): the separable-convolution weights of every edge of every cell
(`dw3`, `pw3`, `dw5`, `pw5`, indexed [node, slot, input id, ...]); an edge's sep-conv-3x3 weights are active when
its op is sep_conv_3x3, likewise for 5x5. Normal cells use arch[0], reduction cells arch[1]. Identity and pooling
edges have no weights. Stem, input calibrations, cell output projections and the head are shared by every
architecture and not monitored (the reference monitors edge ops only).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from nas_forgetting.errors import ArchitectureError
from nas_forgetting.models.enas_rnn import edge_rows

PyTree = Any

CNN_EDGE_WEIGHTS = {"dw3": 1, "pw3": 1, "dw5": 2, "pw5": 2}  # weight name -> the CNN_OPS index that uses it
CNN_DEPTHWISE_WEIGHTS = ("dw3", "dw5")  # present in every supernet; pw3/pw5 only with pointwise steps
_CELL_PREFIXES = ("normal_", "reduction_")


def rnn_monitored(params: Mapping[str, Any], monitor: str = "edges") -> dict[str, Any]:
  """The per-edge W^c (`edges_c`) and W^h (`edges_h`) views of an EnasRnn parameter dict, and with
  `monitor='all'` every other parameter under "shared"."""
  if "edges" not in params:
    raise ArchitectureError(f"RNN parameters have no 'edges' entry; found {', '.join(sorted(params))}")
  if monitor not in ("edges", "all"):
    raise ArchitectureError(f"monitor={monitor!r}; expected 'edges' or 'all'")
  edges = params["edges"]
  h = edges.shape[-1] // 2
  view = {"edges_c": edges[..., :h], "edges_h": edges[..., h:]}
  if monitor == "all":
    view["shared"] = {k: v for k, v in params.items() if k != "edges"}
  return view


def rnn_write_back(params: Mapping[str, Any], view: Mapping[str, Any]) -> dict[str, Any]:
  """`params` with the values of a monitored `view` (`rnn_monitored(params, monitor)`) written back: the inverse of
  the view, for updates computed on it."""
  out = dict(params)
  out["edges"] = jnp.concatenate([view["edges_c"], view["edges_h"]], axis=-1)
  out.update(view.get("shared", {}))
  return out


def rnn_active_edges(arch: jnp.ndarray, num_blocks: int) -> jnp.ndarray:
  """bool (E,): the (parent, child) edges used by an RNN architecture int32 (num_blocks, 2)."""
  arch = jnp.asarray(arch, jnp.int32)
  if arch.shape != (num_blocks, 2):
    raise ArchitectureError(f"RNN architecture has shape {arch.shape}; expected ({num_blocks}, 2)")
  num_edges = max(num_blocks * (num_blocks - 1) // 2, 1)
  if num_blocks < 2:
    return jnp.zeros((num_edges,), bool)
  return jnp.zeros((num_edges,), bool).at[edge_rows(arch, num_blocks)].max(arch[1:, 1] >= 0)


def rnn_active_mask(arch: jnp.ndarray, num_blocks: int, view: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Masks for `rnn_monitored(params, monitor)` = `view` (needed only with monitor='all': every "shared" tensor is
  active for every architecture)."""
  active = rnn_active_edges(arch, num_blocks)
  mask = {"edges_c": active, "edges_h": active}
  if view is not None and "shared" in view:
    mask["shared"] = {k: jnp.ones((), bool) for k in view["shared"]}
  return mask


def _cell_names(params: Mapping[str, Any]) -> list[str]:
  names = [k for k in params if k.startswith(_CELL_PREFIXES)]
  if not names:
    raise ArchitectureError(f"CNN parameters have no cell entries ({'/'.join(_CELL_PREFIXES)}*); found "
                            f"{', '.join(sorted(params))}")
  return sorted(names)


def cnn_monitored(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """The edge-op weights of every cell of an EnasCnn parameter dict: {cell name: {dw3, pw3, dw5, pw5}}, without
  pw3/pw5 for a supernet built with `sep_conv='depthwise'` (no pointwise step)."""
  out = {}
  for name in _cell_names(params):
    missing = [w for w in CNN_DEPTHWISE_WEIGHTS if w not in params[name]]
    if missing:
      raise ArchitectureError(f"CNN cell {name!r} lacks edge weights {missing}")
    out[name] = {w: params[name][w] for w in CNN_EDGE_WEIGHTS if w in params[name]}
  return out


def cnn_cell_mask(cell_arch: jnp.ndarray, num_blocks: int) -> dict[str, jnp.ndarray]:
  """bool (num_blocks, 2, num_blocks + 2) per edge weight for one cell architecture int32 (num_blocks, 4)."""
  cell_arch = jnp.asarray(cell_arch, jnp.int32)
  if cell_arch.shape != (num_blocks, 4):
    raise ArchitectureError(f"CNN cell architecture has shape {cell_arch.shape}; expected ({num_blocks}, 4)")
  inputs = cell_arch[:, 0::2]  # (B, 2)
  ops = cell_arch[:, 1::2]  # (B, 2)
  ids = jnp.arange(num_blocks + 2)
  chosen = inputs[:, :, None] == ids[None, None, :]  # (B, 2, B + 2)
  return {w: chosen & (ops[:, :, None] == op) for w, op in CNN_EDGE_WEIGHTS.items()}


def cnn_active_mask(arch: jnp.ndarray, monitored: Mapping[str, Any]) -> dict[str, dict[str, jnp.ndarray]]:
  """Masks for `cnn_monitored(params)` given the architecture int32 (2, num_blocks, 4) (normal, reduction)."""
  arch = jnp.asarray(arch, jnp.int32)
  if arch.ndim != 3 or arch.shape[0] != 2 or arch.shape[2] != 4:
    raise ArchitectureError(f"CNN architecture has shape {arch.shape}; expected (2, num_blocks, 4)")
  num_blocks = arch.shape[1]
  normal, reduction = cnn_cell_mask(arch[0], num_blocks), cnn_cell_mask(arch[1], num_blocks)
  return {name: {w: (normal if name.startswith("normal_") else reduction)[w] for w in monitored[name]}
          for name in monitored}
