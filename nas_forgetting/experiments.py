"""The experiments `launch.py` can run, by the name a config gives in `config.experiment`.

Each entry names the module of one experiment. That module defines:
  * `run(config: ml_collections.ConfigDict, workdir: str) -> dict`: runs (or resumes) the experiment and
    returns a summary of it;
  * `validate_config(config) -> None`: checks every field before any work is done (ConfigError naming the
    field); `run` calls it too;
  * `RESUME_SAFE_FIELDS`: the dotted config paths that only say how far to run; a relaunch into an existing
    workdir may change these and no other field.
Modules are imported only when their experiment is chosen. Each experiment's package declares its config fields
once, in its `config.py` (`continual/config.py`, `enas/config.py`, `wpl/config.py`, `dpnas/config.py`); the files in
`configs/` change them through `nas_forgetting.config_schema.override` or plain assignment.
"""

import importlib
from typing import Any, Callable, NamedTuple

from nas_forgetting.errors import ConfigError

EXPERIMENTS = {
    "continual": "nas_forgetting.continual.experiment",
    "enas": "nas_forgetting.enas.experiment",
    "wpl_two_model": "nas_forgetting.wpl.two_model",
    "dpnas": "nas_forgetting.dpnas.experiment",
}


class Experiment(NamedTuple):
  """What the launcher needs of one experiment (see the module docstring)."""
  run: Callable[[Any, str], dict]
  validate_config: Callable[[Any], None]
  resume_safe_fields: tuple[str, ...]


def get_experiment(name: str) -> Experiment:
  """The experiment called `name`; unknown names list the valid ones."""
  if name not in EXPERIMENTS:
    raise ConfigError(f"unknown experiment {name!r}; valid choices: {', '.join(sorted(EXPERIMENTS))}")
  module = importlib.import_module(EXPERIMENTS[name])
  return Experiment(run=module.run, validate_config=module.validate_config,
                    resume_safe_fields=tuple(module.RESUME_SAFE_FIELDS))
