"""The DP-NAS (MetaQNN) state space: states, legal actions and their constraints, net strings <-> state sequences.

A state is the 9-tuple (layer_type, layer_depth, filter_depth, filter_size, stride, padding, image_size, fc_size,
terminate) with layer_type in {start, conv, wrn, max_pool, fc}; an action is the next state. The start state is
(start, 0, 0, 0, 0, 0, image_size, 0, 0). Legal actions of a non-terminal state, in the reference's order:

1. terminal: the state copied with terminate=1 and depth+1; from fc always, from conv/wrn when depth >= min_conv or
   no conv kernel fits, from max_pool when depth >= min_conv or no pool kernel fits;
2. fc -> fc (while the fc index < max_fc - 1; sizes no larger than the previous one);
3. conv/wrn/max_pool -> fc when depth >= min_conv and max_fc > 0;
4. conv (from any state but fc, while depth < max_conv): every feature count x kernel k < image size x padding in
   {0, (k-1)//2} x allowed stride (stride <= k and (size - k + 2p) divisible by it); depth + 1;
5. wrn (same condition as conv, and image size > 3): 3x3, stride 1, padding 1, size kept, depth + 2 (so it can
   overshoot max_conv by one);
6. max_pool directly after conv/wrn: kernel < image size, padding 0, stride from pool_strides with stride <= kernel
   and an exact fit; depth and channels kept.

Differences from the reference are options of `SearchSpace` (reference behaviour where noted):
* `dedupe_k1_padding` (default True): for k=1 both padding choices are 0, so the reference lists every 1x1 conv
  twice (random exploration then picks 1x1 convs twice as often). False reproduces the duplicates.
* `large_kernel_stride` (default 1 = the code): the README's variant uses stride 2 for kernels >= 7; set 2.
* `min_conv` (default 2 = the code; the README says 3).
* `reference_feasibility` (default False): the limits `max_image_size` / `max_fc_input` apply to the encoder
  output of every net; True applies them as the reference's code does, which reads the FC state's own image size
  (0) and so never rejects a net with hidden FC layers (nor `[SM(c)]`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

from nas_forgetting import config_schema as cc
from nas_forgetting.models import net_string as ns
from nas_forgetting.errors import ArchitectureError, ConfigError

LAYER_TYPES = ("start", "conv", "wrn", "max_pool", "fc")
GROUP = "search_space"  # the config group a `SearchSpace` is built from (named in its error messages)


class State(NamedTuple):
  """One state of the search (the reference's 9-tuple)."""

  layer_type: str
  layer_depth: int
  filter_depth: int
  filter_size: int
  stride: int
  padding: int
  image_size: int
  fc_size: int
  terminate: int


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Search lists and limits (defaults: the reference's `state_space_parameters.py` and CLI defaults)."""

  image_size: int = 28  # patch size of the input images
  num_classes: int = 10  # written into the terminal token SM(c)
  conv_sizes: tuple = (1, 3, 5, 7, 9, 11)
  conv_features: tuple = (16, 32, 64, 128, 256, 512, 1024)
  conv_strides: tuple = (1,)
  pool_sizes: tuple = (2, 3, 4)
  pool_strides: tuple = (2, 3, 4)
  fc_sizes: tuple = (32, 64, 128)
  max_fc: int = 0  # hidden FC layers allowed (0 = none, the reference default)
  min_conv: int = 2  # minimum depth before terminating (the README says 3)
  max_conv: int = 12  # maximum conv depth
  max_image_size: int = 8  # spatial size allowed at the transition into FC / terminal
  max_fc_input: int = 20000  # channels*H*W allowed at that transition
  large_kernel_stride: int = 1  # stride used for kernels >= 7 (README variant: 2); 1 = conv_strides for every kernel
  dedupe_k1_padding: bool = True  # False reproduces the reference's duplicated 1x1 actions
  reference_feasibility: bool = False  # True: the reference's check, which never rejects nets with FC layers

  def __post_init__(self):
    """Every field checked here, so a space built directly is guarded as a config's `search_space` group is (the
    config's image_size / num_classes 0, "take it from the data", is resolved before a space is built, and a config
    must list at least one value per search list)."""
    g = GROUP
    for name in ("image_size", "num_classes", "max_conv", "max_image_size", "max_fc_input", "large_kernel_stride"):
      cc.integer(self, name, minimum=1, group=g)
    for name in ("max_fc", "min_conv"):
      cc.integer(self, name, minimum=0, group=g)
    if self.min_conv > self.max_conv:
      raise ConfigError(f"{g}.min_conv={self.min_conv} exceeds {g}.max_conv={self.max_conv}")
    for name in ("conv_sizes", "conv_features", "conv_strides", "pool_sizes", "pool_strides", "fc_sizes"):
      object.__setattr__(self, name, cc.integers(self, name, minimum=1, group=g))  # empty: e.g. no pooling
    cc.boolean(self, "dedupe_k1_padding", group=g)
    cc.boolean(self, "reference_feasibility", group=g)

  @classmethod
  def from_config(cls, config) -> "SearchSpace":
    """Builds the space from a ConfigDict / mapping with exactly the dataclass's field names."""
    names = [f.name for f in dataclasses.fields(cls)]
    keys = list(config.keys())
    unknown = sorted(set(keys) - set(names))
    if unknown:
      raise ConfigError(f"unknown search-space fields {unknown}; valid: {names}")
    return cls(**{k: (tuple(config[k]) if isinstance(config[k], (list, tuple)) else config[k]) for k in keys})

  def start_state(self) -> State:
    return State("start", 0, 0, 0, 0, 0, self.image_size, 0, 0)

  # -- enumeration ------------------------------------------------------------------------------------------------

  def _conv_kernels(self, size: int) -> list[int]:
    return [k for k in self.conv_sizes if k < size]

  def _pool_kernels(self, size: int) -> list[int]:
    return [k for k in self.pool_sizes if k < size]

  @staticmethod
  def _strides(size: int, kernel: int, padding: int, strides: Sequence[int]) -> list[int]:
    return [s for s in strides if (size - kernel + 2 * padding) % s == 0 and kernel >= s]

  def _conv_strides_for(self, kernel: int) -> tuple:
    return (self.large_kernel_stride,) if self.large_kernel_stride > 1 and kernel >= 7 else self.conv_strides

  def actions(self, state: State) -> list[State]:
    """The legal next states of `state`, in the reference's order (see the module docstring)."""
    if state.terminate:
      return []
    kind, depth, size = state.layer_type, state.layer_depth, state.image_size
    if kind not in LAYER_TYPES:
      raise ArchitectureError(f"state {tuple(state)}: unknown layer_type {kind!r}; expected one of {LAYER_TYPES}")
    out: list[State] = []
    deep_enough = depth >= self.min_conv
    if (kind == "fc" or (kind in ("conv", "wrn") and (deep_enough or not self._conv_kernels(size)))
        or (kind == "max_pool" and (deep_enough or not self._pool_kernels(size)))):
      out.append(state._replace(layer_depth=depth + 1, terminate=1))
    if kind == "fc" and state.filter_depth < self.max_fc - 1:
      for units in self.fc_sizes:
        if units <= state.fc_size:
          out.append(State("fc", depth + 1, state.filter_depth + 1, 0, 0, 0, 0, units, 0))
    if kind in ("conv", "wrn", "max_pool") and deep_enough and self.max_fc > 0:
      for units in self.fc_sizes:
        out.append(State("fc", depth + 1, 0, 0, 0, 0, 0, units, 0))
    if kind != "fc" and depth < self.max_conv:
      for features in self.conv_features:
        for kernel in self._conv_kernels(size):
          paddings = [0, (kernel - 1) // 2]
          if self.dedupe_k1_padding and paddings[0] == paddings[1]:
            paddings = paddings[:1]
          for padding in paddings:
            for stride in self._strides(size, kernel, padding, self._conv_strides_for(kernel)):
              new_size = ns.output_size(size, kernel, stride, padding)
              out.append(State("conv", depth + 1, features, kernel, stride, padding, new_size, 0, 0))
      if size > 3:
        for features in self.conv_features:
          out.append(State("wrn", depth + 2, features, 3, 1, 1, size, 0, 0))
    if kind in ("conv", "wrn"):
      for kernel in self._pool_kernels(size):
        for stride in self._strides(size, kernel, 0, self.pool_strides):
          new_size = ns.output_size(size, kernel, stride, 0)
          out.append(State("max_pool", depth, state.filter_depth, kernel, stride, 0, new_size, 0, 0))
    return out

  # -- conversions ------------------------------------------------------------------------------------------------

  def net_to_states(self, net: str | Sequence[ns.Layer]) -> list[State]:
    """The state sequence of a net (start state first, terminal state last), as the reference re-parses strings."""
    layers = ns.as_net(net)
    states = [self.start_state()]
    for layer in layers:
      prev = states[-1]
      if isinstance(layer, ns.Conv) and not layer.residual:
        states.append(State("conv", prev.layer_depth + 1, layer.features, layer.kernel, layer.stride, layer.padding,
                            ns.output_size(prev.image_size, layer.kernel, layer.stride, layer.padding), 0, 0))
      elif isinstance(layer, ns.Conv):
        states.append(State("wrn", prev.layer_depth + 2, layer.features, 3, 1, layer.padding, prev.image_size, 0, 0))
      elif isinstance(layer, ns.Pool):
        states.append(State("max_pool", prev.layer_depth, prev.filter_depth, layer.kernel, layer.stride,
                            layer.padding, ns.output_size(prev.image_size, layer.kernel, layer.stride, layer.padding),
                            0, 0))
      elif isinstance(layer, ns.FC):
        index = sum(1 for s in states if s.layer_type == "fc")
        states.append(State("fc", prev.layer_depth + 1, index, 0, 0, 0, 0, layer.units, 0))
      else:
        states.append(prev._replace(layer_depth=prev.layer_depth + 1, terminate=1))
    return states

  def states_to_net(self, states: Sequence[State]) -> str:
    """The net string of a state sequence (the start state is skipped; the terminal state prints SM(num_classes))."""
    layers: list[ns.Layer] = []
    for state in states:
      if state.terminate:
        layers.append(ns.SM(self.num_classes))
      elif state.layer_type == "conv":
        layers.append(ns.Conv(state.filter_depth, state.filter_size, state.stride, state.padding, 1))
      elif state.layer_type == "wrn":
        layers.append(ns.Conv(state.filter_depth, state.filter_size, state.stride, state.padding, 0))
      elif state.layer_type == "max_pool":
        layers.append(ns.Pool(state.filter_size, state.stride, state.padding))
      elif state.layer_type == "fc":
        layers.append(ns.FC(state.fc_size))
    return ns.format_net(layers)

  def check_feasible(self, net: str | Sequence[ns.Layer], in_channels: int) -> ns.Feasibility:
    """The post-sampling check with this space's limits (`reference_feasibility`: as the reference's code)."""
    return ns.check_feasible(net, image_size=self.image_size, in_channels=in_channels,
                             max_fc_input=self.max_fc_input, max_image_size=self.max_image_size,
                             reference_rule=self.reference_feasibility)
