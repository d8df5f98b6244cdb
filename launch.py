"""Run one nas_forgetting experiment.

  python launch.py --config configs/quickstart.py --workdir runs/quickstart
  python launch.py --config configs/split_mnist.py:quick --workdir runs/split --config.seed=1

`--config` names an ml_collections config file (optionally `:variant`, passed to its `get_config`);
fields may be overridden with `--config.<path>=<value>`. The config is locked: an unknown key fails
with a message listing the valid keys. `config.experiment` selects what runs (see
`nas_forgetting/experiments.py`). The workdir receives the resolved config, the git revision, metrics,
TensorBoard events, plots and checkpoints; launching again with the same workdir resumes the run. A workdir
holds one run: a relaunch with other settings (except the fields that only say how far to run) or of another
experiment is refused, and a second launch on a workdir in use is refused. `--compilation_cache=DIR` keeps the
compiled programs on disk for later launches (the quickstart's rerun: 12.6-14.9 s against 17.8-19.6 s).

Several processes (hosts), each driving its own devices, run one experiment together with `--distributed`:

  python launch.py --config ... --workdir /shared/runs/split --distributed \
      --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0   # and --process_id=1 on the other

Unset values come from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, then from JAX's detection
of the cluster (under SLURM `srun python launch.py ... --distributed` needs nothing else). Every process runs the
same program on the devices of all processes (a continual sweep's grid and the DP-NAS seeds are sharded over
them); process 0 writes the workdir, which every process must see (a shared filesystem), and the others write
only their own shards of sharded checkpoints.
"""

import gc
import logging as std_logging
import os
import signal
import sys
import threading

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from nas_forgetting import compilation_cache
from nas_forgetting import distributed
from nas_forgetting import errors
from nas_forgetting import experiments
from nas_forgetting.io import run as run_io

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path of an ml_collections config file, optionally with ':variant'.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder; an existing run in it is resumed from its latest checkpoint.")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join the other processes of a run of several processes (jax.distributed.initialize).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0 (default: JAX_COORDINATOR_ADDRESS, "
    "else detected from the cluster).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --distributed: number of processes (default: JAX_NUM_PROCESSES, else detected).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --distributed: this process's index (default: JAX_PROCESS_ID, else detected).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "", "Folder for JAX's persistent compilation cache: compiled programs are stored there and "
    "reused by later launches (reruns, resumes, other seeds with the same shapes), in a subfolder per jax version "
    "and machine; '' (default) = off. See nas_forgetting/compilation_cache.py.")


def _describe_unknown_key(config: ml_collections.ConfigDict, dotted: str) -> str | None:
  """Names the first component of `dotted` that `config` lacks and lists the keys valid there; None if all exist."""
  node, walked = config, []
  for part in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict):
      return f"config key {'.'.join(walked)!r} is a value, not a group: it has no field {part!r}"
    if part not in node:
      where = ".".join(walked) or "the top level"
      return f"unknown config key {dotted!r}: {where} has no field {part!r}; valid keys there: {', '.join(sorted(node.keys()))}"
    node, walked = node[part], walked + [part]
  return None


_HELP_FLAGS = ("-h", "-help", "--help", "--helpshort", "-?")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with one clear line for a bad flag, config file, variant or override."""
  if any(arg in _HELP_FLAGS for arg in argv[1:]):
    print(f"{__doc__}\nflags:\n{flags.FLAGS.main_module_help()}")
    sys.exit(0)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if "Error whilst parsing config file" in message:  # The config file or its variant failed: say why, not how.
      reason = [line for line in message.splitlines() if line.strip()][-1].strip()
      flag = message.split(": Error whilst parsing config file", 1)[0].replace("flag ", "", 1)
      sys.exit(f"error: cannot load config file ({flag}): {reason}")
    sys.exit(f"error: {message}\nPass --help to see the flags.")
  except (AttributeError, KeyError) as e:
    config = _config_from_argv(argv)
    for arg in argv[1:]:
      if arg.startswith("--config.") and config is not None:
        message = _describe_unknown_key(config, arg[len("--config."):].split("=", 1)[0])
        if message is not None:
          sys.exit(f"error: {message}")
    sys.exit(f"error: bad config override: {e}")


def _config_from_argv(argv: list[str]) -> ml_collections.ConfigDict | None:
  """Loads the config file named by `--config` in argv (used only to explain a bad override)."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      path = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
    else:
      continue
    try:
      return flags.FLAGS["config"].parser.parse(path)
    except Exception:  # pylint: disable=broad-except
      return None
  return None


def _load_config() -> ml_collections.ConfigDict:
  """The resolved config, or a clear exit when the file cannot be loaded."""
  try:
    config = _CONFIG.value
    config.experiment  # pylint: disable=pointless-statement
  except Exception as e:  # config_flags defers load errors until the value is used.
    reason = [line for line in str(e).splitlines() if line.strip()][-1:] or [type(e).__name__]
    sys.exit(f"error: cannot load config file {flags.FLAGS['config'].config_filename!r}: {reason[0].strip()}")
  if "experiment" not in config:
    sys.exit(f"error: the config has no 'experiment' field; valid experiments: {', '.join(sorted(experiments.EXPERIMENTS))}")
  return config


class _QuietLibraries(std_logging.Filter):
  """Keeps library chatter out of the terminal: orbax's per-save INFO lines (a dozen per checkpoint) and JAX's
  notice that no TPU is present on machines without one. Warnings still show."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.WARNING:
      return True
    if f"{os.sep}orbax{os.sep}" in record.pathname:
      return False
    return "Unable to initialize backend 'tpu'" not in record.getMessage()


def _join_processes() -> None:
  """With --distributed, joins the run's other processes (before anything else uses JAX); else refuses their flags."""
  given = [f"--{f.name}" for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID) if f.value is not None]
  if not _DISTRIBUTED.value:
    if given:
      sys.exit(f"error: {', '.join(given)} given without --distributed")
    return
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except errors.NasForgettingError as e:
    sys.exit(f"error: {e}")
  logging.info("process %d of %d; local devices %s", jax.process_index(), jax.process_count(), jax.local_devices())


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Validates `config`, opens `workdir` (`io.run.open_run`: locked, config stored or checked) and runs the
  experiment in it; returns the workdir's absolute path. The project's errors propagate. In a distributed run,
  every process calls it after `distributed.initialize`."""
  experiment = experiments.get_experiment(config.experiment)
  experiment.validate_config(config)

  logging.info("JAX %s, devices: %s", jax.__version__, jax.devices())
  with run_io.open_run(workdir, config, resume_safe=experiment.resume_safe_fields) as path:
    logging.info("experiment %r, workdir %s", config.experiment, path)
    experiment.run(config, str(path))
  return str(path)


def _inside_swallowing_callback(frame) -> bool:
  """Whether `frame` runs inside code whose exceptions Python reports and ignores: a garbage-collector callback
  (JAX registers one) or a `__del__` method."""
  callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
  while frame is not None:
    if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
      return True
    frame = frame.f_back
  return False


def _interrupt(signum, frame) -> None:
  """SIGINT handler: raises KeyboardInterrupt where it reaches `main`. Raised inside a garbage-collector callback it
  would be printed and ignored, and the run would go on; there the signal is sent again a moment later."""
  if _inside_swallowing_callback(frame):
    again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
    again.daemon = True
    again.start()
    return
  raise KeyboardInterrupt


def main(argv: list[str]) -> None:
  signal.signal(signal.SIGINT, _interrupt)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments: {' '.join(argv[1:])}; pass --help to see the flags")
  _join_processes()
  config = _load_config()
  if _COMPILATION_CACHE.value:
    try:
      logging.info("compilation cache %s", compilation_cache.enable(_COMPILATION_CACHE.value))
    except errors.NasForgettingError as e:
      sys.exit(f"error: {e}")
  try:
    workdir = run(config, _WORKDIR.value)
  except errors.NasForgettingError as e:
    sys.exit(f"error: {e}")
  except KeyboardInterrupt:
    print(f"interrupted; launch the same command again to resume from the last checkpoint in {_WORKDIR.value}",
          file=sys.stderr, flush=True)
    sys.exit(130)
  logging.info("done; outputs in %s", workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
