"""Event files read back with tensorboardX's protobuf classes and its own CRC32C implementation."""

import io
import os
import struct

import numpy as np
import pytest
from PIL import Image

from nas_forgetting.io import tensorboard as tb

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
record_writer = pytest.importorskip("tensorboardX.record_writer")


def read_records(path) -> list[bytes]:
  """TFRecord payloads, each CRC checked with tensorboardX's masked CRC32C."""
  data = open(path, "rb").read()
  records, offset = [], 0
  while offset < len(data):
    header = data[offset:offset + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
    assert length_crc == record_writer.masked_crc32c(header)
    payload = data[offset + 12:offset + 12 + length]
    (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
    assert payload_crc == record_writer.masked_crc32c(payload)
    records.append(payload)
    offset += 16 + length
  assert offset == len(data)
  return records


def read_events(path) -> list:
  events = []
  for payload in read_records(path):
    event = event_pb2.Event()
    event.ParseFromString(payload)
    assert event.SerializeToString() == payload  # Nothing unknown, nothing lost.
    events.append(event)
  return events


@pytest.mark.parametrize("data, expected", [
    (b"123456789", 0xE3069283),          # The CRC-32C check value.
    (b"", 0x00000000),
    (bytes(32), 0x8A9136AA),             # RFC 3720 (iSCSI) B.4 test vectors.
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
])
def test_crc32c_known_answers(data, expected):
  assert tb.crc32c(data) == expected


def test_crc32c_and_mask_agree_with_an_independent_implementation():
  rng = np.random.default_rng(0)
  for size in (1, 7, 8, 255, 1000):
    data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    assert tb.masked_crc32c(data) == record_writer.masked_crc32c(data)
  # Incremental use gives the CRC of the concatenation.
  assert tb.crc32c(b"56789", tb.crc32c(b"1234")) == 0xE3069283


def test_scalars_parse_back_with_tags_values_steps(tmp_path):
  written = [("train/loss", 0.25, 0), ("train/loss", 0.125, 1), ("eval/task_3/accuracy", 0.1, 7),
             ("big", -3.5e20, 2**40), ("negative_step", 1.0, -3), ("zero", 0.0, 5)]
  with tb.EventWriter(tmp_path) as writer:
    for tag, value, step in written:
      writer.scalar(tag, value, step)
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].startswith("events.out.tfevents.")
  events = read_events(tmp_path / files[0])
  assert events[0].file_version == "brain.Event:2" and events[0].wall_time > 1e9
  got = [(e.summary.value[0].tag, e.summary.value[0].simple_value, e.step) for e in events[1:]]
  assert [(t, s) for t, _, s in got] == [(t, s) for t, _, s in written]
  for (_, value, _), (_, read, _) in zip(written, got):
    assert read == np.float32(value)  # simple_value is a 32-bit float.
  assert all(e.summary.value[0].WhichOneof("value") == "simple_value" for e in events[1:])
  assert all(events[i].wall_time <= events[i + 1].wall_time for i in range(len(events) - 1))


def test_event_bytes_equal_the_reference_serializer():
  reference = event_pb2.Event(wall_time=1234.5, step=17)
  reference.summary.value.add(tag="a/b", simple_value=0.75)
  assert tb._event(1234.5, 17, summary=tb.scalar_summary("a/b", 0.75)) == reference.SerializeToString()
  version = event_pb2.Event(wall_time=99.25, step=0, file_version="brain.Event:2")
  assert tb._event(99.25, 0, file_version="brain.Event:2") == version.SerializeToString()
  restart = event_pb2.Event(wall_time=5.0, step=3, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
  assert tb._event(5.0, 3, session_start=True) == restart.SerializeToString()
  image = event_pb2.Event(wall_time=1.0, step=2)
  value = image.summary.value.add(tag="im")
  value.image.height, value.image.width, value.image.colorspace = 3, 4, 3
  value.image.encoded_image_string = b"png"
  assert tb._event(1.0, 2, summary=tb.image_summary("im", b"png", 3, 4, 3)) == image.SerializeToString()


@pytest.mark.parametrize("channels, colorspace", [(1, 1), (3, 3), (4, 4)])
def test_image_event_decodes_to_the_same_pixels(tmp_path, channels, colorspace):
  rng = np.random.default_rng(channels)
  pixels = rng.integers(0, 256, (5, 7, channels), dtype=np.uint8)
  with tb.EventWriter(tmp_path) as writer:
    writer.image("samples/x", pixels, 3)
  (event,) = read_events(next(tmp_path.iterdir()))[1:]
  value = event.summary.value[0]
  assert (value.tag, event.step) == ("samples/x", 3)
  image = value.image
  assert (image.height, image.width, image.colorspace) == (5, 7, colorspace)
  decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
  np.testing.assert_array_equal(decoded.reshape(pixels.shape), pixels)


def test_png_bytes_pass_through_unchanged(tmp_path):
  buffer = io.BytesIO()
  Image.fromarray(np.full((3, 9), 200, np.uint8), "L").convert("LA").save(buffer, format="PNG")
  png = buffer.getvalue()
  with tb.EventWriter(tmp_path) as writer:
    writer.image("png", png, 0)
  (event,) = read_events(next(tmp_path.iterdir()))[1:]
  image = event.summary.value[0].image
  assert image.encoded_image_string == png
  assert (image.height, image.width, image.colorspace) == (3, 9, 2)


def test_float_images_in_unit_range_are_scaled(tmp_path):
  with tb.EventWriter(tmp_path) as writer:
    writer.image("f", np.array([[0.0, 0.5, 1.0]], np.float32), 1)
  (event,) = read_events(next(tmp_path.iterdir()))[1:]
  decoded = np.asarray(Image.open(io.BytesIO(event.summary.value[0].image.encoded_image_string)))
  np.testing.assert_array_equal(decoded, [[0, 128, 255]])


def test_bad_input_is_named(tmp_path):
  with tb.EventWriter(tmp_path) as writer:
    with pytest.raises(ValueError, match="not a PNG"):
      writer.image("x", b"GIF89a......", 0)
    with pytest.raises(ValueError, match="dtype int32"):
      writer.image("x", np.zeros((2, 2), np.int32), 0)
    with pytest.raises(ValueError, match=r"shape \(2, 2, 5\)"):
      writer.image("x", np.zeros((2, 2, 5), np.uint8), 0)
    with pytest.raises(TypeError, match="step for tag 'x'"):
      writer.scalar("x", 1.0, 1.5)
    with pytest.raises(ValueError, match="tag ''"):
      writer.scalar("", 1.0, 1)
    with pytest.raises(ValueError, match="expected a scalar"):
      writer.scalar("x", np.ones(3), 1)
  with pytest.raises(ValueError, match="closed"):
    writer.scalar("x", 1.0, 1)


def test_two_writers_in_one_folder_write_two_files(tmp_path):
  with tb.EventWriter(tmp_path) as a, tb.EventWriter(tmp_path) as b:
    a.scalar("a", 1.0, 1)
    b.scalar("b", 2.0, 1)
  assert len(list(tmp_path.iterdir())) == 2
  tags = sorted(e.summary.value[0].tag for f in tmp_path.iterdir() for e in read_events(f)[1:])
  assert tags == ["a", "b"]


def test_flush_makes_events_readable_before_close(tmp_path):
  writer = tb.EventWriter(tmp_path, flush_secs=3600)
  writer.scalar("x", 2.0, 4)
  writer.flush()
  events = read_events(writer.path)
  assert [(e.step, e.summary.value[0].simple_value) for e in events[1:]] == [(4, 2.0)]
  writer.close()
  writer.close()


def test_purge_step_records_a_session_restart(tmp_path):
  with tb.EventWriter(tmp_path, purge_step=12) as writer:
    writer.scalar("x", 1.0, 12)
  events = read_events(writer.path)
  assert events[1].step == 12 and events[1].session_log.status == event_pb2.SessionLog.START
  assert (events[2].step, events[2].summary.value[0].tag) == (12, "x")
  with tb.EventWriter(tmp_path / "plain") as writer:
    pass
  assert [e.WhichOneof("what") for e in read_events(writer.path)] == ["file_version"]
