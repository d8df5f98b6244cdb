"""Models: shapes, parameter counts by hand, head selection, freezing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.errors import ConfigError
from nas_forgetting.models import build_model, default_model_config, trainable_mask
from nas_forgetting.models.mlp import MLP


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_mas_demo_mlp_parameter_count():
  model = MLP(hidden=(256, 256), num_outputs=2, num_heads=5)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  assert _count(params) == (784 * 256 + 256) + (256 * 256 + 256) + 5 * (256 * 2 + 2)


def test_ewc_tutorial_mlp_with_batch_norm():
  model = MLP(hidden=(256, 128), num_outputs=10, batch_norm=True)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 784)))
  assert _count(variables["params"]) == (784 * 256 + 256 + 2 * 256) + (256 * 128 + 128 + 2 * 128) + 1290
  out, updates = model.apply(variables, jnp.ones((4, 784)), train=True, mutable=["batch_stats"])
  chex.assert_shape(out, (4, 10))
  assert not np.allclose(updates["batch_stats"]["bn_0"]["mean"], 0.0)


def test_head_selection_per_batch_and_per_example():
  model = MLP(hidden=(8,), num_outputs=3, num_heads=4)
  x = jax.random.normal(jax.random.key(1), (4, 5))
  params = model.init(jax.random.key(0), x)
  per_head = [model.apply(params, x, h) for h in range(4)]
  mixed = model.apply(params, x, jnp.array([3, 0, 2, 1]))
  for i, h in enumerate([3, 0, 2, 1]):
    np.testing.assert_allclose(mixed[i], per_head[h][i], rtol=1e-6)
  # head h's logits are the hidden features times head_h's kernel plus its bias
  hidden = jax.nn.relu(x @ params["params"]["dense_0"]["kernel"] + params["params"]["dense_0"]["bias"])
  head2 = params["params"]["heads"]["head_2"]
  np.testing.assert_allclose(per_head[2], hidden @ head2["kernel"] + head2["bias"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,shape", [("convnet", (2, 8, 8, 1)), ("alexnet", (2, 8, 8, 3))])
def test_conv_models_shapes(name, shape):
  config = default_model_config(name=name, hidden=(16,), features=(4, 8), width=0.125, fc_units=16)
  model = build_model(config, num_outputs=5, num_heads=2)
  variables = model.init(jax.random.key(0), jnp.zeros(shape))
  out = model.apply(variables, jnp.ones(shape), 1, train=True, rngs={"dropout": jax.random.key(2)})
  chex.assert_shape(out, (2, 5))


def test_trainable_mask_and_unknown_layer():
  model = build_model(default_model_config(name="alexnet", width=0.125, fc_units=8), num_outputs=2, num_heads=1)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  mask = trainable_mask(params, ("conv_0", "conv_1"))
  assert mask["conv_0"]["kernel"] is False and mask["conv_2"]["kernel"] is True
  with pytest.raises(ConfigError, match="conv_9"):
    trainable_mask(params, ("conv_9",))


def test_unknown_model_name():
  with pytest.raises(ConfigError, match="valid choices"):
    build_model(default_model_config(name="resnet"), num_outputs=2, num_heads=1)
