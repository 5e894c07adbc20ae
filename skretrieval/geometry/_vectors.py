"""Distances between vectors: cosine and Euclidean, and their kernels."""

import numpy as np
from sklearn.utils.validation import check_array

from skretrieval._utils.linalg import (
    l2_normalize,
    scaled_squared_euclidean_distances,
    squared_row_norms,
)
from skretrieval.geometry._registry import DistanceKernel, looks_like_vectors, register_kernel


def cosine_distances(Q, D, *, normalized=False):
    """Cosine distance ``1 - <q, d> / (|q| |d|)`` between every row of ``Q`` and of ``D``.

    Parameters
    ----------
    Q : ndarray of shape (n_queries, n_features)
    D : ndarray of shape (n_database, n_features)
    normalized : bool, default=False
        Set when both sets already have unit rows, to skip the normalisation.

    Returns
    -------
    distances : ndarray of shape (n_queries, n_database)
        Values in ``[0, 2]``; a zero vector is at distance 1 from everything.

    Examples
    --------
    >>> import numpy as np
    >>> cosine_distances(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 1.0]]))
    array([[0., 1.]])
    """
    if not normalized:
        Q, D = l2_normalize(Q), l2_normalize(D)
    distances = Q @ D.T
    # 1 - s computed in place; clipping removes the rounding that takes s past +-1.
    np.subtract(1, distances, out=distances)
    return np.clip(distances, 0, 2, out=distances)


def euclidean_distances(Q, D, *, D_squared_norms=None):
    """Euclidean distance between every row of ``Q`` and of ``D``, via one matrix product.

    Parameters
    ----------
    Q : ndarray of shape (n_queries, n_features)
    D : ndarray of shape (n_database, n_features)
    D_squared_norms : ndarray of shape (n_database,), default=None
        Precomputed ``(D ** 2).sum(axis=1)``, to reuse across query blocks.

    Returns
    -------
    distances : ndarray of shape (n_queries, n_database)

    Examples
    --------
    >>> import numpy as np
    >>> euclidean_distances(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]]))
    array([[5.]])
    """
    # Scaled, so that distances whose squares leave the dtype's range (float32 data above
    # about 1e19 or below 1e-19) stay exact.
    distances, scale = scaled_squared_euclidean_distances(Q, D, D_squared_norms=D_squared_norms)
    distances = np.sqrt(distances, out=distances)
    if scale != 1:
        with np.errstate(over="ignore"):  # inf where the distance does not fit the dtype
            distances *= scale
    return distances


def _validate_vectors(X, name="X"):
    return check_array(X, dtype=[np.float64, np.float32], input_name=name)


def _prepare_cosine(X):
    return l2_normalize(X)


def _pairwise_cosine(Q, D):
    return cosine_distances(Q, D, normalized=True)


def _prepare_euclidean(X):
    return X, squared_row_norms(X)


def _pairwise_euclidean(query_state, database_state):
    Q, _ = query_state
    D, D_squared_norms = database_state
    return euclidean_distances(Q, D, D_squared_norms=D_squared_norms)


register_kernel(
    DistanceKernel(
        name="cosine",
        descriptor="vectors",
        validate=_validate_vectors,
        prepare=_prepare_cosine,
        pairwise=_pairwise_cosine,
        accepts=looks_like_vectors,
        layout="of shape (n, d)",
    )
)
register_kernel(
    DistanceKernel(
        name="euclidean",
        descriptor="vectors",
        validate=_validate_vectors,
        prepare=_prepare_euclidean,
        pairwise=_pairwise_euclidean,
        accepts=looks_like_vectors,
        layout="of shape (n, d)",
    )
)
