"""Two-model MNIST demonstration: real sharing, the WPL loss gradient, one compile per k, and a quick run."""

import importlib.util
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting import importance
from nas_forgetting.data import datasets
from nas_forgetting.errors import ConfigError, DivergenceError
from nas_forgetting.io import metrics as metrics_lib
from nas_forgetting.wpl import state as wpl
from nas_forgetting.wpl import two_model as tm
from nas_forgetting.wpl import two_model_training as training

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(arg="quick"):
  spec = importlib.util.spec_from_file_location("wpl_two_model_config", ROOT / "configs" / "wpl_two_model.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _toy(k=2, hidden=8, n=64, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  a = training.init_layers(keys[0], training.layer_sizes(training.A_DEPTH, 12, hidden, 3))
  b_own = training.init_layers(keys[1], training.layer_sizes(training.B_DEPTH, 12, hidden, 3))[k:]
  x = jax.random.normal(keys[2], (n, 12))
  y = jax.random.randint(keys[3], (n,), 0, 3)
  return a, b_own, x, y


def test_b_really_shares_a_first_k_layers():
  a, b_own, x, y = _toy(k=2)
  shared, a_own = a[:2], a[2:]
  b = training.b_layers(shared, b_own)
  assert len(b) == training.B_DEPTH and len(training.a_layers(shared, a_own)) == training.A_DEPTH
  for i in range(2):
    assert b[i] is a[i] and training.a_layers(shared, a_own)[i] is a[i]  # the same parameter dicts, not copies
  config = _config()
  config.train_b.learning_rate = 0.1
  optimizer = training.make_optimizer(config.train_b)
  idx = jnp.arange(32, dtype=jnp.int32).reshape(4, 8)
  new_shared, new_b_own, _, m = training.train_b_chunk(shared, b_own, optimizer.init((shared, b_own)), idx, a_own,
                                                       wpl.init_wpl_state(shared), jnp.float32(0.0), x, y, x, y,
                                                       optimizer=optimizer)
  # Training B moved the shared layers, and A (evaluated with the moved layers) sees the change.
  assert float(jnp.abs(new_shared[0]["w"] - shared[0]["w"]).max()) > 0
  np.testing.assert_allclose(float(m["a_accuracy"]),
                             float(training.accuracy(training.a_layers(new_shared, a_own), x, y)))
  assert not np.allclose(training.mlp_apply(training.a_layers(new_shared, a_own), x), training.mlp_apply(a, x))


def test_b_loss_gradient_is_ce_plus_alpha_f_displacement():
  a, b_own, x, y = _toy(k=3)
  shared = a[:3]
  fisher = jax.tree.map(lambda p: jnp.abs(p) + 0.5, shared)
  state = wpl.init_wpl_state(shared)._replace(fisher=fisher)
  moved = jax.tree.map(lambda p: p + 0.05, shared)
  alpha = 7.0
  g = jax.grad(lambda s: training.b_loss(s, b_own, x, y, state, jnp.float32(alpha))[0])(moved)
  g_ce = jax.grad(lambda s: training.cross_entropy(training.mlp_apply(training.b_layers(s, b_own), x), y))(moved)
  expected = jax.tree.map(lambda gc, f, p, a0: gc + alpha * f * (p - a0), g_ce, fisher, moved, shared)
  chex.assert_trees_all_close(g, expected, rtol=1e-5, atol=1e-6)


def test_one_compile_serves_wpl_and_no_wpl_runs():
  a, b_own, x, y = _toy(k=1)
  shared, a_own = a[:1], a[1:]
  config = _config()
  optimizer = training.make_optimizer(config.train_b)
  state = wpl.init_wpl_state(shared)._replace(fisher=jax.tree.map(jnp.ones_like, shared))
  before = training.train_b_chunk._cache_size()
  for alpha, offset in ((0.0, 0), (100.0, 8), (3.0, 16)):
    idx = (jnp.arange(16, dtype=jnp.int32).reshape(2, 8) + offset) % 64
    training.train_b_chunk(shared, b_own, optimizer.init((shared, b_own)), idx, a_own, state, jnp.float32(alpha),
                           x, y, x, y, optimizer=optimizer)
  assert training.train_b_chunk._cache_size() - before == 1


def test_fisher_batch_estimator_is_below_per_example_mean(shared_data):
  """batch = (mean_i g_i)^2 <= mean_i g_i^2 = empirical, elementwise (Jensen); equal for a single example."""
  config = _config()
  config.data.train_size, config.data.test_size = 64, 16
  splits = datasets.load_dataset(config.data)
  x, y = jnp.asarray(splits.train.images), jnp.asarray(splits.train.labels)
  a = training.init_layers(jax.random.key(0), training.layer_sizes(training.A_DEPTH, 784, 16, 10))
  per_example = importance.fisher_diagonal(training.mlp_apply, a, x, y, estimator="empirical")
  batch = importance.fisher_diagonal(training.mlp_apply, a, x, y, estimator="batch")
  for pe, b in zip(jax.tree.leaves(per_example), jax.tree.leaves(batch)):
    assert bool(jnp.all(b <= pe * (1 + 1e-5) + 1e-12))
  assert sum(float(jnp.sum(b)) for b in jax.tree.leaves(batch)) < 0.5 * sum(
      float(jnp.sum(p)) for p in jax.tree.leaves(per_example))
  one_pe = importance.fisher_diagonal(training.mlp_apply, a, x[:1], y[:1], estimator="empirical")
  one_b = importance.fisher_diagonal(training.mlp_apply, a, x[:1], y[:1], estimator="batch")
  chex.assert_trees_all_close(one_pe, one_b, rtol=1e-4, atol=1e-10)


def test_quick_run_on_mnist(shared_data, tmp_path):
  config = _config()
  config.data.train_size, config.data.test_size = 256, 128
  config.model.hidden = 16
  config.shared_layers = [3]
  config.train_a.epochs = 1
  config.train_b.steps, config.train_b.eval_every = 20, 10
  config.wpl.fisher_num_examples = 128
  summary = tm.run(config, str(tmp_path))
  assert set(summary["per_k"]) == {"3"}
  for k in (3,):
    assert (tmp_path / f"two_model_k{k}.png").stat().st_size > 0
    rows = metrics_lib.read_csv(tmp_path / f"two_model_k{k}.csv")
    assert [int(r["iteration"]) for r in rows] == [0, 10, 20]
    # Iteration 0: nothing trained yet, so A (shared or not) is at its own accuracy in both runs.
    assert float(rows[0]["a_no_wpl"]) == pytest.approx(summary["a_eval_accuracy"])
    assert float(rows[0]["a_wpl"]) == pytest.approx(summary["a_eval_accuracy"])
    assert all(float(r["a_alone"]) == pytest.approx(summary["a_eval_accuracy"]) for r in rows)
  logged = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert sum("k3/a_wpl" in r for r in logged) == 3 and sum("a/eval_accuracy" in r for r in logged) == 1
  # A rerun in the same workdir resumes: A is restored (not retrained), the finished curves are reused, and
  # nothing is logged twice.
  again = tm.run(config, str(tmp_path))
  assert again["per_k"] == summary["per_k"] and again["a_epochs"] == summary["a_epochs"]
  assert metrics_lib.read_jsonl(tmp_path / "metrics.jsonl") == logged
  # Another k (and another order) later in the same workdir: only the new k is trained and logged.
  config.shared_layers = [1, 3]
  more = tm.run(config, str(tmp_path))
  assert more["per_k"]["3"] == summary["per_k"]["3"] and set(more["per_k"]) == {"1", "3"}
  assert float(metrics_lib.read_csv(tmp_path / "two_model_k1.csv")[0]["a_wpl"]) == pytest.approx(
      summary["a_eval_accuracy"])
  # The logs are rewritten from the checkpoint: A's record, then k=1's (new), then k=3's (as before).
  now = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert now[0] == logged[0] and now[-len(logged) + 1:] == logged[1:]
  assert sum("k1/a_wpl" in r for r in now) == 3 and sum("a/eval_accuracy" in r for r in now) == 1


def _tiny(**groups):
  """The quick config shrunk to seconds, on the embedded digits (no shared data needed)."""
  config = _config()
  config.data = datasets.default_data_config(source="embedded", train_size=128, test_size=64)
  config.model.hidden = 8
  config.shared_layers = [1]
  config.train_a.epochs, config.train_a.batch_size = 1, 32
  config.train_b.steps, config.train_b.eval_every, config.train_b.batch_size = 4, 2, 32
  config.wpl.fisher_num_examples = 32
  for group, values in groups.items():
    for key, value in values.items():
      config[group][key] = value
  return config


def _outputs(workdir):
  """Everything the run leaves that is not wall-clock: metrics records, CSVs, summary.json less seconds."""
  import json
  summary = json.loads((workdir / "summary.json").read_text())
  summary.pop("seconds")
  return {"metrics": metrics_lib.read_jsonl(workdir / "metrics.jsonl"),
          "summary_csv": metrics_lib.read_csv(workdir / "two_model_summary.csv"),
          "curves": [metrics_lib.read_csv(p) for p in sorted(workdir.glob("two_model_k*.csv"))],
          "summary": json.dumps(summary, sort_keys=True)}


@pytest.mark.parametrize("group, quantity", [("train_a", "model A's training loss"),
                                             ("train_b", "model B's cross-entropy")])
def test_a_too_large_learning_rate_stops_with_divergence_error(group, quantity, tmp_path):
  config = _tiny(**{group: {"optimizer": "sgd", "learning_rate": 1e30}})
  with pytest.raises(DivergenceError, match=rf"{quantity} is (nan|inf|-inf) at step \d+, "):
    tm.run(config, str(tmp_path))
  assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("field, value", [
    ("train_a.learning_rate", float("nan")), ("train_b.learning_rate", float("inf")),
    ("wpl.alpha_fisher", float("nan")), ("wpl.alpha_fisher", -1.0), ("seed", -1), ("model.hidden", 0),
    ("train_a.batch_size", 0), ("train_b.eval_every", 0), ("train_b.steps", -1), ("train_a.target_loss", -1.0),
    ("wpl.fisher_num_examples", -5), ("train_b.momentum", 1.0), ("data.test_size", -1), ("shared_layers", [0]),
    ("train_a.epochs", 0)])
def test_bad_values_are_refused_before_any_work_naming_the_field(field, value, tmp_path):
  config = _tiny()
  *groups, name = field.split(".")
  node = config
  for g in groups:
    node = node[g]
  node[name] = value
  with pytest.raises(ConfigError, match=field.split(".")[-1] if field == "shared_layers" else field):
    tm.validate_config(config)
  with pytest.raises(ConfigError):
    tm.run(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()
  tm.validate_config(_config(None))  # the real configs pass
  tm.validate_config(_config("quick"))


def test_killed_at_every_write_boundary_resumes_to_the_uninterrupted_outputs(write_faults, tmp_path, capsys):
  config = _tiny()
  full = tmp_path / "full"
  writes = write_faults.count(lambda: tm.run(config, str(full)))
  expected = _outputs(full)
  assert writes >= 10
  for k in range(1, writes + 1):
    workdir = tmp_path / f"kill_{k}"
    assert write_faults.kill_after(k, lambda: tm.run(config, str(workdir)))
    tm.run(config, str(workdir))
    assert _outputs(workdir) == expected, f"killed after write {k}"
  # a finished run relaunched says so and writes nothing
  assert write_faults.count(lambda: tm.run(config, str(full))) == 0
  assert tm.run(config, str(full))["already_finished"]
  assert "WPL two-model demonstration" in capsys.readouterr().out


def test_seconds_are_the_total_over_launches(tmp_path):
  import json
  config = _tiny()
  config.shared_layers = [1]
  tm.run(config, str(tmp_path))
  first = json.loads((tmp_path / "summary.json").read_text())["seconds"]
  config.shared_layers = [1, 2]
  tm.run(config, str(tmp_path))
  second = json.loads((tmp_path / "summary.json").read_text())["seconds"]
  assert second > first > 0
