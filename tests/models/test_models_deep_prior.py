"""Deep-prior encoder/classifier: shapes and parameter counts by hand, residual-block and flatten oracles, inits."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.errors import ConfigError
from nas_forgetting.models import deep_prior as dp
from nas_forgetting.models import net_string as ns

README_NET = "[C(32,5,1,2,1), P(4,4,0,0), C(32,3,1,1,0), C(1024,1,1,0,1), C(512,3,1,0,1), SM(10)]"


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("net, size, channels, params, bn_stats, embedding", [
    # 5x5x1x32 + BN(32) | residual 32->32: 2 x 3x3x32x32 + 2 BN(32) | 1x1x32x1024 + BN(1024) | 3x3x1024x512 + BN(512)
    (README_NET, 28, 1, 800 + 64 + 18432 + 128 + 32768 + 2048 + 4718592 + 1024, 2 * (32 + 32 + 32 + 1024 + 512),
     512 * 5 * 5),
    # residual 1->16: BN(1) + 3x3x1x16 + BN(16) + 3x3x16x16 + 1x1 shortcut 1x16
    ("[C(16,3,1,1,0), P(2,2,0,0), SM(10)]", 8, 1, 2 + 144 + 32 + 2304 + 16, 2 * (1 + 16), 16 * 4 * 4),
    # 3x3x3x8 stride 2 (8 -> 3 on 8x8 without padding) + BN(8)
    ("[C(8,3,2,0,1), SM(4)]", 8, 3, 216 + 16, 16, 8 * 3 * 3),
    ("[P(3,2,1,0), SM(2)]", 6, 2, 0, 0, 2 * 3 * 3),
])
def test_shapes_and_parameter_counts_by_hand(net, size, channels, params, bn_stats, embedding):
  encoder = dp.DeepPriorEncoder(net)
  x = jax.ShapeDtypeStruct((3, size, size, channels), jnp.float32)
  variables = jax.eval_shape(encoder.init, jax.random.key(0), x)  # shapes only: no compute
  assert count(variables.get("params", {})) == params
  assert count(variables.get("batch_stats", {})) == bn_stats
  out = jax.eval_shape(encoder.apply, variables, x)
  chex.assert_shape(out, (3, embedding))
  assert ns.check_feasible(net, image_size=size, in_channels=channels, max_fc_input=0, max_image_size=0
                           ).embedding_dim == embedding
  _, hidden, classes = dp.split_net(net)
  classifier = dp.DeepPriorClassifier(classes, hidden)
  assert count(jax.eval_shape(classifier.init, jax.random.key(1), out)["params"]) == embedding * classes


def test_bn_off_removes_batch_norm_and_classifier_with_fc():
  net = "[C(8,3,1,1,1), C(8,3,1,1,0), FC(32), SM(10)]"
  x = jax.ShapeDtypeStruct((2, 6, 6, 1), jnp.float32)
  encoder = dp.DeepPriorEncoder(net, bn_epsilon=0.0)
  variables = jax.eval_shape(encoder.init, jax.random.key(0), x)
  assert "batch_stats" not in variables
  assert count(variables["params"]) == 72 + 2 * 576
  model = dp.DeepPriorNet(net)
  v = jax.eval_shape(model.init, jax.random.key(0), x)
  # classifier: 288x32 + BN(32) + 32x10
  assert count(v["params"]["classifier"]) == 288 * 32 + 64 + 320
  chex.assert_shape(jax.eval_shape(model.apply, v, x), (2, 10))


def test_flatten_is_channel_major():
  x = jax.random.uniform(jax.random.key(0), (2, 4, 4, 3))
  out = jax.jit(dp.DeepPriorEncoder("[P(2,2,0,0), SM(2)]").apply)({}, x)
  pooled = np.asarray(x).reshape(2, 2, 2, 2, 2, 3).max(axis=(2, 4))  # (N, 2, 2, C)
  np.testing.assert_allclose(out, pooled.transpose(0, 3, 1, 2).reshape(2, -1))


def conv(x, w, pad):
  return jax.lax.conv_general_dilated(x, w, (1, 1), [(pad, pad)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("features", [4, 6])
def test_residual_block_oracle_without_bn(features):
  x = jax.random.normal(jax.random.key(1), (2, 5, 5, 4))
  block = dp.ResidualBlock(features, bn_epsilon=0.0, weight_init="kaiming-normal")
  v = jax.jit(block.init, static_argnums=2)(jax.random.key(2), x, False)

  @jax.jit
  def both(v, x):
    p = v["params"]
    pre = jax.nn.relu(x)
    h = conv(jax.nn.relu(conv(pre, p["Conv_0"]["kernel"], 1)), p["Conv_1"]["kernel"], 1)
    expected = h + (x if features == 4 else conv(pre, p["shortcut"]["kernel"], 0))
    return block.apply(v, x, False), expected

  np.testing.assert_allclose(*both(v, x), rtol=1e-5, atol=1e-5)


def test_bn_train_mode_normalises_per_batch():
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (64, 4, 4, 1))
  encoder = dp.DeepPriorEncoder("[C(4,1,1,0,1), SM(2)]", bn_epsilon=1e-5)
  v = jax.jit(encoder.init)(jax.random.key(1), x)
  _, state = jax.jit(lambda v, x: encoder.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
  w = v["params"]["Conv_0"]["kernel"][0, 0]  # (1, 4)
  pre = (x.reshape(-1, 1) @ w)
  np.testing.assert_allclose(state["batch_stats"]["BatchNorm_0"]["mean"], 0.1 * pre.mean(0), rtol=1e-4)


@pytest.mark.parametrize("name, std", [
    ("kaiming-normal", np.sqrt(2 / 800)), ("kaiming-uniform", np.sqrt(2 / 800)),
    ("xavier-normal", np.sqrt(2 / (800 + 1600))), ("xavier-uniform", np.sqrt(2 / (800 + 1600)))])
def test_initialisation_scales(name, std):
  w = dp.weight_initializer(name)(jax.random.key(0), (5, 5, 32, 64))  # fan_in 800, fan_out 1600
  assert float(jnp.std(w)) == pytest.approx(std, rel=0.03)
  if "uniform" in name:
    assert float(jnp.max(jnp.abs(w))) <= np.sqrt(3) * std + 1e-6
  else:  # not truncated: tails beyond 2 std exist (about 4.6 % of a normal)
    assert 0.035 < float(jnp.mean(jnp.abs(w) > 2 * std)) < 0.06


def test_orthogonal_and_unknown_init():
  w = dp.weight_initializer("orthogonal")(jax.random.key(0), (3, 3, 8, 16)).reshape(72, 16)
  np.testing.assert_allclose(w.T @ w, np.eye(16), atol=1e-5)
  with pytest.raises(ConfigError, match="weight_init='he'.*kaiming-normal"):
    dp.weight_initializer("he")
