"""Exceptions the project raises for bad input: each message names the offending thing and what was expected."""


class NasForgettingError(Exception):
  """Base class of the project's own errors."""


class ConfigError(NasForgettingError, ValueError):
  """A configuration value is unknown, missing or out of range."""


class DataError(NasForgettingError, ValueError):
  """A data set or data file is missing, truncated or malformed."""


class ArchitectureError(NasForgettingError, ValueError):
  """An architecture description (DAG file, net string, encoded array) is malformed or infeasible."""


class CheckpointError(NasForgettingError, RuntimeError):
  """A checkpoint cannot be read or does not match the run it should resume."""


class DivergenceError(NasForgettingError, FloatingPointError):
  """A loss, metric or parameter became NaN or infinite: the run stops and names the quantity and where."""
