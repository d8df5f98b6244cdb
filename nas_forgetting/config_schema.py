"""The one way a declared config is changed in code: `override(config, values)`.

Every experiment package declares its fields once, with a comment each, in its `config.py` (sub-groups read by one
library module, e.g. `data`, `stream`, `model`, `wpl`, are declared by that module's `default_*_config`). Config
files and size variants then change declared fields only, through `override`, which refuses an unknown field with a
ConfigError naming it and listing the valid ones: the same rule `launch.py` applies to `--config.<path>=<value>`
(ml_collections' locked config).

Derived fields (a value computed from another field, e.g. the WPL configs' shared steps per epoch = architectures
per epoch x `wpl.num_batch_per_iter`) are `ml_collections.FieldReference`s, so they follow their source whenever it
changes, by `override` or on the command line. Setting a derived field itself replaces the reference by the value
given: an explicit value wins and no longer follows the source.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from nas_forgetting.errors import ConfigError


def override(config: ml_collections.ConfigDict, values: Mapping[str, Any], *, group: str = "") -> (
    ml_collections.ConfigDict):
  """Sets the declared fields `values` names in `config` (in place; returned). A mapping given for a sub-group
  (e.g. {"data": {"image": {"test_size": 40}}}) updates it field by field; any other value replaces the field.
  `group` is the dotted path of `config` in the whole config, for the error message."""
  for key, value in values.items():
    if key not in config:
      where = f"{group} config" if group else "config"
      raise ConfigError(f"unknown {where} field {key!r}; valid fields: {', '.join(sorted(config.keys()))}")
    if isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
      override(config[key], value, group=f"{group}.{key}" if group else key)
    else:
      config[key] = value
  return config
