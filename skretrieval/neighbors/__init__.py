"""Nearest-neighbour search over a database of image descriptors.

:class:`ImageRetriever` is the last step of a retrieval pipeline. It behaves like
:class:`sklearn.neighbors.NearestNeighbors` with the brute-force algorithm, but the distance
comes from a kernel of :mod:`skretrieval.geometry` (so descriptor types other than vectors plug
in), the database-side work is done once at ``fit``, and ``score`` returns the mean average
precision, so a whole pipeline can be tuned with ``GridSearchCV``.
"""

from skretrieval.neighbors._retriever import ImageRetriever

__all__ = ["ImageRetriever"]
