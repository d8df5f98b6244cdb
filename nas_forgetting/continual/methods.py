"""The continual methods by name, the `'<method>@<strength>'` form, and the optimiser of `train.optimizer`."""

from __future__ import annotations

import numpy as np
import optax

from nas_forgetting.errors import ConfigError

METHODS = ("finetune", "joint", "l2", "ewc", "online_ewc", "mas", "mas_local", "si")
OPTIMIZERS = ("sgd", "momentum", "adam")
MAS_ACCUMULATIONS = ("sum", "replace", "recompute_all")
CHECKPOINT_EVERY = ("epoch", "task")  # checkpoint.every: after every epoch, or after each task's last epoch



def parse_method(spec: str) -> tuple[str, float | None]:
  """'ewc' -> ('ewc', None) (strength from config.strength); 'ewc@1e4' -> ('ewc', 10000.0).

  The '@strength' form lets one run compare several strengths of a method (each in its own folder)."""
  name, _, strength = spec.partition("@")
  if name not in METHODS:
    raise ConfigError(f"unknown continual method {spec!r}; valid methods: {', '.join(METHODS)} (optionally "
                      "'<method>@<strength>', e.g. 'ewc@1e4')")
  if not strength:
    return name, None
  if name in ("finetune", "joint"):
    raise ConfigError(f"method {spec!r}: {name} has no penalty strength")
  try:
    value = float(strength)
  except ValueError:
    raise ConfigError(f"method {spec!r}: strength {strength!r} is not a number") from None
  if not np.isfinite(value) or value < 0:
    raise ConfigError(f"method {spec!r}: strength must be a finite number >= 0")
  return name, value


def check_method(method: str) -> None:
  parse_method(method)


def make_optimizer(train_config) -> optax.GradientTransformation:
  """optax optimiser from `train.optimizer` ('sgd' | 'momentum' | 'adam'), `learning_rate`, `momentum`."""
  name, lr = train_config.optimizer, train_config.learning_rate
  if name == "sgd":
    return optax.sgd(lr)
  if name == "momentum":
    return optax.sgd(lr, momentum=train_config.momentum)
  if name == "adam":
    return optax.adam(lr)
  raise ConfigError(f"unknown train.optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")
