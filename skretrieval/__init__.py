"""Content-based image retrieval the scikit-learn way.

Modules, one concept each:

- :mod:`skretrieval.extraction` -- :class:`CNNFeatureExtractor` (images -> CNN feature maps; torch)
- :mod:`skretrieval.pooling` -- SPoC, MAC, GeM and R-MAC global descriptors
- :mod:`skretrieval.whitening` -- PCA whitening and supervised (learned) whitening
- :mod:`skretrieval.descriptors` -- images as distributions: local PCA, covariances, mixtures
- :mod:`skretrieval.geometry` -- batched pairwise distances between descriptor sets
- :mod:`skretrieval.neighbors` -- :class:`ImageRetriever`, NearestNeighbors-style search, with
  query expansion, database-side augmentation and product quantisation
- :mod:`skretrieval.quantization` -- :class:`ProductQuantizer`, PQ and IVF-PQ (faiss)
- :mod:`skretrieval.learning` -- learned embeddings and end-to-end fine-tuning (torch)
- :mod:`skretrieval.persistence` -- ``save`` and ``load`` on skops: atomic, versioned, and
  loading never runs code from the file
- :mod:`skretrieval.metrics` -- average precision, mAP, P@k, the UKBench N-S score and scorers
  for ``GridSearchCV``
- :mod:`skretrieval.datasets` -- benchmark loaders and a Copydays-style generator, one schema
- :mod:`skretrieval.evaluation` -- a pipeline described, ranked and scored on a dataset
- :mod:`skretrieval.indexing` -- the index of a folder: resumable, incremental, skipping and
  listing unreadable files
- :mod:`skretrieval.distributed` -- extraction and search on a Dask cluster
- :mod:`skretrieval.exceptions` -- errors that several modules raise (unreadable images)
- :mod:`skretrieval.plotting` -- retrieval grids and precision-recall curves
- :mod:`skretrieval.cli` -- the ``skretrieval`` command line

A module too big for one file is a package of private modules; what several modules share lives
in the private :mod:`skretrieval._utils` (see ``docs/design.md``).

Import the estimators from their modules; importing :mod:`skretrieval` itself does not import
torch.
"""

__version__ = "0.3.0.dev0"
