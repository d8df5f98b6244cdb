"""Text corpora: token counts against the published ones, vocabulary conventions, missing train, batchify."""

import numpy as np
import pytest

from nas_forgetting.data import text
from nas_forgetting.errors import ConfigError, DataError


def test_ptb_token_counts(shared_data):
  corpus = text.load_corpus(shared_data / "ptb", allow_missing_train=True)
  assert len(corpus.valid) == 73_760 and len(corpus.test) == 82_430  # README counts, end-of-line included
  assert corpus.train_file_missing
  np.testing.assert_array_equal(corpus.train, corpus.valid)
  assert corpus.valid.dtype == np.int32
  # 3,370 lines in valid.txt: one <eos> each.
  assert int((corpus.valid == corpus.vocab.index("<eos>")).sum()) == 3_370
  assert len(corpus.vocab) <= 10_000 and "<unk>" in corpus.vocab and "N" in corpus.vocab
  assert corpus.vocab[0] == "consumers"  # first word of valid.txt: ids in order of first appearance
  assert max(corpus.test) == len(corpus.vocab) - 1


def test_wikitext2_token_counts(shared_data):
  corpus = text.load_corpus(shared_data / "wikitext2", allow_missing_train=True)
  # Published WikiText-2 counts with one <eos> per line: valid 217,646, test 245,569.
  assert len(corpus.valid) == 217_646 and len(corpus.test) == 245_569


def test_small_corpus_by_hand(tmp_path):
  (tmp_path / "train.txt").write_text("b a\n\nc\n")
  (tmp_path / "valid.txt").write_text("a d\n")
  (tmp_path / "test.txt").write_text("e b")
  corpus = text.load_corpus(tmp_path)
  assert corpus.vocab == ["b", "a", "<eos>", "c", "d", "e"]
  assert corpus.train.tolist() == [0, 1, 2, 2, 3, 2] and not corpus.train_file_missing
  assert corpus.valid.tolist() == [1, 4, 2] and corpus.test.tolist() == [5, 0, 2]
  ordered = text.load_corpus(tmp_path, vocab_order="sorted")
  assert ordered.vocab == sorted(corpus.vocab)
  assert [ordered.vocab[i] for i in ordered.train] == [corpus.vocab[i] for i in corpus.train]


def test_missing_files_and_bad_options(tmp_path):
  (tmp_path / "valid.txt").write_text("a\n")
  with pytest.raises(DataError, match="train.txt does not exist .* pass allow_missing_train=True"):
    text.load_corpus(tmp_path)
  with pytest.raises(DataError, match=f"text file {tmp_path / 'test.txt'} does not exist"):
    text.load_corpus(tmp_path, allow_missing_train=True)
  (tmp_path / "test.txt").write_text("")
  with pytest.raises(DataError, match="test.txt is empty"):
    text.load_corpus(tmp_path, allow_missing_train=True)
  with pytest.raises(DataError, match="corpus folder .*nowhere does not exist"):
    text.load_corpus(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match="unknown vocab_order 'alpha'"):
    text.load_corpus(tmp_path, vocab_order="alpha")


def test_batchify_is_time_major_columns():
  tokens = np.arange(23, dtype=np.int32)
  batches = text.batchify(tokens, 4)
  assert batches.shape == (5, 4)
  np.testing.assert_array_equal(batches[:, 0], [0, 1, 2, 3, 4])  # a column is a contiguous stretch
  np.testing.assert_array_equal(batches[0], [0, 5, 10, 15])
  np.testing.assert_array_equal(batches.T.ravel(), tokens[:20])
  with pytest.raises(DataError, match="3 tokens are fewer than one batch of 4"):
    text.batchify(tokens[:3], 4)


def test_batchify_real_ptb(shared_data):
  corpus = text.load_corpus(shared_data / "ptb", allow_missing_train=True)
  batches = text.batchify(corpus.train, 64)
  assert batches.shape == (73_760 // 64, 64)


def test_a_corpus_of_blank_lines_is_refused_when_loaded(tmp_path):
  """Blank lines give only <eos> tokens: nothing to model (an ENAS run used to train an epoch on it, then crash)."""
  for name in ("train.txt", "valid.txt", "test.txt"):
    (tmp_path / name).write_text("a b\nc\n")
  (tmp_path / "valid.txt").write_text("\n  \n\n")
  with pytest.raises(DataError, match=r"valid.txt holds no words \(3 blank lines\)"):
    text.load_corpus(tmp_path)
