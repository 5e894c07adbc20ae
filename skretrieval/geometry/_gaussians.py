"""Closed forms between Gaussians: Kullback-Leibler, Jeffreys and Bures-Wasserstein, and their
kernels for SPD matrices, each read as the zero-mean Gaussian ``N(0, S)``."""

from typing import NamedTuple

import numpy as np

from skretrieval.geometry._spd import (
    check_same_dimension,
    check_spd_matrices,
    congruence,
    logdets,
    register_spd_kernel,
    triu_vectors,
)
from skretrieval.geometry._vectors import euclidean_distances

# Matrices whitened and decomposed together by the Bures kernels: about 2 MiB of float64, which
# stays in cache between the congruence and the eigvalsh (measured 15 % faster than 32 MiB).
_FIDELITY_CHUNK_ELEMENTS = 2**18

# Kullback-Leibler and Jeffreys.


class GaussianState(NamedTuple):
    """What the closed-form KL needs of a set of Gaussians ``N(m, S)``, ``P = S^-1``."""

    moment_vectors: np.ndarray  # triu vectors of S + m m^T
    means: np.ndarray | None  # None for zero means
    precision_vectors: np.ndarray  # triu vectors of P
    precision_means: np.ndarray | None  # P m
    mahalanobis_norms: np.ndarray | None  # m^T P m
    logdets: np.ndarray
    dim: int


def prepare_gaussians(covariances, means=None):
    """The :class:`GaussianState` of SPD ``covariances`` and ``means`` (None for zero means)."""
    precisions = np.linalg.inv(covariances)
    precisions += precisions.transpose(0, 2, 1)
    precisions *= 0.5
    moments = covariances
    precision_means = mahalanobis_norms = None
    if means is not None:
        moments = covariances + means[:, :, None] * means[:, None, :]
        precision_means = np.einsum("nij,nj->ni", precisions, means)
        mahalanobis_norms = np.einsum("ni,ni->n", means, precision_means)
    return GaussianState(
        triu_vectors(moments),
        means,
        triu_vectors(precisions),
        precision_means,
        mahalanobis_norms,
        logdets(covariances),
        covariances.shape[-1],
    )


def _kl_without_logdets(query_state, database_state):
    """``tr(Pd Sq) + (md - mq)^T Pd (md - mq)`` for every pair, by matrix products.

    ``tr(Pd Sq) + mq^T Pd mq = <Pd, Sq + mq mq^T>_F`` is one GEMM; the cross term another.
    """
    check_same_dimension(query_state.dim, database_state.dim)
    terms = query_state.moment_vectors @ database_state.precision_vectors.T
    if database_state.means is not None:
        terms += database_state.mahalanobis_norms[None, :]
        if query_state.means is not None:
            terms -= 2 * (query_state.means @ database_state.precision_means.T)
    # With zero database means, mq^T Pd mq is already inside the moment vectors.
    return terms


def pairwise_kl(query_state, database_state):
    """``KL(q || d)`` for every pair of two :class:`GaussianState` sets, clipped at zero."""
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


def _check_means(means, n, d, name):
    if means is None:
        return None
    means = np.asarray(means, dtype=np.float64)
    if means.shape != (n, d):
        raise ValueError(f"{name} must have shape ({n}, {d}); got {means.shape}.")
    if not np.isfinite(means).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return means


def _check_gaussians(Q, D, Q_means, D_means):
    """Validated covariances and means of query and database Gaussians."""
    Q, D = check_spd_matrices(Q, "Q"), check_spd_matrices(D, "D")
    check_same_dimension(Q.shape[-1], D.shape[-1])
    Q_means = _check_means(Q_means, *Q.shape[:2], "Q_means")
    D_means = _check_means(D_means, *D.shape[:2], "D_means")
    return Q, D, Q_means, D_means


def _gaussian_states(Q, D, Q_means, D_means):
    Q, D, Q_means, D_means = _check_gaussians(Q, D, Q_means, D_means)
    return prepare_gaussians(Q, Q_means), prepare_gaussians(D, D_means)


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
    return pairwise_kl(*_gaussian_states(Q, D, Q_means, D_means))


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


class BuresState(NamedTuple):
    """What the Bures-Wasserstein distance needs of a set of Gaussians."""

    covariances: np.ndarray
    means: np.ndarray | None
    traces: np.ndarray


def prepare_bures(X, means=None):
    """The :class:`BuresState` of SPD covariances ``X`` and ``means`` (None for zero means)."""
    return BuresState(X, means, np.trace(X, axis1=1, axis2=2))


def _pairwise_bures(query_state, database_state):
    squared = squared_bures(query_state, database_state)
    return np.sqrt(squared, out=squared)


def _fidelities(D, L, index=None):
    """``tr (A^1/2 D_j A^1/2)^1/2`` for every ``D_j`` of ``D`` (``D[index]`` if given), with
    ``A = L L^T``.

    ``L^T D_j L`` is similar to ``A^1/2 D_j A^1/2``: the same eigenvalues, and a Cholesky
    factor is cheaper than a matrix square root.
    """
    n, d = D.shape[0] if index is None else len(index), D.shape[1]
    fidelities = np.empty(n)
    step = max(1, _FIDELITY_CHUNK_ELEMENTS // (d * d))
    for start in range(0, n, step):
        part = slice(start, start + step)
        matrices = D[part] if index is None else D[index[part]]
        eigenvalues = np.linalg.eigvalsh(congruence(matrices, L))
        np.maximum(eigenvalues, 0, out=eigenvalues)  # rounding below zero
        fidelities[part] = np.sqrt(eigenvalues).sum(axis=1)
    return fidelities


def squared_bures(query_state, database_state):
    """``W2^2`` for every pair, clipped at zero (also the cost of the mixture Wasserstein)."""
    Q, D = query_state.covariances, database_state.covariances
    check_same_dimension(Q.shape[-1], D.shape[-1])
    squared = query_state.traces[:, None] + database_state.traces[None, :]
    for i, L in enumerate(np.linalg.cholesky(Q)):
        squared[i] -= 2 * _fidelities(D, L)
    Qm, Dm = query_state.means, database_state.means
    if Qm is not None or Dm is not None:
        Qm = np.zeros(Q.shape[:2]) if Qm is None else Qm
        Dm = np.zeros(D.shape[:2]) if Dm is None else Dm
        squared += euclidean_distances(Qm, Dm) ** 2
    return np.maximum(squared, 0, out=squared)


def squared_bures_pairs(query_state, database_state, query_index, database_index):
    """``W2^2`` of the pairs ``(query_index[p], database_index[p])`` only, clipped at zero.

    The pairs are grouped by query Gaussian: one Cholesky factor and one batched ``eigvalsh``
    per query Gaussian over the database Gaussians it is paired with.
    """
    Q, D = query_state.covariances, database_state.covariances
    check_same_dimension(Q.shape[-1], D.shape[-1])
    squared = query_state.traces[query_index] + database_state.traces[database_index]
    if squared.size == 0:
        return squared
    order = np.argsort(query_index, kind="stable")
    queries, starts = np.unique(query_index[order], return_index=True)
    for i, group in zip(queries, np.split(order, starts[1:]), strict=True):
        L = np.linalg.cholesky(Q[i])
        squared[group] -= 2 * _fidelities(D, L, database_index[group])
    Qm, Dm = query_state.means, database_state.means
    if Qm is not None or Dm is not None:
        differences = 0.0 if Qm is None else Qm[query_index]
        differences = differences - (0.0 if Dm is None else Dm[database_index])
        squared += np.einsum("pi,pi->p", differences, differences)
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
    return _pairwise_bures(prepare_bures(Q, Q_means), prepare_bures(D, D_means))


register_spd_kernel("kl", prepare_gaussians, pairwise_kl)
register_spd_kernel("jeffreys", prepare_gaussians, _pairwise_jeffreys)
register_spd_kernel("wasserstein", prepare_bures, _pairwise_bures)
