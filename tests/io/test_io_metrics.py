"""MetricsLogger (JSONL + TensorBoard), CSV and JSONL round trips."""

import json
import math
import struct

import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.errors import DataError
from nas_forgetting.io import metrics

from tensorboardX import record_writer
from tensorboardX.proto import event_pb2


def _events(folder):
  """Every event of every file in `folder`, in file order (each record's CRCs checked by tensorboardX's reader)."""
  out = []
  for path in sorted(folder.iterdir()):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      payload = data[offset + 12:offset + 12 + length]
      (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
      assert payload_crc == record_writer.masked_crc32c(payload)
      out.append(event_pb2.Event.FromString(payload))
      offset += 16 + length
  return out


def _scalar_events(folder):
  """(step, tag, scalar value or image) of every summary event in `folder`."""
  out = []
  for event in _events(folder):
    if event.HasField("summary"):
      value = event.summary.value[0]
      out.append((event.step, value.tag, value.simple_value if value.HasField("simple_value") else value.image))
  return out


def test_logger_writes_jsonl_and_tensorboard(tmp_path):
  with metrics.MetricsLogger(tmp_path) as logger:
    logger.log(0, {"train/loss": 2.5, "train/accuracy": np.float32(0.1), "count": np.int64(3)})
    logger.log(jnp.int32(10), {"train/loss": jnp.asarray(1.25), "flag": True})
    logger.image("samples", np.zeros((2, 3, 3), np.uint8), 10)
  records = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  assert records == [{"step": 0, "train/loss": 2.5, "train/accuracy": 0.1, "count": 3},
                     {"step": 10, "train/loss": 1.25, "flag": True}]
  assert isinstance(records[0]["count"], int)
  events = _scalar_events(tmp_path / "tensorboard")
  assert [(s, t) for s, t, _ in events] == [(0, "train/loss"), (0, "train/accuracy"), (0, "count"),
                                            (10, "train/loss"), (10, "flag"), (10, "samples")]
  assert [v for _, _, v in events[:5]] == [2.5, np.float32(0.1), 3.0, 1.25, 1.0]
  assert (events[5][2].height, events[5][2].width) == (2, 3)


def test_resumed_logger_appends_and_drops_a_cut_line(tmp_path):
  with metrics.MetricsLogger(tmp_path, tensorboard=False, filename="m.jsonl") as logger:
    logger.log(1, {"a": 1.0})
  with open(tmp_path / "m.jsonl", "a") as f:
    f.write('{"step": 2, "a": 0.')  # A write cut short by a crash.
  assert metrics.read_jsonl(tmp_path / "m.jsonl") == [{"step": 1, "a": 1.0}]
  with metrics.MetricsLogger(tmp_path, tensorboard=False, filename="m.jsonl") as logger:
    logger.log(2, {"a": 2.0})
  assert metrics.read_jsonl(tmp_path / "m.jsonl") == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}]
  assert not (tmp_path / "tensorboard").exists()


def test_non_finite_values_round_trip(tmp_path):
  with metrics.MetricsLogger(tmp_path, tensorboard=False) as logger:
    logger.log(0, {"nan": float("nan"), "inf": np.float32("inf")})
  (record,) = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  assert math.isnan(record["nan"]) and record["inf"] == math.inf


def test_logger_rejects_bad_metrics(tmp_path):
  with metrics.MetricsLogger(tmp_path, tensorboard=False) as logger:
    with pytest.raises(ValueError, match="'w' has shape \\(3,\\)"):
      logger.log(0, {"w": np.ones(3)})
    with pytest.raises(ValueError, match="'name' is 'abc'"):
      logger.log(0, {"name": "abc"})
    with pytest.raises(ValueError, match="reserved"):
      logger.log(0, {"step": 3})
    with pytest.raises(TypeError, match="step 0.5"):
      logger.log(0.5, {"a": 1.0})
  assert metrics.read_jsonl(tmp_path / "metrics.jsonl") == []


def test_read_jsonl_names_bad_lines(tmp_path):
  path = tmp_path / "x.jsonl"
  path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(DataError, match=r"x\.jsonl:2: not valid JSON"):
    metrics.read_jsonl(path)
  path.write_text('[1, 2]\n')
  with pytest.raises(DataError, match="expected an object"):
    metrics.read_jsonl(path)
  with pytest.raises(DataError, match="missing.jsonl does not exist"):
    metrics.read_jsonl(tmp_path / "missing.jsonl")


def test_csv_round_trip(tmp_path):
  rows = [{"epoch": 0, "loss": np.float32(0.1), "name": "a,b \"quoted\""},
          {"epoch": 1, "loss": 1e-30, "extra": jnp.asarray(7)},
          {"epoch": 2, "loss": float("nan"), "name": "line\nbreak"}]
  path = metrics.write_csv(tmp_path / "sub" / "t.csv", rows)
  read = metrics.read_csv(path)
  assert list(read[0]) == ["epoch", "loss", "name", "extra"]  # Columns in order of first appearance.
  assert read[0] == {"epoch": "0", "loss": "0.1", "name": "a,b \"quoted\"", "extra": ""}
  assert read[1] == {"epoch": "1", "loss": "1e-30", "name": "", "extra": "7"}
  assert read[2]["name"] == "line\nbreak" and math.isnan(float(read[2]["loss"]))
  assert float(read[1]["loss"]) == 1e-30 and np.float32(read[0]["loss"]) == np.float32(0.1)


def test_csv_fieldnames_order_and_unknown_columns(tmp_path):
  path = metrics.write_csv(tmp_path / "t.csv", [{"b": 1, "a": 2}], fieldnames=["a", "b", "c"])
  assert path.read_text() == "a,b,c\n2,1,\n"
  with pytest.raises(ValueError, match=r"row 0 has columns \['z'\]"):
    metrics.write_csv(tmp_path / "t.csv", [{"z": 1}], fieldnames=["a"])
  assert path.read_text() == "a,b,c\n2,1,\n"  # Untouched by the failed write.
  metrics.write_csv(tmp_path / "empty.csv", [], fieldnames=["a"])
  assert metrics.read_csv(tmp_path / "empty.csv") == []


def test_read_csv_errors_name_the_file(tmp_path):
  with pytest.raises(DataError, match="nope.csv does not exist"):
    metrics.read_csv(tmp_path / "nope.csv")
  (tmp_path / "ragged.csv").write_text("a,b\n1,2,3\n")
  with pytest.raises(DataError, match="ragged.csv: row 1 has more cells"):
    metrics.read_csv(tmp_path / "ragged.csv")


def test_jsonl_is_one_object_per_line(tmp_path):
  with metrics.MetricsLogger(tmp_path, tensorboard=False) as logger:
    for step in range(3):
      logger.log(step, {"x": step / 3})
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [0, 1, 2]
  assert json.loads(lines[1])["x"] == 1 / 3


def test_purge_step_drops_steps_lost_after_the_last_checkpoint(tmp_path):
  with metrics.MetricsLogger(tmp_path) as logger:
    for step in range(1, 6):
      logger.log(step, {"loss": 1.0 / step})
  # Resumed from a checkpoint taken after step 3: steps 4 and 5 are logged again.
  with metrics.MetricsLogger(tmp_path, purge_step=4) as logger:
    for step in (4, 5):
      logger.log(step, {"loss": 2.0 / step})
  assert metrics.read_jsonl(tmp_path / "metrics.jsonl") == [
      {"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 3, "loss": 1.0 / 3},
      {"step": 4, "loss": 0.5}, {"step": 5, "loss": 0.4}]
  assert len(list((tmp_path / "tensorboard").iterdir())) == 2  # One file per launch, even within one second.
  restart = [e for e in _events(tmp_path / "tensorboard") if e.HasField("session_log")]
  assert [(e.step, e.session_log.status) for e in restart] == [(4, event_pb2.SessionLog.START)]
  steps = [(e.step, e.summary.value[0].simple_value) for e in _events(tmp_path / "tensorboard") if e.HasField("summary")]
  np.testing.assert_allclose(steps[3:], [(4, 0.25), (5, 0.2), (4, 0.5), (5, 0.4)])  # TensorBoard shows the later pair.


def test_png_bytes_and_grey_images_are_logged_with_their_pixels(tmp_path):
  import io
  from PIL import Image
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  with metrics.MetricsLogger(tmp_path) as logger:
    logger.image("png", buffer.getvalue(), 3)
    logger.image("grey", pixels[..., 0], 4)
    with pytest.raises(ValueError, match="'bad' has shape \\(2, 3, 5\\)"):
      logger.image("bad", np.zeros((2, 3, 5), np.uint8), 5)
  images = {e.summary.value[0].tag: (e.step, e.summary.value[0].image) for e in _events(tmp_path / "tensorboard")
            if e.HasField("summary")}
  step, image = images["png"]
  assert step == 3 and (image.height, image.width) == (5, 7)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB")), pixels)
  step, image = images["grey"]
  decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
  assert step == 4 and decoded.reshape(5, 7, -1)[..., 0].tolist() == pixels[..., 0].tolist()
