"""State space: legal actions against hand counts on small spaces, options, net <-> state conversions."""

import collections

import pytest

from nas_forgetting.models import net_string as ns
from nas_forgetting.dpnas.state_space import SearchSpace, State
from nas_forgetting.errors import ConfigError

SMALL = dict(image_size=6, num_classes=10, conv_sizes=(1, 3, 5), conv_features=(8, 16), pool_sizes=(2, 3),
             pool_strides=(2, 3), min_conv=1, max_conv=2)


def kinds(actions):
  return collections.Counter("term" if a.terminate else a.layer_type for a in actions)


def test_start_state_actions_by_hand():
  space = SearchSpace(**SMALL)
  actions = space.actions(space.start_state())
  # per feature: k=1 (p=0) -> 6; k=3 p=0 -> 4, p=1 -> 6; k=5 p=0 -> 2, p=2 -> 6  => 5 convs; plus 1 wrn (6 > 3)
  assert kinds(actions) == {"conv": 10, "wrn": 2}
  assert sorted({(a.filter_size, a.padding, a.image_size) for a in actions if a.layer_type == "conv"}) == [
      (1, 0, 6), (3, 0, 4), (3, 1, 6), (5, 0, 2), (5, 2, 6)]
  assert all(a.layer_depth == 1 for a in actions if a.layer_type == "conv")
  assert all(a.layer_depth == 2 and a.image_size == 6 and a.padding == 1 for a in actions if a.layer_type == "wrn")
  # the reference lists every 1x1 conv twice
  reference = SearchSpace(**SMALL, dedupe_k1_padding=False)
  assert kinds(reference.actions(reference.start_state())) == {"conv": 12, "wrn": 2}


def test_conv_state_actions_by_hand():
  space = SearchSpace(**SMALL)
  state = State("conv", 1, 8, 3, 1, 0, 4, 0, 0)
  actions = space.actions(state)
  # terminal (depth 1 >= min 1); convs k in {1, 3}: 3 per feature; wrn (4 > 3); pool: only k=2 s=2 fits 4
  assert kinds(actions) == {"term": 1, "conv": 6, "wrn": 2, "max_pool": 1}
  assert actions[0] == state._replace(layer_depth=2, terminate=1)
  assert [a for a in actions if a.layer_type == "max_pool"] == [State("max_pool", 1, 8, 2, 2, 0, 2, 0, 0)]
  # at max depth only terminal and pooling remain
  assert kinds(space.actions(state._replace(layer_depth=2))) == {"term": 1, "max_pool": 1}
  # a terminal state has no actions
  assert space.actions(state._replace(terminate=1)) == []


def test_terminal_rules_below_min_depth():
  space = SearchSpace(**dict(SMALL, min_conv=3, max_conv=4))
  # conv below min depth: terminal only when no conv kernel fits (kernels < image size)
  assert kinds(space.actions(State("conv", 1, 8, 3, 1, 0, 4, 0, 0)))["term"] == 0
  assert kinds(space.actions(State("conv", 1, 8, 3, 1, 0, 1, 0, 0))) == {"term": 1}
  # pool below min depth: terminal only when no pool kernel fits; never pool after pool
  pool = State("max_pool", 1, 8, 2, 2, 0, 2, 0, 0)
  assert kinds(space.actions(pool)) == {"term": 1, "conv": 2}


def count_nets(space):
  """All (path count, distinct nets) of the space, by depth-first search."""
  paths, nets = 0, set()
  stack = [[space.start_state()]]
  while stack:
    states = stack.pop()
    if states[-1].terminate:
      paths += 1
      nets.add(space.states_to_net(states[1:]))
      continue
    for action in space.actions(states[-1]):
      stack.append(states + [action])
  return paths, nets


def test_whole_tiny_space_by_hand():
  tiny = dict(image_size=4, num_classes=2, conv_sizes=(1, 3), conv_features=(8,), pool_sizes=(2,), pool_strides=(2,),
              min_conv=1, max_conv=1)
  # start: C(8,1,1,0,1)->4, C(8,3,1,0,1)->2, C(8,3,1,1,1)->4, wrn (depth 2)->4. Size-4 layers may end or pool (2/2)
  # then end; the size-2 conv may only end. => 2 + 1 + 2 + 2 = 7 nets
  paths, nets = count_nets(SearchSpace(**tiny))
  assert paths == 7 and len(nets) == 7
  assert "[C(8,3,1,1,0), P(2,2,0,0), SM(2)]" in nets and "[C(8,3,1,0,1), SM(2)]" in nets
  ref_paths, ref_nets = count_nets(SearchSpace(**tiny, dedupe_k1_padding=False))
  assert ref_paths == 9 and ref_nets == nets  # the duplicated 1x1 action doubles its two paths


def test_readme_variants():
  space = SearchSpace(image_size=28, large_kernel_stride=2)
  convs = [a for a in space.actions(space.start_state()) if a.layer_type == "conv"]
  strides = {(a.filter_size, a.padding): a.stride for a in convs}
  assert strides[(3, 0)] == 1 and strides[(5, 2)] == 1
  # 7x7: (28-7+0) odd -> no fit at p=0; p=3 -> 28-7+6=27 odd -> no fit; 9x9 p=0: 19 odd; p=4: 27 odd;
  # 11x11 p=0: 17 odd; p=5: 27 odd. So on 28x28 no large kernel fits stride 2.
  assert not [a for a in convs if a.filter_size >= 7]
  space27 = SearchSpace(image_size=27, large_kernel_stride=2)
  large = {(a.filter_size, a.padding, a.stride, a.image_size) for a in space27.actions(space27.start_state())
           if a.layer_type == "conv" and a.filter_size >= 7}
  assert large == {(7, 0, 2, 11), (7, 3, 2, 14), (9, 0, 2, 10), (9, 4, 2, 14), (11, 0, 2, 9), (11, 5, 2, 14)}


def test_net_states_round_trip_and_actions_are_legal():
  space = SearchSpace(image_size=28, max_fc=2)
  net = "[C(32,5,1,2,1), P(4,4,0,0), C(32,3,1,1,0), FC(128), FC(64), SM(10)]"
  states = space.net_to_states(net)
  assert states[0] == space.start_state()
  assert states[1] == State("conv", 1, 32, 5, 1, 2, 28, 0, 0)
  assert states[2] == State("max_pool", 1, 32, 4, 4, 0, 7, 0, 0)
  assert states[3] == State("wrn", 3, 32, 3, 1, 1, 7, 0, 0)
  assert states[4] == State("fc", 4, 0, 0, 0, 0, 0, 128, 0)
  assert states[5] == State("fc", 5, 1, 0, 0, 0, 0, 64, 0)
  assert states[6] == states[5]._replace(layer_depth=6, terminate=1)
  for a, b in zip(states, states[1:]):
    assert b in space.actions(a), (a, b)
  assert space.states_to_net(states[1:]) == net


def test_bad_space_options():
  with pytest.raises(ConfigError, match="min_conv"):
    SearchSpace(min_conv=5, max_conv=3)
  with pytest.raises(ConfigError, match="conv_sizes"):
    SearchSpace(conv_sizes=(0, 3))
  with pytest.raises(ConfigError, match="unknown search-space fields"):
    SearchSpace.from_config({"image_size": 8, "kernel": 3})
  assert SearchSpace.from_config({"image_size": 8, "conv_sizes": [1, 3]}).conv_sizes == (1, 3)


def test_feasibility_uses_space_limits():
  space = SearchSpace(image_size=28)
  assert "max_image_size 8" in space.check_feasible("[C(8,3,1,1,1), SM(10)]", 1).reason
  assert space.check_feasible("[C(8,3,1,1,1), P(4,4,0,0), SM(10)]", 1).ok
  assert isinstance(ns.parse_net(space.states_to_net(space.net_to_states("[P(2,2,0,0), SM(10)]")[1:]))[0], ns.Pool)
