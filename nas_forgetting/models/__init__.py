"""Flax Linen models. Continual learning: `MLP`, `ConvNet`, `AlexNet` (multi-head via `heads.MultiHead`);
ENAS supernets, controller and deep-prior networks in their own modules; `net_string` is the grammar of the
deep-prior (DP-NAS) networks.

`build_model(model_config, num_outputs=..., num_heads=...)` builds a continual-learning model from the `model`
sub-config (`default_model_config()` declares every field).
"""

from __future__ import annotations

import ml_collections

from nas_forgetting.config_schema import override
from nas_forgetting.errors import ConfigError
from nas_forgetting.models.alexnet import AlexNet
from nas_forgetting.models.convnet import ConvNet
from nas_forgetting.models.mlp import MLP

MODEL_NAMES = ("mlp", "convnet", "alexnet")


def default_model_config(**overrides) -> ml_collections.ConfigDict:
  """The `model` sub-config of the continual experiment, every field declared."""
  config = ml_collections.ConfigDict()
  config.name = "mlp"  # 'mlp' | 'convnet' | 'alexnet'
  config.hidden = (256, 256)  # mlp / convnet: Dense ReLU layer widths
  config.features = (32, 64)  # convnet: conv block channels
  config.batch_norm = False  # mlp / convnet: BatchNorm after each hidden layer
  config.width = 1.0  # alexnet: multiplies AlexNet's channel counts (64, 192, 384, 256, 256)
  config.fc_units = 4096  # alexnet: units of the two fully connected layers
  config.dropout = 0.5  # alexnet: dropout before the fully connected layers
  config.frozen = ()  # top-level layer names left out of training (e.g. ('conv_0', 'conv_1'))
  return override(config, overrides, group="model")


def build_model(model_config, *, num_outputs: int, num_heads: int):
  """The Flax module named by `model_config.name` with `num_heads` heads of `num_outputs` logits."""
  name = model_config.name
  if name == "mlp":
    return MLP(hidden=tuple(model_config.hidden), num_outputs=num_outputs, num_heads=num_heads,
               batch_norm=model_config.batch_norm)
  if name == "convnet":
    return ConvNet(features=tuple(model_config.features), hidden=tuple(model_config.hidden), num_outputs=num_outputs,
                   num_heads=num_heads, batch_norm=model_config.batch_norm)
  if name == "alexnet":
    return AlexNet(num_outputs=num_outputs, num_heads=num_heads, width=model_config.width,
                   fc_units=model_config.fc_units, dropout=model_config.dropout)
  raise ConfigError(f"unknown model.name {name!r}; valid choices: {', '.join(MODEL_NAMES)}")


def trainable_mask(params, frozen) -> dict:
  """A boolean tree like `params`: False under every top-level layer named in `frozen` (ConfigError if unknown)."""
  import jax
  names = set(params.keys())
  unknown = sorted(set(frozen) - names)
  if unknown:
    raise ConfigError(f"model.frozen names layers {unknown} that the model does not have; its layers: "
                      f"{', '.join(sorted(names))}")
  return {name: jax.tree.map(lambda _, n=name: n not in frozen, sub) for name, sub in params.items()}
