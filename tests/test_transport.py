"""Batched exact transport solver (geometry._transport) against POT's network simplex."""

import numpy as np
import ot
import pytest

from skretrieval.descriptors import GaussianMixtures
from skretrieval.geometry import mixture_wasserstein_distances
from skretrieval.geometry._mixtures import _component_squared_bures, _prepare_mixture_wasserstein
from skretrieval.geometry._transport import batched_transport_cost

SIZES = [(2, 2), (2, 5), (3, 3), (4, 4), (5, 3), (8, 8)]
KINDS = ["random", "equal", "integer", "zeros", "one_hot", "repeated"]


def pot_costs(a, b, cost):
    """Oracle: POT's exact solver, one problem at a time."""
    return np.array([ot.emd2(a[p], b[p], cost[p], check_marginals=False) for p in range(len(a))])


def random_problems(rng, kind, n, m, k):
    """``n`` problems of one family; most families are degenerate on purpose."""
    if kind == "random":
        a, b = rng.dirichlet(np.ones(m), n), rng.dirichlet(np.ones(k), n)
        cost = rng.random((n, m, k)) ** 2 * 10
    elif kind == "equal":  # equal weights: partial sums tie everywhere
        a, b = np.full((n, m), 1 / m), np.full((n, k), 1 / k)
        cost = rng.random((n, m, k))
    elif kind == "integer":  # integer weights and costs with many ties
        a = rng.integers(0, 3, (n, m)).astype(float)
        b = rng.integers(0, 3, (n, k)).astype(float)
        a[:, 0] += 1
        b[:, -1] += 1
        a, b = a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)
        cost = rng.integers(0, 3, (n, m, k)).astype(float)
    elif kind == "zeros":  # zero weights on both sides
        a = rng.dirichlet(np.ones(m), n) * (rng.random((n, m)) < 0.6)
        a[:, 0] += 0.01
        b = np.full((n, k), 1.0)
        b[:, rng.integers(0, k)] = 0.0
        a, b = a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)
        cost = rng.integers(0, 4, (n, m, k)).astype(float)
    elif kind == "one_hot":  # a point mass on one side
        a = np.eye(m)[rng.integers(0, m, n)]
        b = 0.5 * np.eye(k)[rng.integers(0, k, n)] + 0.5 / k
        cost = rng.random((n, m, k))
    elif kind == "repeated":  # repeated rows and columns of costs, equal weights
        a, b = np.full((n, m), 1 / m), rng.dirichlet(np.ones(k), n)
        cost = rng.random((n, 1, k)).repeat(m, axis=1)
        cost[:, :, -1] = cost[:, :, 0]
    return a, b, cost


@pytest.mark.parametrize("m, k", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_costs_match_pot(m, k, kind):
    rng = np.random.default_rng(100 * m + k + 7 * KINDS.index(kind))
    a, b, cost = random_problems(rng, kind, 200, m, k)
    ours = batched_transport_cost(a, b, cost)
    scale = np.abs(cost).max()
    np.testing.assert_allclose(ours, pot_costs(a, b, cost), rtol=1e-9, atol=1e-12 * scale)


@pytest.mark.parametrize("m, k", SIZES)
@pytest.mark.parametrize("kind", ["random", "equal", "zeros", "integer"])
def test_plans_are_optimal_basic_couplings(m, k, kind):
    rng = np.random.default_rng(m + 10 * k)
    a, b, cost = random_problems(rng, kind, 200, m, k)
    costs, plans = batched_transport_cost(a, b, cost, return_plans=True)
    assert plans.shape == (200, m, k)
    assert plans.min() >= 0
    np.testing.assert_allclose(plans.sum(axis=2), a, atol=1e-14)
    np.testing.assert_allclose(plans.sum(axis=1), b, atol=1e-14)
    np.testing.assert_allclose(np.einsum("pij,pij->p", plans, cost), costs, rtol=1e-12)
    # Basic solutions: at most m + k - 1 cells carry mass.
    assert np.count_nonzero(plans, axis=(1, 2)).max() <= m + k - 1


@pytest.mark.parametrize("m, k", [(1, 6), (20, 20), (40, 30)])
def test_larger_problems_match_pot(m, k):
    # Beyond 64 rows and columns the basis inverse is built without bit masks.
    rng = np.random.default_rng(m * k)
    a, b, cost = random_problems(rng, "zeros", 10, m, k)
    np.testing.assert_allclose(
        batched_transport_cost(a, b, cost), pot_costs(a, b, cost), rtol=1e-9, atol=1e-13
    )


def test_blocks_of_problems(monkeypatch):
    # Problems are solved in blocks of at least 1024: 2,500 problems make three blocks.
    from skretrieval.geometry import _transport

    rng = np.random.default_rng(5)
    a, b, cost = random_problems(rng, "random", 2500, 4, 3)
    whole = batched_transport_cost(a, b, cost)
    monkeypatch.setattr(_transport, "_BLOCK_ENTRIES", 1)
    np.testing.assert_allclose(batched_transport_cost(a, b, cost), whole, rtol=1e-14)
    np.testing.assert_allclose(whole[::50], pot_costs(a[::50], b[::50], cost[::50]), rtol=1e-9)


def test_hand_worked_problems():
    a = np.array([[0.5, 0.5]] * 3)
    cost = np.array(
        [
            [[0.0, 1.0], [1.0, 0.0]],  # the identity coupling is free
            [[1.0, 0.0], [0.0, 1.0]],  # the anti-diagonal one is
            # The cheapest cell first (minimum-cost start) costs 0.5 * 1 + 0.5 * 100; the
            # anti-diagonal costs 0.5 * 2 + 0.5 * 3: the simplex has to pivot.
            [[1.0, 2.0], [3.0, 100.0]],
        ]
    )
    costs, plans = batched_transport_cost(a, a, cost, return_plans=True)
    np.testing.assert_allclose(costs, [0.0, 0.0, 2.5])
    np.testing.assert_allclose(plans[2], [[0.0, 0.5], [0.5, 0.0]])


def test_textbook_problem():
    # Supplies 20, 30, 25 and demands 10, 10, 35, 20: optimum 315. By hand: u = (0, 3, 1) and
    # v = (2, 1, 2, 5) are dual feasible (c_ij >= u_i + v_j) with value 115 + 200 = 315, and
    # the plan 10 (0, 0), 10 (0, 2), 10 (1, 1), 20 (1, 3), 25 (2, 2) costs 315.
    supply = np.array([[20.0, 30.0, 25.0]])
    demand = np.array([[10.0, 10.0, 35.0, 20.0]])
    cost = np.array([[[2.0, 2.0, 2.0, 5.0], [5.0, 4.0, 5.0, 8.0], [3.0, 2.0, 3.0, 7.0]]])
    np.testing.assert_allclose(batched_transport_cost(supply, demand, cost), [315.0])
    np.testing.assert_allclose(pot_costs(supply, demand, cost), [315.0])


def test_single_source_or_target():
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(4), 5), np.ones((5, 1))
    cost = rng.random((5, 4, 1))
    np.testing.assert_allclose(batched_transport_cost(a, b, cost), (a * cost[:, :, 0]).sum(1))
    np.testing.assert_allclose(
        batched_transport_cost(b, a, cost.transpose(0, 2, 1)), (a * cost[:, :, 0]).sum(1)
    )


def test_target_weights_are_rescaled_to_the_source_total():
    rng = np.random.default_rng(1)
    a, b, cost = random_problems(rng, "random", 50, 3, 4)
    np.testing.assert_allclose(
        batched_transport_cost(a, b * (1 + 1e-9), cost), batched_transport_cost(a, b, cost)
    )
    np.testing.assert_allclose(
        batched_transport_cost(2 * a, 2 * b, cost), 2 * batched_transport_cost(a, b, cost)
    )


def test_invariances():
    rng = np.random.default_rng(2)
    a, b, cost = random_problems(rng, "random", 100, 4, 5)
    reference = batched_transport_cost(a, b, cost)
    # Relabelling sources and targets.
    rows, columns = rng.permutation(4), rng.permutation(5)
    np.testing.assert_allclose(
        batched_transport_cost(a[:, rows], b[:, columns], cost[:, rows][:, :, columns]),
        reference,
    )
    # Adding u_i + v_j to the costs adds <a, u> + <b, v> to every coupling's cost.
    u, v = rng.standard_normal((100, 4)), rng.standard_normal((100, 5))
    shifted = cost + u[:, :, None] + v[:, None, :]
    np.testing.assert_allclose(
        batched_transport_cost(a, b, shifted),
        reference + (a * u).sum(1) + (b * v).sum(1),
        rtol=1e-12,
        atol=1e-12,
    )


def test_constant_costs():
    a = np.full((4, 6), 1 / 6)
    b = np.full((4, 6), 1 / 6)
    cost = np.broadcast_to(np.arange(4.0)[:, None, None], (4, 6, 6))
    np.testing.assert_allclose(batched_transport_cost(a, b, cost), np.arange(4.0))


def test_empty_batch():
    costs, plans = batched_transport_cost(
        np.ones((0, 3)), np.ones((0, 2)), np.ones((0, 3, 2)), return_plans=True
    )
    assert costs.shape == (0,) and plans.shape == (0, 3, 2)


def test_iteration_cap():
    a = np.array([[0.5, 0.5]])
    cost = np.array([[[1.0, 2.0], [3.0, 100.0]]])
    with pytest.raises(RuntimeError, match="did not finish 1 of 1 problems"):
        batched_transport_cost(a, a, cost, max_iter=0)


@pytest.mark.parametrize("max_iter", [-1, 2.5, True])
def test_bad_max_iter(max_iter):
    with pytest.raises(ValueError, match="max_iter must be a non-negative integer"):
        batched_transport_cost(
            np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2, 2)), max_iter=max_iter
        )


@pytest.mark.parametrize(
    "a, b, cost, message",
    [
        (np.ones(3), np.ones((1, 3)), np.ones((1, 3, 3)), "of shape"),
        (np.ones((2, 3)), np.ones((1, 3)), np.ones((2, 3, 3)), "Inconsistent shapes"),
        (np.ones((1, 3)), np.ones((1, 2)), np.ones((1, 3, 3)), "Inconsistent shapes"),
        (np.ones((1, 0)), np.ones((1, 2)), np.ones((1, 0, 2)), "at least one source"),
        (np.ones((1, 2)), np.ones((1, 2)), np.full((1, 2, 2), np.nan), "cost contains NaN"),
        (np.array([[1.0, -1.0]]), np.ones((1, 2)), np.ones((1, 2, 2)), "non-negative"),
        (np.ones((1, 2)), np.zeros((1, 2)), np.ones((1, 2, 2)), "positive sum"),
    ],
)
def test_bad_input(a, b, cost, message):
    with pytest.raises(ValueError, match=message):
        batched_transport_cost(a, b, cost)


# MW2 through skretrieval.geometry, against the former per-pair solve.


def mixtures(rng, n, n_components, d, covariance_type):
    weights = rng.dirichlet(np.ones(n_components), size=n)
    weights[::3] = 1 / n_components  # degenerate: equal weights
    means = 2.0 * rng.standard_normal((n, n_components, d))
    means[1::4, -1] = means[1::4, 0]  # repeated components
    if covariance_type == "full":
        A = rng.standard_normal((n, n_components, d, d + 2))
        covariances = A @ A.swapaxes(-1, -2) / (d + 2) + 0.1 * np.eye(d)
        covariances[1::4, -1] = covariances[1::4, 0]
    else:
        covariances = rng.uniform(0.2, 2.0, (n, n_components, d))
        covariances[1::4, -1] = covariances[1::4, 0]
    return GaussianMixtures(weights, means, covariances, covariance_type)


def per_pair_mw2(Q, D):
    """MW2 as before: the same component costs, one ``ot.emd2`` per pair of mixtures."""
    query_state, database_state = _prepare_mixture_wasserstein(Q), _prepare_mixture_wasserstein(D)
    cost = _component_squared_bures(query_state, database_state)
    cost = cost.reshape(len(Q), Q.n_components, len(D), D.n_components).transpose(0, 2, 1, 3)
    squared = np.array(
        [
            [
                ot.emd2(
                    query_state.weights[i],
                    database_state.weights[j],
                    cost[i, j],
                    check_marginals=False,
                )
                for j in range(len(D))
            ]
            for i in range(len(Q))
        ]
    )
    return np.sqrt(np.maximum(squared, 0))


@pytest.mark.parametrize(
    "query_components, database_components, covariance_types",
    [(2, 2, ("full", "full")), (4, 4, ("diag", "diag")), (3, 5, ("full", "diag"))],
)
def test_mixture_wasserstein_unchanged(query_components, database_components, covariance_types):
    rng = np.random.default_rng(query_components + database_components)
    Q = mixtures(rng, 12, query_components, 3, covariance_types[0])
    D = mixtures(rng, 15, database_components, 3, covariance_types[1])
    np.testing.assert_allclose(
        mixture_wasserstein_distances(Q, D), per_pair_mw2(Q, D), rtol=1e-9, atol=1e-9
    )
    # A set against itself: zero on the diagonal (up to the Bures round-off).
    np.testing.assert_allclose(
        mixture_wasserstein_distances(Q, Q), per_pair_mw2(Q, Q), rtol=1e-9, atol=1e-6
    )
