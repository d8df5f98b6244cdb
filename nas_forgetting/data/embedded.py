"""`font_digits`: an embedded default data set of procedurally rendered digits, MNIST-shaped (28x28x1, 10 classes).

Why this data set:
- It needs neither a network nor the project's shared data folder: it is generated from the TrueType fonts that
  matplotlib (a required dependency) ships in its `mpl-data/fonts/ttf` folder, so the quickstart runs anywhere.
- It has MNIST's shape and value range (float32 28x28x1 in [0, 1], white digit on black, about 20 pixels tall,
  centred by centre of mass), so every MNIST config (MLPs 784-..., permuted / split streams) applies unchanged.
- It is not trivial: each image is one of 10 digits in one of about 20 faces (DejaVu Sans / Serif / Mono with
  their bold and oblique variants, STIX General, Computer Modern roman, bold, sans, italic, typewriter and the
  old-style digits of cmmi10), drawn with a random extra stroke width, then randomly rotated, scaled, stretched,
  sheared and shifted, blurred, dimmed and noised. A small MLP learns it well above chance but not perfectly
  (tests/data checks both; 0.69 test accuracy where the MNIST test split gives 0.91 with the same MLP and budget),
  and fine-tuning forgets on its task streams as on MNIST: measured (2026-11; MLP 784-128-2, Adam 1e-3, 8 epochs
  per task, 2k train / 500 test) through a 5-task domain-incremental Split stream, the first task ends at 0.46
  accuracy (chance 0.5) on font_digits and 0.44 on the MNIST test split.

Generation: each (face, digit, stroke) glyph is rendered once with PIL at twice the output resolution (a 64x64
template, digit 40 pixels tall), antialiased. Every image is then one bilinear gather from its template through a
random affine map, vectorised over the whole batch in numpy, followed by a 3x3 blur mixed in with a random weight
and Gaussian pixel noise. Measured on a 2-core CPU (2026-11): about 0.5 s of CPU time to render the templates
once per process, then about 0.45 s of CPU time per 10,000 images.

Determinism: the same (seed, split, size) gives the same images and labels on the same versions of matplotlib's
fonts and PIL/FreeType (glyph rasterisation may differ slightly across FreeType versions). The train and test
splits come from independent random streams derived from the seed; labels are exactly balanced (N // 10 per class,
the remainder spread over the first classes) and shuffled.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

from nas_forgetting.errors import ConfigError, DataError

NAMES = ("font_digits",)
IMAGE_SIZE = 28
NUM_CLASSES = 10
# Default number of examples when a config asks for 0 (= "all").
DEFAULT_TRAIN_SIZE = 10_000
DEFAULT_TEST_SIZE = 2_000

_TEMPLATE = 64  # template side in pixels (2x the output resolution, with room to rotate)
_RES = 2.0  # template pixels per output pixel
_DIGIT_HEIGHT = 40  # template pixels (= 20 output pixels at scale 1, like MNIST's 20x20 box)
_RENDER_SIZE = 96  # font size (points = pixels) used to draw a glyph before it is scaled to the template
_STROKES = (0, 3, 6)  # extra stroke widths at render size
_CHUNK = 8192  # images gathered per numpy pass (bounds temporary memory)

# Ranges of the random distortions (output pixels / radians / factors).
_MAX_ROTATION = np.deg2rad(20.0)
_SCALE_RANGE = (0.8, 1.15)
_ASPECT_RANGE = (0.85, 1.15)
_MAX_SHEAR = 0.3
_MAX_SHIFT = 3.0
_CONTRAST_RANGE = (0.65, 1.0)
_MAX_BLUR_MIX = 0.8
_MAX_NOISE_STD = 0.12

_DIGIT_GLYPHS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def font_dir() -> pathlib.Path:
  """matplotlib's folder of TrueType fonts."""
  import matplotlib  # Deferred: importing matplotlib costs time and is only needed to generate.

  return pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=1)
def digit_fonts() -> tuple[pathlib.Path, ...]:
  """matplotlib's fonts whose glyphs for '0'..'9' are real digits (names 'zero'.. or 'zerooldstyle'..)."""
  from fontTools.ttLib import TTFont  # A dependency of matplotlib.

  fonts = []
  for path in sorted(font_dir().glob("*.ttf")):
    cmap = TTFont(str(path), lazy=True).getBestCmap()
    names = [cmap.get(ord(str(d))) for d in range(10)]
    if all(n is not None and n.startswith(g) for n, g in zip(names, _DIGIT_GLYPHS)):
      fonts.append(path)
  if len(fonts) < 5:
    raise DataError(f"font_digits: expected matplotlib's digit fonts in {font_dir()}, found {len(fonts)}")
  return tuple(fonts)


def _render_glyph(font, digit: int, stroke: int) -> np.ndarray:
  """A float32 (_TEMPLATE, _TEMPLATE) template in [0, 1]: the digit, _DIGIT_HEIGHT tall, centred by mass."""
  from PIL import Image, ImageDraw

  side = 3 * _RENDER_SIZE
  canvas = Image.new("L", (side, side), 0)
  ImageDraw.Draw(canvas).text((side // 2, side // 2), str(digit), fill=255, font=font, anchor="mm",
                              stroke_width=stroke, stroke_fill=255)
  box = canvas.getbbox()
  if box is None:
    raise DataError(f"font_digits: font {font.path} rendered an empty glyph for {digit}")
  glyph = canvas.crop(box)
  w, h = glyph.size
  factor = _DIGIT_HEIGHT / h
  new_w = max(1, min(_TEMPLATE - 8, round(w * factor)))
  glyph = glyph.resize((new_w, _DIGIT_HEIGHT), Image.Resampling.LANCZOS)
  arr = np.asarray(glyph, np.float32) / 255.0
  mass = arr.sum()
  cy = (arr.sum(axis=1) * np.arange(arr.shape[0])).sum() / mass
  cx = (arr.sum(axis=0) * np.arange(arr.shape[1])).sum() / mass
  top = int(round((_TEMPLATE - 1) / 2 - cy))
  left = int(round((_TEMPLATE - 1) / 2 - cx))
  top = min(max(top, 0), _TEMPLATE - arr.shape[0])
  left = min(max(left, 0), _TEMPLATE - arr.shape[1])
  out = np.zeros((_TEMPLATE, _TEMPLATE), np.float32)
  out[top:top + arr.shape[0], left:left + arr.shape[1]] = arr
  return np.clip(out, 0.0, 1.0)


@functools.lru_cache(maxsize=1)
def templates() -> tuple[np.ndarray, np.ndarray]:
  """(templates (M, 64, 64) float32, digit of each template (M,) int32), M = fonts x 10 digits x strokes."""
  from PIL import ImageFont

  images, digits = [], []
  for path in digit_fonts():
    font = ImageFont.truetype(str(path), size=_RENDER_SIZE)
    for digit in range(NUM_CLASSES):
      for stroke in _STROKES:
        images.append(_render_glyph(font, digit, stroke))
        digits.append(digit)
  # A zero border of one pixel makes out-of-template samples read 0 after clipping the coordinates.
  stack = np.stack(images)
  stack[:, 0, :] = stack[:, -1, :] = stack[:, :, 0] = stack[:, :, -1] = 0.0
  return stack, np.asarray(digits, np.int32)


def _blur3(images: np.ndarray) -> np.ndarray:
  """Separable [1, 2, 1]/4 blur of (N, H, W) with zero padding."""
  padded = np.pad(images, ((0, 0), (1, 1), (0, 0)))
  rows = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
  padded = np.pad(rows, ((0, 0), (0, 0), (1, 1)))
  return 0.25 * padded[:, :, :-2] + 0.5 * padded[:, :, 1:-1] + 0.25 * padded[:, :, 2:]


def _render_batch(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
  """Distorted images (N, 28, 28) float32 for the given labels."""
  stack, digits = templates()
  n = labels.shape[0]
  # Every digit has the same number of templates (fonts x strokes): a (10, K) table of template ids.
  per_digit = np.stack([np.flatnonzero(digits == d) for d in range(NUM_CLASSES)])
  choice = rng.integers(0, per_digit.shape[1], n)
  template_ids = per_digit[labels, choice]

  theta = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, n)
  scale = rng.uniform(*_SCALE_RANGE, n)
  aspect = rng.uniform(*_ASPECT_RANGE, n)
  shear = rng.uniform(-_MAX_SHEAR, _MAX_SHEAR, n)
  shift = rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, (n, 2))
  contrast = rng.uniform(*_CONTRAST_RANGE, n)
  blur_mix = rng.uniform(0.0, _MAX_BLUR_MIX, n)
  noise_std = rng.uniform(0.0, _MAX_NOISE_STD, n)
  noise = rng.standard_normal((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)

  # Forward map (template offsets -> output offsets): rotation @ shear @ diag(scale*aspect, scale) / _RES.
  # Each output pixel samples the template at the inverse image of its offset from the shifted centre.
  cos, sin = np.cos(theta), np.sin(theta)
  sx, sy = scale * aspect, scale
  a = np.empty((n, 2, 2))
  a[:, 0, 0], a[:, 0, 1] = cos * sx, (cos * shear - sin) * sy
  a[:, 1, 0], a[:, 1, 1] = sin * sx, (sin * shear + cos) * sy
  inv = np.linalg.inv(a) * _RES

  centre_out = (IMAGE_SIZE - 1) / 2
  centre_tpl = (_TEMPLATE - 1) / 2
  grid = np.arange(IMAGE_SIZE, dtype=np.float64) - centre_out
  gx = grid[None, None, :] - shift[:, 0, None, None]  # (n, 1, 28)
  gy = grid[None, :, None] - shift[:, 1, None, None]  # (n, 28, 1)
  qx = inv[:, 0, 0, None, None] * gx + inv[:, 0, 1, None, None] * gy + centre_tpl
  qy = inv[:, 1, 0, None, None] * gx + inv[:, 1, 1, None, None] * gy + centre_tpl
  qx = np.clip(qx, 0.0, _TEMPLATE - 1.001)
  qy = np.clip(qy, 0.0, _TEMPLATE - 1.001)
  x0, y0 = np.floor(qx).astype(np.int64), np.floor(qy).astype(np.int64)
  fx, fy = (qx - x0).astype(np.float32), (qy - y0).astype(np.float32)
  flat = stack.reshape(-1)
  base = (template_ids * _TEMPLATE * _TEMPLATE)[:, None, None] + y0 * _TEMPLATE + x0
  v00, v01 = flat[base], flat[base + 1]
  v10, v11 = flat[base + _TEMPLATE], flat[base + _TEMPLATE + 1]
  images = (v00 * (1 - fx) + v01 * fx) * (1 - fy) + (v10 * (1 - fx) + v11 * fx) * fy

  mix = blur_mix.astype(np.float32)[:, None, None]
  images = (1 - mix) * images + mix * _blur3(images)
  images = images * contrast.astype(np.float32)[:, None, None]
  images = images + noise * noise_std.astype(np.float32)[:, None, None]
  return np.clip(images, 0.0, 1.0).astype(np.float32)


def font_digits(num_examples: int, *, seed: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
  """`num_examples` images (N, 28, 28, 1) float32 in [0, 1] and int32 labels (N,), deterministic by (seed, split)."""
  if split not in ("train", "test"):
    raise ConfigError(f"font_digits: split must be 'train' or 'test', got {split!r}")
  if num_examples <= 0:
    raise ConfigError(f"font_digits: number of examples must be positive, got {num_examples}")
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0 if split == "train" else 1]))
  labels = rng.permutation(np.arange(num_examples) % NUM_CLASSES).astype(np.int32)
  images = np.empty((num_examples, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
  for start in range(0, num_examples, _CHUNK):
    stop = min(start + _CHUNK, num_examples)
    images[start:stop, ..., 0] = _render_batch(rng, labels[start:stop])
  return images, labels


def load_embedded(name: str, *, train_size: int, test_size: int, seed: int):
  """Train and test arrays of an embedded data set: ((train_images, train_labels), (test_images, test_labels))."""
  if name not in NAMES:
    raise ConfigError(f"unknown embedded data set {name!r}; valid names: {', '.join(NAMES)}")
  train = font_digits(train_size or DEFAULT_TRAIN_SIZE, seed=seed, split="train")
  test = font_digits(test_size or DEFAULT_TEST_SIZE, seed=seed, split="test")
  return train, test
