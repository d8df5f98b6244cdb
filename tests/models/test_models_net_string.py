"""Net-string grammar: exact round trip, error messages naming position/token, feasibility rules."""

import pytest

from nas_forgetting.models import net_string as ns
from nas_forgetting.errors import ArchitectureError

README_NET = "[C(32,5,1,2,1), P(4,4,0,0), C(32,3,1,1,0), C(1024,1,1,0,1), C(512,3,1,0,1), SM(10)]"


@pytest.mark.parametrize("text", [
    README_NET,
    "[C(32,5,1,2,1), P(4,4,0,0), C(1024,1,1,0,1), SM(10)]",
    "[C(16,3,1,0,1), FC(128), FC(64), SM(100)]",
    "[SM(2)]",
    "[C(8,3,1,1,0), P(2,2,1,0), SM(10)]",
])
def test_round_trip_is_exact(text):
  layers = ns.parse_net(text)
  assert ns.format_net(layers) == text
  assert ns.parse_net(ns.format_net(layers)) == layers


def test_parse_values_and_whitespace():
  layers = ns.parse_net(" [ C( 32 ,5,1,2,1 ),P(4,4,0,0) ,FC(7),  SM(10) ] ")
  assert layers == (ns.Conv(32, 5, 1, 2, 1), ns.Pool(4, 4, 0), ns.FC(7), ns.SM(10))
  assert not layers[0].residual and ns.parse_net("[C(8,3,1,1,0), SM(2)]")[0].residual
  assert ns.format_net(layers) == "[C(32,5,1,2,1), P(4,4,0,0), FC(7), SM(10)]"


@pytest.mark.parametrize("text, fragments", [
    ("", ["position 0", "'['", "end of the string"]),
    ("C(1,1,1,0,1)", ["position 0", "'['", "'C'"]),
    ("[C(32,5,1,2)]", ["position 11", "C takes 5 numbers", "')'"]),
    ("[C(32,5,1,2,1,7), SM(2)]", ["position 13", "C takes 5 numbers"]),
    ("[C(32,5,1,2,1) P(2,2,0,0), SM(10)]", ["position 15", "',' or ']'", "'P'"]),
    ("[X(1), SM(2)]", ["position 1", "unknown token 'X'"]),
    ("[D(1), SM(2)]", ["position 1", "'D'", "dropout", "does not build"]),
    ("[C(a,5,1,2,1), SM(2)]", ["position 3", "non-negative integer", "'a'"]),
    ("[C(-1,5,1,2,1), SM(2)]", ["position 3", "'-'"]),
    ("[SM(10), C(1,1,1,0,1)]", ["position 9", "terminal token SM(10)"]),
    ("[C(1,1,1,0,1)]", ["not terminal", "SM(c)"]),
    ("[P(2,2,0,1), SM(3)]", ["position 9", "P(2,2,0,1)", "always 0"]),
    ("[C(3,5,1,0,0), SM(2)]", ["position 5", "kernel size 3"]),
    ("[C(3,3,2,1,0), SM(2)]", ["position 7", "stride 1"]),
    ("[C(3,3,1,1,2), SM(2)]", ["position 11", "block flag"]),
    ("[C(0,3,1,1,1), SM(2)]", ["position 3", "features >= 1"]),
    ("[FC(8), C(3,3,1,1,1), SM(2)]", ["position 8", "follows FC(8)"]),
    ("[SM(2)] x", ["position 8", "end of the string after ']'", "'x'"]),
    ("[]", ["position 1", "layer token"]),
])
def test_malformed_strings_name_position_and_expectation(text, fragments):
  with pytest.raises(ArchitectureError) as info:
    ns.parse_net(text)
  message = str(info.value)
  assert repr(text) in message
  for fragment in fragments:
    assert fragment in message, (fragment, message)


def test_shapes_by_hand_for_the_readme_net():
  result = ns.check_feasible(README_NET, image_size=28, in_channels=1)
  assert result.ok
  # 28 -(5x5 pad 2)-> 28 -(pool 4/4)-> 7 -(residual)-> 7 -(1x1)-> 7 -(3x3 pad 0)-> 5
  assert [s.size for s in result.shapes[:5]] == [28, 7, 7, 7, 5]
  assert [s.channels for s in result.shapes] == [32, 32, 32, 1024, 512, 10]
  assert result.embedding_dim == 512 * 5 * 5


@pytest.mark.parametrize("text, fragments", [
    ("[C(8,11,1,0,1), C(8,11,1,0,1), C(8,11,1,0,1), SM(10)]", ["layer 2", "falls to -2", "8x8"]),
    ("[P(4,4,0,0), P(4,4,0,0), P(4,4,0,0), SM(10)]", ["layer 2", "falls to 0"]),
    ("[C(1024,5,1,2,1), P(4,4,0,0), SM(10)]", ["layer 2 SM(10)", "1024x7x7 = 50176", "max_fc_input 20000"]),
    ("[C(8,3,1,1,1), SM(10)]", ["layer 1 SM(10)", "spatial size 28", "max_image_size 8"]),
    ("[C(8,3,1,1,1), FC(32), SM(10)]", ["layer 1 FC(32)", "max_image_size"]),
])
def test_infeasible_nets_give_the_reason(text, fragments):
  result = ns.check_feasible(text, image_size=28, in_channels=1)
  assert not result.ok
  for fragment in fragments:
    assert fragment in result.reason, (fragment, result.reason)
  with pytest.raises(ArchitectureError, match="infeasible"):
    ns.infer_shapes(text, image_size=28, in_channels=1)


def test_limits_can_be_switched_off_and_in_channels_count():
  text = "[C(8,3,1,1,1), SM(10)]"
  feasible = ns.check_feasible(text, image_size=28, in_channels=1, max_fc_input=0, max_image_size=0)
  assert feasible.embedding_dim == 8 * 28 * 28
  # the input channels count when no conv precedes the terminal token
  assert ns.check_feasible("[P(2,2,0,0), SM(10)]", image_size=8, in_channels=3).embedding_dim == 3 * 4 * 4
