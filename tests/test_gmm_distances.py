"""Distances between Gaussian mixtures: mixture Wasserstein (MW2) and KL approximations."""

import numpy as np
import ot
import pytest
from ot.gaussian import bures_wasserstein_distance
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import skretrieval.geometry._mixtures as mixtures_module
from skretrieval.descriptors import GaussianMixtures
from skretrieval.geometry import (
    bures_wasserstein_distances,
    get_kernel,
    kl_divergences,
    mixture_kl_divergences,
    mixture_wasserstein_distances,
)
from skretrieval.geometry._gaussians import prepare_bures, squared_bures, squared_bures_pairs
from skretrieval.neighbors import ImageRetriever


def random_mixtures(rng, n, n_components, d, covariance_type="full", spread=2.0, scale=1.0):
    weights = rng.dirichlet(np.ones(n_components), size=n)
    means = spread * rng.standard_normal((n, n_components, d))
    if covariance_type == "full":
        A = rng.standard_normal((n, n_components, d, d + 2))
        covariances = scale * (A @ A.swapaxes(-1, -2) / (d + 2) + 0.1 * np.eye(d))
    else:
        covariances = scale * rng.uniform(0.2, 2.0, (n, n_components, d))
    return GaussianMixtures(weights, means, covariances, covariance_type)


def pot_mw2(f, g):
    """MW2 by POT, one pair of mixtures at a time (POT returns the squared value)."""
    F, G = f.full_covariances(), g.full_covariances()
    return np.array(
        [
            [
                np.sqrt(
                    ot.gmm.gmm_ot_loss(
                        f.means[i], g.means[j], F[i], G[j], f.weights[i], g.weights[j]
                    )
                )
                for j in range(len(g))
            ]
            for i in range(len(f))
        ]
    )


def gaussian_log_density(x, mean, covariance):
    return multivariate_normal(mean, covariance).logpdf(x)


def mixture_log_density(x, weights, means, covariances):
    return logsumexp(
        [
            np.log(w) + gaussian_log_density(x, m, c)
            for w, m, c in zip(weights, means, covariances, strict=True)
        ],
        axis=0,
    )


# MW2


@pytest.mark.parametrize("n_components", [1, 2, 3, 4])
@pytest.mark.parametrize("d", [2, 4, 6])
def test_mw2_matches_pot(n_components, d):
    rng = np.random.default_rng(10 * n_components + d)
    Q = random_mixtures(rng, 3, n_components, d)
    D = random_mixtures(rng, 4, max(1, 5 - n_components), d)
    np.testing.assert_allclose(mixture_wasserstein_distances(Q, D), pot_mw2(Q, D), atol=1e-8)


@pytest.mark.parametrize("types", [("diag", "diag"), ("diag", "full"), ("full", "diag")])
def test_mw2_diagonal_covariances(types):
    rng = np.random.default_rng(1)
    Q = random_mixtures(rng, 3, 3, 4, types[0])
    D = random_mixtures(rng, 4, 2, 4, types[1])
    np.testing.assert_allclose(mixture_wasserstein_distances(Q, D), pot_mw2(Q, D), atol=1e-8)


def test_mw2_single_component_is_bures_wasserstein():
    rng = np.random.default_rng(2)
    Q, D = random_mixtures(rng, 3, 1, 5), random_mixtures(rng, 4, 1, 5)
    ours = mixture_wasserstein_distances(Q, D)
    spd = bures_wasserstein_distances(
        Q.covariances[:, 0], D.covariances[:, 0], Q_means=Q.means[:, 0], D_means=D.means[:, 0]
    )
    np.testing.assert_allclose(ours, spd, atol=1e-10)
    pot = [
        [
            bures_wasserstein_distance(
                Q.means[i, 0], D.means[j, 0], Q.covariances[i, 0], D.covariances[j, 0]
            )
            for j in range(4)
        ]
        for i in range(3)
    ]
    np.testing.assert_allclose(ours, np.array(pot).reshape(3, 4), atol=1e-8)


def test_mw2_identity_and_symmetry():
    rng = np.random.default_rng(3)
    X = random_mixtures(rng, 5, 3, 4)
    distances = mixture_wasserstein_distances(X, X)
    np.testing.assert_allclose(np.diag(distances), 0, atol=1e-6)
    np.testing.assert_allclose(distances, distances.T, atol=1e-10)
    assert (distances >= 0).all()


def test_mw2_hand_worked():
    # Components of equal shape, matched by translation: MW2^2 = sum of weighted shifts^2.
    f = GaussianMixtures([[0.25, 0.75]], [[[0.0], [10.0]]], [[[1.0], [4.0]]], "diag")
    g = GaussianMixtures([[0.25, 0.75]], [[[1.0], [12.0]]], [[[1.0], [4.0]]], "diag")
    np.testing.assert_allclose(
        mixture_wasserstein_distances(f, g), [[np.sqrt(0.25 * 1 + 0.75 * 4)]]
    )


# KL


@pytest.mark.parametrize("approximation", ["variational", "matched_bound"])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_kl_single_component_is_closed_form(approximation, covariance_type):
    rng = np.random.default_rng(4)
    Q = random_mixtures(rng, 3, 1, 4, covariance_type)
    D = random_mixtures(rng, 5, 1, 4, covariance_type)
    exact = kl_divergences(
        Q.full_covariances()[:, 0],
        D.full_covariances()[:, 0],
        Q_means=Q.means[:, 0],
        D_means=D.means[:, 0],
    )
    np.testing.assert_allclose(
        mixture_kl_divergences(Q, D, approximation=approximation), exact, atol=1e-10
    )


def brute_force_kl(f, g, approximation):
    """Hershey and Olsen's formulas, one pair and one component pair at a time."""
    F, G = f.full_covariances()[0], g.full_covariances()[0]
    pi, w = f.weights[0], g.weights[0]

    def kl(m0, c0, m1, c1):
        d = len(m0)
        inv = np.linalg.inv(c1)
        diff = m1 - m0
        return 0.5 * (
            np.trace(inv @ c0)
            + diff @ inv @ diff
            - d
            + np.linalg.slogdet(c1)[1]
            - np.linalg.slogdet(c0)[1]
        )

    total = 0.0
    for a in range(len(pi)):
        cross = np.array([kl(f.means[0, a], F[a], g.means[0, b], G[b]) for b in range(len(w))])
        if approximation == "variational":
            own = np.array([kl(f.means[0, a], F[a], f.means[0, b], F[b]) for b in range(len(pi))])
            total += pi[a] * (
                np.log(np.sum(pi * np.exp(-own))) - np.log(np.sum(w * np.exp(-cross)))
            )
        else:
            b = np.argmin(cross - np.log(w))
            total += pi[a] * (cross[b] + np.log(pi[a] / w[b]))
    return total


@pytest.mark.parametrize("approximation", ["variational", "matched_bound"])
def test_kl_approximations_match_brute_force(approximation):
    rng = np.random.default_rng(5)
    Q = random_mixtures(rng, 3, 3, 3)
    D = random_mixtures(rng, 4, 2, 3, "diag")
    expected = [[brute_force_kl(Q[i], D[j], approximation) for j in range(4)] for i in range(3)]
    np.testing.assert_allclose(
        mixture_kl_divergences(Q, D, approximation=approximation), expected, rtol=1e-8
    )


@pytest.mark.parametrize("approximation", ["variational", "matched_bound"])
def test_kl_of_a_mixture_with_itself_is_zero(approximation):
    rng = np.random.default_rng(6)
    X = random_mixtures(rng, 4, 3, 3, spread=10.0)
    np.testing.assert_allclose(
        np.diag(mixture_kl_divergences(X, X, approximation=approximation)), 0, atol=1e-6
    )


def test_monte_carlo_kl_is_exact_in_expectation():
    # One component: the Monte Carlo estimate is within a few standard errors of the exact KL.
    from skretrieval.geometry._mixtures import _monte_carlo_kl, _prepare_mixture_kl

    rng = np.random.default_rng(7)
    Q, D = random_mixtures(rng, 2, 1, 3), random_mixtures(rng, 3, 1, 3)
    params = {"approximation": "monte_carlo", "n_samples": 4000, "random_state": 0}
    estimates, errors = _monte_carlo_kl(
        _prepare_mixture_kl(Q, **params),
        _prepare_mixture_kl(D, **params),
        return_standard_error=True,
    )
    exact = mixture_kl_divergences(Q, D)
    assert (np.abs(estimates - exact) < 4 * errors).all()


def test_monte_carlo_kl_log_densities_and_convergence():
    from skretrieval.geometry._mixtures import _monte_carlo_kl, _prepare_mixture_kl

    rng = np.random.default_rng(8)
    Q, D = random_mixtures(rng, 1, 3, 2), random_mixtures(rng, 2, 2, 2)
    small = {"approximation": "monte_carlo", "n_samples": 500, "random_state": 1}
    large = {"approximation": "monte_carlo", "n_samples": 40000, "random_state": 2}
    estimate, error = _monte_carlo_kl(
        _prepare_mixture_kl(Q, **small), _prepare_mixture_kl(D, **small), True
    )
    reference = mixture_kl_divergences(Q, D, **large)
    assert (np.abs(estimate - reference) < 4 * error).all()
    # The same draws, with densities from scipy: the estimator itself is right.
    from skretrieval.geometry._mixtures import _sample_mixtures

    state = _prepare_mixture_kl(Q, **small)
    x = _sample_mixtures(state, 500, 1)[0]
    F, G = Q.full_covariances(), D.full_covariances()
    log_f = mixture_log_density(x, Q.weights[0], Q.means[0], F[0])
    expected = [
        np.mean(log_f - mixture_log_density(x, D.weights[j], D.means[j], G[j])) for j in range(2)
    ]
    np.testing.assert_allclose(estimate[0], expected, rtol=1e-8)


def test_variational_close_to_monte_carlo_when_well_separated():
    rng = np.random.default_rng(9)
    Q = random_mixtures(rng, 2, 3, 2, spread=20.0, scale=0.5)
    D = random_mixtures(rng, 2, 3, 2, spread=20.0, scale=0.5)
    variational = mixture_kl_divergences(Q, D)
    monte_carlo = mixture_kl_divergences(
        Q, D, approximation="monte_carlo", n_samples=20000, random_state=0
    )
    np.testing.assert_allclose(variational, monte_carlo, rtol=0.05)


def test_monte_carlo_is_reproducible():
    rng = np.random.default_rng(10)
    Q, D = random_mixtures(rng, 2, 2, 2), random_mixtures(rng, 3, 2, 2)
    params = {"approximation": "monte_carlo", "n_samples": 200, "random_state": 3}
    np.testing.assert_array_equal(
        mixture_kl_divergences(Q, D, **params), mixture_kl_divergences(Q, D, **params)
    )


@pytest.mark.parametrize(
    "params, message",
    [
        ({"approximation": "exact"}, "approximation must be one of"),
        ({"approximation": "monte_carlo", "n_samples": 1}, "n_samples must be"),
    ],
)
def test_kl_bad_parameters(params, message):
    rng = np.random.default_rng(11)
    X = random_mixtures(rng, 2, 2, 2)
    with pytest.raises(ValueError, match=message):
        mixture_kl_divergences(X, X, **params)


# ImageRetriever


def test_retriever_wasserstein_equals_brute_force():
    rng = np.random.default_rng(12)
    database = random_mixtures(rng, 12, 3, 3)
    queries = random_mixtures(rng, 4, 2, 3)
    retriever = ImageRetriever(n_neighbors=5, metric="wasserstein").fit(database)
    distances, indices = retriever.kneighbors(queries)
    brute = pot_mw2(queries, database)
    expected_indices = np.argsort(brute, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, np.take_along_axis(brute, expected_indices, 1))


def perturbed(mixtures, rng, amount=1e-3):
    # One scale factor per component keeps full covariances symmetric.
    factors = 1 + amount * rng.uniform(size=mixtures.weights.shape)
    factors = factors.reshape(factors.shape + (1,) * (mixtures.covariances.ndim - 2))
    return GaussianMixtures(
        mixtures.weights,
        mixtures.means + amount * rng.standard_normal(mixtures.means.shape),
        mixtures.covariances * factors,
        mixtures.covariance_type,
    )


@pytest.mark.parametrize(
    "metric, metric_params",
    [
        ("wasserstein", None),
        ("kl", None),
        ("kl", {"approximation": "matched_bound"}),
        ("kl", {"approximation": "monte_carlo", "n_samples": 300, "random_state": 0}),
    ],
)
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_retriever_ranks_perturbed_copy_first(metric, metric_params, covariance_type):
    rng = np.random.default_rng(13)
    database = random_mixtures(rng, 10, 3, 3, covariance_type, spread=4.0)
    queries = perturbed(database[[2, 7, 5]], rng)
    retriever = ImageRetriever(n_neighbors=3, metric=metric, metric_params=metric_params)
    _, indices = retriever.fit(database).kneighbors(queries)
    np.testing.assert_array_equal(indices[:, 0], [2, 7, 5])
    # Also without explicit queries (each item excluded from its own neighbours).
    _, own = retriever.kneighbors()
    assert own.shape == (10, 3) and not (own == np.arange(10)[:, None]).any()


@pytest.mark.parametrize("metric", ["wasserstein", "kl"])
def test_retriever_rejects_other_dimension(metric):
    rng = np.random.default_rng(14)
    retriever = ImageRetriever(n_neighbors=2, metric=metric).fit(random_mixtures(rng, 5, 2, 3))
    with pytest.raises(ValueError, match="3-dimensional"):
        retriever.kneighbors(random_mixtures(rng, 2, 2, 4))


@pytest.mark.parametrize("metric", ["wasserstein", "kl"])
def test_retriever_rejects_other_descriptor_types(metric):
    rng = np.random.default_rng(15)
    retriever = ImageRetriever(n_neighbors=2, metric=metric).fit(random_mixtures(rng, 5, 2, 3))
    with pytest.raises(TypeError, match="GaussianMixtures"):
        retriever.kneighbors(np.stack([np.eye(3)] * 2))


@pytest.mark.parametrize("metric", ["wasserstein", "kl"])
def test_dispatch_by_descriptor_type(metric):
    rng = np.random.default_rng(16)
    mixtures = random_mixtures(rng, 5, 2, 3)
    assert get_kernel(metric, mixtures).descriptor == "Gaussian mixtures"
    spd = mixtures.covariances[:, 0]
    assert get_kernel(metric, spd).descriptor == "SPD matrices"
    retriever = ImageRetriever(n_neighbors=2, metric=metric).fit(spd)
    _, indices = retriever.kneighbors(spd[:2])
    np.testing.assert_array_equal(indices[:, 0], [0, 1])
    with pytest.raises(ValueError, match="Gaussian mixtures"):
        get_kernel(metric, np.ones((3, 2)))


def test_functions_reject_bad_input():
    rng = np.random.default_rng(17)
    X = random_mixtures(rng, 2, 2, 2)
    with pytest.raises(TypeError, match="GaussianMixtures"):
        mixture_wasserstein_distances(np.eye(2)[None], X)
    with pytest.raises(ValueError, match="same dimension"):
        mixture_kl_divergences(X, random_mixtures(rng, 2, 2, 3))
    with pytest.raises(ValueError, match="empty"):
        mixture_wasserstein_distances(X[:0], X)


@pytest.mark.parametrize(
    "function, params",
    [
        (mixture_wasserstein_distances, {}),
        (mixture_kl_divergences, {"approximation": "variational"}),
        (mixture_kl_divergences, {"approximation": "matched_bound"}),
    ],
)
def test_empty_components_change_nothing(function, params):
    # A component of weight 0 (as GMM fits can leave) is the same mixture without it.
    rng = np.random.default_rng(18)
    X = random_mixtures(rng, 3, 2, 3)
    padded = GaussianMixtures(
        np.concatenate([X.weights, np.zeros((3, 1))], axis=1),
        np.concatenate([X.means, np.ones((3, 1, 3))], axis=1),
        np.concatenate([X.covariances, np.broadcast_to(np.eye(3), (3, 1, 3, 3))], axis=1),
    )
    expected = function(X, X, **params)
    np.testing.assert_allclose(function(padded, X, **params), expected, atol=1e-8)
    np.testing.assert_allclose(function(X, padded, **params), expected, atol=1e-8)


# MW2: component costs computed only where the transport plans need them


def all_cells_mw2(Q, D):
    """MW2 from every component cost (POT's Bures costs), one ``ot.emd2`` per pair."""
    F, G = Q.full_covariances(), D.full_covariances()
    return np.array(
        [
            [
                np.sqrt(
                    max(
                        ot.emd2(
                            Q.weights[i] / Q.weights[i].sum(),
                            D.weights[j] / D.weights[j].sum(),
                            ot.gmm.dist_bures_squared(Q.means[i], D.means[j], F[i], G[j]),
                        ),
                        0.0,
                    )
                )
                for j in range(len(D))
            ]
            for i in range(len(Q))
        ]
    )


def spy_on_component_costs(monkeypatch):
    """Record the (query, database) component pairs whose exact cost MW2 computes."""
    requested = []
    original = mixtures_module.squared_bures_pairs

    def spy(query_state, database_state, query_index, database_index):
        requested.append(np.stack([query_index, database_index], axis=1))
        return original(query_state, database_state, query_index, database_index)

    monkeypatch.setattr(mixtures_module, "squared_bures_pairs", spy)
    return requested


@pytest.mark.parametrize("spread", [0.0, 0.5, 5.0])
@pytest.mark.parametrize("max_rounds", [1, 5])
def test_mw2_bounded_component_costs_are_exact(monkeypatch, spread, max_rounds):
    # Overlapping (spread 0) to well separated components; max_rounds=1 goes straight from the
    # bounds to every component cost.
    monkeypatch.setattr(mixtures_module, "_MAX_BOUNDED_ROUNDS", max_rounds)
    rng = np.random.default_rng(19)
    Q = random_mixtures(rng, 3, 5, 4, spread=spread)
    D = random_mixtures(rng, 15, 4, 4, spread=spread)
    np.testing.assert_allclose(
        mixture_wasserstein_distances(Q, D), all_cells_mw2(Q, D), rtol=1e-10, atol=1e-10
    )


def test_mw2_computes_few_component_costs_when_components_are_apart(monkeypatch):
    requested = spy_on_component_costs(monkeypatch)
    rng = np.random.default_rng(20)
    Q = random_mixtures(rng, 2, 6, 5, spread=5.0)
    D = random_mixtures(rng, 30, 6, 5, spread=5.0)
    distances = mixture_wasserstein_distances(Q, D)
    cells = np.concatenate(requested)
    # Each cell at most once, and far fewer than all 12 x 180 (a plan uses at most 11 of 36).
    assert len(np.unique(cells, axis=0)) == len(cells)
    assert len(cells) < 0.5 * (2 * 6) * (30 * 6)
    np.testing.assert_allclose(distances, all_cells_mw2(Q, D), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("max_rounds", [1, 5])
def test_mw2_never_computes_costs_of_empty_components(monkeypatch, max_rounds):
    monkeypatch.setattr(mixtures_module, "_MAX_BOUNDED_ROUNDS", max_rounds)
    requested = spy_on_component_costs(monkeypatch)
    rng = np.random.default_rng(21)
    Q, D = random_mixtures(rng, 2, 4, 3, spread=0.5), random_mixtures(rng, 6, 4, 3, spread=0.5)
    Q_weights, D_weights = Q.weights.copy(), D.weights.copy()
    Q_weights[:, 1] = 0.0
    D_weights[::2, 0] = 0.0
    Q_weights /= Q_weights.sum(axis=1, keepdims=True)
    D_weights /= D_weights.sum(axis=1, keepdims=True)
    Q = GaussianMixtures(Q_weights, Q.means, Q.covariances)
    D = GaussianMixtures(D_weights, D.means, D.covariances)
    distances = mixture_wasserstein_distances(Q, D)
    cells = np.concatenate(requested)
    assert (Q.weights.reshape(-1)[cells[:, 0]] > 0).all()
    assert (D.weights.reshape(-1)[cells[:, 1]] > 0).all()
    np.testing.assert_allclose(distances, all_cells_mw2(Q, D), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("types", [("full", "full"), ("full", "diag"), ("diag", "full")])
def test_mw2_component_lower_bounds(types):
    rng = np.random.default_rng(22)
    Q = random_mixtures(rng, 4, 3, 5, types[0], spread=0.3)
    D = random_mixtures(rng, 5, 3, 5, types[1], spread=0.3, scale=30.0)
    covariances = Q.covariances.copy()
    covariances[0, 0] *= 1e-6  # nearly singular
    Q = GaussianMixtures(Q.weights, Q.means, covariances, types[0])
    query_state = mixtures_module._prepare_mixture_wasserstein(Q)
    database_state = mixtures_module._prepare_mixture_wasserstein(D)
    bounds = mixtures_module._component_lower_bounds(query_state, database_state)
    exact = mixtures_module._component_squared_bures(query_state, database_state)
    assert (bounds <= exact * (1 + 1e-12) + 1e-12).all()


def test_mw2_component_lower_bounds_are_tight_for_shifted_copies():
    # Same covariances: W2^2 is the squared shift of the means, and so are both bounds.
    rng = np.random.default_rng(23)
    Q = random_mixtures(rng, 1, 4, 6)
    shifts = rng.standard_normal((1, 4, 6))
    D = GaussianMixtures(Q.weights, Q.means + shifts, Q.covariances)
    bounds = mixtures_module._component_lower_bounds(
        mixtures_module._prepare_mixture_wasserstein(Q),
        mixtures_module._prepare_mixture_wasserstein(D),
    )
    np.testing.assert_allclose(np.diag(bounds), (shifts[0] ** 2).sum(axis=1), rtol=1e-9)


@pytest.mark.parametrize("with_means", [False, True])
def test_squared_bures_of_selected_pairs(with_means):
    rng = np.random.default_rng(24)
    A = rng.standard_normal((7, 4, 6))
    B = rng.standard_normal((9, 4, 6))
    Q, D = A @ A.swapaxes(1, 2) + 0.1 * np.eye(4), B @ B.swapaxes(1, 2) + 0.1 * np.eye(4)
    Q_means = rng.standard_normal((7, 4)) if with_means else None
    query_state, database_state = prepare_bures(Q, Q_means), prepare_bures(D)
    query_index = rng.integers(0, 7, size=20)
    database_index = rng.integers(0, 9, size=20)
    expected = squared_bures(query_state, database_state)[query_index, database_index]
    np.testing.assert_allclose(
        squared_bures_pairs(query_state, database_state, query_index, database_index),
        expected,
        rtol=1e-12,
    )
    empty = np.array([], dtype=int)
    assert squared_bures_pairs(query_state, database_state, empty, empty).shape == (0,)
