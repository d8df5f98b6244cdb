"""Word-level text corpora for language modelling (PTB, WikiText-2) and time-major batching.

`load_corpus(path)` reads `train.txt`, `valid.txt` and `test.txt` from a folder. Tokenisation is the one of the
public ENAS and PyTorch word-language-model code: every line (empty lines included) is split on whitespace and
followed by one `<eos>` token, so a file of L lines and W words gives W + L tokens (PTB valid: 73,760).

Vocabulary: built from every split that is present, read in the order train, valid, test. With
`vocab_order='first_appearance'` (default, as the reference `Dictionary`) a word's id is the order in which it is
first met; `'sorted'` gives ids in sorted word order (stable across corpora that share words). Including the test
split in the vocabulary is what the references do; with PTB's closed 10k vocabulary (`<unk>`) it changes nothing,
and for WikiText-2 it gives every test word an id (the model never sees test text during training).

Missing train split: offline copies of PTB and WikiText-2 hold only `valid.txt` and `test.txt`. By default a missing
`train.txt` is a DataError; with `allow_missing_train=True` the valid tokens are also used as the train split
(`Corpus.train_file_missing` is then True and a warning is logged) so that offline runs can train on valid and
evaluate on test; every figure from such a run must say so.
"""

from __future__ import annotations

import logging
import pathlib
from typing import NamedTuple

import numpy as np

from nas_forgetting.errors import ConfigError, DataError

EOS = "<eos>"
VOCAB_ORDERS = ("first_appearance", "sorted")

_log = logging.getLogger(__name__)


class Corpus(NamedTuple):
  """Token ids (int32, `<eos>` after every line) of each split, and the vocabulary (id -> word)."""
  vocab: list[str]
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  train_file_missing: bool = False  # True when train is a copy of valid (allow_missing_train)


def read_words(path: str | pathlib.Path) -> list[str]:
  """The tokens of a text file: each line's whitespace-separated words, then `<eos>`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"text file {path} does not exist")
  try:
    text = path.read_text(encoding="utf-8")
  except UnicodeDecodeError as exc:
    raise DataError(f"text file {path} is not UTF-8 text ({exc})") from exc
  words = []
  lines = text.splitlines()
  for line in lines:
    words.extend(line.split())
    words.append(EOS)
  if not words:
    raise DataError(f"text file {path} is empty; expected at least one line")
  if len(words) == len(lines):  # every token is an <eos>: nothing to model
    raise DataError(f"text file {path} holds no words ({len(lines)} blank lines); expected lines of "
                    "whitespace-separated words")
  return words


def load_corpus(path: str | pathlib.Path, *, train_file: str = "train.txt", valid_file: str = "valid.txt",
                test_file: str = "test.txt", allow_missing_train: bool = False,
                vocab_order: str = "first_appearance") -> Corpus:
  """The corpus in folder `path` (see the module docstring for tokenisation, vocabulary and missing train)."""
  if vocab_order not in VOCAB_ORDERS:
    raise ConfigError(f"unknown vocab_order {vocab_order!r}; valid orders: {', '.join(VOCAB_ORDERS)}")
  folder = pathlib.Path(path)
  if not folder.is_dir():
    raise DataError(f"text corpus folder {folder} does not exist")
  train_path = folder / train_file
  train_missing = not train_path.is_file()
  if train_missing and not allow_missing_train:
    raise DataError(f"text corpus {folder}: {train_path} does not exist (expected {train_file}, {valid_file}, "
                    f"{test_file}); pass allow_missing_train=True to train on {valid_file} instead")
  splits = {}
  if not train_missing:
    splits["train"] = read_words(train_path)
  splits["valid"] = read_words(folder / valid_file)
  splits["test"] = read_words(folder / test_file)

  vocab: dict[str, int] = {}
  for words in splits.values():  # train, valid, test order
    for word in words:
      if word not in vocab:
        vocab[word] = len(vocab)
  if vocab_order == "sorted":
    vocab = {word: i for i, word in enumerate(sorted(vocab))}
  encoded = {name: np.fromiter((vocab[w] for w in words), np.int32, len(words)) for name, words in splits.items()}
  if train_missing:
    _log.warning("text corpus %s has no %s: training on %s (evaluate on %s, and say so in every figure)",
                 folder, train_file, valid_file, test_file)
    encoded["train"] = encoded["valid"].copy()
  return Corpus(list(vocab), encoded["train"], encoded["valid"], encoded["test"], train_missing)


def batchify(tokens: np.ndarray, batch_size: int) -> np.ndarray:
  """Time-major (num_steps, batch_size): the token stream cut into `batch_size` contiguous columns.

  Column j holds tokens[j * num_steps:(j + 1) * num_steps], num_steps = len(tokens) // batch_size; the last
  len(tokens) % batch_size tokens are dropped (as the reference `batchify`).
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 1:
    raise DataError(f"batchify expects a 1-D token array, got shape {tokens.shape}")
  if batch_size < 1:
    raise ConfigError(f"batchify: batch_size must be >= 1, got {batch_size}")
  num_steps = tokens.shape[0] // batch_size
  if num_steps == 0:
    raise DataError(f"batchify: {tokens.shape[0]} tokens are fewer than one batch of {batch_size} columns")
  return np.ascontiguousarray(tokens[:num_steps * batch_size].reshape(batch_size, num_steps).T)
