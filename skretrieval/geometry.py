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

The plain functions (:func:`cosine_distances`, :func:`euclidean_distances`,
:func:`affine_invariant_distances`, ...) are the maths; :class:`DistanceKernel` binds them to a
descriptor type. One metric name may serve several descriptor types (``"wasserstein"`` and
``"kl"`` for SPD matrices and Gaussian mixtures): kernels are registered per
``(name, descriptor)`` and the one whose ``accepts`` predicate takes the input is used.

SPD matrices (an ``(n, d, d)`` array of covariance matrices, each read as the zero-mean Gaussian
``N(0, S)``) have these metrics:

- ``"affine_invariant"``: ``sqrt(sum_i log^2 lambda_i)`` over the generalised eigenvalues of
  ``(q, d)``; a true metric (the geodesic distance of the affine-invariant Riemannian metric).
  ``metric_params={"shortlist": k}`` makes the search approximate and faster: ``k`` candidates
  per query by Euclidean distance in the tangent space at the database's log-Euclidean mean
  (one matrix product), then the exact distance for those only; every other database item is
  at distance ``+inf``, so ask for at most ``k`` neighbours.
- ``"log_euclidean"``: ``|log q - log d|_F``; a true metric.
- ``"wasserstein"``: the Bures-Wasserstein (2-Wasserstein) distance between the Gaussians; a
  true metric.
- ``"stein"``: ``sqrt(logdet((q + d) / 2) - logdet(q) / 2 - logdet(d) / 2)``, the square root
  of the S-divergence (Jensen-Bregman LogDet); a true metric (Sra 2016), equal to pyriemann's
  ``distance_logdet``.
- ``"kl"``: ``KL(N(0, q) || N(0, d))``, query first, database second. Not symmetric and not a
  metric; ranking uses it as it is.
- ``"jeffreys"``: ``KL(q || d) + KL(d || q)`` (the sum, not the mean, as pyriemann's
  ``distance_kullback_sym``); symmetric but without the triangle inequality.

Every SPD kernel works in float64 whatever the input precision, and returns float64.

Gaussian mixtures (a :class:`~skretrieval.descriptors.GaussianMixtures` set, one mixture per
image, ``"full"`` or ``"diag"`` covariances) have these metrics:

- ``"wasserstein"``: the mixture Wasserstein distance MW2 (Delon and Desolneux 2020), optimal
  transport between the components with the squared Bures-Wasserstein cost; a true metric on
  mixtures. See :func:`mixture_wasserstein_distances`.
- ``"kl"``: ``KL(query || database)`` by ``metric_params={"approximation": ...}``:
  ``"variational"`` (default), ``"matched_bound"`` or ``"monte_carlo"`` (with ``n_samples``
  and ``random_state``). See :func:`mixture_kl_divergences`.
"""

from dataclasses import dataclass
from functools import partial
from numbers import Integral
from typing import Any, Callable, NamedTuple

import numpy as np
from sklearn.preprocessing import normalize
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array

__all__ = [
    "DistanceKernel",
    "affine_invariant_distances",
    "bures_wasserstein_distances",
    "cosine_distances",
    "euclidean_distances",
    "get_kernel",
    "jeffreys_distances",
    "kl_divergences",
    "log_euclidean_distances",
    "mixture_kl_divergences",
    "mixture_wasserstein_distances",
    "register_kernel",
    "registered_metrics",
    "stein_distances",
]


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
        Q, D = normalize(Q), normalize(D)
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
        ``"SPD matrices"`` (an ``(n, d, d)`` array), later ``"Gaussian mixtures"``.
    validate : callable
        ``validate(X, name) -> X``; checks the type and values of a descriptor set, raising a
        ``ValueError``/``TypeError`` that names the problem.
    prepare : callable
        ``prepare(X, **metric_params) -> state``; the work done once per set.
    pairwise : callable
        ``pairwise(query_state, database_state) -> (n_queries, n_database)`` distances.
    n_samples : callable
        ``n_samples(X) -> int`` for a validated set.
    accepts : callable or None, default=None
        ``accepts(X) -> bool``, a cheap test of whether ``X`` is of this descriptor type (its
        container and shape, not its values). Used to choose among kernels registered under the
        same name for different descriptor types; None accepts anything.
    prepare_queries : callable or None, default=None
        ``prepare_queries(X, **metric_params) -> state`` for blocks of queries, when they need
        less than the database (e.g. no search index of their own); None uses ``prepare``.
    by_default : bool, default=True
        Whether ``get_kernel(name)`` without descriptors may return this kernel. False for
        kernels of a dedicated container type (``GaussianMixtures``), which is never ambiguous:
        code that asks for a metric by name alone keeps getting the array kernel it was written
        for, and error messages list such kernels last.
    """

    name: str
    descriptor: str
    validate: Callable[..., Any]
    prepare: Callable[..., Any]
    pairwise: Callable[[Any, Any], np.ndarray]
    n_samples: Callable[[Any], int] = len
    accepts: Callable[[Any], bool] | None = None
    prepare_queries: Callable[..., Any] | None = None
    by_default: bool = True


# metric name -> {descriptor: kernel}, in registration order.
_KERNELS = {}


def register_kernel(kernel):
    """Make ``kernel.name`` available as an ``ImageRetriever`` metric for its descriptor type.

    A kernel replaces any previous one with the same name and descriptor; kernels with the same
    name and different descriptors live side by side and are chosen by their ``accepts``.
    """
    _KERNELS.setdefault(kernel.name, {})[kernel.descriptor] = kernel
    return kernel


def registered_metrics():
    """Names of all registered metrics, sorted."""
    return sorted(_KERNELS)


def get_kernel(metric, X=None):
    """Return the :class:`DistanceKernel` for ``metric`` (and input ``X``), or raise.

    Parameters
    ----------
    metric : str
        A registered metric name.
    X : descriptor set, default=None
        The descriptors to be compared. Required when several descriptor types share the
        name: the kernel whose ``accepts`` takes ``X`` is returned. Without ``X``, the one
        kernel registered with ``by_default=True`` (for ``"kl"`` and ``"wasserstein"``: the SPD
        one), if there is exactly one.

    Returns
    -------
    kernel : DistanceKernel
    """
    try:
        kernels = tuple(_KERNELS[metric].values())
    except KeyError:
        raise ValueError(
            f"Unknown metric {metric!r}; registered metrics are {registered_metrics()}."
        ) from None
    if len(kernels) == 1:
        return kernels[0]
    # Kernels that get_kernel(metric) may return first; dedicated container types last.
    kernels = tuple(sorted(kernels, key=lambda kernel: not kernel.by_default))
    if X is None and sum(kernel.by_default for kernel in kernels) == 1:
        return kernels[0]
    if X is None:
        raise ValueError(
            f"Metric {metric!r} is defined for several descriptor types "
            f"({', '.join(kernel.descriptor for kernel in kernels)}); pass the descriptors as X "
            "to choose."
        )
    return _select_kernel(metric, kernels, X)


def _describe(X):
    shape = getattr(X, "shape", None)
    if isinstance(shape, tuple):
        return f"{type(X).__name__} of shape {shape}"
    return f"a {type(X).__name__}"


def _vectors_hint(X):
    try:
        is_matrix = np.ndim(X) == 2
    except (ValueError, TypeError):
        is_matrix = False
    return " -- vectors go with metric='cosine' or 'euclidean'" if is_matrix else ""


def _select_kernel(metric, kernels, X):
    for kernel in kernels:
        if kernel.accepts is None or kernel.accepts(X):
            return kernel
    expected = " or ".join(kernel.descriptor for kernel in kernels)
    raise ValueError(f"metric {metric!r} expects {expected}; got {_describe(X)}{_vectors_hint(X)}.")


# --- vectors: cosine and euclidean -------------------------------------------------------------


def _validate_vectors(X, name="X"):
    return check_array(X, dtype=[np.float64, np.float32], input_name=name)


def _prepare_cosine(X):
    return normalize(X)


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


# --- SPD matrices ------------------------------------------------------------------------------

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


def _check_spd_matrices(X, name="X", metric=None):
    """``X`` as a C-contiguous float64 ``(n, d, d)`` array of symmetrised SPD matrices, or raise.

    The error names the first offending matrix and what is wrong with it.
    """
    who = f"metric {metric!r} expects" if metric else f"{name} must be"
    if not isinstance(X, (np.ndarray, list, tuple)):
        raise TypeError(f"{who} SPD matrices of shape (n, d, d); got {_describe(X)}.")
    try:
        X = np.asarray(X)
    except ValueError as error:
        raise ValueError(f"{who} SPD matrices of shape (n, d, d); got a ragged input.") from error
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{who} SPD matrices of real numbers; {name} has dtype {X.dtype}.")
    if X.ndim != 3 or X.shape[1] != X.shape[2]:
        raise ValueError(
            f"{who} SPD matrices of shape (n, d, d); got an array of shape {X.shape}"
            f"{_vectors_hint(X)}."
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


def _check_means(means, n, d, name):
    if means is None:
        return None
    means = np.asarray(means, dtype=np.float64)
    if means.shape != (n, d):
        raise ValueError(f"{name} must have shape ({n}, {d}); got {means.shape}.")
    if not np.isfinite(means).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return means


def _check_same_dimension(query_dim, database_dim):
    if query_dim != database_dim:
        raise ValueError(
            f"The queries are {query_dim}x{query_dim} matrices but the database holds "
            f"{database_dim}x{database_dim} ones; both must have the same size."
        )


def _chunks(n, d):
    step = max(1, _CHUNK_ELEMENTS // (d * d))
    return (slice(start, min(start + step, n)) for start in range(0, n, step))


def _congruence(D, W):
    """``W^T D_i W`` for every matrix ``D_i`` of ``D``, with two GEMMs over the whole stack."""
    n, d, _ = D.shape
    # D_i W for all i in one product; its per-matrix transpose is W^T D_i (D_i is symmetric).
    DW = (D.reshape(n * d, d) @ W).reshape(n, d, d)
    return (DW.transpose(0, 2, 1).reshape(n * d, d) @ W).reshape(n, d, d)


def _triu_vectors(S):
    """Upper triangles of symmetric matrices as rows, off-diagonal entries times sqrt(2).

    Then the dot product of two rows is the Frobenius inner product of the matrices.
    """
    d = S.shape[-1]
    rows, columns = np.triu_indices(d)
    weights = np.where(rows == columns, 1.0, np.sqrt(2.0))
    return S[:, rows, columns] * weights


def _logdets(S):
    """``log det`` of SPD matrices from their Cholesky factors."""
    L = np.linalg.cholesky(S)
    return 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)


# Affine-invariant.


def _pairwise_affine_invariant(Q, D):
    _check_same_dimension(Q.shape[-1], D.shape[-1])
    n, d = D.shape[0], D.shape[1]
    distances = np.empty((Q.shape[0], n))
    tiny = np.finfo(np.float64).tiny
    for i, q in enumerate(Q):
        # The generalised eigenvalues of (D_j, q) are the eigenvalues of q^-1/2 D_j q^-1/2.
        w, V = np.linalg.eigh(q)
        inv_sqrt = (V / np.sqrt(w)) @ V.T
        for part in _chunks(n, d):
            eigenvalues = np.linalg.eigvalsh(_congruence(D[part], inv_sqrt))
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
    return _pairwise_affine_invariant(_check_spd_matrices(Q, "Q"), _check_spd_matrices(D, "D"))


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
    vectors = _triu_vectors(_matrix_logs(X))
    return _LogEuclideanState(vectors, np.einsum("ij,ij->i", vectors, vectors), X.shape[-1])


def _pairwise_log_euclidean(query_state, database_state):
    _check_same_dimension(query_state.dim, database_state.dim)
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
        _prepare_log_euclidean(_check_spd_matrices(Q, "Q")),
        _prepare_log_euclidean(_check_spd_matrices(D, "D")),
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
    if not isinstance(shortlist, Integral) or isinstance(shortlist, bool):
        raise TypeError(f"shortlist must be an integer or None; got {type(shortlist).__name__}.")
    if shortlist < 1:
        raise ValueError(f"shortlist must be >= 1; got {shortlist}.")
    mean_log = _matrix_logs(X).mean(axis=0)
    # M^-1/2 = exp(-mean_log / 2).
    w, V = np.linalg.eigh(mean_log)
    reference_inv_sqrt = (V * np.exp(-0.5 * w)) @ V.T
    tangent = _prepare_log_euclidean(_congruence(X, reference_inv_sqrt))
    return _AffineInvariantState(X, int(shortlist), reference_inv_sqrt, tangent)


def _prepare_affine_invariant_queries(X, shortlist=None):
    # Queries are mapped to the database's tangent space in pairwise; none of their own.
    return _AffineInvariantState(X)


def _pairwise_affine_invariant_search(query_state, database_state):
    Q, D = query_state.matrices, database_state.matrices
    k = database_state.shortlist
    if k is None or k >= D.shape[0]:
        return _pairwise_affine_invariant(Q, D)
    _check_same_dimension(Q.shape[-1], D.shape[-1])
    query_tangent = _prepare_log_euclidean(_congruence(Q, database_state.reference_inv_sqrt))
    approximate = _pairwise_log_euclidean(query_tangent, database_state.tangent)
    candidates = np.argpartition(approximate, k - 1, axis=1)[:, :k]
    distances = np.full(approximate.shape, np.inf)
    for i, q in enumerate(Q):
        distances[i, candidates[i]] = _pairwise_affine_invariant(q[None], D[candidates[i]])[0]
    return distances


# Gaussians: Kullback-Leibler and Jeffreys.


class _GaussianState(NamedTuple):
    """What the closed-form KL needs of a set of Gaussians ``N(m, S)``, ``P = S^-1``."""

    moment_vectors: np.ndarray  # triu vectors of S + m m^T
    means: np.ndarray | None  # None for zero means
    precision_vectors: np.ndarray  # triu vectors of P
    precision_means: np.ndarray | None  # P m
    mahalanobis_norms: np.ndarray | None  # m^T P m
    logdets: np.ndarray
    dim: int


def _prepare_gaussians(covariances, means=None):
    precisions = np.linalg.inv(covariances)
    precisions += precisions.transpose(0, 2, 1)
    precisions *= 0.5
    moments = covariances
    precision_means = mahalanobis_norms = None
    if means is not None:
        moments = covariances + means[:, :, None] * means[:, None, :]
        precision_means = np.einsum("nij,nj->ni", precisions, means)
        mahalanobis_norms = np.einsum("ni,ni->n", means, precision_means)
    return _GaussianState(
        _triu_vectors(moments),
        means,
        _triu_vectors(precisions),
        precision_means,
        mahalanobis_norms,
        _logdets(covariances),
        covariances.shape[-1],
    )


def _kl_without_logdets(query_state, database_state):
    """``tr(Pd Sq) + (md - mq)^T Pd (md - mq)`` for every pair, by matrix products.

    ``tr(Pd Sq) + mq^T Pd mq = <Pd, Sq + mq mq^T>_F`` is one GEMM; the cross term another.
    """
    _check_same_dimension(query_state.dim, database_state.dim)
    terms = query_state.moment_vectors @ database_state.precision_vectors.T
    if database_state.means is not None:
        terms += database_state.mahalanobis_norms[None, :]
        if query_state.means is not None:
            terms -= 2 * (query_state.means @ database_state.precision_means.T)
    # With zero database means, mq^T Pd mq is already inside the moment vectors.
    return terms


def _pairwise_kl(query_state, database_state):
    divergences = _kl_without_logdets(query_state, database_state)
    divergences += database_state.logdets[None, :]
    divergences -= (query_state.logdets + query_state.dim)[:, None]
    divergences *= 0.5
    return np.maximum(divergences, 0, out=divergences)


def _pairwise_jeffreys(query_state, database_state):
    # The log-determinants of KL(q || d) and KL(d || q) cancel.
    divergences = _kl_without_logdets(query_state, database_state)
    divergences += _kl_without_logdets(database_state, query_state).T
    divergences *= 0.5
    divergences -= query_state.dim
    return np.maximum(divergences, 0, out=divergences)


def _check_gaussians(Q, D, Q_means, D_means):
    """Validated covariances and means of query and database Gaussians."""
    Q, D = _check_spd_matrices(Q, "Q"), _check_spd_matrices(D, "D")
    _check_same_dimension(Q.shape[-1], D.shape[-1])
    Q_means = _check_means(Q_means, *Q.shape[:2], "Q_means")
    D_means = _check_means(D_means, *D.shape[:2], "D_means")
    return Q, D, Q_means, D_means


def _gaussian_states(Q, D, Q_means, D_means):
    Q, D, Q_means, D_means = _check_gaussians(Q, D, Q_means, D_means)
    return _prepare_gaussians(Q, Q_means), _prepare_gaussians(D, D_means)


def kl_divergences(Q, D, *, Q_means=None, D_means=None):
    """Kullback-Leibler divergence ``KL(N(mq, q) || N(md, d))`` for every query and database item.

    ``0.5 [tr(Sd^-1 Sq) + (md - mq)^T Sd^-1 (md - mq) - n + log det Sd - log det Sq]``, with the
    inverses and log-determinants computed once per matrix and the pairwise terms as matrix
    products. The direction is query ``||`` database (pyriemann's ``distance_kullback(q, d)``);
    it is not symmetric.

    Parameters
    ----------
    Q : array-like of shape (n_queries, d, d)
        Covariance matrices of the query Gaussians.
    D : array-like of shape (n_database, d, d)
        Covariance matrices of the database Gaussians.
    Q_means : array-like of shape (n_queries, d), default=None
        Means of the query Gaussians; None for zero means.
    D_means : array-like of shape (n_database, d), default=None
        Means of the database Gaussians; None for zero means.

    Returns
    -------
    divergences : ndarray of shape (n_queries, n_database)
        Non-negative float64 divergences.

    Examples
    --------
    >>> import numpy as np
    >>> kl_divergences(np.eye(1)[None], np.eye(1)[None], D_means=[[2.0]])
    array([[2.]])
    """
    return _pairwise_kl(*_gaussian_states(Q, D, Q_means, D_means))


def jeffreys_distances(Q, D, *, Q_means=None, D_means=None):
    """Jeffreys divergence ``KL(q || d) + KL(d || q)`` for every query and database item.

    The symmetrised KL as a sum (pyriemann's ``distance_kullback_sym``), not the mean some
    authors use. Symmetric, but not a metric (no triangle inequality).

    Parameters
    ----------
    Q : array-like of shape (n_queries, d, d)
        Covariance matrices of the query Gaussians.
    D : array-like of shape (n_database, d, d)
        Covariance matrices of the database Gaussians.
    Q_means : array-like of shape (n_queries, d), default=None
        Means of the query Gaussians; None for zero means.
    D_means : array-like of shape (n_database, d), default=None
        Means of the database Gaussians; None for zero means.

    Returns
    -------
    divergences : ndarray of shape (n_queries, n_database)

    Examples
    --------
    >>> import numpy as np
    >>> jeffreys_distances(np.eye(1)[None], 2 * np.eye(1)[None])
    array([[0.25]])
    """
    return _pairwise_jeffreys(*_gaussian_states(Q, D, Q_means, D_means))


# Bures-Wasserstein.


class _BuresState(NamedTuple):
    covariances: np.ndarray
    means: np.ndarray | None
    traces: np.ndarray


def _prepare_bures(X, means=None):
    return _BuresState(X, means, np.trace(X, axis1=1, axis2=2))


def _pairwise_bures(query_state, database_state):
    squared = _squared_bures(query_state, database_state)
    return np.sqrt(squared, out=squared)


def _squared_bures(query_state, database_state):
    """``W2^2`` for every pair, clipped at zero (also the cost of the mixture Wasserstein)."""
    Q, D = query_state.covariances, database_state.covariances
    _check_same_dimension(Q.shape[-1], D.shape[-1])
    n, d = D.shape[0], D.shape[1]
    squared = query_state.traces[:, None] + database_state.traces[None, :]
    for i, q in enumerate(Q):
        # With q = L L^T, L^T D_j L is similar to q^1/2 D_j q^1/2: same eigenvalues, and a
        # Cholesky factor is cheaper than a matrix square root.
        L = np.linalg.cholesky(q)
        for part in _chunks(n, d):
            eigenvalues = np.linalg.eigvalsh(_congruence(D[part], L))
            np.maximum(eigenvalues, 0, out=eigenvalues)  # rounding below zero
            squared[i, part] -= 2 * np.sqrt(eigenvalues).sum(axis=1)
    Qm, Dm = query_state.means, database_state.means
    if Qm is not None or Dm is not None:
        Qm = np.zeros(Q.shape[:2]) if Qm is None else Qm
        Dm = np.zeros(D.shape[:2]) if Dm is None else Dm
        squared += euclidean_distances(Qm, Dm) ** 2
    return np.maximum(squared, 0, out=squared)


def bures_wasserstein_distances(Q, D, *, Q_means=None, D_means=None):
    """2-Wasserstein distance between Gaussians ``N(mq, A)`` and ``N(md, B)``.

    ``W2^2 = |mq - md|^2 + tr A + tr B - 2 tr (A^1/2 B A^1/2)^1/2``. Per query ``A = L L^T``
    (Cholesky) and the last trace is the sum of the square roots of the eigenvalues of
    ``L^T B L``, one batched ``eigvalsh`` over the database. Eigenvalues and ``W2^2`` that
    rounding takes below zero are clipped to zero. Returns ``W2`` (the distance, not its
    square), as pyriemann's ``distance_wasserstein`` and POT's ``bures_wasserstein_distance``.

    Parameters
    ----------
    Q : array-like of shape (n_queries, d, d)
        Covariance matrices of the query Gaussians.
    D : array-like of shape (n_database, d, d)
        Covariance matrices of the database Gaussians.
    Q_means : array-like of shape (n_queries, d), default=None
        Means of the query Gaussians; None for zero means.
    D_means : array-like of shape (n_database, d), default=None
        Means of the database Gaussians; None for zero means.

    Returns
    -------
    distances : ndarray of shape (n_queries, n_database)

    Examples
    --------
    >>> import numpy as np
    >>> bures_wasserstein_distances(np.eye(2)[None], 4 * np.eye(2)[None]).round(6)
    array([[1.414214]])
    """
    Q, D, Q_means, D_means = _check_gaussians(Q, D, Q_means, D_means)
    return _pairwise_bures(_prepare_bures(Q, Q_means), _prepare_bures(D, D_means))


# Stein (S-divergence).


class _SteinState(NamedTuple):
    matrices: np.ndarray
    logdets: np.ndarray


def _prepare_stein(X):
    return _SteinState(X, _logdets(X))


def _pairwise_stein(query_state, database_state):
    Q, D = query_state.matrices, database_state.matrices
    _check_same_dimension(Q.shape[-1], D.shape[-1])
    n, d = D.shape[0], D.shape[1]
    divergences = np.empty((Q.shape[0], n))
    for i, q in enumerate(Q):
        for part in _chunks(n, d):
            midpoints = D[part] + q
            midpoints *= 0.5
            divergences[i, part] = _logdets(midpoints)
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
        _prepare_stein(_check_spd_matrices(Q, "Q")), _prepare_stein(_check_spd_matrices(D, "D"))
    )


def _validate_spd(metric, X, name="X"):
    return _check_spd_matrices(X, name, metric=metric)


# metric -> (prepare, pairwise, prepare_queries or None)
_SPD_KERNELS = {
    "affine_invariant": (
        _prepare_affine_invariant,
        _pairwise_affine_invariant_search,
        _prepare_affine_invariant_queries,
    ),
    "log_euclidean": (_prepare_log_euclidean, _pairwise_log_euclidean, None),
    "kl": (_prepare_gaussians, _pairwise_kl, None),
    "jeffreys": (_prepare_gaussians, _pairwise_jeffreys, None),
    "wasserstein": (_prepare_bures, _pairwise_bures, None),
    "stein": (_prepare_stein, _pairwise_stein, None),
}

for _metric, (_prepare, _pairwise, _prepare_queries) in _SPD_KERNELS.items():
    register_kernel(
        DistanceKernel(
            name=_metric,
            descriptor="SPD matrices",
            validate=partial(_validate_spd, _metric),
            prepare=_prepare,
            pairwise=_pairwise,
            accepts=_looks_like_spd,
            prepare_queries=_prepare_queries,
        )
    )


# --- Gaussian mixtures -------------------------------------------------------------------------
#
# A GaussianMixtures set (skretrieval.descriptors) holds one mixture of K Gaussians per image.
# Every distance first compares all components of the queries with all components of the
# database at once (the Gaussian formulas above, on the flattened components), then combines
# the (K_q, K_d) block of each pair of images.

_MIXTURE_KL_APPROXIMATIONS = ("variational", "matched_bound", "monte_carlo")


def _is_gaussian_mixtures(X):
    from skretrieval.descriptors import GaussianMixtures  # descriptors is the heavier module

    return isinstance(X, GaussianMixtures)


def _check_gaussian_mixtures(X, name="X", metric=None):
    if not _is_gaussian_mixtures(X):
        who = f"metric {metric!r} expects" if metric else f"{name} must be"
        raise TypeError(f"{who} a GaussianMixtures set; got {_describe(X)}.")
    if len(X) == 0 or X.n_components == 0 or X.n_features == 0:
        raise ValueError(f"{name} is empty: {X!r}; need at least one mixture.")
    return X


def _check_same_mixture_dimension(query_dim, database_dim):
    if query_dim != database_dim:
        raise ValueError(
            f"The queries are mixtures of {query_dim}-dimensional Gaussians but the database "
            f"holds {database_dim}-dimensional ones; both must have the same dimension."
        )


def _normalized_weights(X):
    # Rows sum to 1 within 1e-6; exact sums keep the transport problems balanced.
    return X.weights / X.weights.sum(axis=1, keepdims=True)


def _flat_components(X):
    """Means ``(n K, d)`` and full covariances ``(n K, d, d)`` of all components, in order."""
    n, n_components, d = X.means.shape
    covariances = X.full_covariances().reshape(n * n_components, d, d)
    return X.means.reshape(n * n_components, d), covariances


# Mixture Wasserstein (MW2).


class _MixtureBuresState(NamedTuple):
    weights: np.ndarray  # (n, K), rows summing to 1
    n_components: int
    dim: int
    components: _BuresState | None  # flattened full covariances; None for "diag"
    diag_vectors: np.ndarray | None  # (n K, 2 d): [mean, sqrt(variances)] for "diag"


def _prepare_mixture_wasserstein(X):
    n, n_components, d = X.means.shape
    weights = _normalized_weights(X)
    if X.covariance_type == "diag":
        # Full matrices are built only if the other side turns out to be "full".
        diag_vectors = np.concatenate([X.means, np.sqrt(X.covariances)], axis=2)
        diag_vectors = diag_vectors.reshape(n * n_components, 2 * d)
        return _MixtureBuresState(weights, n_components, d, None, diag_vectors)
    means, covariances = _flat_components(X)
    components = _prepare_bures(np.ascontiguousarray(covariances), means)
    return _MixtureBuresState(weights, n_components, d, components, None)


def _full_components(state):
    if state.components is not None:
        return state.components
    d = state.dim
    means, variances = state.diag_vectors[:, :d], state.diag_vectors[:, d:] ** 2
    covariances = np.zeros(variances.shape + (d,))
    index = np.arange(d)
    covariances[:, index, index] = variances
    return _prepare_bures(covariances, means)


def _component_squared_bures(query_state, database_state):
    """Squared Bures-Wasserstein distances of all component pairs, ``(n_q K_q, n_d K_d)``."""
    if query_state.diag_vectors is not None and database_state.diag_vectors is not None:
        # Diagonal Gaussians commute: W2^2 = |mq - md|^2 + |sqrt(vq) - sqrt(vd)|^2.
        Q, D = query_state.diag_vectors, database_state.diag_vectors
        squared = Q @ D.T
        squared *= -2
        squared += np.einsum("ij,ij->i", Q, Q)[:, None]
        squared += np.einsum("ij,ij->i", D, D)[None, :]
        return np.maximum(squared, 0, out=squared)
    return _squared_bures(_full_components(query_state), _full_components(database_state))


def _pairwise_mixture_wasserstein(query_state, database_state):
    from skretrieval._transport import batched_transport_cost

    _check_same_mixture_dimension(query_state.dim, database_state.dim)
    Wq, Wd = query_state.weights, database_state.weights
    n_queries, n_database = Wq.shape[0], Wd.shape[0]
    Kq, Kd = query_state.n_components, database_state.n_components
    cost = _component_squared_bures(query_state, database_state)
    # (n_q, K_q, n_d, K_d) -> (n_q, n_d, K_q, K_d): one contiguous cost matrix per pair.
    cost = np.ascontiguousarray(cost.reshape(n_queries, Kq, n_database, Kd).transpose(0, 2, 1, 3))
    if Kq == 1 or Kd == 1:
        # One side has a single component: the only plan is the product of the weights.
        squared = np.einsum("ia,ijab,jb->ij", Wq, cost, Wd)
    else:
        # One exact K_q x K_d transport problem per pair of images, all solved together by a
        # transportation simplex vectorised over the pairs.
        squared = batched_transport_cost(
            np.repeat(Wq, n_database, axis=0),
            np.tile(Wd, (n_queries, 1)),
            cost.reshape(n_queries * n_database, Kq, Kd),
        ).reshape(n_queries, n_database)
    np.maximum(squared, 0, out=squared)
    return np.sqrt(squared, out=squared)


def mixture_wasserstein_distances(Q, D):
    """Mixture Wasserstein distance MW2 (Delon and Desolneux 2020) between Gaussian mixtures.

    ``MW2^2(f, g) = min_P sum_ab P_ab W2^2(f_a, g_b)`` over the couplings ``P`` of the mixture
    weights, with ``W2`` the Bures-Wasserstein distance between components: optimal transport
    restricted to Gaussian mixtures, a true metric on them. The squared Bures distances of all
    component pairs of the query block and the database come at once (one batched ``eigvalsh``
    per query component over all database components, or one matrix product when both sides
    are diagonal); then an exact ``K_q x K_d`` transport problem per pair of images, all pairs
    solved together by a vectorised transportation simplex. Returns ``MW2``, the square root of
    the transport cost that POT's ``ot.gmm.gmm_ot_loss`` returns. With one component each it is
    the Bures-Wasserstein distance.

    Parameters
    ----------
    Q : GaussianMixtures
        Query mixtures.
    D : GaussianMixtures
        Database mixtures, with components of the same dimension as ``Q``'s.

    Returns
    -------
    distances : ndarray of shape (len(Q), len(D))

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import GaussianMixtures
    >>> f = GaussianMixtures([[0.5, 0.5]], [[[0.0], [2.0]]], [[[1.0], [1.0]]], "diag")
    >>> g = GaussianMixtures([[0.5, 0.5]], [[[0.0], [4.0]]], [[[1.0], [1.0]]], "diag")
    >>> mixture_wasserstein_distances(f, g).round(6)
    array([[1.414214]])
    """
    Q, D = _check_gaussian_mixtures(Q, "Q"), _check_gaussian_mixtures(D, "D")
    _check_same_mixture_dimension(Q.n_features, D.n_features)
    return _pairwise_mixture_wasserstein(
        _prepare_mixture_wasserstein(Q), _prepare_mixture_wasserstein(D)
    )


# Kullback-Leibler between mixtures.


class _MixtureGaussianState(NamedTuple):
    weights: np.ndarray  # (n, K), rows summing to 1
    log_weights: np.ndarray  # -inf for empty components
    means: np.ndarray  # (n, K, d)
    cholesky: np.ndarray  # (n, K, d, d) lower factors of the covariances, for sampling
    components: _GaussianState  # flattened components
    approximation: str
    n_samples: int
    random_state: Any


def _prepare_mixture_kl(X, approximation="variational", n_samples=1000, random_state=None):
    if approximation not in _MIXTURE_KL_APPROXIMATIONS:
        raise ValueError(
            f"approximation must be one of {list(_MIXTURE_KL_APPROXIMATIONS)}; "
            f"got {approximation!r}."
        )
    if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2; got {n_samples!r}.")
    weights = _normalized_weights(X)
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    means, covariances = _flat_components(X)
    components = _prepare_gaussians(np.ascontiguousarray(covariances), means)
    cholesky = np.linalg.cholesky(X.full_covariances())
    return _MixtureGaussianState(
        weights,
        log_weights,
        X.means,
        cholesky,
        components,
        approximation,
        int(n_samples),
        random_state,
    )


def _component_kl(query_state, database_state):
    """``KL(f_a || g_b)`` for all components, shape ``(n_q, K_q, n_d, K_d)``."""
    divergences = _pairwise_kl(query_state.components, database_state.components)
    n_queries, Kq = query_state.weights.shape
    n_database, Kd = database_state.weights.shape
    return divergences.reshape(n_queries, Kq, n_database, Kd)


def _within_mixture_kl(state):
    """``KL(f_a || f_a')`` between the components of each mixture, shape ``(n, K, K)``."""
    g = state.components
    n, n_components = state.weights.shape

    def per_mixture(values):
        return values.reshape((n, n_components) + values.shape[1:])

    terms = np.einsum(
        "nat,nbt->nab", per_mixture(g.moment_vectors), per_mixture(g.precision_vectors)
    )
    terms += per_mixture(g.mahalanobis_norms)[:, None, :]
    terms -= 2 * np.einsum("nai,nbi->nab", per_mixture(g.means), per_mixture(g.precision_means))
    logdets = per_mixture(g.logdets)
    terms += logdets[:, None, :] - logdets[:, :, None] - g.dim
    terms *= 0.5
    return np.maximum(terms, 0, out=terms)


def _variational_kl(query_state, database_state):
    """Hershey and Olsen (2007): ``sum_a pi_a log(sum_a' pi_a' e^-KL(f_a||f_a') /
    sum_b w_b e^-KL(f_a||g_b))``."""
    from scipy.special import logsumexp

    cross = _component_kl(query_state, database_state)  # (n_q, K_q, n_d, K_d)
    own = _within_mixture_kl(query_state)  # (n_q, K_q, K_q)
    self_term = logsumexp(query_state.log_weights[:, None, :] - own, axis=2)  # (n_q, K_q)
    cross_term = logsumexp(
        database_state.log_weights[None, None, :, :] - cross, axis=3
    )  # (n_q, K_q, n_d)
    return np.einsum("ia,iaj->ij", query_state.weights, self_term[:, :, None] - cross_term)


def _matched_bound_kl(query_state, database_state):
    """Goldberger et al. (2003): each query component matched to its best database component,
    ``m(a) = argmin_b KL(f_a || g_b) - log w_b``, then ``sum_a pi_a (KL(f_a || g_m(a)) +
    log(pi_a / w_m(a)))``."""
    cross = _component_kl(query_state, database_state)
    matched = np.min(cross - database_state.log_weights[None, None, :, :], axis=3)
    # Empty query components (pi_a = 0) contribute nothing.
    with np.errstate(invalid="ignore"):
        log_pi = np.where(query_state.weights > 0, query_state.log_weights, 0.0)
    return np.einsum("ia,iaj->ij", query_state.weights, matched + log_pi[:, :, None])


def _sample_mixtures(state, n_samples, random_state):
    """``n_samples`` draws from each mixture, shape ``(n, n_samples, d)``, all at once."""
    rng = check_random_state(random_state)
    n, n_components, d = state.means.shape
    # Component of each draw by inverting the cumulative weights.
    cumulative = np.cumsum(state.weights, axis=1)
    uniforms = rng.uniform(size=(n, n_samples)) * cumulative[:, -1:]
    labels = np.minimum(
        (uniforms[:, :, None] >= cumulative[:, None, :]).sum(axis=2), n_components - 1
    )
    rows = np.arange(n)[:, None]
    noise = rng.standard_normal((n, n_samples, d))
    return state.means[rows, labels] + np.einsum(
        "nsij,nsj->nsi", state.cholesky[rows, labels], noise
    )


def _select_mixture(state, i):
    """The state of mixture ``i`` alone."""
    n_components = state.weights.shape[1]
    part = slice(i * n_components, (i + 1) * n_components)
    g = state.components
    components = g._replace(
        moment_vectors=g.moment_vectors[part],
        means=g.means[part],
        precision_vectors=g.precision_vectors[part],
        precision_means=g.precision_means[part],
        mahalanobis_norms=g.mahalanobis_norms[part],
        logdets=g.logdets[part],
    )
    return state._replace(
        weights=state.weights[i : i + 1],
        log_weights=state.log_weights[i : i + 1],
        means=state.means[i : i + 1],
        cholesky=state.cholesky[i : i + 1],
        components=components,
    )


def _mixture_log_densities(points, state):
    """``log g_j(x)`` of every point under every mixture of ``state``: ``(n_points, n)``.

    The quadratic forms ``(x - m)^T P (x - m)`` of all points and components come from one
    matrix product of ``triu(x x^T)`` with the precision vectors.
    """
    from scipy.special import logsumexp

    g = state.components
    quadratic = _triu_vectors(points[:, :, None] * points[:, None, :]) @ g.precision_vectors.T
    quadratic -= 2 * (points @ g.precision_means.T)
    quadratic += g.mahalanobis_norms[None, :]
    log_densities = -0.5 * (quadratic + g.logdets[None, :] + g.dim * np.log(2 * np.pi))
    n, n_components = state.weights.shape
    log_densities = log_densities.reshape(points.shape[0], n, n_components)
    log_densities += state.log_weights[None, :, :]
    return logsumexp(log_densities, axis=2)


def _monte_carlo_kl(query_state, database_state, return_standard_error=False):
    """``mean_s [log f(x_s) - log g(x_s)]`` with ``x_s ~ f``, and its standard error."""
    samples = _sample_mixtures(query_state, query_state.n_samples, query_state.random_state)
    n_queries = samples.shape[0]
    n_database = database_state.weights.shape[0]
    estimates = np.empty((n_queries, n_database))
    errors = np.empty((n_queries, n_database))
    for i in range(n_queries):  # one query image at a time bounds the (n_samples, n_d K_d) block
        own = _mixture_log_densities(samples[i], _select_mixture(query_state, i))[:, 0]
        differences = own[:, None] - _mixture_log_densities(samples[i], database_state)
        estimates[i] = differences.mean(axis=0)
        errors[i] = differences.std(axis=0, ddof=1) / np.sqrt(differences.shape[0])
    if return_standard_error:
        return estimates, errors
    return estimates


_MIXTURE_KL_FUNCTIONS = {
    "variational": _variational_kl,
    "matched_bound": _matched_bound_kl,
    "monte_carlo": _monte_carlo_kl,
}


def _pairwise_mixture_kl(query_state, database_state):
    _check_same_mixture_dimension(query_state.components.dim, database_state.components.dim)
    return _MIXTURE_KL_FUNCTIONS[query_state.approximation](query_state, database_state)


def mixture_kl_divergences(Q, D, *, approximation="variational", n_samples=1000, random_state=None):
    """Approximate ``KL(f || g)`` from each query mixture ``f`` to each database mixture ``g``.

    The KL divergence between Gaussian mixtures has no closed form. All approximations start
    from the closed-form KL between every query component and every database component, computed
    at once by matrix products (as :func:`kl_divergences`). The direction is query ``||``
    database; the result is not symmetric. ``"diag"`` covariances are expanded to full
    matrices first.

    - ``"variational"`` (Hershey and Olsen 2007): ``sum_a pi_a log(sum_a' pi_a'
      exp(-KL(f_a || f_a')) / sum_b w_b exp(-KL(f_a || g_b)))``. Exact when both mixtures have
      one component; it can be slightly negative, and is 0 for ``f = g``.
    - ``"matched_bound"`` (Goldberger et al. 2003, Hershey and Olsen's "matched bound
      approximation"): each query component matched to ``m(a) = argmin_b KL(f_a || g_b) -
      log w_b``, then ``sum_a pi_a (KL(f_a || g_m(a)) + log(pi_a / w_m(a)))``. Exact with one
      component each.
    - ``"monte_carlo"``: ``mean [log f(x) - log g(x)]`` over ``n_samples`` draws ``x ~ f``
      (the same draws for every database mixture), unbiased with standard error
      ``O(n_samples^-1/2)``. Draws come from ``random_state``.

    Parameters
    ----------
    Q : GaussianMixtures
        Query mixtures ``f``.
    D : GaussianMixtures
        Database mixtures ``g``, with components of the same dimension as ``Q``'s.
    approximation : {"variational", "matched_bound", "monte_carlo"}, default="variational"
        How to approximate the divergence.
    n_samples : int, default=1000
        Draws per query mixture for ``"monte_carlo"``.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws for ``"monte_carlo"``.

    Returns
    -------
    divergences : ndarray of shape (len(Q), len(D))

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import GaussianMixtures
    >>> f = GaussianMixtures([[1.0]], [[[0.0]]], [[[1.0]]], "diag")
    >>> g = GaussianMixtures([[1.0]], [[[2.0]]], [[[1.0]]], "diag")
    >>> mixture_kl_divergences(f, g)
    array([[2.]])
    """
    Q, D = _check_gaussian_mixtures(Q, "Q"), _check_gaussian_mixtures(D, "D")
    _check_same_mixture_dimension(Q.n_features, D.n_features)
    params = {
        "approximation": approximation,
        "n_samples": n_samples,
        "random_state": random_state,
    }
    return _pairwise_mixture_kl(_prepare_mixture_kl(Q, **params), _prepare_mixture_kl(D, **params))


def _validate_mixtures(metric, X, name="X"):
    return _check_gaussian_mixtures(X, name, metric=metric)


register_kernel(
    DistanceKernel(
        name="wasserstein",
        descriptor="Gaussian mixtures",
        validate=partial(_validate_mixtures, "wasserstein"),
        prepare=_prepare_mixture_wasserstein,
        pairwise=_pairwise_mixture_wasserstein,
        accepts=_is_gaussian_mixtures,
        by_default=False,
    )
)
register_kernel(
    DistanceKernel(
        name="kl",
        descriptor="Gaussian mixtures",
        validate=partial(_validate_mixtures, "kl"),
        prepare=_prepare_mixture_kl,
        pairwise=_pairwise_mixture_kl,
        accepts=_is_gaussian_mixtures,
        by_default=False,
    )
)
