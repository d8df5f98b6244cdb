"""Atomic writes: complete files or the previous content, never a partial file, never a leftover temporary."""

import os
import stat

import pytest

from nas_forgetting.io import atomic


def test_writes_text_and_bytes_creating_parents(tmp_path):
  path = atomic.atomic_write_text(tmp_path / "a" / "b" / "x.txt", "héllo\r\nworld")
  assert path.read_bytes() == "héllo\r\nworld".encode()  # No newline translation.
  atomic.atomic_write_bytes(path, b"\x00\x01")
  assert path.read_bytes() == b"\x00\x01"
  assert os.listdir(path.parent) == ["x.txt"]


def test_exception_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "x.txt"
  path.write_text("old content")
  with pytest.raises(RuntimeError, match="boom"):
    with atomic.atomic_writer(path, "w") as f:
      f.write("new, partial")
      f.flush()
      raise RuntimeError("boom")
  assert path.read_text() == "old content"
  assert os.listdir(tmp_path) == ["x.txt"]


def test_failing_disk_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "x.bin"
  path.write_bytes(b"old")

  def failing_fsync(fd):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "fsync", failing_fsync)
  with pytest.raises(OSError, match="No space left"):
    atomic.atomic_write_bytes(path, b"new" * 1000)
  assert path.read_bytes() == b"old"
  assert os.listdir(tmp_path) == ["x.bin"]


def test_new_file_has_umask_permissions(tmp_path):
  old = os.umask(0o022)
  try:
    path = atomic.atomic_write_text(tmp_path / "p.txt", "x")
  finally:
    os.umask(old)
  assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_bad_arguments_are_named(tmp_path):
  with pytest.raises(TypeError, match="data is str; expected bytes"):
    atomic.atomic_write_bytes(tmp_path / "x", "text")
  with pytest.raises(TypeError, match="text is bytes; expected str"):
    atomic.atomic_write_text(tmp_path / "x", b"bytes")
  with pytest.raises(IsADirectoryError, match="is a directory"):
    atomic.atomic_write_text(tmp_path, "x")
  with pytest.raises(ValueError, match="mode='a'"):
    with atomic.atomic_writer(tmp_path / "y", "a"):
      pass
  assert os.listdir(tmp_path) == []
