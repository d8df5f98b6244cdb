"""ENAS search spaces, encoded as int32 arrays so that one compiled step serves every architecture.

Two spaces:

* `RnnSearchSpace`: a recurrent cell of `num_blocks` nodes. Node 0 reads x_t and h_{t-1}; node j > 0 reads one
  earlier node (its parent) through a highway layer; every node has an activation in
  {tanh, ReLU, identity, sigmoid}. An architecture is an int32 array of shape (num_blocks, 2): row j is
  (parent_j, activation_j), with parent_0 = -1 (the cell inputs). Rows of inactive nodes (flexible mode, nodes
  j >= num_nodes) are (-1, -1). Modes: `orig` (controller picks every parent and activation), `flexible` (it also
  picks the number of nodes, at least `min_nodes`), `hardcoded` (fixed `chain` or `tree` topology, only the
  activations are searched) and `random` (the `orig` space sampled uniformly, no controller).
* `CnnSearchSpace`: the micro (cell) space: a normal and a reduction cell, each of `num_blocks` nodes; node b
  (id b + 2) picks two inputs among ids 0..b+1 (0 = output of the cell before the previous one, 1 = output of the
  previous cell, i >= 2 = earlier nodes) and an operation for each. An architecture is an int32 array of shape
  (2, num_blocks, 4): [cell (0 normal, 1 reduction), node, (input_1, op_1, input_2, op_2)].

Each space describes its controller decisions (`num_choices`), maps a decision vector to an architecture with
jnp operations (jittable and vmappable: `decisions_to_arch`), and converts architectures to and from the reference
JSON DAG format and a readable string. Invalid architectures raise `ArchitectureError` naming the offending entry.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nas_forgetting.errors import ArchitectureError

RNN_ACTIVATIONS = ("tanh", "ReLU", "identity", "sigmoid")
CNN_OPS = ("identity", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")
RNN_MODES = ("orig", "flexible", "hardcoded", "random")
RNN_TOPOLOGIES = ("chain", "tree")
CNN_CELLS = ("normal", "reduction")


def _check_choice(name: str, value: Any, valid: Sequence[Any]) -> None:
  if value not in valid:
    raise ArchitectureError(f"{name}={value!r} is not valid; expected one of {', '.join(map(str, valid))}")


# ----------------------------------------------------------------------------------------------------------------
# Recurrent cell
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RnnSearchSpace:
  """The ENAS recurrent-cell space (see the module docstring for the array encoding)."""

  num_blocks: int = 12
  mode: str = "orig"
  topology: str = "chain"
  min_nodes: int = 3
  activations: tuple[str, ...] = RNN_ACTIVATIONS

  def __post_init__(self):
    _check_choice("mode", self.mode, RNN_MODES)
    _check_choice("topology", self.topology, RNN_TOPOLOGIES)
    if self.num_blocks < 1:
      raise ArchitectureError(f"num_blocks={self.num_blocks}: an RNN cell needs at least one node")
    if self.mode == "flexible" and not 1 <= self.min_nodes <= self.num_blocks:
      raise ArchitectureError(f"min_nodes={self.min_nodes} must lie in 1..num_blocks={self.num_blocks} (flexible mode)")
    for a in self.activations:
      _check_choice("activation", a, RNN_ACTIVATIONS)

  # --- decisions ---------------------------------------------------------------------------------------------
  @property
  def num_nodes_choices(self) -> int:
    return self.num_blocks - self.min_nodes + 1

  def _layout(self) -> tuple[list[int], list[int], list[str]]:
    """(num_choices, node index, kind) for every controller decision, in sampling order."""
    num_choices, nodes, kinds = [], [], []
    if self.mode == "flexible":
      num_choices.append(self.num_nodes_choices), nodes.append(-1), kinds.append("num_nodes")
    for j in range(self.num_blocks):
      if j > 0 and self.mode != "hardcoded":
        num_choices.append(j), nodes.append(j), kinds.append("prev")
      num_choices.append(len(self.activations)), nodes.append(j), kinds.append("act")
    return num_choices, nodes, kinds

  @property
  def num_choices(self) -> tuple[int, ...]:
    """Number of options of every decision, in the order the controller samples them."""
    return tuple(self._layout()[0])

  @property
  def decision_kinds(self) -> tuple[str, ...]:
    """'num_nodes', 'prev' or 'act' for every decision."""
    return tuple(self._layout()[2])

  @property
  def decision_nodes(self) -> np.ndarray:
    """The node each decision belongs to (-1 for the number-of-nodes decision)."""
    return np.asarray(self._layout()[1], np.int32)

  @property
  def num_decisions(self) -> int:
    return len(self.num_choices)

  def fixed_parents(self) -> np.ndarray:
    """Parents of the hardcoded topologies: chain j-1, binary tree (j-1)//2 (parent of node 0 is -1)."""
    j = np.arange(self.num_blocks)
    parents = j - 1 if self.topology == "chain" else (j - 1) // 2
    parents[0] = -1
    return parents.astype(np.int32)

  def decision_mask(self, decisions: jax.Array) -> jax.Array:
    """Which decisions matter for the architecture (bool, same shape as `decisions`; jittable).

    In flexible mode the decisions of nodes beyond the sampled number of nodes are ignored.
    """
    nodes = jnp.asarray(self.decision_nodes)
    if self.mode != "flexible":
      return jnp.ones(decisions.shape, bool)
    n = decisions[..., :1] + self.min_nodes
    return (nodes < 0) | (nodes < n)

  def decisions_to_arch(self, decisions: jax.Array) -> jax.Array:
    """int32 (num_decisions,) -> int32 (num_blocks, 2). Pure jnp: works under jit and vmap."""
    decisions = jnp.asarray(decisions, jnp.int32)
    _, nodes, kinds = self._layout()
    kinds = np.asarray(kinds)
    acts = decisions[np.nonzero(kinds == "act")[0]]
    if self.mode == "hardcoded":
      parents = jnp.asarray(self.fixed_parents())
    else:
      parents = jnp.concatenate([jnp.full((1,), -1, jnp.int32), decisions[np.nonzero(kinds == "prev")[0]]])
    if self.mode == "flexible":
      active = jnp.arange(self.num_blocks) < decisions[0] + self.min_nodes
      acts = jnp.where(active, acts, -1)
      parents = jnp.where(active, parents, -1)
    return jnp.stack([parents, acts], axis=-1).astype(jnp.int32)

  def arch_to_decisions(self, arch: Any) -> np.ndarray:
    """The inverse of `decisions_to_arch` (numpy; ignored decisions of inactive nodes are 0)."""
    arch = self.validate(arch)
    n = self.count_nodes(arch)
    out = []
    for k, node in zip(self.decision_kinds, self.decision_nodes):
      if k == "num_nodes":
        out.append(n - self.min_nodes)
      elif node >= n:
        out.append(0)
      else:
        out.append(arch[node, 0] if k == "prev" else arch[node, 1])
    return np.asarray(out, np.int32)

  def random_arch(self, rng: jax.Array) -> jax.Array:
    """A uniformly random architecture of this space (every decision uniform; jittable)."""
    return self.decisions_to_arch(uniform_decisions(rng, self.num_choices))

  # --- validation and conversions ------------------------------------------------------------------------------
  @staticmethod
  def count_nodes(arch: np.ndarray) -> int:
    return int(np.sum(np.asarray(arch)[:, 1] >= 0))

  def validate(self, arch: Any) -> np.ndarray:
    """Checks an encoded architecture; returns it as a numpy int32 array."""
    arch = np.asarray(arch)
    if arch.shape != (self.num_blocks, 2):
      raise ArchitectureError(f"RNN architecture array has shape {arch.shape}; expected ({self.num_blocks}, 2)")
    arch = arch.astype(np.int32)
    active = arch[:, 1] >= 0
    n = int(active.sum())
    if not active[:n].all() or active[n:].any():
      raise ArchitectureError(f"RNN architecture {arch.tolist()}: active nodes must be 0..n-1 (rows (-1, -1) after them)")
    lowest = self.min_nodes if self.mode == "flexible" else self.num_blocks
    if n < lowest:
      what = f"at least {lowest} (flexible mode)" if self.mode == "flexible" else f"exactly {self.num_blocks}"
      raise ArchitectureError(f"RNN architecture has {n} nodes; expected {what}")
    for j in range(n):
      if arch[j, 1] >= len(self.activations):
        raise ArchitectureError(f"node {j}: activation index {arch[j, 1]} out of range 0..{len(self.activations) - 1}")
      if j == 0 and arch[j, 0] != -1:
        raise ArchitectureError(f"node 0 reads the cell inputs: its parent must be -1, got {arch[0, 0]}")
      if j > 0 and not 0 <= arch[j, 0] < j:
        raise ArchitectureError(f"node {j}: parent {arch[j, 0]} out of range 0..{j - 1}")
    if self.mode == "hardcoded" and not np.array_equal(arch[:, 0], self.fixed_parents()):
      raise ArchitectureError(f"parents {arch[:, 0].tolist()} differ from the hardcoded {self.topology} topology "
                              f"{self.fixed_parents().tolist()}")
    if (arch[n:] != -1).any():
      raise ArchitectureError("inactive RNN nodes must be encoded as (-1, -1)")
    return arch

  def to_dag(self, arch: Any) -> dict[str, list[list[Any]]]:
    """The reference JSON DAG: {"-1": [[0, act0]], "-2": [[0, act0]], "p": [[child, act], ...], leaf: [[n, "avg"]],
    "n": [[n + 1, "h[t]"]]} with string keys (as json.dump writes them)."""
    arch = self.validate(arch)
    n = self.count_nodes(arch)
    name = lambda j: self.activations[arch[j, 1]]
    dag: dict[str, list[list[Any]]] = {"-1": [[0, name(0)]], "-2": [[0, name(0)]]}
    for j in range(1, n):
      dag.setdefault(str(arch[j, 0]), []).append([j, name(j)])
    for j in loose_ends(arch):
      dag.setdefault(str(j), []).append([n, "avg"])
    dag[str(n)] = [[n + 1, "h[t]"]]
    return dag

  def from_dag(self, dag: Mapping[Any, Any]) -> np.ndarray:
    """Parses a reference JSON DAG (keys may be str or int). Rejects malformed DAGs naming the entry."""
    if not isinstance(dag, Mapping):
      raise ArchitectureError(f"a DAG must be a JSON object mapping node ids to [[child, name], ...]; got {type(dag).__name__}")
    edges = []  # (parent, child, name)
    for key, children in dag.items():
      try:
        parent = int(key)
      except (TypeError, ValueError):
        raise ArchitectureError(f"DAG key {key!r} is not an integer node id") from None
      if not isinstance(children, (list, tuple)):
        raise ArchitectureError(f"DAG entry {key!r}: expected a list of [child, name] pairs, got {children!r}")
      for item in children:
        if (not isinstance(item, (list, tuple)) or len(item) != 2 or isinstance(item[0], bool)
            or not isinstance(item[0], (int, np.integer)) or not isinstance(item[1], str)):
          raise ArchitectureError(f"DAG entry {key!r}: {item!r} is not a [child id, name] pair")
        edges.append((parent, int(item[0]), item[1]))
    avg = sorted({c for _, c, nm in edges if nm == "avg"})
    if len(avg) != 1:
      raise ArchitectureError(f"DAG must send its loose ends to one 'avg' node; found 'avg' targets {avg}")
    n = avg[0]
    lowest = self.min_nodes if self.mode == "flexible" else self.num_blocks
    if not lowest <= n <= self.num_blocks:
      what = f"{lowest}..{self.num_blocks} (flexible mode)" if self.mode == "flexible" else f"{self.num_blocks}"
      raise ArchitectureError(f"DAG has {n} nodes (its 'avg' node is {n}); expected {what}")
    for p, c, nm in edges:
      if nm == "h[t]" and (p != n or c != n + 1):
        raise ArchitectureError(f"DAG entry {p!r}: edge [{c}, 'h[t]'] must be \"{n}\": [[{n + 1}, \"h[t]\"]]")
      if nm == "avg" and not 0 <= p < n:
        raise ArchitectureError(f"DAG entry {p!r}: node id out of range 0..{n - 1} for an 'avg' edge")
      if nm not in ("avg", "h[t]") and nm not in self.activations:
        raise ArchitectureError(f"DAG entry {p!r}: unknown activation {nm!r} for child {c}; valid: {', '.join(self.activations)}")
      if nm not in ("avg", "h[t]") and (not 0 <= c < n or not -2 <= p < n):
        raise ArchitectureError(f"DAG entry {p!r}: edge {p} -> {c} has a node id out of range (nodes are 0..{n - 1}, "
                                f"inputs -1 and -2)")
    node_edges = [(p, c, nm) for p, c, nm in edges if nm not in ("avg", "h[t]")]
    input_edges = [(p, c, nm) for p, c, nm in node_edges if p < 0]
    if sorted(p for p, _, _ in input_edges) != [-2, -1] or any(c != 0 for _, c, _ in input_edges):
      raise ArchitectureError(f"DAG entries \"-1\" and \"-2\" must each be [[0, activation]]; got {input_edges}")
    if input_edges[0][2] != input_edges[1][2]:
      raise ArchitectureError(f"DAG entries \"-1\" and \"-2\" name different activations for node 0: {input_edges}")
    parent_of: dict[int, list[tuple[int, str]]] = {}
    for p, c, nm in node_edges:
      if p >= 0:
        parent_of.setdefault(c, []).append((p, nm))
    if 0 in parent_of:
      raise ArchitectureError(f"DAG node 0 reads the cell inputs only; it also has parents {parent_of[0]}")
    for c, ps in parent_of.items():
      if len(ps) > 1:
        raise ArchitectureError(f"DAG node {c} has {len(ps)} parents {[p for p, _ in ps]}; each node has exactly one")
    # Cycles (follow parents upwards), then order: node ids follow evaluation order.
    for c in parent_of:
      seen, cur = [c], c
      while cur in parent_of:
        cur = parent_of[cur][0][0]
        if cur in seen:
          cycle = seen[seen.index(cur):] + [cur]
          raise ArchitectureError(f"DAG has a cycle: {' <- '.join(map(str, cycle))}")
        seen.append(cur)
    arch = np.full((self.num_blocks, 2), -1, np.int32)
    arch[0, 1] = self.activations.index(input_edges[0][2])
    for j in range(1, n):
      if j not in parent_of:
        raise ArchitectureError(f"DAG node {j} has no parent (nodes 1..{n - 1} each need one)")
      p, nm = parent_of[j][0]
      if p >= j:
        raise ArchitectureError(f"DAG edge {p} -> {j}: a parent must have a smaller id than its child")
      arch[j] = (p, self.activations.index(nm))
    leaves = set(loose_ends(arch))
    avg_from = {p for p, _, nm in edges if nm == "avg"}
    if avg_from != leaves:
      raise ArchitectureError(f"DAG 'avg' edges come from nodes {sorted(avg_from)} but the loose ends are {sorted(leaves)}")
    return self.validate(arch)

  def to_string(self, arch: Any) -> str:
    """Readable form, e.g. "0:tanh(x,h) 1:ReLU(0) 2:tanh(1)"; `from_string` parses it back."""
    arch = self.validate(arch)
    parts = []
    for j in range(self.count_nodes(arch)):
      src = "x,h" if j == 0 else str(arch[j, 0])
      parts.append(f"{j}:{self.activations[arch[j, 1]]}({src})")
    return " ".join(parts)

  def from_string(self, text: str) -> np.ndarray:
    arch = np.full((self.num_blocks, 2), -1, np.int32)
    tokens = text.split()
    if len(tokens) > self.num_blocks:
      raise ArchitectureError(f"architecture string has {len(tokens)} nodes; num_blocks is {self.num_blocks}")
    for j, tok in enumerate(tokens):
      m = re.fullmatch(r"(\d+):([A-Za-z]+)\(([^)]*)\)", tok)
      if not m or int(m.group(1)) != j:
        raise ArchitectureError(f"architecture string token {j} {tok!r}: expected '{j}:<activation>(<parent>)'")
      if m.group(2) not in self.activations:
        raise ArchitectureError(f"architecture string token {tok!r}: unknown activation {m.group(2)!r}")
      src = m.group(3)
      if j == 0:
        if src != "x,h":
          raise ArchitectureError(f"architecture string token {tok!r}: node 0 reads '(x,h)'")
        parent = -1
      else:
        if not src.isdigit():
          raise ArchitectureError(f"architecture string token {tok!r}: parent {src!r} is not a node id")
        parent = int(src)
      arch[j] = (parent, self.activations.index(m.group(2)))
    return self.validate(arch)


def loose_ends(arch: Any) -> list[int]:
  """Active nodes of an RNN architecture that no active node reads (numpy)."""
  arch = np.asarray(arch)
  n = int(np.sum(arch[:, 1] >= 0))
  used = set(int(p) for p in arch[1:n, 0])
  return [j for j in range(n) if j not in used]


def uniform_decisions(rng: jax.Array, num_choices: Sequence[int]) -> jax.Array:
  """One uniformly random choice per decision (int32, jittable)."""
  u = jax.random.uniform(rng, (len(num_choices),))
  return jnp.minimum((u * jnp.asarray(num_choices)).astype(jnp.int32), jnp.asarray(num_choices) - 1)


# ----------------------------------------------------------------------------------------------------------------
# Micro convolutional cells
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CnnSearchSpace:
  """The ENAS micro space: a normal and a reduction cell (encoding in the module docstring)."""

  num_blocks: int = 5
  ops: tuple[str, ...] = CNN_OPS

  def __post_init__(self):
    if self.num_blocks < 1:
      raise ArchitectureError(f"num_blocks={self.num_blocks}: a cell needs at least one node")
    for o in self.ops:
      _check_choice("op", o, CNN_OPS)

  @property
  def num_choices(self) -> tuple[int, ...]:
    """Per cell, per node b: (input, op, input, op) with b + 2 inputs and len(ops) ops each."""
    per_cell = []
    for b in range(self.num_blocks):
      per_cell += [b + 2, len(self.ops), b + 2, len(self.ops)]
    return tuple(per_cell * 2)

  @property
  def num_decisions(self) -> int:
    return 8 * self.num_blocks

  def decision_mask(self, decisions: jax.Array) -> jax.Array:
    return jnp.ones(decisions.shape, bool)

  def decisions_to_arch(self, decisions: jax.Array) -> jax.Array:
    return jnp.asarray(decisions, jnp.int32).reshape(2, self.num_blocks, 4)

  def arch_to_decisions(self, arch: Any) -> np.ndarray:
    return self.validate(arch).reshape(-1)

  def random_arch(self, rng: jax.Array) -> jax.Array:
    return self.decisions_to_arch(uniform_decisions(rng, self.num_choices))

  def validate(self, arch: Any) -> np.ndarray:
    arch = np.asarray(arch)
    if arch.shape != (2, self.num_blocks, 4):
      raise ArchitectureError(f"CNN architecture array has shape {arch.shape}; expected (2, {self.num_blocks}, 4)")
    arch = arch.astype(np.int32)
    for c, cell in enumerate(CNN_CELLS):
      for b in range(self.num_blocks):
        for k in (0, 2):
          inp, op = arch[c, b, k], arch[c, b, k + 1]
          if not 0 <= inp < b + 2:
            what = "a cycle" if inp >= b + 2 else "out of range"
            raise ArchitectureError(f"{cell} cell, node {b + 2}: input {inp} is {what}; valid inputs are 0..{b + 1}")
          if not 0 <= op < len(self.ops):
            raise ArchitectureError(f"{cell} cell, node {b + 2}: op index {op} out of range 0..{len(self.ops) - 1}")
    return arch

  def to_dag(self, arch: Any) -> dict[str, list[list[Any]]]:
    """JSON form: {"normal": [[in1, op1, in2, op2], ...], "reduction": [...]} (node b has id b + 2)."""
    arch = self.validate(arch)
    return {cell: [[int(r[0]), self.ops[r[1]], int(r[2]), self.ops[r[3]]] for r in arch[c]]
            for c, cell in enumerate(CNN_CELLS)}

  def from_dag(self, dag: Mapping[str, Any]) -> np.ndarray:
    if not isinstance(dag, Mapping) or set(dag) != set(CNN_CELLS):
      raise ArchitectureError(f"a micro-CNN DAG must be an object with keys {list(CNN_CELLS)}; got "
                              f"{sorted(dag) if isinstance(dag, Mapping) else type(dag).__name__}")
    arch = np.zeros((2, self.num_blocks, 4), np.int32)
    for c, cell in enumerate(CNN_CELLS):
      rows = dag[cell]
      if not isinstance(rows, (list, tuple)) or len(rows) != self.num_blocks:
        raise ArchitectureError(f"{cell} cell: expected a list of {self.num_blocks} nodes, got {rows!r}")
      for b, row in enumerate(rows):
        if (not isinstance(row, (list, tuple)) or len(row) != 4 or not all(isinstance(row[k], int) for k in (0, 2))
            or not all(isinstance(row[k], str) for k in (1, 3))):
          raise ArchitectureError(f"{cell} cell, node {b + 2}: {row!r} is not [input, op, input, op]")
        for k in (1, 3):
          if row[k] not in self.ops:
            raise ArchitectureError(f"{cell} cell, node {b + 2}: unknown op {row[k]!r}; valid: {', '.join(self.ops)}")
        arch[c, b] = (row[0], self.ops.index(row[1]), row[2], self.ops.index(row[3]))
    return self.validate(arch)

  def to_string(self, arch: Any) -> str:
    """E.g. "normal: 2=sep_conv_3x3(0)+identity(1) 3=... | reduction: ..."."""
    arch = self.validate(arch)
    cells = []
    for c, cell in enumerate(CNN_CELLS):
      nodes = [f"{b + 2}={self.ops[r[1]]}({r[0]})+{self.ops[r[3]]}({r[2]})" for b, r in enumerate(arch[c])]
      cells.append(f"{cell}: " + " ".join(nodes))
    return " | ".join(cells)

  def from_string(self, text: str) -> np.ndarray:
    parts = [p.strip() for p in text.split("|")]
    if len(parts) != 2:
      raise ArchitectureError(f"micro-CNN string must have two cells separated by '|'; got {text!r}")
    arch = np.zeros((2, self.num_blocks, 4), np.int32)
    for c, (cell, part) in enumerate(zip(CNN_CELLS, parts)):
      if not part.startswith(cell + ":"):
        raise ArchitectureError(f"micro-CNN string: cell {c} must start with '{cell}:'; got {part!r}")
      tokens = part[len(cell) + 1:].split()
      if len(tokens) != self.num_blocks:
        raise ArchitectureError(f"{cell} cell: {len(tokens)} nodes in the string; expected {self.num_blocks}")
      for b, tok in enumerate(tokens):
        m = re.fullmatch(r"(\d+)=(\w+)\((\d+)\)\+(\w+)\((\d+)\)", tok)
        if not m or int(m.group(1)) != b + 2:
          raise ArchitectureError(f"{cell} cell token {tok!r}: expected '{b + 2}=<op>(<input>)+<op>(<input>)'")
        for name in (m.group(2), m.group(4)):
          if name not in self.ops:
            raise ArchitectureError(f"{cell} cell token {tok!r}: unknown op {name!r}; valid: {', '.join(self.ops)}")
        arch[c, b] = (int(m.group(3)), self.ops.index(m.group(2)), int(m.group(5)), self.ops.index(m.group(4)))
    return self.validate(arch)


def cnn_loose_ends(cell_arch: Any) -> list[int]:
  """Node ids (>= 2) of one cell (num_blocks, 4) that no node of the cell reads."""
  cell_arch = np.asarray(cell_arch)
  used = set(cell_arch[:, 0].tolist()) | set(cell_arch[:, 2].tolist())
  return [b + 2 for b in range(cell_arch.shape[0]) if b + 2 not in used]


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------

SearchSpace = RnnSearchSpace | CnnSearchSpace


def load_dag_file(path: str | pathlib.Path, space: SearchSpace) -> np.ndarray:
  """Reads a JSON DAG file (reference format for RNN cells) into an encoded architecture."""
  path = pathlib.Path(path)
  try:
    dag = json.loads(path.read_text())
  except FileNotFoundError:
    raise ArchitectureError(f"DAG file {path} does not exist") from None
  except json.JSONDecodeError as e:
    raise ArchitectureError(f"DAG file {path} is not valid JSON: {e}") from None
  try:
    return space.from_dag(dag)
  except ArchitectureError as e:
    raise ArchitectureError(f"DAG file {path}: {e}") from None


def dag_json(arch: Any, space: SearchSpace) -> str:
  """The JSON text of an architecture's DAG (indented, as the reference writes dag.json)."""
  return json.dumps(space.to_dag(arch), indent=2)
