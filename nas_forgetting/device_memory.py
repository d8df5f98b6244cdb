"""Readings of the memory left to a computation: a device's free memory and the host's available RAM.

Used to size work before anything is allocated (the continual sweep's members per chunk, the DP-NAS evaluator's
memory check and embedding chunks). Devices without memory statistics (the CPU) report none: callers then fall
back to a configured budget or to the host's RAM.
"""

from __future__ import annotations

import os

import jax


def free_device_memory(device: jax.Device, fallback: int) -> int:
  """Free bytes reported by the device (`bytes_limit - bytes_in_use`), or `fallback` where none are reported."""
  try:
    stats = device.memory_stats()
  except Exception:  # some backends raise instead of returning None
    stats = None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  return int(fallback)


def available_host_memory() -> int | None:
  """Bytes of RAM the host can still give (MemAvailable of /proc/meminfo, else free pages), None if unknown."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
  except (ValueError, OSError, AttributeError):
    return None
