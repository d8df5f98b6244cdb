"""Declared config fields: the one way code changes them (`override`) and the checks of their values.

Every experiment package declares its fields once, with a comment each, in its `config.py` (sub-groups read by one
library module, e.g. `data`, `stream`, `model`, `wpl`, are declared by that module's `default_*_config`). Config
files and size variants then change declared fields only, through `override`, which refuses an unknown field with a
ConfigError naming it and listing the valid ones: the same rule `launch.py` applies to `--config.<path>=<value>`
(ml_collections' locked config).

Derived fields (a value computed from another field, e.g. the WPL configs' shared steps per epoch = architectures
per epoch x `wpl.num_batch_per_iter`) are `ml_collections.FieldReference`s, so they follow their source whenever it
changes, by `override` or on the command line. Setting a derived field itself replaces the reference by the value
given: an explicit value wins and no longer follows the source.

The checks (`integer`, `integers`, `number`, `choice`, `boolean`, `text`) read a field of a resolved config by its
dotted path (`integer(config, "train.batch_size", minimum=1)`) and raise a ConfigError naming the field, its value and
what is expected (e.g. "shared.bptt=0; expected an integer >= 1"); a field missing from the config is a ConfigError
too. `group` names where the object checked sits in the whole config: a sub-group checked alone
(`integer(config.data, "seed", minimum=0, group="data")`) or a frozen settings object checking its own fields in
`__post_init__` (`integer(self, "epochs", minimum=1, group="evaluator")`, so an object built directly is guarded by
the same checks and messages). Every experiment's `validate_config` uses them, and only them, before any work is done.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

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


def _name(path: str, group: str) -> str:
  return f"{group}.{path}" if group else path


def get(config: Any, path: str, *, group: str = "") -> Any:
  """The value at dotted `path` of `config` (a ConfigDict, a mapping, or a dataclass / NamedTuple of fields, e.g. a
  frozen settings object checking itself); a ConfigError naming `group.path` when a part of it is missing."""
  node = config
  for part in path.split("."):
    if isinstance(node, (ml_collections.ConfigDict, Mapping)) and part in node:
      node = node[part]
    elif ((dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)})
          or part in getattr(type(node), "_fields", ())):
      node = getattr(node, part)
    else:
      raise ConfigError(f"{_name(path, group)} is missing from the config")
  return node


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _bounds(lower: str | None, upper: str | None) -> str:
  """" >= 0 and < 1" for the bounds given (lower first), "" for none."""
  text = " and ".join(b for b in (lower, upper) if b)
  return " " + text if text else ""


def integer(config: Any, path: str, *, minimum: int | None = None, maximum: int | None = None, group: str = ""
            ) -> int:
  """An int (not a bool) within [minimum, maximum]."""
  value = get(config, path, group=group)
  name = _name(path, group)
  if not _is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
    bounds = _bounds(f">= {minimum}" if minimum is not None else None, f"<= {maximum}" if maximum is not None else None)
    raise ConfigError(f"{name}={value!r}; expected an integer{bounds}")
  return value


def integers(config: Any, path: str, *, minimum: int, allow_empty: bool = True, group: str = "") -> tuple[int, ...]:
  """A sequence of ints, each >= minimum."""
  value = get(config, path, group=group)
  name = _name(path, group)
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or (not allow_empty and not value):
    raise ConfigError(f"{name}={value!r}; expected a {'non-empty ' if not allow_empty else ''}sequence of "
                      f"integers >= {minimum}")
  bad = [v for v in value if not _is_int(v) or v < minimum]
  if bad:
    raise ConfigError(f"{name}={tuple(value)!r}: {bad} not integers >= {minimum}")
  return tuple(value)


def number(config: Any, path: str, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None, group: str = "") -> float:
  """A finite real number (NaN and infinities are refused) with inclusive (minimum/maximum) or strict (above/below)
  bounds."""
  if minimum is not None and above is not None or maximum is not None and below is not None:
    raise ValueError(f"number({path!r}): give one lower bound (minimum or above) and one upper (maximum or below)")
  value = get(config, path, group=group)
  name = _name(path, group)
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  if ok:
    ok = ((minimum is None or value >= minimum) and (maximum is None or value <= maximum)
          and (above is None or value > above) and (below is None or value < below))
  if not ok:
    lower = f">= {minimum:g}" if minimum is not None else f"> {above:g}" if above is not None else None
    upper = f"<= {maximum:g}" if maximum is not None else f"< {below:g}" if below is not None else None
    raise ConfigError(f"{name}={value!r}; expected a finite number{_bounds(lower, upper)}")
  return float(value)


def choice(config: Any, path: str, choices: Sequence[Any], *, group: str = "") -> Any:
  """One of `choices`."""
  value = get(config, path, group=group)
  name = _name(path, group)
  if value not in choices:
    raise ConfigError(f"{name}={value!r}; expected one of {', '.join(map(str, choices))}")
  return value


def boolean(config: Any, path: str, *, group: str = "") -> bool:
  """True or False (not 0/1 or a string)."""
  value = get(config, path, group=group)
  name = _name(path, group)
  if not isinstance(value, bool):
    raise ConfigError(f"{name}={value!r}; expected True or False")
  return value


def text(config: Any, path: str, *, non_empty: str = "", group: str = "") -> str:
  """A string; with `non_empty` (what the field names, e.g. "the data set's name"), one that is not blank."""
  value = get(config, path, group=group)
  name = _name(path, group)
  if not isinstance(value, str):
    raise ConfigError(f"{name}={value!r}; expected a string")
  if non_empty and not value.strip():
    raise ConfigError(f"{name} is empty; expected {non_empty}")
  return value
