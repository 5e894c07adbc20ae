import pickle

import numpy as np
import pytest
from ot.gaussian import bures_wasserstein_distance
from pyriemann.geometry.distance import (
    distance_kullback,
    distance_kullback_sym,
    distance_logdet,
    distance_logeuclid,
    distance_riemann,
    distance_wasserstein,
)

from skretrieval.geometry import (
    DistanceKernel,
    affine_invariant_distances,
    bures_wasserstein_distances,
    get_kernel,
    jeffreys_distances,
    kl_divergences,
    log_euclidean_distances,
    register_kernel,
    stein_distances,
)
from skretrieval.neighbors import ImageRetriever

FUNCTIONS = {
    "affine_invariant": affine_invariant_distances,
    "log_euclidean": log_euclidean_distances,
    "kl": kl_divergences,
    "jeffreys": jeffreys_distances,
    "wasserstein": bures_wasserstein_distances,
    "stein": stein_distances,
}
# pyriemann's distance_kullback(A, B) = 0.5 (tr(B^-1 A) - n + log det B / det A) = KL(A || B):
# the query goes first, as in ours.
ORACLES = {
    "affine_invariant": distance_riemann,
    "log_euclidean": distance_logeuclid,
    "kl": distance_kullback,
    "jeffreys": distance_kullback_sym,
    "wasserstein": distance_wasserstein,
    "stein": distance_logdet,
}
METRICS = sorted(FUNCTIONS)
SYMMETRIC = [m for m in METRICS if m != "kl"]


def random_spd(rng, n, d, condition=10.0):
    """SPD matrices with eigenvalues spread log-uniformly over ``condition``."""
    A = rng.normal(size=(n, d, d))
    V, _ = np.linalg.qr(A)
    w = condition ** rng.uniform(0, 1, size=(n, d))
    w[:, 0], w[:, -1] = 1.0, condition  # exactly this condition number
    w *= rng.uniform(0.5, 2.0, size=(n, 1))
    return (V * w[:, None, :]) @ V.transpose(0, 2, 1)


def stein_separate_logdets(A, B):
    logdet = lambda S: np.linalg.slogdet(S)[1]  # noqa: E731
    return np.sqrt(logdet((A + B) / 2) - logdet(A) / 2 - logdet(B) / 2)


def oracle_matrix(oracle, Q, D):
    return np.array([[oracle(q, d) for d in D] for q in Q])


@pytest.mark.parametrize("d", [2, 5, 16])
@pytest.mark.parametrize("metric", METRICS)
def test_equals_pyriemann(metric, d):
    rng = np.random.default_rng(d)
    Q, D = random_spd(rng, 3, d), random_spd(rng, 7, d)
    expected = oracle_matrix(ORACLES[metric], Q, D)
    np.testing.assert_allclose(FUNCTIONS[metric](Q, D), expected, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("d", [2, 5, 16])
def test_bures_wasserstein_with_means_equals_pot(d):
    rng = np.random.default_rng(d)
    Q, D = random_spd(rng, 3, d), random_spd(rng, 5, d)
    Qm, Dm = rng.normal(size=(3, d)), rng.normal(size=(5, d))
    expected = np.array(
        [
            [bures_wasserstein_distance(qm, dm, q, dd) for dd, dm in zip(D, Dm, strict=True)]
            for q, qm in zip(Q, Qm, strict=True)
        ]
    )
    actual = bures_wasserstein_distances(Q, D, Q_means=Qm, D_means=Dm)
    np.testing.assert_allclose(actual, expected, rtol=1e-7, atol=1e-7)


def gaussian_kl(mq, Sq, md, Sd):
    """KL(N(mq, Sq) || N(md, Sd)) written out with solves, per pair."""
    d = len(mq)
    delta = md - mq
    return 0.5 * (
        np.trace(np.linalg.solve(Sd, Sq))
        + delta @ np.linalg.solve(Sd, delta)
        - d
        + np.linalg.slogdet(Sd)[1]
        - np.linalg.slogdet(Sq)[1]
    )


@pytest.mark.parametrize("which", ["both", "query", "database"])
def test_kl_and_jeffreys_with_means(which):
    rng = np.random.default_rng(1)
    Q, D = random_spd(rng, 3, 4), random_spd(rng, 6, 4)
    Qm = rng.normal(size=(3, 4)) if which in ("both", "query") else None
    Dm = rng.normal(size=(6, 4)) if which in ("both", "database") else None
    qm = np.zeros((3, 4)) if Qm is None else Qm
    dm = np.zeros((6, 4)) if Dm is None else Dm
    kl = np.array([[gaussian_kl(qm[i], Q[i], dm[j], D[j]) for j in range(6)] for i in range(3)])
    reverse = np.array(
        [[gaussian_kl(dm[j], D[j], qm[i], Q[i]) for j in range(6)] for i in range(3)]
    )
    np.testing.assert_allclose(kl_divergences(Q, D, Q_means=Qm, D_means=Dm), kl, rtol=1e-9)
    np.testing.assert_allclose(
        jeffreys_distances(Q, D, Q_means=Qm, D_means=Dm), kl + reverse, rtol=1e-9
    )


def test_hand_worked_values():
    eye = np.eye(2)[None]
    scaled = np.diag([np.e**2, 1.0])[None]
    np.testing.assert_allclose(affine_invariant_distances(eye, scaled), [[2.0]])
    np.testing.assert_allclose(log_euclidean_distances(eye, scaled), [[2.0]])
    # W2 between N(0, I) and N(0, 4 I) in 2-D: sqrt(2 * (2 - 1)^2).
    np.testing.assert_allclose(bures_wasserstein_distances(eye, 4 * eye), [[np.sqrt(2)]])
    # KL(N(0, 1) || N(0, 2)) = 0.5 (1/2 - 1 + log 2), per dimension.
    np.testing.assert_allclose(kl_divergences(eye, 2 * eye), [[0.5 - 1 + np.log(2)]])


@pytest.mark.parametrize("metric", METRICS)
def test_identity_is_zero(metric):
    X = random_spd(np.random.default_rng(2), 5, 8)
    diagonal = np.diag(FUNCTIONS[metric](X, X))
    np.testing.assert_allclose(diagonal, 0, atol=1e-6)


@pytest.mark.parametrize("metric", SYMMETRIC)
def test_symmetric(metric):
    rng = np.random.default_rng(3)
    X = random_spd(rng, 6, 5)
    distances = FUNCTIONS[metric](X, X)
    np.testing.assert_allclose(distances, distances.T, rtol=1e-8, atol=1e-8)


def test_kl_is_not_symmetric_and_goes_query_to_database():
    rng = np.random.default_rng(4)
    A, B = random_spd(rng, 1, 3), random_spd(rng, 1, 3)
    assert kl_divergences(A, B)[0, 0] == pytest.approx(distance_kullback(A[0], B[0]))
    assert kl_divergences(A, B)[0, 0] != pytest.approx(kl_divergences(B, A)[0, 0])


@pytest.mark.parametrize("metric", METRICS)
def test_ill_conditioned_inputs_stay_finite_and_accurate(metric):
    rng = np.random.default_rng(5)
    Q, D = random_spd(rng, 2, 6, condition=1e8), random_spd(rng, 4, 6, condition=1e8)
    distances = FUNCTIONS[metric](Q, D)
    assert np.isfinite(distances).all()
    assert (distances >= 0).all()
    # Both sides at condition 1e8 make generalised eigenproblems of condition up to 1e16, where
    # float64 eigensolvers (ours and pyriemann's alike, checked against 50-digit mpmath) agree
    # to about 1e-3 only.
    rtol = 1e-3 if metric == "affine_invariant" else 1e-5
    # pyriemann's distance_logdet takes log det(A @ B), which loses digits here (ours matched
    # 50-digit mpmath to 1e-11); separate log-determinants are the oracle.
    oracle = stein_separate_logdets if metric == "stein" else ORACLES[metric]
    np.testing.assert_allclose(distances, oracle_matrix(oracle, Q, D), rtol=rtol)
    assert np.isfinite(np.diag(FUNCTIONS[metric](Q, Q))).all()


@pytest.mark.parametrize("metric", METRICS)
def test_float32_input_is_computed_in_float64(metric):
    rng = np.random.default_rng(6)
    Q, D = random_spd(rng, 2, 4), random_spd(rng, 3, 4)
    Q32, D32 = Q.astype(np.float32), D.astype(np.float32)
    distances = FUNCTIONS[metric](Q32, D32)
    assert distances.dtype == np.float64
    expected = FUNCTIONS[metric](Q32.astype(np.float64), D32.astype(np.float64))
    np.testing.assert_allclose(distances, expected, rtol=1e-6, atol=1e-6)


def test_nearly_symmetric_input_is_symmetrised():
    X = random_spd(np.random.default_rng(7), 3, 4)
    noisy = X.copy()
    noisy[:, 0, 1] += 1e-9
    np.testing.assert_allclose(
        affine_invariant_distances(noisy, X), affine_invariant_distances(X, X), atol=1e-6
    )


@pytest.fixture
def spd_set():
    return random_spd(np.random.default_rng(8), 4, 3)


def test_not_symmetric_names_the_matrix(spd_set):
    spd_set[2, 0, 1] += 1.0
    with pytest.raises(ValueError, match=r"X\[2\] is not symmetric"):
        get_kernel("affine_invariant").validate(spd_set, "X")


def test_not_positive_definite_names_the_matrix(spd_set):
    spd_set[1] = np.diag([1.0, -1.0, 2.0])
    with pytest.raises(ValueError, match=r"X\[1\] is not positive definite"):
        get_kernel("log_euclidean").validate(spd_set, "X")
    spd_set[1] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"X\[1\] is not positive definite"):
        get_kernel("stein").validate(spd_set, "X")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_names_the_matrix(spd_set, bad):
    spd_set[3, 1, 1] = bad
    with pytest.raises(ValueError, match=r"X\[3\] contains (NaN|infinite)"):
        get_kernel("kl").validate(spd_set, "X")


def test_vectors_given_to_an_spd_metric():
    with pytest.raises(ValueError, match=r"'affine_invariant' expects SPD matrices .*cosine"):
        get_kernel("affine_invariant").validate(np.ones((5, 3)), "X")
    with pytest.raises(ValueError, match=r"'wasserstein' expects SPD matrices.*shape \(5, 3\)"):
        ImageRetriever(metric="wasserstein").fit(np.ones((5, 3)))


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        affine_invariant_distances(np.ones((2, 3, 4)), np.ones((2, 3, 4)))
    with pytest.raises(TypeError, match="SPD matrices"):
        get_kernel("kl").validate("not matrices", "X")
    with pytest.raises(ValueError, match="empty"):
        log_euclidean_distances(np.ones((0, 2, 2)), np.eye(2)[None])
    with pytest.raises(ValueError, match="same size"):
        stein_distances(np.eye(2)[None], np.eye(3)[None])
    with pytest.raises(ValueError, match="Q_means must have shape"):
        kl_divergences(np.eye(2)[None], np.eye(2)[None], Q_means=np.zeros((1, 3)))


def test_retriever_rejects_queries_of_another_size():
    retriever = ImageRetriever(n_neighbors=1, metric="jeffreys").fit(np.eye(3)[None])
    with pytest.raises(ValueError, match="same size"):
        retriever.kneighbors(np.eye(2)[None])


@pytest.mark.parametrize("metric", METRICS)
def test_retriever_equals_brute_force(metric):
    rng = np.random.default_rng(9)
    database, queries = random_spd(rng, 12, 4), random_spd(rng, 3, 4)
    retriever = ImageRetriever(n_neighbors=4, metric=metric).fit(database)
    distances, indices = retriever.kneighbors(queries)
    expected = oracle_matrix(ORACLES[metric], queries, database)
    np.testing.assert_array_equal(indices, np.argsort(expected, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(distances, np.sort(expected, axis=1)[:, :4], rtol=1e-7)

    # X=None: the database against itself, each item excluded from its own list.
    distances, indices = retriever.kneighbors()
    self_distances = oracle_matrix(ORACLES[metric], database, database)
    np.fill_diagonal(self_distances, np.inf)
    np.testing.assert_array_equal(indices, np.argsort(self_distances, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(distances, np.sort(self_distances, axis=1)[:, :4], rtol=1e-7)


def test_retriever_with_spd_metric_pickles():
    database = random_spd(np.random.default_rng(10), 6, 3)
    retriever = ImageRetriever(n_neighbors=2, metric="stein").fit(database)
    restored = pickle.loads(pickle.dumps(retriever))
    np.testing.assert_array_equal(
        restored.kneighbors(database[:2])[1], retriever.kneighbors(database[:2])[1]
    )


class _Boxes:
    """A stand-in for another descriptor container, to test dispatch on descriptor type."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=float)

    def __len__(self):
        return len(self.values)

    def __getitem__(self, index):
        return _Boxes(self.values[index])


@pytest.fixture
def boxes_kernel():
    from skretrieval.geometry import _registry

    kernel = DistanceKernel(
        name="wasserstein",
        descriptor="test boxes",
        validate=lambda X, name="X": X,
        prepare=lambda X: X.values,
        pairwise=lambda Q, D: np.abs(Q[:, None] - D[None, :]),
        accepts=lambda X: isinstance(X, _Boxes),
    )
    register_kernel(kernel)
    yield kernel
    del _registry._KERNELS["wasserstein"]["test boxes"]


def test_one_name_dispatches_on_descriptor_type(boxes_kernel):
    spd = random_spd(np.random.default_rng(11), 5, 3)
    assert get_kernel("wasserstein", _Boxes([1.0])) is boxes_kernel
    assert get_kernel("wasserstein", spd).descriptor == "SPD matrices"

    retriever = ImageRetriever(n_neighbors=1, metric="wasserstein").fit(_Boxes([0.0, 5.0, 9.0]))
    np.testing.assert_array_equal(retriever.kneighbors(_Boxes([6.0, 1.0]))[1], [[1], [0]])
    retriever.fit(spd)
    np.testing.assert_array_equal(retriever.kneighbors(spd[:2])[1], [[0], [1]])
    with pytest.raises(TypeError, match="expects SPD matrices"):
        retriever.kneighbors(_Boxes([1.0]))
    with pytest.raises(ValueError, match="expects SPD matrices"):
        retriever.kneighbors(np.ones((2, 3)))
    with pytest.raises(ValueError, match="expects SPD matrices or test boxes.*cosine"):
        ImageRetriever(metric="wasserstein").fit(np.ones((2, 3)))
    with pytest.raises(ValueError, match="several descriptor types"):
        get_kernel("wasserstein")


def clustered_spd(rng, n, d, n_clusters=10):
    centres = random_spd(rng, n_clusters, d, condition=100.0)
    labels = rng.integers(0, n_clusters, size=n)
    noise = random_spd(rng, n, d, condition=3.0)
    # Congruence by the centre's Cholesky factor keeps members near their centre.
    L = np.linalg.cholesky(centres[labels])
    return L @ (0.8 * np.eye(d) + 0.2 * noise) @ L.transpose(0, 2, 1)


def test_affine_invariant_shortlist_covering_the_database_is_exact():
    rng = np.random.default_rng(12)
    database, queries = random_spd(rng, 15, 4), random_spd(rng, 3, 4)
    exact = ImageRetriever(n_neighbors=5, metric="affine_invariant").fit(database)
    approximate = ImageRetriever(
        n_neighbors=5, metric="affine_invariant", metric_params={"shortlist": 15}
    ).fit(database)
    for got, expected in zip(
        approximate.kneighbors(queries), exact.kneighbors(queries), strict=True
    ):
        np.testing.assert_allclose(got, expected)


def test_affine_invariant_shortlist_returns_exact_distances_and_finds_neighbours():
    rng = np.random.default_rng(13)
    database, queries = clustered_spd(rng, 300, 6), clustered_spd(rng, 10, 6)
    kernel = get_kernel("affine_invariant")
    database_state = kernel.prepare(database, shortlist=30)
    distances = kernel.pairwise(kernel.prepare(queries, shortlist=30), database_state)
    assert (np.isfinite(distances).sum(axis=1) == 30).all()
    exact = affine_invariant_distances(queries, database)
    finite = np.isfinite(distances)
    np.testing.assert_allclose(distances[finite], exact[finite], rtol=1e-10)

    retriever = ImageRetriever(
        n_neighbors=5, metric="affine_invariant", metric_params={"shortlist": 30}
    ).fit(database)
    found = retriever.kneighbors(queries, return_distance=False)
    true = np.argsort(exact, axis=1)[:, :5]
    recall = np.mean([len(set(f) & set(t)) / 5 for f, t in zip(found, true, strict=True)])
    assert recall >= 0.9


@pytest.mark.parametrize(("shortlist", "error"), [(0, ValueError), (2.5, TypeError)])
def test_affine_invariant_shortlist_is_checked(shortlist, error):
    with pytest.raises(error, match="shortlist"):
        ImageRetriever(metric="affine_invariant", metric_params={"shortlist": shortlist}).fit(
            random_spd(np.random.default_rng(14), 3, 2)
        )
