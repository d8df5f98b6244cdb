"""Data: image data sets from any source as in-memory arrays, continual-learning task streams, text corpora,
on-device batching.

- `datasets`: `load_dataset(data_config) -> Splits(train, test)` of `ArrayDataset`s; `default_data_config()`.
- Sources: `embedded` (font_digits, needs nothing), `idx` (MNIST-format files), `image_folder`
  (`<split>/<label>/*.jpg|png`, with a decoded-array cache), `tfds_source` (named tensorflow-datasets).
- `embeddings`: stored feature vectors (e.g. deep-prior embeddings) as a source, `source='embeddings'`; the
  arrays and reference (`<split>/<label:06d>/<index:06d>.npy`) layouts, readers and writers.
- `transforms`: grey-scale, channel matching and resizing shared by every source.
- `tasks`: permuted / split / sequence streams under the task, domain and class scenarios.
- `text`: word-level corpora (`<eos>` per line) and `batchify`.
- `batching`: whole splits on device and per-epoch index matrices.
"""
