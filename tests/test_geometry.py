import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics.pairwise import cosine_distances as sklearn_cosine_distances

from skretrieval.geometry import (
    DistanceKernel,
    cosine_distances,
    euclidean_distances,
    get_kernel,
    register_kernel,
    registered_metrics,
)


@pytest.fixture
def sets():
    rng = np.random.default_rng(0)
    return rng.normal(size=(7, 5)), rng.normal(size=(11, 5))


def test_cosine_matches_scikit_learn(sets):
    Q, D = sets
    np.testing.assert_allclose(cosine_distances(Q, D), sklearn_cosine_distances(Q, D), atol=1e-12)


def test_cosine_prenormalized_path_equals_plain(sets):
    Q, D = sets
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    Dn = D / np.linalg.norm(D, axis=1, keepdims=True)
    np.testing.assert_allclose(cosine_distances(Qn, Dn, normalized=True), cosine_distances(Q, D))


def test_cosine_bounds_and_zero_vector():
    Q = np.array([[1.0, 0.0], [0.0, 0.0]])
    D = np.array([[1.0, 0.0], [-3.0, 0.0]])
    distances = cosine_distances(Q, D)
    np.testing.assert_allclose(distances, [[0.0, 2.0], [1.0, 1.0]])
    assert np.isfinite(distances).all()


def test_euclidean_matches_scipy(sets):
    Q, D = sets
    np.testing.assert_allclose(euclidean_distances(Q, D), cdist(Q, D), atol=1e-12)
    squared_norms = (D**2).sum(axis=1)
    np.testing.assert_allclose(
        euclidean_distances(Q, D, D_squared_norms=squared_norms), cdist(Q, D), atol=1e-12
    )


def test_euclidean_identical_points_are_exactly_zero_not_nan():
    X = np.full((3, 4), 1e8)
    distances = euclidean_distances(X, X)
    assert np.isfinite(distances).all()
    assert (distances >= 0).all()


def test_float32_stays_float32(sets):
    Q, D = (s.astype(np.float32) for s in sets)
    assert cosine_distances(Q, D).dtype == np.float32
    assert euclidean_distances(Q, D).dtype == np.float32


def test_unknown_metric_lists_registered_ones():
    with pytest.raises(ValueError, match="Unknown metric 'nope'.*cosine"):
        get_kernel("nope")


def test_registered_kernel_is_available_by_name():
    kernel = DistanceKernel(
        name="_test_manhattan",
        descriptor="vectors",
        validate=lambda X, name="X": np.asarray(X, dtype=float),
        prepare=lambda X: np.asarray(X),
        pairwise=lambda Q, D: np.abs(Q[:, None, :] - D[None, :, :]).sum(-1),
    )
    register_kernel(kernel)
    assert "_test_manhattan" in registered_metrics()
    assert get_kernel("_test_manhattan") is kernel


def test_registered_metrics_of_a_descriptor_type():
    from skretrieval.descriptors import GaussianMixtures

    vectors, spd = np.ones((4, 3)), np.stack([np.eye(3)] * 4)
    mixtures = GaussianMixtures(
        np.full((4, 2), 0.5), np.zeros((4, 2, 3)), np.ones((4, 2, 3)), "diag"
    )
    assert {"cosine", "euclidean"} <= set(registered_metrics(vectors))
    assert not {"affine_invariant", "stein"} & set(registered_metrics(vectors))
    spd_metrics = {"affine_invariant", "jeffreys", "kl", "log_euclidean", "stein", "wasserstein"}
    assert set(registered_metrics(spd)) == spd_metrics
    assert set(registered_metrics(mixtures)) == {"kl", "wasserstein"}
    assert set(registered_metrics()) >= spd_metrics | {"cosine", "euclidean"}
