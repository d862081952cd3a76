"""Inference: a trained run put to use. Every command that embeds goes through here.

- `run`: a run folder or checkpoint -> its model (eval mode, on a device) and its data file, checked
  (categories, fingerprint), and which objects a group means (train, val, test).
- `embedding`: backbone features and all embeddings of stored objects; the embeddings of a view set of photos.
- `search`: exact nearest neighbours and the k-NN vote for answering queries.
- `embeddings_file`: `piro embed`'s HDF5 file (write, read, check).
- `photos`: `piro embed --images`: a new object's photos and what they are nearest to.
- `index`, `calibration`: the gallery index of `piro index` and `piro identify`, and its `unknown` threshold.
- `export`: the model as ONNX graphs (`piro export`).

`evaluation` (the PICR metrics and reports) and `viz` (figures) build on this layer; training uses it to
embed its validation objects and to build its feature cache.
"""
