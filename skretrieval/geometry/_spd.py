"""SPD matrices: validation, batched helpers, and the affine-invariant, log-Euclidean and
Stein distances with their kernels (the Gaussian ones are in :mod:`._gaussians`)."""

from functools import partial
from typing import NamedTuple

import numpy as np

from skretrieval._utils.linalg import squared_row_norms
from skretrieval._utils.validation import is_integer
from skretrieval.geometry._registry import (
    DistanceKernel,
    describe,
    register_kernel,
    vectors_hint,
)
from skretrieval.geometry._vectors import euclidean_distances

# Relative asymmetry |X - X^T| / max|X| tolerated (and then removed) in an SPD matrix: float32
# covariances computed by a BLAS are symmetric only to about this.
_SYMMETRY_RTOL = 1e-5
# Database matrices processed together for one query: keeps the (chunk, d, d) temporaries at
# about 32 MiB of float64 whatever the database size.
_CHUNK_ELEMENTS = 2**22


def _looks_like_spd(X):
    """Whether ``X`` is an array (or nested list) with three dimensions, whatever its values."""
    if not isinstance(X, (np.ndarray, list, tuple)):
        return False
    try:
        return np.ndim(X) == 3
    except ValueError:  # a ragged nested list
        return False


def check_spd_matrices(X, name="X", metric=None):
    """``X`` as a C-contiguous float64 ``(n, d, d)`` array of symmetrised SPD matrices, or raise.

    The error names the first offending matrix and what is wrong with it.
    """
    who = f"metric {metric!r} expects" if metric else f"{name} must be"
    if not isinstance(X, (np.ndarray, list, tuple)):
        raise TypeError(f"{who} SPD matrices of shape (n, d, d); got {describe(X)}.")
    try:
        X = np.asarray(X)
    except ValueError as error:
        raise ValueError(f"{who} SPD matrices of shape (n, d, d); got a ragged input.") from error
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{who} SPD matrices of real numbers; {name} has dtype {X.dtype}.")
    if X.ndim != 3 or X.shape[1] != X.shape[2]:
        raise ValueError(
            f"{who} SPD matrices of shape (n, d, d); got an array of shape {X.shape}"
            f"{vectors_hint(X)}."
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}; need at least one 1x1 matrix.")
    X = np.array(X, dtype=np.float64, order="C")
    finite = np.isfinite(X).all(axis=(1, 2))
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        what = "NaN" if np.isnan(X[first]).any() else "infinite values"
        raise ValueError(f"{name}[{first}] contains {what}; SPD matrices must be finite.")
    scale = np.abs(X).max(axis=(1, 2))
    asymmetry = np.abs(X - X.transpose(0, 2, 1)).max(axis=(1, 2))
    asymmetric = asymmetry > _SYMMETRY_RTOL * scale
    if asymmetric.any():
        first = int(np.flatnonzero(asymmetric)[0])
        raise ValueError(
            f"{name}[{first}] is not symmetric: max |X - X^T| = {asymmetry[first]:.3g} for "
            f"entries up to {scale[first]:.3g}."
        )
    X += X.transpose(0, 2, 1)
    X *= 0.5
    try:
        np.linalg.cholesky(X)
    except np.linalg.LinAlgError:
        # Only on the error path: find which matrix failed, with its smallest eigenvalue.
        smallest = np.linalg.eigvalsh(X)[:, 0]
        failed = np.flatnonzero(smallest <= 0)
        first = int(failed[0]) if len(failed) else int(np.argmin(smallest))
        raise ValueError(
            f"{name}[{first}] is not positive definite: smallest eigenvalue {smallest[first]:.3g}."
        ) from None
    return X


def check_same_dimension(query_dim, database_dim):
    """Raise if the query and database matrices differ in size."""
    if query_dim != database_dim:
        raise ValueError(
            f"The queries are {query_dim}x{query_dim} matrices but the database holds "
            f"{database_dim}x{database_dim} ones; both must have the same size."
        )


def chunks(n, d):
    """Slices of ``n`` database ``d x d`` matrices, a bounded amount of memory each."""
    step = max(1, _CHUNK_ELEMENTS // (d * d))
    return (slice(start, min(start + step, n)) for start in range(0, n, step))


def congruence(D, W):
    """``W^T D_i W`` for every matrix ``D_i`` of ``D``, with two GEMMs over the whole stack."""
    n, d, _ = D.shape
    # D_i W for all i in one product; its per-matrix transpose is W^T D_i (D_i is symmetric).
    DW = (D.reshape(n * d, d) @ W).reshape(n, d, d)
    return (DW.transpose(0, 2, 1).reshape(n * d, d) @ W).reshape(n, d, d)


def triu_vectors(S):
    """Upper triangles of symmetric matrices as rows, off-diagonal entries times sqrt(2).

    Then the dot product of two rows is the Frobenius inner product of the matrices.
    """
    d = S.shape[-1]
    rows, columns = np.triu_indices(d)
    weights = np.where(rows == columns, 1.0, np.sqrt(2.0))
    return S[:, rows, columns] * weights


def logdets(S):
    """``log det`` of SPD matrices from their Cholesky factors."""
    L = np.linalg.cholesky(S)
    return 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)


# Affine-invariant.


def _pairwise_affine_invariant(Q, D):
    check_same_dimension(Q.shape[-1], D.shape[-1])
    n, d = D.shape[0], D.shape[1]
    distances = np.empty((Q.shape[0], n))
    tiny = np.finfo(np.float64).tiny
    for i, q in enumerate(Q):
        # The generalised eigenvalues of (D_j, q) are the eigenvalues of q^-1/2 D_j q^-1/2.
        w, V = np.linalg.eigh(q)
        inv_sqrt = (V / np.sqrt(w)) @ V.T
        for part in chunks(n, d):
            eigenvalues = np.linalg.eigvalsh(congruence(D[part], inv_sqrt))
            log_eigenvalues = np.log(np.maximum(eigenvalues, tiny))
            distances[i, part] = np.einsum("ij,ij->i", log_eigenvalues, log_eigenvalues)
    return np.sqrt(distances, out=distances)


def affine_invariant_distances(Q, D):
    """Affine-invariant Riemannian distance between every SPD matrix of ``Q`` and of ``D``.

    ``d(q, d) = sqrt(sum_i log^2 lambda_i)`` with ``lambda_i`` the generalised eigenvalues of
    ``(q, d)``: per query one eigendecomposition gives ``q^{-1/2}``, then one batched
    ``eigvalsh`` of ``q^{-1/2} D q^{-1/2}`` covers the whole database.

    Parameters
    ----------
    Q : array-like of shape (n_queries, d, d)
        SPD matrices.
    D : array-like of shape (n_database, d, d)
        SPD matrices.

    Returns
    -------
    distances : ndarray of shape (n_queries, n_database)
        float64 distances.

    Examples
    --------
    >>> import numpy as np
    >>> Q = np.eye(2)[None]
    >>> D = np.stack([np.eye(2), np.diag([np.e, 1 / np.e])])
    >>> affine_invariant_distances(Q, D).round(6)
    array([[0.      , 1.414214]])
    """
    return _pairwise_affine_invariant(check_spd_matrices(Q, "Q"), check_spd_matrices(D, "D"))


# Log-Euclidean.


class _LogEuclideanState(NamedTuple):
    log_vectors: np.ndarray
    squared_norms: np.ndarray
    dim: int


def _matrix_logs(X):
    """Matrix logarithms of SPD matrices, by one batched eigendecomposition."""
    w, V = np.linalg.eigh(X)
    return (V * np.log(w)[:, None, :]) @ V.transpose(0, 2, 1)


def _prepare_log_euclidean(X):
    vectors = triu_vectors(_matrix_logs(X))
    return _LogEuclideanState(vectors, squared_row_norms(vectors), X.shape[-1])


def _pairwise_log_euclidean(query_state, database_state):
    check_same_dimension(query_state.dim, database_state.dim)
    return euclidean_distances(
        query_state.log_vectors,
        database_state.log_vectors,
        D_squared_norms=database_state.squared_norms,
    )


def log_euclidean_distances(Q, D):
    """Log-Euclidean distance ``|log q - log d|_F`` between every SPD matrix of ``Q`` and ``D``.

    Each matrix logarithm is computed once (a batched eigendecomposition); the distances are then
    Euclidean distances between the upper triangles of the logarithms (off-diagonal entries
    weighted by ``sqrt(2)``), one matrix product for the whole block.

    Parameters
    ----------
    Q : array-like of shape (n_queries, d, d)
        SPD matrices.
    D : array-like of shape (n_database, d, d)
        SPD matrices.

    Returns
    -------
    distances : ndarray of shape (n_queries, n_database)

    Examples
    --------
    >>> import numpy as np
    >>> log_euclidean_distances(np.eye(2)[None], np.diag([np.e, 1.0])[None]).round(6)
    array([[1.]])
    """
    return _pairwise_log_euclidean(
        _prepare_log_euclidean(check_spd_matrices(Q, "Q")),
        _prepare_log_euclidean(check_spd_matrices(D, "D")),
    )


# Affine-invariant search with a tangent-space shortlist.


class _AffineInvariantState(NamedTuple):
    matrices: np.ndarray
    shortlist: int | None = None
    reference_inv_sqrt: np.ndarray | None = None  # M^-1/2, M the set's log-Euclidean mean
    tangent: _LogEuclideanState | None = None  # log(M^-1/2 X M^-1/2)


def _prepare_affine_invariant(X, shortlist=None):
    """State of the ``"affine_invariant"`` kernel; ``shortlist`` switches on approximate search.

    With ``shortlist=k`` each set is also mapped to the tangent space at its log-Euclidean mean
    ``M``: ``log(M^-1/2 X M^-1/2)``, where Euclidean distances approximate affine-invariant ones
    (exactly at ``M``). The database's tangent vectors pick ``k`` candidates per query with one
    matrix product; only those get the exact distance.
    """
    if shortlist is None:
        return _AffineInvariantState(X)
    if not is_integer(shortlist):
        raise TypeError(f"shortlist must be an integer or None; got {type(shortlist).__name__}.")
    if shortlist < 1:
        raise ValueError(f"shortlist must be >= 1; got {shortlist}.")
    mean_log = _matrix_logs(X).mean(axis=0)
    # M^-1/2 = exp(-mean_log / 2).
    w, V = np.linalg.eigh(mean_log)
    reference_inv_sqrt = (V * np.exp(-0.5 * w)) @ V.T
    tangent = _prepare_log_euclidean(congruence(X, reference_inv_sqrt))
    return _AffineInvariantState(X, int(shortlist), reference_inv_sqrt, tangent)


def _prepare_affine_invariant_queries(X, shortlist=None):
    # Queries are mapped to the database's tangent space in pairwise; none of their own.
    return _AffineInvariantState(X)


def _pairwise_affine_invariant_search(query_state, database_state):
    Q, D = query_state.matrices, database_state.matrices
    k = database_state.shortlist
    if k is None or k >= D.shape[0]:
        return _pairwise_affine_invariant(Q, D)
    check_same_dimension(Q.shape[-1], D.shape[-1])
    query_tangent = _prepare_log_euclidean(congruence(Q, database_state.reference_inv_sqrt))
    approximate = _pairwise_log_euclidean(query_tangent, database_state.tangent)
    candidates = np.argpartition(approximate, k - 1, axis=1)[:, :k]
    distances = np.full(approximate.shape, np.inf)
    for i, q in enumerate(Q):
        distances[i, candidates[i]] = _pairwise_affine_invariant(q[None], D[candidates[i]])[0]
    return distances


# Stein (S-divergence).


class _SteinState(NamedTuple):
    matrices: np.ndarray
    logdets: np.ndarray


def _prepare_stein(X):
    return _SteinState(X, logdets(X))


def _pairwise_stein(query_state, database_state):
    Q, D = query_state.matrices, database_state.matrices
    check_same_dimension(Q.shape[-1], D.shape[-1])
    n, d = D.shape[0], D.shape[1]
    divergences = np.empty((Q.shape[0], n))
    for i, q in enumerate(Q):
        for part in chunks(n, d):
            midpoints = D[part] + q
            midpoints *= 0.5
            divergences[i, part] = logdets(midpoints)
    divergences -= 0.5 * query_state.logdets[:, None]
    divergences -= 0.5 * database_state.logdets[None, :]
    np.maximum(divergences, 0, out=divergences)
    return np.sqrt(divergences, out=divergences)


def stein_distances(Q, D):
    """Square root of the S-divergence (Jensen-Bregman LogDet) between SPD matrices.

    ``sqrt(log det((q + d) / 2) - log det(q) / 2 - log det(d) / 2)``, a metric (Sra 2016) and
    pyriemann's ``distance_logdet``. Per query, one batched Cholesky factorisation of the
    midpoints over the database.

    Parameters
    ----------
    Q : array-like of shape (n_queries, d, d)
        SPD matrices.
    D : array-like of shape (n_database, d, d)
        SPD matrices.

    Returns
    -------
    distances : ndarray of shape (n_queries, n_database)

    Examples
    --------
    >>> import numpy as np
    >>> stein_distances(np.eye(1)[None], np.eye(1)[None])
    array([[0.]])
    """
    return _pairwise_stein(
        _prepare_stein(check_spd_matrices(Q, "Q")), _prepare_stein(check_spd_matrices(D, "D"))
    )


def _validate_spd(metric, X, name="X"):
    """The ``validate`` of the SPD kernels: :func:`check_spd_matrices` naming ``metric``."""
    return check_spd_matrices(X, name, metric=metric)


def register_spd_kernel(metric, prepare, pairwise, prepare_queries=None):
    """Register ``metric`` for SPD matrices (an ``(n, d, d)`` array), validated as such."""
    register_kernel(
        DistanceKernel(
            name=metric,
            descriptor="SPD matrices",
            validate=partial(_validate_spd, metric),
            prepare=prepare,
            pairwise=pairwise,
            accepts=_looks_like_spd,
            prepare_queries=prepare_queries,
            layout="of shape (n, d, d)",
        )
    )


register_spd_kernel(
    "affine_invariant",
    _prepare_affine_invariant,
    _pairwise_affine_invariant_search,
    _prepare_affine_invariant_queries,
)
register_spd_kernel("log_euclidean", _prepare_log_euclidean, _pairwise_log_euclidean)
register_spd_kernel("stein", _prepare_stein, _pairwise_stein)
