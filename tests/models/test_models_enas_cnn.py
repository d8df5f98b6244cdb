"""Micro-CNN supernet: a fixed cell equals the cell composed by hand (and the reference options change exactly
the output step or the pointwise conv); one trace for many architectures; augmentation."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.enas.search_space import CnnSearchSpace
from nas_forgetting.errors import ConfigError
from nas_forgetting.models import enas_cnn as ec

SPACE = CnnSearchSpace(num_blocks=3)


ARCH = SPACE.from_string("normal: 2=sep_conv_3x3(0)+max_pool_3x3(1) 3=sep_conv_5x5(2)+identity(0) "
                         "4=avg_pool_3x3(1)+sep_conv_3x3(2) | reduction: 2=identity(0)+identity(1) "
                         "3=identity(0)+identity(1) 4=identity(0)+identity(1)")[0]


def _by_hand(params, pp, p):
  """Calibrations, then nodes 2, 3, 4 of ARCH with the weights of their (node, slot, input) rows; returns the cell
  output (1x1 conv of the loose ends, then BN) and the last node."""
  cal = lambda x, w: ec.batch_norm(jax.nn.relu(x) @ w)
  h0, h1 = cal(pp, params["calibrate_0"]["w"]), cal(p, params["calibrate_1"]["w"])
  sep3 = lambda x, b, s, i: ec.sep_conv(x, params["dw3"][b, s, i], params["pw3"][b, s, i])
  sep5 = lambda x, b, s, i: ec.sep_conv(x, params["dw5"][b, s, i], params["pw5"][b, s, i])
  n2 = sep3(h0, 0, 0, 0) + ec.pool3x3(h1, "max")
  n3 = sep5(n2, 1, 0, 2) + h0
  n4 = ec.pool3x3(h1, "avg") + sep3(n2, 2, 1, 2)
  # Loose ends: node 3 and node 4 (node 2 is read by 3 and 4).
  want = ec.batch_norm(jax.nn.relu(n3) @ params["w_out"][1] + jax.nn.relu(n4) @ params["w_out"][2])
  return want, n4


_by_hand_jit = jax.jit(_by_hand)
_init = jax.jit(lambda cell, key, pp, p: cell.init(key, pp, p, ARCH)["params"], static_argnums=0)  # once per cell


def _cell_inputs():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  return jax.random.normal(k1, (2, 6, 6, 3)), jax.random.normal(k2, (2, 6, 6, 5)), k3


def _apply(cell, params, pp, p, arch=ARCH):
  return _apply_fn(cell, pp.shape, p.shape)(params, pp, p, arch)


@functools.lru_cache(maxsize=None)
def _apply_fn(cell, *shapes):
  """The jitted cell, traced once for every cell architecture (checked)."""
  del shapes  # part of the cache key only: one trace per input shape

  def apply(prm, pp, p, a):
    return cell.apply({"params": prm}, pp, p, a)

  apply.__name__ = f"apply_{cell.sep_conv}_{cell.cell_output}"  # chex counts traces per name and source
  return jax.jit(chex.assert_max_traces(apply, n=1))


def _random_cells(n):
  return jax.vmap(SPACE.random_arch)(jax.random.split(jax.random.key(7), n))[:, 0]


def test_fixed_cell_equals_hand_composition():
  cell = ec.EnasCell(num_blocks=3, features=4, sep_conv_stacks=1)
  pp, p, key = _cell_inputs()
  params = _init(cell, key, pp, p)
  out = _apply(cell, params, pp, p)
  want, _ = _by_hand_jit(params, pp, p)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
  assert out.shape == (2, 6, 6, 4)


def test_reference_last_node_output():
  """cell_output='last_node': the same nodes, and the cell outputs node 4 alone (no 1x1 conv, no BN, no w_out)."""
  default = ec.EnasCell(num_blocks=3, features=4, sep_conv_stacks=1)
  last = ec.EnasCell(num_blocks=3, features=4, sep_conv_stacks=1, cell_output="last_node")
  pp, p, key = _cell_inputs()
  params = _init(default, key, pp, p)
  reference_params = {k: v for k, v in params.items() if k != "w_out"}
  chex.assert_trees_all_equal_structs(reference_params, _init(last, key, pp, p))
  _, n4 = _by_hand_jit(params, pp, p)
  np.testing.assert_allclose(_apply(last, reference_params, pp, p), n4, rtol=1e-4, atol=1e-4)
  for arch in _random_cells(20):  # still one compilation for every architecture
    assert np.isfinite(np.asarray(_apply(last, reference_params, pp, p, arch))).all()


def test_reference_depthwise_conv_is_separable_with_identity_pointwise():
  """sep_conv='depthwise' drops exactly the pointwise step: it equals the paper's op with identity pointwise weights."""
  separable = ec.EnasCell(num_blocks=3, features=4, sep_conv_stacks=1)  # compiled by the test above: reused
  depthwise = ec.EnasCell(num_blocks=3, features=4, sep_conv_stacks=1, sep_conv="depthwise")
  pp, p, key = _cell_inputs()
  params = _init(depthwise, key, pp, p)
  assert "pw3" not in params and "pw5" not in params
  eye = jnp.broadcast_to(jnp.eye(4), (3, 2, 5, 1, 4, 4))
  with_identity = dict(params, pw3=eye, pw5=eye)
  want = _apply(separable, with_identity, pp, p)
  np.testing.assert_allclose(_apply(depthwise, params, pp, p), want, rtol=1e-5, atol=1e-5)
  for arch in _random_cells(20):  # still one compilation for every architecture
    assert np.isfinite(np.asarray(_apply(depthwise, params, pp, p, arch))).all()
  # ... and differs from it with the initialised (non-identity) pointwise weights.
  init_pw = _init(separable, key, pp, p)
  assert not np.allclose(_apply(separable, dict(with_identity, pw3=init_pw["pw3"], pw5=init_pw["pw5"]), pp, p), want,
                         atol=1e-3)
  # One stack by hand: ReLU -> depthwise -> BN, no pointwise.
  x = jax.random.normal(key, (2, 6, 6, 4))
  dw = params["dw3"][0, 0, 0]
  np.testing.assert_allclose(ec.sep_conv(x, dw[:1], None), ec.batch_norm(ec.depthwise_conv(jax.nn.relu(x), dw[0])),
                             rtol=1e-6)


def test_unknown_cell_options_are_rejected():
  pp, p, key = _cell_inputs()
  with pytest.raises(ConfigError, match="cnn.sep_conv='pointwise'"):
    ec.EnasCell(num_blocks=3, features=4, sep_conv="pointwise").init(key, pp, p, ARCH)
  with pytest.raises(ConfigError, match="cnn.cell_output='concat'"):
    ec.EnasCell(num_blocks=3, features=4, cell_output="concat").init(key, pp, p, ARCH)


def test_average_pool_ignores_padding():
  x = jnp.ones((1, 4, 4, 1))
  np.testing.assert_allclose(ec.pool3x3(x, "avg"), x, rtol=1e-6)
  r = np.random.default_rng(0).normal(size=(1, 3, 5, 2))
  want = np.zeros_like(r)
  for i in range(3):
    for j in range(5):
      want[0, i, j] = r[0, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].mean((0, 1))
  np.testing.assert_allclose(ec.pool3x3(jnp.asarray(r, jnp.float32), "avg"), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ec.pool3x3(jnp.asarray(r, jnp.float32), "max"),
                             [[[r[0, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].max((0, 1)) for j in range(5)]
                               for i in range(3)]], rtol=1e-6)


def test_one_trace_for_many_architectures():
  model = ec.EnasCnn(num_classes=3, num_blocks=3, features=4, num_modules=2, num_repeat_normal=1,
                     sep_conv_stacks=1)
  images = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  labels = jnp.array([0, 2])
  # Random weights of the parameter shapes (traced, not compiled: the property does not depend on the init).
  shapes = jax.eval_shape(lambda k: model.init(k, images, jnp.zeros((2, 3, 4), jnp.int32), train=False)["params"],
                          jax.random.key(2))
  gen = np.random.default_rng(2)
  params = jax.tree.map(lambda s: jnp.asarray(0.3 * gen.standard_normal(s.shape), s.dtype), shapes)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def grads(params, arch):
    def loss(p):
      logits = model.apply({"params": p}, images, arch, train=True)
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])
    return jax.value_and_grad(loss)(params)

  chex.clear_trace_counter()
  archs = jax.vmap(SPACE.random_arch)(jax.random.split(jax.random.key(3), 100))
  for k, arch in enumerate(archs):
    loss, g = grads(params, arch)
    assert np.isfinite(float(loss))
    if k < 3:  # only the chosen sep-conv rows of a normal cell receive gradients
      a = np.asarray(arch)[0]
      chosen = {(b, s, a[b, 2 * s]) for b in range(3) for s in range(2) if a[b, 2 * s + 1] == 1}
      gw = np.asarray(g["normal_0_0"]["dw3"])
      nonzero = {tuple(int(v) for v in idx) for idx in zip(*np.nonzero(np.abs(gw).sum((3, 4, 5, 6))))}
      assert nonzero <= chosen


def test_augmentation():
  images = jax.random.uniform(jax.random.key(0), (5, 8, 8, 3))
  same = ec.augment(jax.random.key(1), images, pad=0, flip=False)
  np.testing.assert_array_equal(same, images)
  out = jax.jit(lambda k, x: ec.augment(k, x, pad=4, flip=True, cutout=3))(jax.random.key(2), images)
  assert out.shape == images.shape
  # Every augmented image is a shifted (possibly mirrored) window of its zero-padded original.
  padded = np.pad(np.asarray(images), ((0, 0), (4, 4), (4, 4), (0, 0)))
  for n in range(5):
    o = np.asarray(out[n])
    found = False
    for flip in (False, True):
      for dy in range(9):
        for dx in range(9):
          win = padded[n, dy:dy + 8, dx:dx + 8]
          win = win[:, ::-1] if flip else win
          keep = o != 0
          if np.allclose(o[keep], win[keep]):
            found = True
    assert found
  normed = ec.normalize(jnp.asarray(ec.CIFAR10_MEAN).reshape(1, 1, 1, 3) * jnp.ones((1, 2, 2, 3)))
  np.testing.assert_allclose(normed, 0.0, atol=1e-6)
