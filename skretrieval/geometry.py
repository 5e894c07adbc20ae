"""Batched pairwise distances between sets of descriptors.

Each distance is a *kernel* in two halves:

- ``prepare(X)`` does the per-set work once (normalising, norms, later matrix logarithms,
  Cholesky factors, inverses) and returns a state;
- ``pairwise(query_state, database_state)`` returns the ``(n_queries, n_database)`` distance block
  with one matrix product (or one batched decomposition) over the whole database, never a Python
  loop per pair.

:class:`~skretrieval.neighbors.ImageRetriever` prepares its database once at ``fit`` and then
calls ``pairwise`` on blocks of queries. New descriptor types plug in by calling
:func:`register_kernel`.

The plain functions (:func:`cosine_distances`, :func:`euclidean_distances`) are the maths;
:class:`DistanceKernel` binds them to a descriptor type.
"""

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from sklearn.utils.validation import check_array

__all__ = [
    "DistanceKernel",
    "cosine_distances",
    "euclidean_distances",
    "get_kernel",
    "register_kernel",
    "registered_metrics",
]


def _l2_normalize(X):
    """Rows scaled to unit L2 norm; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, np.finfo(X.dtype).tiny)


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
        Q, D = _l2_normalize(Q), _l2_normalize(D)
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
    if D_squared_norms is None:
        D_squared_norms = np.einsum("ij,ij->i", D, D)
    # |q - d|^2 = |q|^2 + |d|^2 - 2 <q, d>; rounding can make it slightly negative.
    distances = Q @ D.T
    distances *= -2
    distances += np.einsum("ij,ij->i", Q, Q)[:, None]
    distances += D_squared_norms[None, :]
    np.maximum(distances, 0, out=distances)
    return np.sqrt(distances, out=distances)


@dataclass(frozen=True)
class DistanceKernel:
    """A distance between descriptors of one type, split into per-set and per-block work.

    Parameters
    ----------
    name : str
        The ``metric`` name users pass to :class:`~skretrieval.neighbors.ImageRetriever`.
    descriptor : str
        What the descriptors are, for error messages: ``"vectors"`` (an ``(n, d)`` array),
        later ``"SPD matrices"`` or ``"Gaussian mixtures"``.
    validate : callable
        ``validate(X, name) -> X``; checks the type and values of a descriptor set, raising a
        ``ValueError``/``TypeError`` that names the problem.
    prepare : callable
        ``prepare(X, **metric_params) -> state``; the work done once per set.
    pairwise : callable
        ``pairwise(query_state, database_state) -> (n_queries, n_database)`` distances.
    n_samples : callable
        ``n_samples(X) -> int`` for a validated set.
    """

    name: str
    descriptor: str
    validate: Callable[..., Any]
    prepare: Callable[..., Any]
    pairwise: Callable[[Any, Any], np.ndarray]
    n_samples: Callable[[Any], int] = len


_KERNELS = {}


def register_kernel(kernel):
    """Make ``kernel.name`` available as an ``ImageRetriever`` metric (replacing any previous)."""
    _KERNELS[kernel.name] = kernel
    return kernel


def registered_metrics():
    """Names of all registered metrics, sorted."""
    return sorted(_KERNELS)


def get_kernel(metric):
    """Return the registered :class:`DistanceKernel` for ``metric``, or raise a ``ValueError``."""
    try:
        return _KERNELS[metric]
    except KeyError:
        raise ValueError(
            f"Unknown metric {metric!r}; registered metrics are {registered_metrics()}."
        ) from None


# --- vectors: cosine and euclidean -------------------------------------------------------------


def _validate_vectors(X, name="X"):
    return check_array(X, dtype=[np.float64, np.float32], input_name=name)


def _prepare_cosine(X):
    return _l2_normalize(X)


def _pairwise_cosine(Q, D):
    return cosine_distances(Q, D, normalized=True)


def _prepare_euclidean(X):
    return X, np.einsum("ij,ij->i", X, X)


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
    )
)
register_kernel(
    DistanceKernel(
        name="euclidean",
        descriptor="vectors",
        validate=_validate_vectors,
        prepare=_prepare_euclidean,
        pairwise=_pairwise_euclidean,
    )
)
