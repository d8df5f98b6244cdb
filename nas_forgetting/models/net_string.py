"""DP-NAS net strings: the grammar the search logs store in their `net` column and `--net` accepts.

It lives beside the networks it describes (`models.deep_prior` builds them), so the DP-NAS search (`dpnas/`) and
the models both import it downwards.

A net string is `[` + layer tokens joined by `, ` + `]`, for example
`[C(32,5,1,2,1), P(4,4,0,0), C(1024,1,1,0,1), SM(10)]`. Tokens:

* `C(f,k,s,p,b)`: convolution with `f` output channels, a square `k`x`k` kernel, stride `s`, zero padding `p` and
  block flag `b`. `b=1` is a plain layer (convolution without bias, BatchNorm, ReLU). `b=0` is a pre-activation
  residual block (the flag is inverted compared with what one might expect); such a block is always 3x3 with
  stride 1 and keeps the spatial size: its `p` is stored (search logs write 1) but the block always pads by 1.
* `P(k,s,p,0)`: max pooling with kernel `k`, stride `s`, padding `p` <= k/2 (as PyTorch requires; a larger
  padding makes windows of padding only, whose -inf would reach the features); the fourth number is always 0.
* `FC(n)`: a hidden fully connected layer of `n` units (Linear without bias, BatchNorm, ReLU).
* `SM(c)`: the terminal token, the linear classifier over `c` classes. It is the last token and appears once.

`parse_net` accepts any whitespace between tokens and numbers; `format_net` prints the canonical form, so
`format_net(parse_net(s)) == s` for every canonical string. A malformed string raises `ArchitectureError` naming
the character position, what was found and what was expected. Tokens of the MetaQNN grammar that DP-NAS does
not build (split `S{...}`, dropout `D`, `GAP`, `NIN`, `BN`) are rejected by name instead of being dropped.

`check_feasible` applies the rules the reference means to apply before training: every spatial size stays >= 1,
and at the transition into the first FC layer (or the terminal token) channels*H*W <= `max_fc_input` and
H <= `max_image_size`, for every net. (The reference's code never checks nets with FC layers, nor `[SM(c)]`:
`reference_rule=True` reproduces that.) It returns the reason a net is infeasible (or None); `infer_shapes`
raises it instead.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence, Union

from nas_forgetting.errors import ArchitectureError


@dataclasses.dataclass(frozen=True)
class Conv:
  """`C(f,k,s,p,b)`: a plain conv-BN-ReLU layer (block=1) or a pre-activation residual block (block=0)."""

  features: int
  kernel: int
  stride: int
  padding: int
  block: int

  @property
  def residual(self) -> bool:
    """True for the residual block (flag 0)."""
    return self.block == 0

  def __str__(self) -> str:
    return f"C({self.features},{self.kernel},{self.stride},{self.padding},{self.block})"


@dataclasses.dataclass(frozen=True)
class Pool:
  """`P(k,s,p,0)`: max pooling."""

  kernel: int
  stride: int
  padding: int = 0

  def __str__(self) -> str:
    return f"P({self.kernel},{self.stride},{self.padding},0)"


@dataclasses.dataclass(frozen=True)
class FC:
  """`FC(n)`: a hidden fully connected layer of `units` units."""

  units: int

  def __str__(self) -> str:
    return f"FC({self.units})"


@dataclasses.dataclass(frozen=True)
class SM:
  """`SM(c)`: the terminal token (the linear classifier over `classes` classes)."""

  classes: int

  def __str__(self) -> str:
    return f"SM({self.classes})"


Layer = Union[Conv, Pool, FC, SM]
Net = tuple  # tuple[Layer, ...]

_ARITY = {"C": 5, "P": 4, "FC": 1, "SM": 1}
_UNSUPPORTED = {
    "S": "split", "D": "dropout", "GAP": "global average pooling", "NIN": "network-in-network", "BN": "batch norm",
}
_EXPECTED_TOKEN = "a layer token C(f,k,s,p,b), P(k,s,p,0), FC(n) or SM(c)"


class _Parser:
  """Recursive-descent parser with character positions for error messages."""

  def __init__(self, text: str):
    self.text = text
    self.pos = 0

  def fail(self, expected: str, pos: int | None = None) -> None:
    pos = self.pos if pos is None else pos
    found = repr(self.text[pos]) if pos < len(self.text) else "the end of the string"
    raise ArchitectureError(f"net string {self.text!r}: at position {pos} expected {expected}, found {found}")

  def skip_ws(self) -> None:
    while self.pos < len(self.text) and self.text[self.pos].isspace():
      self.pos += 1

  def expect(self, char: str) -> None:
    self.skip_ws()
    if not self.text.startswith(char, self.pos):
      self.fail(repr(char))
    self.pos += 1

  def peek(self) -> str:
    self.skip_ws()
    return self.text[self.pos] if self.pos < len(self.text) else ""

  def integer(self, what: str) -> tuple[int, int]:
    self.skip_ws()
    start = self.pos
    while self.pos < len(self.text) and self.text[self.pos].isdigit():
      self.pos += 1
    if start == self.pos:
      self.fail(f"a non-negative integer ({what})")
    return int(self.text[start:self.pos]), start

  def name(self) -> tuple[str, int]:
    self.skip_ws()
    start = self.pos
    while self.pos < len(self.text) and (self.text[self.pos].isalpha()):
      self.pos += 1
    if start == self.pos:
      self.fail(_EXPECTED_TOKEN)
    return self.text[start:self.pos], start

  def layer(self) -> tuple[Layer, int]:
    name, start = self.name()
    if name in _UNSUPPORTED:
      raise ArchitectureError(
          f"net string {self.text!r}: at position {start} token {name!r} ({_UNSUPPORTED[name]}) belongs to the MetaQNN "
          f"grammar but DP-NAS does not build it; expected {_EXPECTED_TOKEN}")
    if name not in _ARITY:
      raise ArchitectureError(
          f"net string {self.text!r}: at position {start} unknown token {name!r}; expected {_EXPECTED_TOKEN}")
    self.expect("(")
    values, positions = [], []
    for i in range(_ARITY[name]):
      if i:
        if self.peek() == ")":
          self.fail(f"',' and {_ARITY[name] - i} more number(s): {name} takes {_ARITY[name]} numbers")
        self.expect(",")
      value, vpos = self.integer(f"argument {i + 1} of {name}")
      values.append(value)
      positions.append(vpos)
    if self.peek() == ",":
      self.fail(f"')': {name} takes {_ARITY[name]} numbers")
    self.expect(")")
    token = self.text[start:self.pos]
    return _make_layer(self.text, name, token, start, values, positions), start

  def net(self) -> tuple[list[Layer], list[int]]:
    self.expect("[")
    layers, starts = [], []
    if self.peek() == "]":
      self.fail(_EXPECTED_TOKEN)
    while True:
      layer, start = self.layer()
      layers.append(layer)
      starts.append(start)
      if self.peek() == "]":
        self.pos += 1
        break
      if self.peek() != ",":
        self.fail("',' or ']'")
      self.pos += 1
    self.skip_ws()
    if self.pos != len(self.text):
      self.fail("the end of the string after ']'")
    return layers, starts


def _make_layer(text: str, name: str, token: str, start: int, values: list[int], positions: list[int]) -> Layer:
  def bad(i: int, expected: str) -> None:
    raise ArchitectureError(
        f"net string {text!r}: at position {positions[i]} in token {token!r}: expected {expected}, found {values[i]}")

  if name == "C":
    f, k, s, p, b = values
    if f < 1: bad(0, "features >= 1")
    if k < 1: bad(1, "kernel size >= 1")
    if s < 1: bad(2, "stride >= 1")
    if b not in (0, 1): bad(4, "block flag 1 (plain conv) or 0 (residual block)")
    if b == 0 and k != 3: bad(1, "kernel size 3 (a residual block, flag 0, is always 3x3)")
    if b == 0 and s != 1: bad(2, "stride 1 (a residual block, flag 0, keeps the spatial size)")
    return Conv(f, k, s, p, b)
  if name == "P":
    k, s, p, zero = values
    if k < 1: bad(0, "pool size >= 1")
    if s < 1: bad(1, "stride >= 1")
    if 2 * p > k: bad(2, f"padding <= kernel/2 = {k / 2:g} (as PyTorch's max pooling: a larger padding gives "
                         f"windows of padding only, -inf features)")
    if zero != 0: bad(3, "0 (the fourth number of a pooling token is always 0)")
    return Pool(k, s, p)
  if name == "FC":
    if values[0] < 1: bad(0, "units >= 1")
    return FC(values[0])
  if values[0] < 1: bad(0, "classes >= 1")
  return SM(values[0])


def parse_net(text: str) -> Net:
  """Parses a net string into a tuple of `Conv`/`Pool`/`FC`/`SM`; see the module docstring for the rules."""
  if not isinstance(text, str):
    raise ArchitectureError(f"a net string must be a str, got {type(text).__name__}: {text!r}")
  parser = _Parser(text)
  layers, starts = parser.net()
  for i, (layer, start) in enumerate(zip(layers, starts)):
    previous = layers[i - 1] if i else None
    if isinstance(layer, SM) and i != len(layers) - 1:
      raise ArchitectureError(
          f"net string {text!r}: at position {starts[i + 1]} expected ']' after the terminal token {layer}, "
          f"found more layers")
    if isinstance(layer, (Conv, Pool)) and isinstance(previous, FC):
      raise ArchitectureError(
          f"net string {text!r}: at position {start} token {layer} follows {previous}; expected FC(n) or SM(c) "
          f"after a fully connected layer")
  if not isinstance(layers[-1], SM):
    raise ArchitectureError(
        f"net string {text!r}: the last token {layers[-1]} is not terminal; expected the net to end with SM(c)")
  return tuple(layers)


def format_net(layers: Sequence[Layer]) -> str:
  """The canonical net string of `layers` (the inverse of `parse_net`)."""
  for layer in layers:
    if not isinstance(layer, (Conv, Pool, FC, SM)):
      raise ArchitectureError(f"not a net-string layer: {layer!r}; expected Conv, Pool, FC or SM")
  return "[" + ", ".join(str(layer) for layer in layers) + "]"


def as_net(net: str | Sequence[Layer]) -> Net:
  """A parsed net from a string or a sequence of layers (validated by a round trip through the grammar)."""
  return parse_net(net if isinstance(net, str) else format_net(net))


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
  """Spatial size after a window op: floor((size - kernel + 2*padding) / stride) + 1 (may be < 1)."""
  return (size - kernel + 2 * padding) // stride + 1


class Shape(NamedTuple):
  """Feature-map shape after a layer: square spatial size `size` and `channels` (FC: size 0, channels = units)."""

  size: int
  channels: int


class Feasibility(NamedTuple):
  """Result of `check_feasible`: `reason` is None for a feasible net."""

  reason: str | None
  shapes: tuple  # Shape after every layer that could be computed
  embedding_dim: int  # channels*H*W of the encoder output (0 when the encoder is infeasible)

  @property
  def ok(self) -> bool:
    return self.reason is None


def check_feasible(net: str | Sequence[Layer], *, image_size: int, in_channels: int, max_fc_input: int = 20000,
                   max_image_size: int = 8, reference_rule: bool = False) -> Feasibility:
  """Checks the feasibility rules; never raises for an infeasible (but well-formed) net.

  `max_fc_input` / `max_image_size` <= 0 switch the respective check off (used for nets given by hand in task 2).
  By default the limits apply to the encoder output of every net. `reference_rule=True` applies them as the
  reference's code does: its check reads the image size of the state that enters the FC layer or the terminal
  token, which is 0 for an FC state, so a net with hidden FC layers is never checked, and neither is a net without
  any conv or pool layer (`[SM(10)]`).
  """
  layers = as_net(net)
  if reference_rule and (any(isinstance(layer, FC) for layer in layers)
                         or not any(isinstance(layer, (Conv, Pool)) for layer in layers)):
    max_fc_input = max_image_size = 0
  size, channels = image_size, in_channels
  shapes = []
  embedding_dim = 0
  for i, layer in enumerate(layers):
    where = f"layer {i} {layer}"
    before = size
    if isinstance(layer, (FC, SM)) and not embedding_dim:
      embedding_dim = channels * size * size
      if max_fc_input > 0 and embedding_dim > max_fc_input:
        return Feasibility(f"{where}: encoder output {channels}x{size}x{size} = {embedding_dim} features exceeds "
                           f"max_fc_input {max_fc_input}", tuple(shapes), 0)
      if max_image_size > 0 and size > max_image_size:
        return Feasibility(f"{where}: encoder output spatial size {size} exceeds max_image_size {max_image_size}",
                           tuple(shapes), 0)
    if isinstance(layer, Conv):
      if not layer.residual:
        size = output_size(size, layer.kernel, layer.stride, layer.padding)
      channels = layer.features
    elif isinstance(layer, Pool):
      size = output_size(size, layer.kernel, layer.stride, layer.padding)
    elif isinstance(layer, FC):
      shapes.append(Shape(0, layer.units))
      continue
    else:
      shapes.append(Shape(0, layer.classes))
      continue
    if size < 1:
      return Feasibility(f"{where}: spatial size falls to {size} (< 1) from {before}x{before}", tuple(shapes), 0)
    shapes.append(Shape(size, channels))
  return Feasibility(None, tuple(shapes), embedding_dim)


def infer_shapes(net: str | Sequence[Layer], *, image_size: int, in_channels: int, max_fc_input: int = 20000,
                 max_image_size: int = 8) -> Feasibility:
  """Like `check_feasible` but raises `ArchitectureError` with the reason for an infeasible net."""
  result = check_feasible(net, image_size=image_size, in_channels=in_channels, max_fc_input=max_fc_input,
                          max_image_size=max_image_size)
  if not result.ok:
    text = net if isinstance(net, str) else format_net(net)
    raise ArchitectureError(f"net {text} is infeasible for {image_size}x{image_size}x{in_channels} inputs: "
                            f"{result.reason}")
  return result
