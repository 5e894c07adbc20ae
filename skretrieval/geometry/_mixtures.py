"""Distances between Gaussian mixtures: mixture Wasserstein (MW2) and approximations of KL."""

import itertools
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from sklearn.utils import check_random_state

from skretrieval._utils.linalg import squared_euclidean_distances
from skretrieval._utils.validation import is_integer
from skretrieval.geometry._gaussians import (
    BuresState,
    GaussianState,
    pairwise_kl,
    prepare_bures,
    prepare_gaussians,
    squared_bures,
    squared_bures_pairs,
)
from skretrieval.geometry._registry import DistanceKernel, describe, register_kernel
from skretrieval.geometry._spd import triu_vectors
from skretrieval.geometry._transport import batched_transport_cost

# A GaussianMixtures set (skretrieval.descriptors) holds one mixture of K Gaussians per image.
# Every distance first compares all components of the queries with all components of the
# database at once (the Gaussian closed forms of skretrieval.geometry._gaussians, on the
# flattened components), then combines the (K_q, K_d) block of each pair of images.

_MIXTURE_KL_APPROXIMATIONS = ("variational", "matched_bound", "monte_carlo")
# Rounds of the MW2 transport on partly bounded costs, after which all the remaining component
# costs of the pairs still unsettled are computed: later rounds add few cells and cost a solve.
_MAX_BOUNDED_ROUNDS = 5


def _is_gaussian_mixtures(X):
    from skretrieval.descriptors import GaussianMixtures  # descriptors is the heavier module

    return isinstance(X, GaussianMixtures)


def _check_gaussian_mixtures(X, name="X", metric=None):
    if not _is_gaussian_mixtures(X):
        who = f"metric {metric!r} expects" if metric else f"{name} must be"
        raise TypeError(f"{who} a GaussianMixtures set; got {describe(X)}.")
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
    components: BuresState | None  # flattened full covariances; None for "diag"
    diag_vectors: np.ndarray | None  # (n K, 2 d): [mean, sqrt(variances)] for "diag"
    # For the lower bounds of the component costs (see _bounded_transport):
    means: np.ndarray  # (n K, d)
    traces: np.ndarray  # (n K,)
    root_spectra: np.ndarray  # (n K, d): square roots of the eigenvalues, increasing
    root_vectors: np.ndarray | None  # (n K, d (d + 1) / 2): triu vectors of S^1/2; None for "diag"


def _prepare_mixture_wasserstein(X):
    n, n_components, d = X.means.shape
    weights = _normalized_weights(X)
    means = X.means.reshape(n * n_components, d)
    if X.covariance_type == "diag":
        # Full matrices are built only if the other side turns out to be "full".
        roots = np.sqrt(X.covariances).reshape(n * n_components, d)
        diag_vectors = np.concatenate([means, roots], axis=1)
        traces = X.covariances.sum(axis=2).reshape(-1)
        return _MixtureBuresState(
            weights, n_components, d, None, diag_vectors, means, traces, np.sort(roots), None
        )
    means, covariances = _flat_components(X)
    components = prepare_bures(np.ascontiguousarray(covariances), means)
    eigenvalues, eigenvectors = np.linalg.eigh(components.covariances)
    roots = np.sqrt(np.maximum(eigenvalues, 0, out=eigenvalues), out=eigenvalues)
    square_roots = (eigenvectors * roots[:, None, :]) @ eigenvectors.transpose(0, 2, 1)
    return _MixtureBuresState(
        weights,
        n_components,
        d,
        components,
        None,
        means,
        components.traces,
        roots,
        triu_vectors(square_roots),
    )


def _full_components(state):
    if state.components is not None:
        return state.components
    d = state.dim
    means, variances = state.diag_vectors[:, :d], state.diag_vectors[:, d:] ** 2
    covariances = np.zeros(variances.shape + (d,))
    index = np.arange(d)
    covariances[:, index, index] = variances
    return prepare_bures(covariances, means)


def _component_squared_bures(query_state, database_state):
    """Squared Bures-Wasserstein distances of all component pairs, ``(n_q K_q, n_d K_d)``."""
    if query_state.diag_vectors is not None and database_state.diag_vectors is not None:
        # Diagonal Gaussians commute: W2^2 = |mq - md|^2 + |sqrt(vq) - sqrt(vd)|^2.
        return squared_euclidean_distances(query_state.diag_vectors, database_state.diag_vectors)
    return squared_bures(_full_components(query_state), _full_components(database_state))


def _per_pair(cost, n_queries, n_database):
    """``(n_q K_q, n_d K_d)`` component costs as one contiguous ``(K_q, K_d)`` block per pair of
    mixtures, shape ``(n_q n_d, K_q, K_d)``."""
    Kq, Kd = cost.shape[0] // n_queries, cost.shape[1] // n_database
    cost = cost.reshape(n_queries, Kq, n_database, Kd).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(cost).reshape(n_queries * n_database, Kq, Kd)


def _root_vectors(state):
    if state.root_vectors is not None:
        return state.root_vectors
    d = state.dim
    rows, columns = np.triu_indices(d)
    vectors = np.zeros((state.diag_vectors.shape[0], len(rows)))
    vectors[:, rows == columns] = state.diag_vectors[:, d:]
    return vectors


def _component_lower_bounds(query_state, database_state):
    """Lower bounds of the squared Bures-Wasserstein distances of all component pairs.

    With ``F = tr (A^1/2 B A^1/2)^1/2 = ||A^1/2 B^1/2||_*``, ``W2^2 = |mq - md|^2 + tr A +
    tr B - 2 F``, and two upper bounds of ``F``, each a matrix product over all components:

    - ``F <= sum_i sqrt(a_i b_i)`` for the eigenvalues of ``A`` and ``B`` sorted alike (von
      Neumann's trace inequality), so ``W2^2 >= |mq - md|^2 + |sqrt(a) - sqrt(b)|^2``;
    - ``4 F <= tr (A^1/2 + B^1/2)^2`` (Bhatia and Kittaneh 1990: ``4 s_j(PQ) <= s_j((P +
      Q)^2)`` for positive ``P``, ``Q``), so ``W2^2 >= |mq - md|^2 + ||A^1/2 - B^1/2||_F^2 / 2``.
    """
    spectral = squared_euclidean_distances(query_state.root_spectra, database_state.root_spectra)
    roots = query_state.traces[:, None] + database_state.traces[None, :]
    roots -= 2 * (_root_vectors(query_state) @ _root_vectors(database_state).T)
    roots *= 0.5
    bounds = np.maximum(spectral, roots, out=spectral)
    bounds += squared_euclidean_distances(query_state.means, database_state.means)
    return bounds


def _bounded_transport(query_state, database_state, Wq, Wd):
    """Exact transport costs of all pairs, computing only the component costs that matter.

    An optimal plan of the transport on costs ``C' <= C`` that moves mass only through cells
    where ``C' = C`` is optimal for ``C`` too: its cost is ``OT(C') <= OT(C)``. So the cells
    start at a lower bound of ``W2^2`` (:func:`_component_lower_bounds`), and each round
    computes the exact cost of the cells that the optimal plans use while still bounded, until
    no plan uses a bounded cell. A plan uses at most ``K_q + K_d - 1`` cells of ``K_q K_d``;
    when the components of a mixture differ mostly by their means, few more are computed. When
    they overlap, the bounds are loose and every cell ends up computed.
    """
    n_queries, n_database = query_state.weights.shape[0], database_state.weights.shape[0]
    Kd = database_state.n_components
    cost = _per_pair(_component_lower_bounds(query_state, database_state), n_queries, n_database)
    exact = np.zeros(cost.shape, dtype=bool)
    squared = np.empty(len(cost))
    pending = np.arange(len(cost))
    query_components, database_components = (
        _full_components(query_state),
        _full_components(database_state),
    )
    for rounds in itertools.count(1):
        pair_Wq, pair_Wd = Wq[pending // n_database], Wd[pending % n_database]
        values, plans = batched_transport_cost(pair_Wq, pair_Wd, cost[pending], return_plans=True)
        # Cells of an empty component carry no mass whatever their cost (a flow of round-off
        # size there does not count).
        unknown = ~exact[pending] & (pair_Wq[:, :, None] * pair_Wd[:, None, :] > 0)
        needed = (plans > 0) & unknown
        settled = ~needed.any(axis=(1, 2))
        squared[pending[settled]] = values[settled]
        pending, needed = pending[~settled], needed[~settled]
        if len(pending) == 0:
            return squared.reshape(n_queries, n_database)
        if rounds >= _MAX_BOUNDED_ROUNDS:
            # Bounded rounds stopped paying: all the cells exact, then the next round settles.
            needed = unknown[~settled]
        rows, a, b = np.nonzero(needed)
        pairs = pending[rows]
        cost[pairs, a, b] = squared_bures_pairs(
            query_components,
            database_components,
            (pairs // n_database) * query_state.n_components + a,
            (pairs % n_database) * Kd + b,
        )
        exact[pairs, a, b] = True


def _pairwise_mixture_wasserstein(query_state, database_state):
    _check_same_mixture_dimension(query_state.dim, database_state.dim)
    Wq, Wd = query_state.weights, database_state.weights
    n_queries, n_database = Wq.shape[0], Wd.shape[0]
    Kq, Kd = query_state.n_components, database_state.n_components
    both_diag = query_state.diag_vectors is not None and database_state.diag_vectors is not None
    if Kq == 1 or Kd == 1:
        # One side has a single component: the only plan is the product of the weights.
        cost = _component_squared_bures(query_state, database_state)
        cost = _per_pair(cost, n_queries, n_database).reshape(n_queries, n_database, Kq, Kd)
        squared = np.einsum("ia,ijab,jb->ij", Wq, cost, Wd)
    elif both_diag:
        # One exact K_q x K_d transport problem per pair of images, all solved together by a
        # transportation simplex vectorised over the pairs.
        squared = batched_transport_cost(
            np.repeat(Wq, n_database, axis=0),
            np.tile(Wd, (n_queries, 1)),
            _per_pair(_component_squared_bures(query_state, database_state), n_queries, n_database),
        ).reshape(n_queries, n_database)
    else:
        # Full covariances: each component cost is an eigendecomposition, most of them unused.
        squared = _bounded_transport(query_state, database_state, Wq, Wd)
    np.maximum(squared, 0, out=squared)
    return np.sqrt(squared, out=squared)


def mixture_wasserstein_distances(Q, D):
    """Mixture Wasserstein distance MW2 (Delon and Desolneux 2020) between Gaussian mixtures.

    ``MW2^2(f, g) = min_P sum_ab P_ab W2^2(f_a, g_b)`` over the couplings ``P`` of the mixture
    weights, with ``W2`` the Bures-Wasserstein distance between components: optimal transport
    restricted to Gaussian mixtures, a true metric on them. An exact ``K_q x K_d`` transport
    problem per pair of images, all pairs solved together by a vectorised transportation
    simplex. Between diagonal Gaussians the costs are one matrix product; between full ones
    each cost is an eigendecomposition, so the problems start from cheap lower bounds of the
    costs and only the costs that the optimal plans use are computed, in a few rounds (one
    batched ``eigvalsh`` per query component each); the result is the same as with every cost.
    Returns ``MW2``, the square root of the transport cost that POT's ``ot.gmm.gmm_ot_loss``
    returns. With one component each it is the Bures-Wasserstein distance.

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
    components: GaussianState  # flattened components
    approximation: str
    n_samples: int
    random_state: Any


def _prepare_mixture_kl(X, approximation="variational", n_samples=1000, random_state=None):
    if approximation not in _MIXTURE_KL_APPROXIMATIONS:
        raise ValueError(
            f"approximation must be one of {list(_MIXTURE_KL_APPROXIMATIONS)}; "
            f"got {approximation!r}."
        )
    if not is_integer(n_samples) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2; got {n_samples!r}.")
    weights = _normalized_weights(X)
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    means, covariances = _flat_components(X)
    components = prepare_gaussians(np.ascontiguousarray(covariances), means)
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
    divergences = pairwise_kl(query_state.components, database_state.components)
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
    quadratic = triu_vectors(points[:, :, None] * points[:, None, :]) @ g.precision_vectors.T
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
        layout="in a GaussianMixtures set",
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
        layout="in a GaussianMixtures set",
    )
)
