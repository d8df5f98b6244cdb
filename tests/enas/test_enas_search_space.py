"""Search-space encodings: round trips, the reference DAG file, and rejection of malformed DAGs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.enas import search_space as ss
from nas_forgetting.errors import ArchitectureError

# The reference repository's dag.json (12 nodes), written out here as the fixture.
REFERENCE_DAG = {
    "-1": [[0, "tanh"]], "-2": [[0, "tanh"]], "0": [[1, "tanh"]], "1": [[2, "ReLU"], [3, "tanh"]],
    "2": [[4, "tanh"], [5, "tanh"], [6, "ReLU"]], "4": [[7, "ReLU"]], "7": [[8, "ReLU"]],
    "8": [[9, "ReLU"], [10, "ReLU"], [11, "ReLU"]], "3": [[12, "avg"]], "5": [[12, "avg"]], "6": [[12, "avg"]],
    "9": [[12, "avg"]], "10": [[12, "avg"]], "11": [[12, "avg"]], "12": [[13, "h[t]"]]}

SPACES = [ss.RnnSearchSpace(num_blocks=6), ss.RnnSearchSpace(num_blocks=6, mode="flexible"),
          ss.RnnSearchSpace(num_blocks=7, mode="hardcoded", topology="chain"),
          ss.RnnSearchSpace(num_blocks=7, mode="hardcoded", topology="tree"),
          ss.RnnSearchSpace(num_blocks=5, mode="random"), ss.CnnSearchSpace(num_blocks=4)]


def test_reference_dag_parses_to_expected_arch():
  space = ss.RnnSearchSpace(num_blocks=12)
  arch = space.from_dag(REFERENCE_DAG)
  assert arch[:, 0].tolist() == [-1, 0, 1, 1, 2, 2, 2, 4, 7, 8, 8, 8]
  assert [space.activations[a] for a in arch[:, 1]] == [
      "tanh", "tanh", "ReLU", "tanh", "tanh", "tanh", "ReLU", "ReLU", "ReLU", "ReLU", "ReLU", "ReLU"]
  assert ss.loose_ends(arch) == [3, 5, 6, 9, 10, 11]
  # Same graph back (edge lists compared as sets: the order of entries is not meaningful).
  out = space.to_dag(arch)
  norm = lambda d: {k: sorted(map(tuple, v)) for k, v in d.items()}
  assert norm(out) == norm(REFERENCE_DAG)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{type(s).__name__}-{getattr(s, 'mode', '')}-{getattr(s, 'topology', '')}")
def test_round_trips_over_random_architectures(space):
  sample = jax.jit(jax.vmap(space.random_arch))
  archs = np.asarray(sample(jax.random.split(jax.random.key(0), 40)))
  n_seen = set()
  all_decisions, validated = [], []
  for arch in archs:
    arch = space.validate(arch)
    np.testing.assert_array_equal(space.from_dag(json.loads(json.dumps(space.to_dag(arch)))), arch)
    np.testing.assert_array_equal(space.from_string(space.to_string(arch)), arch)
    decisions = space.arch_to_decisions(arch)
    assert len(decisions) == space.num_decisions
    assert all(0 <= d < c for d, c in zip(decisions, space.num_choices))
    all_decisions.append(decisions)
    validated.append(arch)
    if isinstance(space, ss.RnnSearchSpace):
      n_seen.add(space.count_nodes(arch))
  to_archs = jax.jit(jax.vmap(space.decisions_to_arch))  # the traced conversion the controller step uses
  converted = to_archs(jnp.asarray(np.array(all_decisions), jnp.int32))
  np.testing.assert_array_equal(np.asarray(converted), np.array(validated))
  if isinstance(space, ss.RnnSearchSpace) and space.mode == "flexible":
    assert min(n_seen) >= 3 and len(n_seen) > 1


def test_decision_layouts():
  orig = ss.RnnSearchSpace(num_blocks=12)
  assert orig.num_choices == (4,) + sum(((j, 4) for j in range(1, 12)), ())
  assert orig.num_decisions == 23  # 2(N-1)+1, as the reference
  flex = ss.RnnSearchSpace(num_blocks=12, mode="flexible")
  assert flex.num_choices[0] == 10 and flex.num_decisions == 24
  hard = ss.RnnSearchSpace(num_blocks=5, mode="hardcoded", topology="tree")
  assert hard.num_choices == (4,) * 5
  assert hard.fixed_parents().tolist() == [-1, 0, 0, 1, 1]
  assert ss.CnnSearchSpace(num_blocks=5).num_decisions == 40


def test_flexible_decision_mask():
  flex = ss.RnnSearchSpace(num_blocks=6, mode="flexible")
  d = np.zeros(flex.num_decisions, np.int32)  # num_nodes choice 0 -> 3 nodes
  mask = np.asarray(flex.decision_mask(d))
  nodes = flex.decision_nodes
  np.testing.assert_array_equal(mask, (nodes < 3))
  arch = np.asarray(flex.decisions_to_arch(d))
  assert flex.count_nodes(arch) == 3 and (arch[3:] == -1).all()


def bad(dag, **changes):
  d = json.loads(json.dumps(dag))
  for k, v in changes.items():
    if v is None:
      del d[k]
    else:
      d[k] = v
  return d


@pytest.mark.parametrize("dag,message", [
    (bad(REFERENCE_DAG, **{"4": [[7, "softplus"]]}), "unknown activation 'softplus'"),
    (bad(REFERENCE_DAG, **{"4": [[17, "ReLU"]]}), "out of range"),
    (bad(REFERENCE_DAG, **{"7": [[8, "ReLU"], [4, "tanh"]]}), "has 2 parents"),
    (bad(REFERENCE_DAG, **{"1": [[3, "tanh"]], "2": [[4, "tanh"], [5, "tanh"], [6, "ReLU"], [2, "ReLU"]]}), "cycle"),
    (bad(REFERENCE_DAG, **{"x": [[1, "tanh"]]}), "'x' is not an integer"),
    (bad(REFERENCE_DAG, **{"-2": [[0, "ReLU"]]}), "different activations"),
    (bad(REFERENCE_DAG, **{"9": None}), "loose ends"),
    (bad(REFERENCE_DAG, **{"4": [[7]]}), "not a [child id, name] pair"),
])
def test_bad_dags_are_rejected_naming_the_entry(dag, message):
  with pytest.raises(ArchitectureError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
    ss.RnnSearchSpace(num_blocks=12).from_dag(dag)


def test_node_count_rules():
  three = {"-1": [[0, "tanh"]], "-2": [[0, "tanh"]], "0": [[1, "ReLU"]], "1": [[2, "sigmoid"]], "2": [[3, "avg"]],
           "3": [[4, "h[t]"]]}
  arch = ss.RnnSearchSpace(num_blocks=8, mode="flexible").from_dag(three)
  assert arch[:3].tolist() == [[-1, 0], [0, 1], [1, 3]]
  with pytest.raises(ArchitectureError, match="expected 8"):
    ss.RnnSearchSpace(num_blocks=8).from_dag(three)
  two = {"-1": [[0, "tanh"]], "-2": [[0, "tanh"]], "0": [[1, "ReLU"]], "1": [[2, "avg"]], "2": [[3, "h[t]"]]}
  with pytest.raises(ArchitectureError, match=r"2 nodes.*expected 3..8 \(flexible"):
    ss.RnnSearchSpace(num_blocks=8, mode="flexible").from_dag(two)
  with pytest.raises(ArchitectureError, match="hardcoded chain"):
    ss.RnnSearchSpace(num_blocks=3, mode="hardcoded").from_dag(
        {"-1": [[0, "tanh"]], "-2": [[0, "tanh"]], "0": [[1, "ReLU"], [2, "ReLU"]], "1": [[3, "avg"]],
         "2": [[3, "avg"]]})


def test_parent_order_and_bad_strings():
  space = ss.RnnSearchSpace(num_blocks=3)
  with pytest.raises(ArchitectureError, match="smaller id"):
    space.from_dag({"-1": [[0, "tanh"]], "-2": [[0, "tanh"]], "0": [[2, "tanh"]], "2": [[1, "tanh"]],
                    "1": [[3, "avg"]]})
  with pytest.raises(ArchitectureError, match="token 1"):
    space.from_string("0:tanh(x,h) 1:tanh 2:tanh(1)")
  with pytest.raises(ArchitectureError, match="unknown activation 'elu'"):
    space.from_string("0:tanh(x,h) 1:elu(0) 2:tanh(1)")
  with pytest.raises(ArchitectureError, match=r"node 2: parent 2 out of range"):
    space.validate([[-1, 0], [0, 0], [2, 0]])


def test_cnn_rejections():
  space = ss.CnnSearchSpace(num_blocks=2)
  good = {"normal": [[0, "identity", 1, "sep_conv_3x3"], [2, "max_pool_3x3", 0, "avg_pool_3x3"]],
          "reduction": [[1, "sep_conv_5x5", 1, "identity"], [0, "identity", 2, "identity"]]}
  arch = space.from_dag(good)
  assert arch.shape == (2, 2, 4)
  assert ss.cnn_loose_ends(arch[0]) == [3]
  with pytest.raises(ArchitectureError, match="reduction cell, node 3: input 3 is a cycle"):
    space.from_dag({**good, "reduction": [[1, "identity", 1, "identity"], [3, "identity", 2, "identity"]]})
  with pytest.raises(ArchitectureError, match="unknown op 'conv_7x7'"):
    space.from_dag({**good, "normal": [[0, "conv_7x7", 1, "identity"], [2, "identity", 0, "identity"]]})
  with pytest.raises(ArchitectureError, match="keys"):
    space.from_dag({"normal": good["normal"]})


def test_dag_file(tmp_path):
  space = ss.RnnSearchSpace(num_blocks=12)
  path = tmp_path / "dag.json"
  path.write_text(json.dumps(REFERENCE_DAG))
  arch = ss.load_dag_file(path, space)
  assert json.loads(ss.dag_json(arch, space)) == space.to_dag(arch)
  (tmp_path / "broken.json").write_text("{")
  with pytest.raises(ArchitectureError, match="broken.json is not valid JSON"):
    ss.load_dag_file(tmp_path / "broken.json", space)
  with pytest.raises(ArchitectureError, match="missing.json does not exist"):
    ss.load_dag_file(tmp_path / "missing.json", space)
