"""Content-based image retrieval the scikit-learn way.

Modules, one concept each:

- :mod:`skretrieval.extraction` -- :class:`CNNFeatureExtractor` (images -> CNN feature maps; torch)
- :mod:`skretrieval.pooling` -- SPoC, MAC, GeM and R-MAC global descriptors
- :mod:`skretrieval.whitening` -- PCA whitening
- :mod:`skretrieval.geometry` -- batched pairwise distances between descriptor sets
- :mod:`skretrieval.neighbors` -- :class:`ImageRetriever`, NearestNeighbors-style search
- :mod:`skretrieval.metrics` -- average precision, mAP, P@k and scorers for ``GridSearchCV``
- :mod:`skretrieval.datasets` -- benchmark loaders and a Copydays-style generator
- :mod:`skretrieval.cli` -- the ``skretrieval`` command line

Import the estimators from their modules; importing :mod:`skretrieval` itself does not import
torch.
"""

__version__ = "0.1.0"
