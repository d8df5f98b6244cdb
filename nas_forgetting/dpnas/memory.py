"""Sizes of a deep-prior evaluation: embedding width buckets, memory estimates, embedding chunk sizes.

Before anything is allocated, the evaluator estimates the memory of an evaluation (embeddings, activations of one
chunk, parameters with their Adam moments, per seed on a device) and compares it with the device's free memory (on
the CPU, the host's available RAM shared by its devices); a net that does not fit raises `TooLargeForMemory`.
"""

from __future__ import annotations

import jax

from nas_forgetting.device_memory import available_host_memory, free_device_memory
from nas_forgetting.errors import ArchitectureError
from nas_forgetting.models import net_string as ns


def bucket_width(width: int, mode: str = "geometric") -> int:
  """Embedding width rounded up to the next 2^k or 3*2^(k-1) (at most 1.5x), at least 8; or unchanged ('exact')."""
  if mode == "exact":
    return width
  best = 8
  while best < width:
    best = best * 3 // 2 if best & (best - 1) == 0 else best * 4 // 3
  return best


def memory_available_per_device(device: jax.Device, num_local_devices: int) -> tuple[int | None, str]:
  """(bytes, where): the device's free memory, or on devices without memory statistics (the CPU) the host's
  available RAM shared by its `num_local_devices` devices; (None, ...) when neither is known."""
  free = free_device_memory(device, -1)
  if free >= 0:
    return free, f"free memory of {device.platform} device {device.id}"
  host = available_host_memory()
  if host is None:
    return None, "unknown"
  share = host // max(num_local_devices, 1)
  return share, (f"available host RAM / {num_local_devices} devices" if num_local_devices > 1
                 else "available host RAM")


def parameter_count(net: str, in_channels: int, image_size: int) -> int:
  """Weights (and BatchNorm scale/bias/mean/variance) of the whole net of a string, classifier included."""
  shapes = ns.check_feasible(net, image_size=image_size, in_channels=in_channels, max_fc_input=0,
                             max_image_size=0)
  layers = ns.as_net(net)
  count, channels = 0, in_channels
  width = shapes.embedding_dim
  for layer in layers:
    if isinstance(layer, ns.Conv):
      if layer.residual:
        count += 4 * channels + 9 * channels * layer.features + 4 * layer.features + 9 * layer.features ** 2
        count += channels * layer.features if channels != layer.features else 0
      else:
        count += layer.kernel ** 2 * channels * layer.features + 4 * layer.features
      channels = layer.features
    elif isinstance(layer, ns.FC):
      count += width * layer.units + 4 * layer.units
      width = layer.units
    elif isinstance(layer, ns.SM):
      count += width * layer.classes
  return count


class TooLargeForMemory(ArchitectureError):
  """The estimated memory of an evaluation exceeds what the device (or the host, on the CPU) has free."""


def activation_bytes_per_example(net: str, image_size: int, in_channels: int) -> int:
  """A generous estimate of the float32 activation memory one example needs in the encoder's forward pass."""
  shapes = ns.check_feasible(net, image_size=image_size, in_channels=in_channels, max_fc_input=0,
                             max_image_size=0).shapes
  total = image_size * image_size * in_channels
  for layer, shape in zip(ns.as_net(net), shapes):
    if isinstance(layer, (ns.Conv, ns.Pool)):
      factor = 4 if isinstance(layer, ns.Conv) and layer.residual else 2
      total += factor * shape.size * shape.size * shape.channels
  return 4 * total


# Images one device embeds per call (chunk x seeds), at most. Past this a GPU is already busy, and XLA's working
# memory for the convolutions grows beyond the activation estimate: on an H200 with 139 GB free, 8 seeds x 10,000
# images (a 59 GB estimate) compiled to a 117 GB program that did not fit.
MAX_IMAGES_PER_CALL = 8192


def embed_chunk_size(net: str, image_size: int, in_channels: int, *, num_examples: int, seeds_per_device: int,
                     free_bytes: int, fraction: float, reserved_bytes: int = 0) -> int:
  """Examples per embedding chunk: `fraction` of the free memory (less `reserved_bytes`) over the per-example need,
  and at most `MAX_IMAGES_PER_CALL` images over all the seeds of a device."""
  seeds = max(seeds_per_device, 1)
  per_example = activation_bytes_per_example(net, image_size, in_channels) * seeds
  budget = max(free_bytes - reserved_bytes, 0) * fraction
  chunk = min(int(budget // per_example), MAX_IMAGES_PER_CALL // seeds)
  if chunk >= 8:
    chunk -= chunk % 8
  return int(min(max(chunk, 1), num_examples))
