"""Image options shared by every data source: resizing to a square size and grey-scale / colour conversion.

All sources (embedded, IDX, image folders, tfds) return float32 arrays (N, H, W, C) in [0, 1] and go through
`apply_image_options` last, so `image_size` and `grayscale` mean the same thing whatever the source:

- `grayscale=True` converts 3-channel images to 1 channel with the ITU-R 601-2 luma weights
  (0.299 R + 0.587 G + 0.114 B, the formula of PIL's "L" mode and torchvision's Grayscale); 1-channel images are
  left alone. `grayscale=False` leaves the channels as the source has them (use `match_channels` to repeat a grey
  channel to 3 when data sets of different kinds must share one shape).
- `channels` 1 or 3 forces that many channels (grey repeated to 3, colour reduced to luma); 0 keeps the source's.
  The DP-NAS reference's `--gray-scale False` (grey data sets repeated to 3 channels) is `channels=3`.
- `image_size > 0` resizes to `image_size x image_size` with bilinear interpolation and antialiasing when
  shrinking (as PIL / torchvision resize does); 0 keeps the native size.
"""

from __future__ import annotations

import numpy as np

from nas_forgetting.errors import ConfigError, DataError

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)

# Images resized per call to jax.image.resize: bounds the peak memory of resizing a large data set.
_RESIZE_CHUNK = 4096


def _check_images(images: np.ndarray, what: str) -> None:
  if images.ndim != 4:
    raise DataError(f"{what}: expected images of shape (N, H, W, C), got shape {images.shape}")


def to_grayscale(images: np.ndarray, *, what: str = "images") -> np.ndarray:
  """(N, H, W, 3) -> (N, H, W, 1) by luma weights; 1-channel input is returned unchanged."""
  _check_images(images, what)
  channels = images.shape[-1]
  if channels == 1:
    return images
  if channels != 3:
    raise DataError(f"{what}: grey-scale conversion expects 1 or 3 channels, got {channels}")
  return np.tensordot(images, LUMA_WEIGHTS.astype(images.dtype), axes=([-1], [0]))[..., None].astype(images.dtype)


def match_channels(images: np.ndarray, channels: int, *, what: str = "images") -> np.ndarray:
  """Bring images to `channels` channels: 1 -> 3 repeats the grey channel, 3 -> 1 takes the luma."""
  _check_images(images, what)
  have = images.shape[-1]
  if have == channels:
    return images
  if have == 1 and channels == 3:
    return np.repeat(images, 3, axis=-1)
  if have == 3 and channels == 1:
    return to_grayscale(images, what=what)
  raise DataError(f"{what}: cannot convert {have} channels to {channels} (only 1 <-> 3 is defined)")


def resize_images(images: np.ndarray, height: int, width: int | None = None, *, what: str = "images") -> np.ndarray:
  """Bilinear resize (antialiased when shrinking) of float images (N, H, W, C) to (N, height, width, C)."""
  _check_images(images, what)
  width = height if width is None else width
  if height <= 0 or width <= 0:
    raise ConfigError(f"{what}: image size must be positive, got {height}x{width}")
  n, h, w, c = images.shape
  if (h, w) == (height, width):
    return images
  import jax  # Deferred: this module is also used by code that never resizes.

  out = np.empty((n, height, width, c), np.float32)
  for start in range(0, n, _RESIZE_CHUNK):
    chunk = np.asarray(images[start:start + _RESIZE_CHUNK], np.float32)
    resized = jax.image.resize(chunk, (chunk.shape[0], height, width, c), method="linear", antialias=True)
    out[start:start + chunk.shape[0]] = np.asarray(resized)
  return np.clip(out, 0.0, 1.0)


def apply_image_options(images: np.ndarray, *, image_size: int, grayscale: bool, channels: int = 0,
                        what: str = "images") -> np.ndarray:
  """The `grayscale`, `channels` then `image_size` options of a data config, applied to float images in [0, 1]."""
  if image_size < 0:
    raise ConfigError(f"{what}: image_size must be 0 (native) or a positive size, got {image_size}")
  if channels not in (0, 1, 3):
    raise ConfigError(f"{what}: channels must be 0 (as the source), 1 or 3, got {channels}")
  if grayscale and channels == 3:
    raise ConfigError(f"{what}: grayscale=True contradicts channels=3")
  if grayscale:
    images = to_grayscale(images, what=what)
  if channels:
    images = match_channels(images, channels, what=what)
  if image_size:
    images = resize_images(images, image_size, what=what)
  return np.ascontiguousarray(images, dtype=np.float32)
