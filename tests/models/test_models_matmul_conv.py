"""The deep-prior encoder's matmul convolution (`conv="matmul"`, here for every kernel size) equals XLA's: the bare
function on strides, paddings and kernel sizes, and whole encoders (plain layers, residual blocks with and without a
shortcut, pooling) with the same parameter tree and values, in inference and in training mode. `cpu_conv`
(`conv="cpu"`) equals XLA's convolution and rewrites exactly the layers it names (unpadded, stride 1, enough input
channels, a small border)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.errors import ConfigError
from nas_forgetting.models import deep_prior as dp


@pytest.mark.parametrize("kernel, stride, padding", [(1, 1, 0), (3, 1, 1), (5, 2, 2), (3, 3, 0), (4, 2, 1)])
def test_matmul_conv_equals_lax_conv(kernel, stride, padding, monkeypatch):
  monkeypatch.setattr(dp, "MATMUL_MIN_WEIGHTS", 1)  # every kernel through the products (strided ones: to XLA)
  rng = np.random.default_rng(kernel * 10 + stride)
  x = jnp.asarray(rng.standard_normal((2, 9, 9, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, kernel, 3, 5)), jnp.float32)
  args = ((stride, stride), ((padding, padding), (padding, padding)))
  layout = ("NHWC", "HWIO", "NHWC")
  expected = jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=layout)
  np.testing.assert_allclose(dp.matmul_conv(x, w, *args, dimension_numbers=layout), expected, rtol=1e-5, atol=1e-5)


def test_encoders_with_matmul_convolutions_equal_xla_ones(monkeypatch):
  net = "[C(8,5,1,2,1), P(3,2,1,0), C(8,3,1,1,0), C(16,3,1,1,0), C(4,3,2,0,1), SM(4)]"
  monkeypatch.setattr(dp, "MATMUL_MIN_WEIGHTS", 1)
  x = jnp.asarray(np.random.default_rng(0).random((4, 12, 12, 2)), jnp.float32)
  xla = dp.DeepPriorEncoder(net)
  matmul = dp.DeepPriorEncoder(net, conv="matmul")
  shapes = jax.eval_shape(xla.init, jax.random.key(1), x)  # (initialising under jit compiles for seconds)
  assert jax.tree.structure(shapes) == jax.tree.structure(jax.eval_shape(matmul.init, jax.random.key(1), x))
  rng = np.random.default_rng(1)
  draw = lambda s: jnp.asarray(rng.standard_normal(s.shape) * 0.3, s.dtype)
  variables = {"params": jax.tree.map(draw, shapes["params"]),  # running variances kept positive
               "batch_stats": jax.tree.map(lambda s: jnp.abs(draw(s)) + 0.5, shapes["batch_stats"])}

  @jax.jit
  def both(variables, x):  # inference, and training mode with the batch statistics it stores
    return [(m.apply(variables, x), m.apply(variables, x, train=True, mutable=["batch_stats"])) for m in (matmul, xla)]

  (inference, trained), (expected, expected_trained) = both(variables, x)
  assert np.isfinite(inference).all() and np.abs(inference).max() > 0.1
  np.testing.assert_allclose(inference, expected, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), trained, expected_trained)
  with pytest.raises(ConfigError, match="conv="):
    dp.DeepPriorEncoder(net, conv="winograd").init(jax.random.key(1), x)


@pytest.mark.parametrize("size, kernel, stride, padding, in_channels, rewritten", [
    (9, 1, 1, 0, 16, "dot_general"),  # 1x1 unpadded: one matrix product
    (9, 3, 1, 0, 64, "dot_general"),  # unpadded from 64 channels: products per kernel offset
    (12, 3, 1, 0, 16, "conv"),  # unpadded 3x3 (12x12 -> 10x10): centre of the padded convolution
    (12, 4, 1, 0, 16, "conv"),  # an even kernel: asymmetric padding
    (8, 7, 1, 0, 16, None),  # 8x8 -> 2x2: the padded convolution would compute 16x the outputs
    (9, 3, 1, 1, 16, None),  # padded
    (9, 3, 2, 0, 16, None),  # strided
    (9, 3, 1, 0, 3, None)])  # few input channels
def test_cpu_conv_equals_lax_conv(size, kernel, stride, padding, in_channels, rewritten):
  rng = np.random.default_rng(size * 100 + kernel)
  x = jnp.asarray(rng.standard_normal((2, size, size, in_channels)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, kernel, in_channels, 5)), jnp.float32)
  args = ((stride, stride), ((padding, padding), (padding, padding)))
  layout = ("NHWC", "HWIO", "NHWC")
  expected = jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=layout)
  got = dp.cpu_conv(x, w, *args, dimension_numbers=layout)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  jaxpr = str(jax.make_jaxpr(lambda x, w: dp.cpu_conv(x, w, *args, dimension_numbers=layout))(x, w))
  if rewritten == "dot_general":
    assert "dot_general" in jaxpr and "conv_general_dilated" not in jaxpr
  elif rewritten == "conv":  # the convolution keeps the input size, the result is its centre
    half = kernel // 2
    assert f"padding=(({half}, {kernel - 1 - half}), ({half}, {kernel - 1 - half}))" in jaxpr and "slice" in jaxpr
  else:
    assert "dot_general" not in jaxpr and "slice" not in jaxpr


def test_cpu_conv_takes_matmul_products_for_large_kernels(monkeypatch):
  monkeypatch.setattr(dp, "MATMUL_MIN_WEIGHTS", 1)
  x = jnp.ones((1, 6, 6, 16), jnp.float32)
  w = jnp.ones((3, 3, 16, 2), jnp.float32)
  jaxpr = str(jax.make_jaxpr(lambda x, w: dp.cpu_conv(x, w, (1, 1), ((1, 1), (1, 1)),
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC")))(x, w))
  assert "dot_general" in jaxpr and "conv_general_dilated" not in jaxpr
