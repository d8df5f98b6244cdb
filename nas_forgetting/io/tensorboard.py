"""A small TensorBoard event-file writer (scalars and PNG images) that needs no TensorFlow.

File format (what TensorBoard reads):
  * a file `events.out.tfevents.<seconds>.<host>.<pid>.<n>` of TFRecord records: uint64 length (little endian),
    uint32 masked CRC32C of those 8 bytes, the payload, uint32 masked CRC32C of the payload;
  * each payload is a serialized `tensorflow.Event` protocol buffer; the first one carries
    `file_version = "brain.Event:2"`, the others a `Summary` with one value.
The protocol buffers are encoded here by hand (wire format: varints, length-delimited fields, fixed64 double,
fixed32 float). Field numbers, from tensorflow/core/util/event.proto and tensorflow/core/framework/summary.proto:
  Event: wall_time=1 (double), step=2 (int64), file_version=3 (string), summary=5 (Summary),
         session_log=7 (SessionLog: status=1, an enum with START=1)
  Summary: value=1 (repeated Value)
  Summary.Value: tag=1 (string), simple_value=2 (float), image=4 (Summary.Image)
  Summary.Image: height=1, width=2, colorspace=3 (int32), encoded_image_string=4 (bytes)
"""

import io
import itertools
import os
import pathlib
import socket
import struct
import time

import numpy as np

from nas_forgetting.io._steps import as_step

FILE_VERSION = "brain.Event:2"

# ---------------------------------------------------------------------------------------------------------------
# CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table driven, and TFRecord's masking.
# ---------------------------------------------------------------------------------------------------------------


def _make_crc_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
  """CRC-32C of `data` (continuing from `crc`); crc32c(b"123456789") == 0xE3069283."""
  table = _CRC_TABLE
  crc ^= 0xFFFFFFFF
  for byte in bytes(data):
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC: rotate the CRC-32C right by 15 bits and add 0xA282EAD8 (mod 2^32)."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
  """One TFRecord: length, masked CRC of the length, payload, masked CRC of the payload."""
  length = struct.pack("<Q", len(payload))
  return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


# ---------------------------------------------------------------------------------------------------------------
# Protocol buffer wire format.
# ---------------------------------------------------------------------------------------------------------------

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1  # Negative int32/int64 values are sent as their 64-bit two's complement.
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _int_field(field: int, value: int) -> bytes:
  return _key(field, _VARINT) + _varint(int(value))


def _bytes_field(field: int, value: bytes) -> bytes:
  return _key(field, _LENGTH_DELIMITED) + _varint(len(value)) + value


def _double_field(field: int, value: float) -> bytes:
  return _key(field, _FIXED64) + struct.pack("<d", value)


def _float_field(field: int, value: float) -> bytes:
  return _key(field, _FIXED32) + struct.pack("<f", value)


_SESSION_START = 1


def _event(wall_time: float, step: int, *, file_version: str | None = None, summary: bytes | None = None,
           session_start: bool = False) -> bytes:
  # Fields holding their default value are left out, as protobuf serializers do (proto3 canonical form).
  out = _double_field(1, wall_time) + (_int_field(2, step) if step else b"")
  if file_version is not None:
    out += _bytes_field(3, file_version.encode())
  if summary is not None:
    out += _bytes_field(5, summary)
  if session_start:
    out += _bytes_field(7, _int_field(1, _SESSION_START))
  return out


def scalar_summary(tag: str, value: float) -> bytes:
  """A serialized Summary holding one `simple_value`."""
  return _bytes_field(1, _bytes_field(1, tag.encode()) + _float_field(2, value))


def image_summary(tag: str, png: bytes, height: int, width: int, colorspace: int) -> bytes:
  """A serialized Summary holding one PNG image."""
  image = _int_field(1, height) + _int_field(2, width) + _int_field(3, colorspace) + _bytes_field(4, png)
  return _bytes_field(1, _bytes_field(1, tag.encode()) + _bytes_field(4, image))


# ---------------------------------------------------------------------------------------------------------------
# Images.
# ---------------------------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> TensorBoard colorspace (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA; a palette decodes to RGB).
_PNG_COLORSPACE = {0: 1, 4: 2, 2: 3, 6: 4, 3: 3}


def png_info(png: bytes) -> tuple[int, int, int]:
  """(height, width, colorspace) from a PNG's IHDR chunk."""
  if len(png) < 33 or png[:8] != _PNG_SIGNATURE or png[12:16] != b"IHDR":
    raise ValueError("image bytes are not a PNG file (expected the PNG signature and an IHDR chunk)")
  width, height = struct.unpack(">II", png[16:24])
  color_type = png[25]
  if color_type not in _PNG_COLORSPACE:
    raise ValueError(f"PNG colour type {color_type} is invalid; expected one of {sorted(_PNG_COLORSPACE)}")
  return height, width, _PNG_COLORSPACE[color_type]


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of an (H, W) or (H, W, C) image, C in {1, 2, 3, 4}: uint8, or floats in [0, 1] (scaled to 0..255)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel

  array = np.asarray(image)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (2, 3, 4)):
    raise ValueError(f"image shape {np.asarray(image).shape}; expected (H, W) or (H, W, C) with C in 1..4")
  if array.shape[0] == 0 or array.shape[1] == 0:
    raise ValueError(f"image shape {array.shape} is empty")
  if np.issubdtype(array.dtype, np.floating):
    if not np.all(np.isfinite(array)):
      raise ValueError("float image holds NaN or infinity; expected values in [0, 1]")
    array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
  elif array.dtype != np.uint8:
    raise ValueError(f"image dtype {array.dtype}; expected uint8 or floats in [0, 1]")
  mode = {2: "L", 3: {2: "LA", 3: "RGB", 4: "RGBA"}}
  mode = mode[2] if array.ndim == 2 else mode[3][array.shape[-1]]
  buffer = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(array), mode).save(buffer, format="PNG")
  return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# The writer.
# ---------------------------------------------------------------------------------------------------------------

_FILE_COUNTER = itertools.count()


class EventWriter:
  """Appends scalar and image events to a new event file in `logdir` (created if missing).

  Writes are buffered and flushed every `flush_secs` seconds (checked at each write), on `flush()` and on
  `close()`. Several writers (a resumed run) may share one logdir: each one writes its own file.

  A resumed run passes `purge_step`, the first step it will log again: the writer then records a session
  restart at that step, and TensorBoard drops the events of earlier files from that step on (so the steps
  logged after the last checkpoint and before a crash are not shown twice).
  """

  def __init__(self, logdir: str | os.PathLike, *, flush_secs: float = 10.0, filename_suffix: str = "",
               purge_step: int | None = None):
    self.logdir = pathlib.Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
            f"{next(_FILE_COUNTER)}{filename_suffix}")
    self.path = self.logdir / name
    self._file = open(self.path, "wb")  # pylint: disable=consider-using-with
    self._flush_secs = flush_secs
    self._last_flush = time.monotonic()
    self._write(_event(time.time(), 0, file_version=FILE_VERSION))
    if purge_step is not None:
      self._write(_event(time.time(), as_step(purge_step, "purge_step"), session_start=True))
    self.flush()

  def _write(self, event: bytes) -> None:
    if self._file is None:
      raise ValueError(f"event file {self.path} is closed")
    self._file.write(tfrecord(event))
    if time.monotonic() - self._last_flush >= self._flush_secs:
      self.flush()

  @staticmethod
  def _check(tag: str, step: int) -> int:
    if not isinstance(tag, str) or not tag:
      raise ValueError(f"tag {tag!r}; expected a non-empty string")
    return as_step(step, f"step for tag {tag!r} is")

  def scalar(self, tag: str, value: float, step: int) -> None:
    """Logs `value` (a Python or 0-d array number) under `tag` at `step`."""
    step = self._check(tag, step)
    if np.size(value) != 1:
      raise ValueError(f"value for tag {tag!r} has shape {np.shape(value)}; expected a scalar")
    value = float(np.asarray(value).reshape(()))
    self._write(_event(time.time(), step, summary=scalar_summary(tag, value)))

  def image(self, tag: str, image: np.ndarray | bytes, step: int) -> None:
    """Logs an image: an (H, W, C) uint8 array (C in 1..4; floats in [0, 1] also accepted) or PNG bytes."""
    step = self._check(tag, step)
    png = bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else encode_png(image)
    height, width, colorspace = png_info(png)
    self._write(_event(time.time(), step, summary=image_summary(tag, png, height, width, colorspace)))

  def flush(self) -> None:
    """Pushes buffered events to the file."""
    if self._file is not None:
      self._file.flush()
      self._last_flush = time.monotonic()

  def close(self) -> None:
    """Flushes and closes the file; closing twice is harmless."""
    if self._file is not None:
      self._file.flush()
      self._file.close()
      self._file = None

  def __enter__(self) -> "EventWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass
