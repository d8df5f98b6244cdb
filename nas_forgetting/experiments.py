"""The experiments `launch.py` can run, by the name a config gives in `config.experiment`.

Each entry points to a function `run(config: ml_collections.ConfigDict, workdir: str) -> dict`
that returns a summary of the run. Modules are imported only when their experiment is chosen.
"""

import importlib
from typing import Callable

from nas_forgetting.errors import ConfigError

EXPERIMENTS = {
    "continual": "nas_forgetting.continual.experiment:run",
    "enas": "nas_forgetting.enas.experiment:run",
    "wpl_two_model": "nas_forgetting.wpl.two_model:run",
    "dpnas": "nas_forgetting.dpnas.experiment:run",
}


def get_experiment(name: str) -> Callable:
  """The `run` function of experiment `name`; unknown names list the valid ones."""
  if name not in EXPERIMENTS:
    raise ConfigError(f"unknown experiment {name!r}; valid choices: {', '.join(sorted(EXPERIMENTS))}")
  module_name, function_name = EXPERIMENTS[name].split(":")
  return getattr(importlib.import_module(module_name), function_name)
