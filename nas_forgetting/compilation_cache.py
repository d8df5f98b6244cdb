"""JAX's persistent compilation cache for launches (`launch.py --compilation_cache=DIR`).

Compiled programs are written to disk and reused by later launches that compile the same program (a rerun, a resumed
run, another seed or workdir with the same shapes): the quickstart's 35 compilations then load instead of compiling.
Every program is cached, however short its compilation (`jax_persistent_cache_min_compile_time_secs` = 0: on the CPU
most take well under the default second). The entries live in a subfolder of DIR named by `machine_fingerprint`:
XLA's CPU code is compiled for the host's instruction set and its cache format for one jaxlib, so a DIR shared by
several machines or environments never hands one of them another's programs. Off by default (JAX's own default).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import platform

import jax
import jaxlib

from nas_forgetting.errors import ConfigError


def _cpu_flags() -> str:
  """The host CPU's feature line of /proc/cpuinfo ('' where there is none)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      return next((line.strip() for line in f if line.startswith(("flags", "Features"))), "")
  except OSError:
    return ""


def machine_fingerprint() -> str:
  """'jax<version>-<hash>': the hash of the jax and jaxlib versions, the machine architecture, the CPU's feature
  flags and JAX_PLATFORMS."""
  text = "|".join([jax.__version__, jaxlib.__version__, platform.machine(), platform.processor(), _cpu_flags(),
                   os.environ.get("JAX_PLATFORMS", "")])
  return f"jax{jax.__version__}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def enable(root: str | os.PathLike) -> pathlib.Path:
  """Caches every compiled program of this process under `root`/`machine_fingerprint()` (created if needed) and
  returns that folder; ConfigError when it cannot be created or written. Call before the first compilation."""
  path = pathlib.Path(root).expanduser().absolute() / machine_fingerprint()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--compilation_cache={root}: cannot create {path} ({e.strerror or e})") from None
  if not os.access(path, os.W_OK):
    raise ConfigError(f"--compilation_cache={root}: {path} is not writable")
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path
