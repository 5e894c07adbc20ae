"""Extraction and search on a Dask cluster.

:func:`transform` describes image files on the workers of a cluster with any fitted transformer
or pipeline (a :class:`~skretrieval.extraction.CNNFeatureExtractor` with its pooling, then
whitening, ...), chunk by chunk, into a ``dask.array`` that stays on the workers or into a zarr
store that a stopped run resumes. :class:`~skretrieval.neighbors.ImageRetriever` fitted on such a
``dask.array`` keeps its database on the workers, block by block, and searches each block where
it lies. scikit-learn's own parallelism (``GridSearchCV``, ``n_jobs``) runs on the same cluster
under ``joblib.parallel_backend("dask")``. ``docs/scaling_out.md`` shows how to start a cluster
and use the three.

dask, distributed and zarr are optional: ``pip install "scikit-retrieval[distributed]"`` (from a
source checkout ``pip install -e ".[distributed]"``). Importing this package does not need them;
calling :func:`transform` without them raises an ImportError that says so.

The private modules: ``_transform`` (the public function, the runners of chunks on a client or
dask's local scheduler), ``_chunks`` (what runs on a worker: one chunk, unreadable images, the
device) and ``_store`` (the zarr layout, the fingerprint of the inputs, per-chunk writes).
"""

from skretrieval.distributed._transform import transform

__all__ = ["transform"]
