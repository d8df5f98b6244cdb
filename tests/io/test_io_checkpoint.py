"""Checkpointer: exact round trips of training states, retention, and named errors."""

import os
import pathlib
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_forgetting.errors import CheckpointError
from nas_forgetting.io.checkpoint import Checkpointer


class Consolidation(NamedTuple):
  anchor: dict
  importance: dict
  num_tasks: jax.Array


def _state(seed: int):
  """A training state as experiments hold it: params, Adam state after a step, PRNG key, counters."""
  key = jax.random.key(seed)
  normal = np.random.default_rng(seed).normal
  params = {"layers_0": {"kernel": jnp.asarray(normal(size=(4, 5)), jnp.float32), "bias": jnp.zeros(5)},
            "layers_2": {"kernel": jnp.asarray(normal(size=(5, 3)), jnp.float32), "bias": jnp.zeros(3)}}
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5 + seed), params)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return {"params": params, "opt_state": opt_state, "rng": jax.random.fold_in(key, 7), "step": 100 + seed,
          "lr": 0.5 * (seed + 1), "done": bool(seed % 2),
          "consolidation": Consolidation(jax.tree.map(lambda p: p * 2, params),
                                         jax.tree.map(jnp.abs, params), jnp.int32(seed)),
          "epoch": np.int32(seed), "history": np.arange(4.0) * seed}


def _like():
  state = _state(0)
  return jax.tree.map(lambda x: x, state)


def _assert_equal(restored, saved):
  chex.assert_trees_all_equal_structs(jax.tree.map(lambda x: 0, restored), jax.tree.map(lambda x: 0, saved))
  keyless = lambda t: {k: v for k, v in t.items() if k != "rng"}  # noqa: E731
  chex.assert_trees_all_equal(keyless(restored), keyless(saved), strict=True)
  assert jax.random.key_impl(restored["rng"]) == jax.random.key_impl(saved["rng"])
  np.testing.assert_array_equal(jax.random.key_data(restored["rng"]), jax.random.key_data(saved["rng"]))


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
  """Steps 3 and 4 of a run with max_to_keep=2 (steps 1, 2 dropped)."""
  directory = tmp_path_factory.mktemp("ckpt") / "checkpoints"
  with Checkpointer(directory, max_to_keep=2) as checkpointer:
    for step in (1, 2, 3, 4):
      checkpointer.save(step, _state(step))
  return directory


def test_round_trip_restores_exactly_what_was_saved(saved_dir):
  checkpointer = Checkpointer(saved_dir, max_to_keep=2)
  restored = checkpointer.restore(None, _like())
  _assert_equal(restored, _state(4))
  # Types come back as in `like`.
  assert type(restored["step"]) is int and type(restored["lr"]) is float and type(restored["done"]) is bool
  assert type(restored["epoch"]) is np.int32 and type(restored["history"]) is np.ndarray
  assert isinstance(restored["consolidation"], Consolidation)
  assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
  assert isinstance(restored["params"]["layers_0"]["kernel"], jax.Array)
  assert jnp.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
  # The restored key draws the same numbers as the saved one.
  np.testing.assert_array_equal(jax.random.uniform(restored["rng"], (3,)), jax.random.uniform(_state(4)["rng"], (3,)))


def test_abstract_target_restores_jax_arrays(saved_dir):
  saved = _state(4)
  arrays = ("params", "opt_state", "consolidation")
  like = {**_like(), **jax.eval_shape(lambda: {k: v for k, v in _state(0).items() if k in arrays})}
  assert isinstance(like["params"]["layers_0"]["kernel"], jax.ShapeDtypeStruct)
  restored = Checkpointer(saved_dir).restore(4, like)
  assert isinstance(restored["params"]["layers_0"]["kernel"], jax.Array)
  chex.assert_trees_all_equal(restored["opt_state"], saved["opt_state"])
  chex.assert_trees_all_equal(restored["consolidation"], saved["consolidation"])


def test_max_to_keep_and_step_selection(saved_dir):
  checkpointer = Checkpointer(saved_dir, max_to_keep=2)
  assert checkpointer.all_steps() == [3, 4]
  assert checkpointer.latest_step() == 4
  _assert_equal(checkpointer.restore(3, _like()), _state(3))
  with pytest.raises(CheckpointError, match=rf"{saved_dir} has no step 1; steps present: \[3, 4\]"):
    checkpointer.restore(1, _like())


def test_saving_an_existing_step_replaces_it(tmp_path):
  checkpointer = Checkpointer(tmp_path / "c", max_to_keep=3)
  checkpointer.save(5, {"x": np.zeros(2)})
  checkpointer.save(jnp.int32(5), {"x": np.ones(2)})
  assert checkpointer.all_steps() == [5]
  np.testing.assert_array_equal(checkpointer.restore(5, {"x": np.zeros(2)})["x"], np.ones(2))


def test_an_interrupted_save_is_not_a_step(tmp_path):
  checkpointer = Checkpointer(tmp_path / "c")
  checkpointer.save(1, {"x": np.ones(2)})
  (tmp_path / "c" / "2.orbax-checkpoint-tmp-1234567").mkdir()  # What a save killed half-way leaves.
  fresh = Checkpointer(tmp_path / "c")
  assert fresh.all_steps() == [1] and fresh.latest_step() == 1
  np.testing.assert_array_equal(fresh.restore(None, {"x": np.zeros(2)})["x"], np.ones(2))


def test_asynchronous_save_then_wait(tmp_path):
  checkpointer = Checkpointer(tmp_path / "c", asynchronous=True)
  state = _state(1)
  checkpointer.save(0, state)
  checkpointer.wait()
  assert Checkpointer(tmp_path / "c").latest_step() == 0
  _assert_equal(Checkpointer(tmp_path / "c").restore(0, _like()), state)
  checkpointer.close()


def test_other_key_implementations_round_trip(tmp_path):
  key = jax.random.key(11, impl="rbg")
  checkpointer = Checkpointer(tmp_path / "c")
  checkpointer.save(0, {"rng": key})
  restored = checkpointer.restore(None, {"rng": jax.random.key(0, impl="rbg")})["rng"]
  assert jax.random.key_impl(restored) == jax.random.key_impl(key)
  np.testing.assert_array_equal(jax.random.key_data(restored), jax.random.key_data(key))
  with pytest.raises(CheckpointError, match=r"rng: stored uint32\[4\], target uint32\[2\]"):
    checkpointer.restore(None, {"rng": jax.random.key(0)})  # threefry keys have 2 words.


def test_reading_never_creates_the_directory(tmp_path):
  checkpointer = Checkpointer(tmp_path / "missing")
  assert checkpointer.latest_step() is None and checkpointer.all_steps() == []
  with pytest.raises(CheckpointError, match=f"{tmp_path / 'missing'} does not exist"):
    checkpointer.restore(None, _like())
  assert not (tmp_path / "missing").exists()
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match=f"{tmp_path / 'empty'} holds no checkpoint"):
    Checkpointer(tmp_path / "empty").restore(None, _like())


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update(history=np.zeros(5)), r"history: stored float64\[4\], target float64\[5\]"),
    (lambda t: t.update(history=np.zeros(4, np.float32)), r"history: stored float64\[4\], target float32\[4\]"),
    (lambda t: t.update(extra=np.zeros(1)), "extra: missing from the checkpoint"),
    (lambda t: t.pop("lr"), "lr: in the checkpoint but not in the target"),
    (lambda t: t["params"].update(layers_2={"kernel": jnp.zeros((5, 4)), "bias": jnp.zeros(4)}),
     r"params/layers_2/kernel: stored float32\[5, 3\], target float32\[5, 4\]"),
])
def test_mismatched_target_raises_naming_directory_and_leaf(saved_dir, edit, message):
  like = _like()
  edit(like)
  with pytest.raises(CheckpointError, match=rf"step 4 in {saved_dir} does not match the target tree: .*{message}"):
    Checkpointer(saved_dir).restore(None, like)


def test_corrupt_checkpoints_raise_checkpoint_error(tmp_path):
  state = {"w": np.arange(1000.0), "b": np.ones(3, np.float32)}
  checkpointer = Checkpointer(tmp_path / "c", max_to_keep=5)
  checkpointer.save(1, state)
  checkpointer.save(2, state)
  (tmp_path / "c" / "1" / "default" / "_METADATA").unlink()
  with pytest.raises(CheckpointError, match=f"step 1 in {tmp_path / 'c'} is unreadable"):
    Checkpointer(tmp_path / "c").restore(1, state)
  data_files = [p for p in (tmp_path / "c" / "2").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert data_files
  for path in data_files:
    path.write_bytes(b"\x00" * 10)
  with pytest.raises(CheckpointError, match=f"{tmp_path / 'c'}"):
    Checkpointer(tmp_path / "c").restore(2, state)


def test_bad_arguments_are_named(tmp_path):
  with pytest.raises(CheckpointError, match="max_to_keep=0"):
    Checkpointer(tmp_path / "c", max_to_keep=0)
  checkpointer = Checkpointer(tmp_path / "c")
  with pytest.raises(CheckpointError, match="step -1"):
    checkpointer.save(-1, {"x": np.zeros(1)})
  with pytest.raises(CheckpointError, match="step 2.0"):
    checkpointer.save(2.0, {"x": np.zeros(1)})
  with pytest.raises(CheckpointError, match="leaf name is a str"):
    checkpointer.save(0, {"name": "abc"})
  (tmp_path / "file").write_text("")
  with pytest.raises(CheckpointError, match="is a file"):
    Checkpointer(tmp_path / "file").latest_step()
