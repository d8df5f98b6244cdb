"""dpnas.prior_init: the initial variables drawn with programs shared across architectures equal Flax's
initialisation under jit bit for bit (the weights every deep-prior reward depends on), and a new architecture whose
kernels fall into known size buckets compiles no new draw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.dpnas import prior_init
from nas_forgetting.models import deep_prior as dp

NETS = ["[C(32,5,1,2,1), P(4,4,0,0), C(32,3,1,1,0), C(64,1,1,0,1), C(16,3,1,0,1), SM(10)]",  # residual, shortcut
        "[C(64,3,1,1,1), C(16,9,1,4,1), P(2,2,0,0), C(128,3,1,1,1), C(128,3,1,1,0), FC(32), SM(10)]"]
IMAGE = (1, 28, 28, 1)
SEEDS = [0, 5, 11]


def _flax_under_jit(module, keys, input_shape):
  """What the evaluator computed before: `module.init` per seed inside one jitted program, seeds mapped."""
  init = lambda k: module.init(k, jnp.zeros(input_shape, jnp.float32))
  return jax.jit(lambda ks: jax.lax.map(init, ks))(jnp.stack(keys))


def _assert_equal_trees(got, expected):
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("weight_init", ["kaiming-normal", "xavier-normal", "kaiming-uniform"])
@pytest.mark.parametrize("net", NETS)
def test_encoder_and_classifier_equal_flax_initialisation_under_jit(net, weight_init):
  keys = [prior_init.seed_keys(s) for s in SEEDS]
  encoder = dp.DeepPriorEncoder(net, 1e-4, weight_init)
  _, hidden, classes = dp.split_net(net)
  classifier = dp.DeepPriorClassifier(classes, hidden, 1e-4, weight_init)
  got = prior_init.stacked_variables(encoder, [k[0] for k in keys], IMAGE)
  _assert_equal_trees(got, _flax_under_jit(encoder, [k[0] for k in keys], IMAGE))
  _assert_equal_trees(prior_init.stacked_variables(classifier, [k[1] for k in keys], (1, 200)),
                      _flax_under_jit(classifier, [k[1] for k in keys], (1, 200)))
  kernels = [k for k in jax.tree.leaves(got["params"]) if k.ndim == 5]
  assert kernels and all(np.std(k[0]) > 0 and not np.array_equal(k[0], k[1]) for k in kernels)  # drawn, per seed


def test_normal_factor_is_the_variance_scaling_one():
  """kaiming-normal: std sqrt(2 / fan_in) times sqrt(2) (the draw is erf_inv of a uniform)."""
  factor = prior_init.normal_factor((3, 3, 16, 32), 2.0, "fan_in")
  np.testing.assert_allclose(factor, np.sqrt(2) * np.sqrt(2 / 144), rtol=1e-6)
  np.testing.assert_allclose(prior_init.normal_factor((3, 3, 16, 32), 1.0, "fan_avg"),
                             np.sqrt(2) * np.sqrt(1 / 216), rtol=1e-6)


def test_draw_programs_are_shared_by_architectures():
  prior_init.PROGRAMS.clear()
  key = prior_init.seed_keys(0)[0]
  prior_init.variables(dp.DeepPriorEncoder(NETS[1], 1e-4, "kaiming-normal"), key, IMAGE)
  draws = {k for k in prior_init.PROGRAMS if k[0] == "draw"}
  assert 1 <= len(draws) <= 5
  # other kernels in the same size buckets (the pool moved, other widths): no new draw program, nothing else compiled
  other = "[C(64,3,1,1,1), P(2,2,0,0), C(16,9,1,4,1), C(128,3,1,1,1), C(96,3,1,1,1), SM(10)]"
  prior_init.variables(dp.DeepPriorEncoder(other, 1e-4, "kaiming-normal"), key, IMAGE)
  assert {k for k in prior_init.PROGRAMS if k[0] == "draw"} == draws
  assert not any(k[0] == "init" for k in prior_init.PROGRAMS)


def test_an_unknown_variable_is_refused():
  import flax.linen as nn

  class WithOffset(dp.DeepPriorClassifier):
    @nn.compact
    def __call__(self, x, train=False):
      return x + self.param("offset", nn.initializers.normal(), (x.shape[-1],))

  with pytest.raises(ValueError, match="no rule for variable params/offset"):
    prior_init.variables(WithOffset(3, (), 1e-4, "kaiming-normal"), prior_init.seed_keys(0)[1], (1, 4))


def test_per_architecture_entries_are_bounded_and_draws_kept(monkeypatch):
  monkeypatch.setattr(prior_init, "MAX_ARCHITECTURES", 2)
  prior_init.PROGRAMS.clear()
  key = prior_init.seed_keys(0)[0]
  for width in (8, 16, 24):
    prior_init.variables(dp.DeepPriorEncoder(f"[C({width},3,1,1,1), SM(10)]", 1e-4, "kaiming-normal"), key, IMAGE)
  kinds = [k[0] for k in prior_init.PROGRAMS]
  assert kinds.count("structure") == 2 and kinds.count("draw") >= 1
  assert [k[1].net for k in prior_init.PROGRAMS if k[0] == "structure"] == ["[C(16,3,1,1,1), SM(10)]",
                                                                           "[C(24,3,1,1,1), SM(10)]"]
