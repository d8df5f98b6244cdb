"""Deep-prior evaluator: embeddings vs the encoder applied directly, multi-seed over 8 devices vs sequential,
padding/chunking invariances, one classifier compilation per bucket, early stopping, reward."""

import dataclasses

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from nas_forgetting.dpnas import evaluator as ev
from nas_forgetting.dpnas import memory, seed_mesh
from nas_forgetting.errors import ConfigError
from nas_forgetting.models import deep_prior as dp

NET = "[C(8,3,1,1,1), P(2,2,0,0), SM(4)]"
NET_SAME_BUCKET = "[C(8,5,1,2,1), P(2,2,0,0), SM(4)]"  # also 8x4x4 = 128 features


CONFIG = ev.EvalConfig(epochs=4, batch_size=32, learning_rate=1e-2, early_stopping_epoch=0, reward_window=2,
                       bn_calibration_size=50)


def one_device_mesh():
  return Mesh(np.asarray(jax.devices()[:1]), (seed_mesh.AXIS,))


@pytest.fixture(scope="module")
def evaluator(data):
  return ev.Evaluator(data, CONFIG)


def test_eight_fake_devices():
  assert jax.device_count() == 8


def test_embedding_equals_the_encoder_applied_directly(evaluator, data):
  seed = 3
  train, val, test = evaluator.embed(NET, [seed])
  encoder = dp.DeepPriorEncoder(NET, CONFIG.bn_epsilon, CONFIG.weight_init)
  calibrator = dp.DeepPriorEncoder(NET, CONFIG.bn_epsilon, CONFIG.weight_init, bn_momentum=0.0)

  @jax.jit
  def direct(x_tr, x_va, x_te):
    init_key, _ = jax.random.split(jax.random.fold_in(jax.random.key(seed), 0))
    variables = encoder.init(init_key, x_tr[:1])
    _, stats = calibrator.apply(variables, x_tr[:50], train=True, mutable=["batch_stats"])
    variables = {**variables, **stats}
    return tuple(encoder.apply(variables, x) for x in (x_tr, x_va, x_te))

  expected = direct(data.train_x, data.val_x, data.test_x)
  for got, want in zip((train, val, test), expected):
    assert got.shape == (1,) + want.shape
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)


def test_chunking_and_bucket_padding_do_not_change_results(evaluator, data):
  seeds = [0, 1]
  base = evaluator.evaluate(NET, seeds)
  chunked = ev.Evaluator(data, dataclasses.replace(CONFIG, embed_chunk_size=7))
  np.testing.assert_allclose(chunked.embed(NET, seeds)[0], evaluator.embed(NET, seeds)[0], rtol=1e-5, atol=1e-6)
  exact = ev.Evaluator(data, dataclasses.replace(CONFIG, bucket="exact"), mesh=one_device_mesh())
  net_odd = "[C(5,3,1,1,1), P(2,2,0,0), SM(4)]"  # 5x4x4 = 80 features, bucket 96
  padded = evaluator.evaluate(net_odd, seeds)
  unpadded = exact.evaluate(net_odd, seeds)
  for a, b in zip(padded, unpadded):
    np.testing.assert_allclose(a.acc_val_all_epochs, b.acc_val_all_epochs, atol=1e-3)
    np.testing.assert_allclose(a.acc_train_all_epochs, b.acc_train_all_epochs, atol=1e-3)
  assert all(0.0 <= r.reward <= 1.0 for r in base)


@pytest.mark.parametrize("batching", ["map", "vmap"])
def test_multi_seed_on_eight_devices_equals_sequential(evaluator, batching, data):
  seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # padded to 16 over 8 devices: two seeds per device
  if batching == "vmap":
    evaluator = ev.Evaluator(data, dataclasses.replace(CONFIG, seed_batching="vmap"))
  together = evaluator.evaluate(NET, seeds)
  single = ev.Evaluator(data, CONFIG, mesh=one_device_mesh())
  for seed, result in list(zip(seeds, together))[::3]:
    alone = single.evaluate(NET, [seed])[0]
    assert alone.seed == result.seed == seed
    np.testing.assert_allclose(alone.acc_val_all_epochs, result.acc_val_all_epochs, atol=1e-3)
    np.testing.assert_allclose(alone.acc_train_all_epochs, result.acc_train_all_epochs, atol=1e-3)
    np.testing.assert_allclose(alone.acc_test_all_epochs, result.acc_test_all_epochs, atol=1e-3)
    assert alone.reward == pytest.approx(result.reward, abs=1e-5)
  # different seeds give different deep priors
  assert len({tuple(r.acc_train_all_epochs) for r in together}) > 1


def test_reward_and_learning(evaluator):
  results = evaluator.evaluate(NET, [0, 1, 2])
  for r in results:
    assert len(r.acc_val_all_epochs) == CONFIG.epochs and r.train_flag
    assert r.reward == pytest.approx(np.mean(r.acc_val_all_epochs[-2:]) / 100, abs=1e-6)
    assert r.acc_best_val == max(r.acc_val_all_epochs)
    assert r.acc_test_last == r.acc_test_all_epochs[-1]
  # a linear classifier on the separable toy embedding learns well above chance (25 %)
  assert max(r.acc_val_all_epochs[-1] for r in results) > 60


def test_classifier_compiled_once_per_bucket(data):
  config = dataclasses.replace(CONFIG, epochs=2, learning_rate=0.02)  # settings no other test compiled
  before = dict(ev.TRACES)
  evaluator = ev.Evaluator(data, config)
  evaluator.evaluate(NET, [0])
  evaluator.evaluate(NET_SAME_BUCKET, [1, 2])
  evaluator.evaluate(NET, [4])
  ev.Evaluator(data, config).evaluate(NET_SAME_BUCKET, [5])  # a second evaluator reuses the compiled training
  assert ev.TRACES["train"] - before.get("train", 0) == 1
  # one embedding function per architecture, reused for the same net (also by another evaluator)
  assert ev.TRACES["prepare"] - before.get("prepare", 0) == 2


def test_compile_caches_are_keyed_on_the_whole_frozen_config(data):
  """Every EvalConfig field is part of the compile-cache keys (no hand-picked tuple a new field could miss)."""
  config = dataclasses.replace(CONFIG, epochs=2, learning_rate=0.02)
  ev.Evaluator(data, config).evaluate(NET, [0])
  configs = lambda cache: [key[0].config for key in cache]
  assert config in configs(ev._TRAIN_FNS) and config in configs(ev._PREPARE_FNS)
  other = dataclasses.replace(config, early_stopping_thresh=config.early_stopping_thresh / 2)
  assert other not in configs(ev._TRAIN_FNS)


def test_early_stopping_follows_the_rule(data):
  config = dataclasses.replace(CONFIG, epochs=5, early_stopping_epoch=3, reward_window=2)
  seeds = list(range(6))
  full = ev.Evaluator(data, dataclasses.replace(config, early_stopping_epoch=0)).evaluate(NET, seeds)
  means = [np.mean(r.acc_val_all_epochs[1:3]) for r in full]
  thresh = float(np.median(means)) / 100 + 1e-6
  stopped = ev.Evaluator(data, dataclasses.replace(config, early_stopping_thresh=thresh)).evaluate(NET, seeds)
  assert 0 < sum(not r.train_flag for r in stopped) < len(seeds)
  for mean, a, b in zip(means, full, stopped):
    should_stop = mean < 100 * thresh
    assert b.train_flag == (not should_stop)
    if should_stop:
      np.testing.assert_allclose(b.acc_val_all_epochs, a.acc_val_all_epochs[:3], atol=1e-3)
      assert b.acc_test_last == 0.0
      assert b.reward == pytest.approx(mean / 100, abs=1e-5)  # epochs 2-3 of 3 (window 2)
    else:
      np.testing.assert_allclose(b.acc_val_all_epochs, a.acc_val_all_epochs, atol=1e-3)
  everyone = ev.Evaluator(data, dataclasses.replace(config, early_stopping_thresh=1.01)).evaluate(NET, [0, 1])
  assert all(not r.train_flag and len(r.acc_val_all_epochs) == 3 for r in everyone)


def test_full_training_and_reference_bn_mode(stripes):
  small = stripes(40, 16, 16)
  config = dataclasses.replace(CONFIG, epochs=2, full_training=True)
  results = ev.Evaluator(small, config).evaluate("[C(4,3,1,1,1), P(2,2,0,0), SM(4)]", [0, 1])
  assert all(len(r.acc_val_all_epochs) == 2 and 0 <= r.reward <= 1 for r in results)
  net = "[C(4,3,1,1,1), P(2,2,0,0), SM(4)]"
  # one batch holding the whole training split: its training-mode statistics are the calibration statistics
  one_batch = ev.Evaluator(small, dataclasses.replace(CONFIG, bn_mode="reference", batch_size=64))
  calibrated = ev.Evaluator(small, dataclasses.replace(CONFIG, bn_calibration_size=40)).embed(net, [0])
  np.testing.assert_allclose(one_batch.embed(net, [0])[0], calibrated[0], rtol=1e-4, atol=1e-5)
  # batches of 16 (16 + 16 + 8): each batch normalised by its own statistics, so the embedding differs
  train, _, _ = ev.Evaluator(small, dataclasses.replace(CONFIG, bn_mode="reference", batch_size=16)).embed(net, [0])
  assert np.isfinite(train).all() and train.shape == calibrated[0].shape
  assert not np.allclose(train, calibrated[0], atol=1e-3)


def test_helpers_and_errors(data):
  assert [memory.bucket_width(d) for d in (1, 8, 9, 12, 13, 17, 25, 12800)] == [8, 8, 12, 12, 16, 24, 32, 16384]
  assert memory.bucket_width(13, "exact") == 13
  # per example (float32): input 64 + 2 x 8x8x8 conv + 2 x 8x4x4 pool = 64 + 1024 + 256 elements
  assert memory.activation_bytes_per_example(NET, 8, 1) == 4 * (64 + 1024 + 256)
  assert memory.embed_chunk_size(NET, 8, 1, num_examples=10_000, seeds_per_device=2, free_bytes=2 * 5376 * 100 + 999,
                             fraction=0.5) == 48
  assert memory.embed_chunk_size(NET, 8, 1, num_examples=30, seeds_per_device=1, free_bytes=10**9, fraction=0.5) == 30
  # However much memory is free (a GPU), one call embeds at most MAX_IMAGES_PER_CALL images over its seeds.
  assert memory.embed_chunk_size(NET, 8, 1, num_examples=10**6, seeds_per_device=8, free_bytes=2**40,
                             fraction=0.5) == memory.MAX_IMAGES_PER_CALL // 8
  assert memory.free_device_memory(jax.devices()[0], 12345) == 12345  # the CPU reports no memory statistics
  with pytest.raises(ConfigError, match="bn_mode"):
    ev.EvalConfig(bn_mode="train")
  with pytest.raises(ConfigError, match="SM\\(10\\).*4 classes"):
    ev.Evaluator(data, CONFIG).evaluate("[C(8,3,1,1,1), P(2,2,0,0), SM(10)]", [0])
  with pytest.raises(ConfigError, match="unknown evaluator fields"):
    ev.EvalConfig.from_config({"epochs": 3, "lr": 1})
  a, b, c, d = ev.split_train_val(np.arange(20), np.arange(20), val_fraction=0.25, seed=1)
  a2, *_ = ev.split_train_val(np.arange(20), np.arange(20), val_fraction=0.25, seed=1)
  assert len(a) == 15 and len(c) == 5 and not set(a) & set(c) and np.array_equal(a, a2)


def test_classifier_training_equals_a_plain_full_batch_adam_loop(data):
  """With one batch per epoch the permutation does not matter: compare with optax.adam written out by hand."""
  import optax
  config = dataclasses.replace(CONFIG, epochs=3, batch_size=128, learning_rate=0.05)
  evaluator = ev.Evaluator(data, config, mesh=one_device_mesh())
  x_tr, x_va, _, state, _ = evaluator._prepare(NET, [3])
  params = jax.tree.map(lambda a: np.asarray(a[0]), state[0])
  results, trained = evaluator.evaluate(NET, [3], return_params=True)
  kernel = params["logits"]["kernel"][:128]  # true width 128 (bucket 128: no padding)
  x, xv = np.asarray(x_tr[0][:, :128]), np.asarray(x_va[0][:, :128])
  tx = optax.adam(0.05)
  opt = tx.init(kernel)
  loss = lambda w: optax.softmax_cross_entropy_with_integer_labels(x @ w, data.train_y).mean()
  kernels = []
  for epoch in range(3):
    grads = jax.grad(loss)(kernel)
    updates, opt = tx.update(grads, opt, kernel)
    kernel = optax.apply_updates(kernel, updates)
    kernels.append(kernel)
    val = 100 * float(np.mean(np.argmax(xv @ np.asarray(kernel), -1) == data.val_y))
    assert results[0].acc_val_all_epochs[epoch] == pytest.approx(val, abs=1e-3)
  best = int(np.argmax(results[0].acc_val_all_epochs))  # the returned variables are the best epoch's (the first)
  np.testing.assert_allclose(trained["params"]["logits"]["kernel"][0], kernels[best], rtol=1e-4, atol=1e-5)
