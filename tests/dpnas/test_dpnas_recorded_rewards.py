"""The evaluator's numbers stay what they were: rewards, per-epoch validation/test accuracies and embedding sums of
three nets (plain conv, residual block with a shortcut, residual block and hidden FC), recorded with the evaluator
as it was before its speed work (embedding every image in chunks after a separate BatchNorm calibration pass). Any
change of speed (layout, chunking, reuse of the calibration pass) must keep them within float tolerance."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from nas_forgetting.dpnas import evaluator as ev
from nas_forgetting.dpnas.seed_mesh import AXIS

CONFIG = ev.EvalConfig(epochs=4, batch_size=32, learning_rate=1e-3, early_stopping_epoch=0, reward_window=2,
                       bn_calibration_size=50)
RECORDED = {
    "[C(8,3,1,1,1), P(2,2,0,0), SM(4)]": {
        "rewards": [0.133333, 0.066667],
        "val": [[6.6667, 6.6667, 10.0, 16.6667], [0.0, 0.0, 0.0, 13.3333]],
        "test": [[15.0, 15.0, 20.0, 15.0], [0.0, 0.0, 0.0, 5.0]],
        "embedding_abs_sums": [7505.282, 3222.921, 2140.41]},
    "[C(8,3,1,1,0), C(16,1,1,0,1), P(2,2,0,0), SM(4)]": {
        "rewards": [0.85, 0.25],
        "val": [[56.6667, 76.6667, 83.3333, 86.6667], [0.0, 0.0, 6.6667, 43.3333]],
        "test": [[70.0, 90.0, 90.0, 95.0], [0.0, 0.0, 25.0, 30.0]],
        "embedding_abs_sums": [11257.483, 4851.294, 3175.422]},
    "[C(16,5,1,2,1), C(16,3,1,1,0), P(2,2,0,0), FC(32), SM(4)]": {
        "rewards": [0.816667, 0.683333],
        "val": [[26.6667, 36.6667, 73.3333, 90.0], [60.0, 60.0, 60.0, 76.6667]],
        "test": [[35.0, 50.0, 85.0, 95.0], [45.0, 55.0, 55.0, 75.0]],
        "embedding_abs_sums": [23372.594, 10086.459, 6638.951]},
}


@pytest.fixture(scope="module")
def evaluator(data):
  return ev.Evaluator(data, CONFIG, mesh=Mesh(np.asarray(jax.devices()[:1]), (AXIS,)))


@pytest.mark.parametrize("net", list(RECORDED))
def test_rewards_accuracies_and_embeddings_as_recorded(evaluator, net):
  recorded = RECORDED[net]
  results = evaluator.evaluate(net, [0, 1])
  np.testing.assert_allclose([r.reward for r in results], recorded["rewards"], atol=1e-5)
  np.testing.assert_allclose([r.acc_val_all_epochs for r in results], recorded["val"], atol=1e-3)
  np.testing.assert_allclose([r.acc_test_all_epochs for r in results], recorded["test"], atol=1e-3)
  sums = [float(np.abs(split).sum()) for split in evaluator.embed(net, [0])]
  np.testing.assert_allclose(sums, recorded["embedding_abs_sums"], rtol=1e-5)


@pytest.mark.parametrize("bn_mode", ["calibrate", "reference"])
def test_cpu_convolutions_give_xla_numbers(data, bn_mode):
  """conv=auto on the CPU (`cpu_conv`, which rewrites this net's unpadded layers: 3x3 from 64 channels as products
  per kernel offset, 1x1 as one product, 2x2 as the centre of the padded convolution) against XLA's convolutions: the
  same rewards and embeddings."""
  net = "[C(64,3,1,1,1), C(16,3,1,0,1), C(16,1,1,0,1), C(8,2,1,0,1), SM(4)]"
  mesh = Mesh(np.asarray(jax.devices()[:1]), (AXIS,))
  got, expected = (ev.Evaluator(data, ev.EvalConfig(**{**vars(CONFIG), "conv": conv, "bn_mode": bn_mode}), mesh=mesh)
                   for conv in ("auto", "xla"))
  assert got._conv == "cpu" and expected._conv == "xla"
  np.testing.assert_allclose([r.reward for r in got.evaluate(net, [0, 1])],
                             [r.reward for r in expected.evaluate(net, [0, 1])], atol=1e-5)
  for a, b in zip(got.embed(net, [0]), expected.embed(net, [0])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
