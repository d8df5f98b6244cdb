"""Stored deep-prior embeddings: the embedding of one (net, seed) written in the data module's formats.

The formats are owned by `nas_forgetting.data.embeddings` (which reads them back, checked, and serves them as the
data source `source='embeddings'`, so the continual runner can train on deep-prior embeddings):

* Reference layout (`layout="reference"`): `<dir>/<split>/<label:06d>/<index:06d>.npy`, one float32 feature vector
  per example, `index` running from 1 across the whole split (train, val, test), readable by a torchvision
  `DatasetFolder` (as the reference and Avalanche use it).
* Arrays (`layout="arrays"`): `<dir>/<split>_embeddings.npy` (N, D) float32 and `<dir>/<split>_labels.npy` (N,) int32.

`embedding.json` (net, seed, num_classes, width, counts) is written beside either layout; `layout="both"` writes both.
"""

from __future__ import annotations

import pathlib

from nas_forgetting.data import embeddings as stored
from nas_forgetting.errors import ConfigError

SPLITS = stored.SPLITS
LAYOUTS = ("reference", "arrays", "both")


def store_embeddings(evaluator, net: str, seed: int, directory: str | pathlib.Path, *, layout: str = "both"
                     ) -> dict:
  """Embeds the evaluator's train/val/test data with the deep prior of (`net`, `seed`) and writes it; returns the
  contents of `embedding.json`."""
  if layout not in LAYOUTS:
    raise ConfigError(f"embedding layout {layout!r}; expected one of {LAYOUTS}")
  features = dict(zip(SPLITS, (e[0] for e in evaluator.embed(net, [seed]))))
  data = evaluator.data
  labels = dict(zip(SPLITS, (data.train_y, data.val_y, data.test_y)))
  if layout in ("reference", "both"):
    stored.write_reference_layout(directory, features, labels)
  if layout in ("arrays", "both"):
    stored.write_arrays(directory, features, labels)
  return stored.write_info(directory, features, {"net": net, "seed": int(seed), "num_classes": int(data.num_classes)})
