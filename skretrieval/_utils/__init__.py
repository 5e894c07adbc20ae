"""Internals shared by several modules of skretrieval; private, with no stability promise.

Modules import these by their plain names from here (``from skretrieval._utils.linalg import
l2_normalize``), never another module's underscore names:

- :mod:`~skretrieval._utils.validation` -- checks of user input: integers, lists of arrays of
  different sizes (feature maps, local features);
- :mod:`~skretrieval._utils.linalg` -- L2 normalisation and squared Euclidean distances, for
  numpy arrays (and torch tensors where said);
- :mod:`~skretrieval._utils.batching` -- items of equal shape grouped into batches;
- :mod:`~skretrieval._utils.files` -- the sha256 of a file's contents;
- :mod:`~skretrieval._utils.faiss_threads` -- faiss's OpenMP threads capped and restored (faiss
  imported when used);
- :mod:`~skretrieval._utils.devices` -- torch devices, mixed precision and pixel tensors. The
  only torch module here: only :mod:`skretrieval.extraction` and :mod:`skretrieval.learning`
  import it.
"""
