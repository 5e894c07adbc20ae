import pickle
import re
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.covariance import GraphicalLasso, empirical_covariance, ledoit_wolf, oas
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold, cross_val_score, train_test_split
from sklearn.utils import _safe_indexing

from skretrieval.descriptors import (
    GaussianMixtures,
    GMMDescriptor,
    LocalPCA,
    RegularizationWarning,
    SparseCovariance,
    gaussian_to_spd,
    local_features,
)


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    return [rng.random((16, 6, 5), dtype=np.float32) for _ in range(8)]


@pytest.fixture
def local():
    rng = np.random.default_rng(1)
    return [rng.normal(size=(40 + 3 * i, 5)) @ rng.normal(size=(5, 5)) for i in range(6)]


def _stacked_local(maps):
    return np.concatenate([fmap.reshape(fmap.shape[0], -1).T for fmap in maps]).astype(np.float64)


# ------------------------------------------------------------------------------------------
# local_features / gaussian_to_spd
# ------------------------------------------------------------------------------------------


def test_local_features_row_major():
    fmap = np.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    features = local_features(fmap)
    assert features.shape == (12, 2)
    np.testing.assert_array_equal(features[1 * 4 + 2], fmap[:, 1, 2])


def test_gaussian_to_spd_hand_worked():
    mean = np.array([1.0, 2.0])
    cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    expected = np.array([[3.0, 2.5, 1.0], [2.5, 5.0, 2.0], [1.0, 2.0, 1.0]])
    np.testing.assert_allclose(gaussian_to_spd(mean, cov), expected)
    # Schur complement of the last entry recovers the covariance.
    embedded = gaussian_to_spd(mean, cov)
    np.testing.assert_allclose(embedded[:2, :2] - np.outer(embedded[:2, 2], embedded[2, :2]), cov)


# ------------------------------------------------------------------------------------------
# LocalPCA
# ------------------------------------------------------------------------------------------


def test_local_pca_shapes_and_attributes(maps):
    maps = maps[:3] + [np.ones((16, 3, 7), dtype=np.float32)]
    pca = LocalPCA(n_components=4, random_state=0)
    assert pca.fit(maps) is pca
    out = pca.transform(maps)
    assert isinstance(out, list)
    assert [a.shape for a in out] == [(30, 4), (30, 4), (30, 4), (21, 4)]
    assert out[0].dtype == np.float32
    assert pca.n_features_in_ == 16
    assert pca.n_components_ == 4
    assert pca.components_.shape == (4, 16)
    assert pca.n_samples_ == 111


@pytest.mark.parametrize("normalize", [None, "l2", "power"])
def test_local_pca_matches_sklearn_pca_on_all_features(maps, normalize):
    stacked = _stacked_local(maps)
    if normalize == "power":
        stacked = np.sign(stacked) * np.sqrt(np.abs(stacked))
    if normalize is not None:
        stacked /= np.linalg.norm(stacked, axis=1, keepdims=True)
    maps64 = [m.astype(np.float64) for m in maps]
    out = LocalPCA(n_components=5, max_samples=None, normalize=normalize).fit_transform(maps64)
    expected = PCA(n_components=5).fit_transform(stacked)
    np.testing.assert_allclose(np.concatenate(out), expected, atol=1e-8)


def test_local_pca_normalisation_keeps_zero_features():
    fmap = np.zeros((3, 2, 2))
    fmap[:, 0, 0] = [4.0, 0.0, 0.0]
    fmap[:, 1, 1] = [0.0, 9.0, -16.0]
    for normalize in ("l2", "power"):
        pca = LocalPCA(n_components=2, normalize=normalize).fit([fmap])
        assert np.isfinite(pca.mean_).all()
    # power: sign-sqrt then L2 -> (0, 3, -4) / 5
    pca = LocalPCA(n_components=2, normalize="power").fit([fmap])
    np.testing.assert_allclose(pca.mean_, np.array([1.0, 0.6, -0.8]) / 4)


def test_local_pca_sampling_bound_and_proportions(maps):
    ragged = maps[:4] + [np.ones((16, 10, 10), dtype=np.float32)]  # 4 x 30 + 100 positions
    pca = LocalPCA(n_components=4, max_samples=44, random_state=0).fit(ragged)
    assert pca.n_samples_ == 44
    np.testing.assert_array_equal(pca.n_samples_per_image_, [6, 6, 6, 6, 20])
    assert pca.n_samples_per_image_.sum() == 44


def test_local_pca_deterministic(maps):
    a = LocalPCA(n_components=4, max_samples=50, random_state=3).fit_transform(maps)
    b = LocalPCA(n_components=4, max_samples=50, random_state=3).fit_transform(maps)
    c = LocalPCA(n_components=4, max_samples=50, random_state=4).fit_transform(maps)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[0], c[0])


def test_local_pca_sample_is_a_subset_of_positions(maps):
    pca = LocalPCA(n_components=3, max_samples=17, normalize=None, random_state=0).fit(maps)
    # With the sample drawn, the PCA mean must be the mean of 17 distinct real positions.
    stacked = _stacked_local(maps)
    full = LocalPCA(n_components=3, max_samples=None, normalize=None).fit(maps)
    assert pca.n_samples_ == 17
    assert not np.allclose(pca.mean_, full.mean_)
    assert np.all(pca.mean_ >= stacked.min(axis=0) - 1e-6)
    assert np.all(pca.mean_ <= stacked.max(axis=0) + 1e-6)


def test_local_pca_errors(maps):
    with pytest.raises(ValueError, match="exceeds the number of channels"):
        LocalPCA(n_components=17).fit(maps)
    with pytest.raises(ValueError, match="exceeds the number of sampled local features"):
        LocalPCA(n_components=10, max_samples=5).fit(maps)
    with pytest.raises(NotFittedError):
        LocalPCA().transform(maps)
    bad = [m.copy() for m in maps]
    bad[2][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"X\[2\] contains NaN"):
        LocalPCA(n_components=4).fit(bad)
    pca = LocalPCA(n_components=4).fit(maps)
    with pytest.raises(ValueError, match="8 channels, but LocalPCA was fitted with 16"):
        pca.transform([np.ones((8, 2, 2))])
    with pytest.raises(ValueError, match="normalize"):
        LocalPCA(normalize="l1").fit(maps)


def test_local_pca_sklearn_api(maps):
    pca = LocalPCA(n_components=4, random_state=0)
    assert clone(pca).get_params() == pca.get_params()
    pca.set_params(n_components=3, normalize=None)
    assert pca.get_params()["n_components"] == 3
    assert not pca.__sklearn_tags__().input_tags.two_d_array
    fitted = pca.fit(maps)
    restored = pickle.loads(pickle.dumps(fitted))
    for x, y in zip(fitted.transform(maps), restored.transform(maps), strict=True):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------------
# SparseCovariance
# ------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("assume_centered", [False, True])
@pytest.mark.parametrize(
    "estimator, oracle",
    [
        ("empirical", lambda X, c: empirical_covariance(X, assume_centered=c)),
        ("ledoit_wolf", lambda X, c: ledoit_wolf(X, assume_centered=c)[0]),
        ("oas", lambda X, c: oas(X, assume_centered=c)[0]),
        (
            "graphical_lasso",
            lambda X, c: GraphicalLasso(alpha=0.05, assume_centered=c).fit(X).covariance_,
        ),
    ],
)
def test_sparse_covariance_matches_sklearn(local, estimator, oracle, assume_centered):
    out = SparseCovariance(
        estimator=estimator, alpha=0.05, assume_centered=assume_centered
    ).fit_transform(local)
    assert out.shape == (6, 5, 5)
    assert out.dtype == np.float64
    expected = np.stack([oracle(X, assume_centered) for X in local])
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(out) > 0)


def test_sparse_covariance_graphical_lasso_convergence_warning(local):
    with pytest.warns(ConvergenceWarning, match=r"max_iter=1 iterations for images \[0, 1"):
        out = SparseCovariance(estimator="graphical_lasso", alpha=0.01, max_iter=1).transform(local)
    assert np.all(np.linalg.eigvalsh(out) > 0)


def test_sparse_covariance_graphical_lasso_is_sparse():
    rng = np.random.default_rng(0)
    local = [rng.normal(size=(200, 6)) for _ in range(2)]
    out = SparseCovariance(estimator="graphical_lasso", alpha=0.3).fit_transform(local)
    precision = np.linalg.inv(out)
    off_diagonal = precision[:, ~np.eye(6, dtype=bool)]
    assert np.mean(np.abs(off_diagonal) < 1e-8) > 0.5


def test_sparse_covariance_regularises_few_features_with_warning(local):
    rng = np.random.default_rng(2)
    few = [local[0], rng.normal(size=(3, 5)), local[1]]
    with pytest.warns(RegularizationWarning, match=r"X\[1\] \(3 local features\)"):
        out = SparseCovariance(estimator="empirical", reg=1e-3).fit_transform(few)
    eigenvalues = np.linalg.eigvalsh(out)
    assert np.all(eigenvalues > 0)
    S = empirical_covariance(few[1])
    mu = np.trace(S) / 5
    np.testing.assert_allclose(out[1], (1 - 1e-3) * S + 1e-3 * mu * np.eye(5), atol=1e-12)
    assert eigenvalues[1, 0] >= 1e-3 * mu * (1 - 1e-9)
    # Well-conditioned images are untouched.
    np.testing.assert_allclose(out[0], empirical_covariance(local[0]))


@pytest.mark.parametrize("params, shrunk", [({"estimator": "ledoit_wolf"}, ledoit_wolf), ({}, oas)])
def test_sparse_covariance_shrinkage_needs_no_regularisation(params, shrunk):
    # The default estimator is OAS.
    rng = np.random.default_rng(3)
    few = [rng.normal(size=(3, 5)), rng.normal(size=(4, 5))]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegularizationWarning)
        out = SparseCovariance(**params).fit_transform(few)
    np.testing.assert_allclose(out[0], shrunk(few[0])[0])


def test_sparse_covariance_with_mean(local):
    out = SparseCovariance(estimator="oas", with_mean=True).fit_transform(local)
    assert out.shape == (6, 6, 6)
    for X, M in zip(local, out, strict=True):
        m = X.mean(axis=0)
        S = oas(X)[0]
        np.testing.assert_allclose(M[:5, :5], S + np.outer(m, m), atol=1e-12)
        np.testing.assert_allclose(M[:5, 5], m)
        np.testing.assert_allclose(M[5, :5], m)
        assert M[5, 5] == 1.0
    assert np.all(np.linalg.eigvalsh(out) > 0)
    with pytest.raises(ValueError, match="assume_centered"):
        SparseCovariance(with_mean=True, assume_centered=True).fit_transform(local)


def test_sparse_covariance_n_jobs_and_array_input(local):
    expected = SparseCovariance().fit_transform(local)
    np.testing.assert_allclose(SparseCovariance(n_jobs=2).fit_transform(local), expected)
    cube = np.stack([X[:40] for X in local])
    np.testing.assert_allclose(
        SparseCovariance(estimator="ledoit_wolf").fit_transform(cube),
        np.stack([ledoit_wolf(X[:40])[0] for X in local]),
    )


def test_sparse_covariance_errors(local):
    sc = SparseCovariance()
    with pytest.raises(ValueError, match="empty"):
        sc.fit([])
    bad = [X.copy() for X in local]
    bad[3][1, 1] = np.nan
    with pytest.raises(ValueError, match=r"X\[3\] contains NaN"):
        sc.fit_transform(bad)
    with pytest.raises(ValueError, match=r"X\[1\] has 4 dimensions but X\[0\] has 5"):
        sc.fit_transform([local[0], local[1][:, :4]])
    with pytest.raises(ValueError, match=r"X\[1\] has a single local feature"):
        sc.fit_transform([local[0], local[1][:1]])
    with pytest.raises(ValueError, match=r"X\[0\] has 4 local features that are all equal"):
        sc.fit_transform([np.ones((4, 5)), local[1]])
    with pytest.raises(ValueError, match="2-D array|array of shape"):
        sc.fit_transform(local[0])
    with pytest.raises(ValueError, match=r"X\[0\] must be an \(n_i, d\) array"):
        sc.fit_transform([np.ones((2, 3, 4))])
    sc.fit(local)
    with pytest.raises(ValueError, match="fitted with dimension 5"):
        sc.transform([X[:, :3] for X in local])
    with pytest.raises(ValueError, match="estimator"):
        SparseCovariance(estimator="mcd").transform(local)


@pytest.mark.filterwarnings("ignore:Only one sample available:UserWarning")
def test_sparse_covariance_assume_centered_single_feature_regularised():
    X = [np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])]
    with pytest.warns(RegularizationWarning, match=r"X\[0\] \(1 local features\).*X\[1\]"):
        out = SparseCovariance(estimator="empirical", assume_centered=True).fit_transform(X)
    assert np.all(np.linalg.eigvalsh(out) > 0)


def test_sparse_covariance_sklearn_api(local):
    sc = SparseCovariance(estimator="oas", n_jobs=1)
    assert clone(sc).get_params() == sc.get_params()
    assert sc.set_params(reg=1e-3).reg == 1e-3
    assert sc.fit(local) is sc
    assert sc.n_features_in_ == 5
    restored = pickle.loads(pickle.dumps(sc))
    np.testing.assert_array_equal(restored.transform(local), sc.transform(local))
    # Stateless: transform works without fit.
    SparseCovariance().transform(local)
    tags = sc.__sklearn_tags__()
    assert not tags.input_tags.two_d_array
    assert not tags.requires_fit


# ------------------------------------------------------------------------------------------
# GaussianMixtures
# ------------------------------------------------------------------------------------------


def _mixtures(n=8, K=3, d=4, covariance_type="full", seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.random((n, K))
    weights /= weights.sum(axis=1, keepdims=True)
    means = rng.normal(size=(n, K, d))
    if covariance_type == "full":
        A = rng.normal(size=(n, K, d, d))
        covariances = A @ np.swapaxes(A, -1, -2) + np.eye(d)
    else:
        covariances = rng.random((n, K, d)) + 0.1
    return GaussianMixtures(weights, means, covariances, covariance_type)


def _assert_same(a, b):
    assert a.covariance_type == b.covariance_type
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.covariances, b.covariances)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gaussian_mixtures_indexing(covariance_type):
    gm = _mixtures(covariance_type=covariance_type)
    assert len(gm) == 8 and gm.shape == (8,) and gm.shape[0] == 8
    assert (gm.n_components, gm.n_features) == (3, 4)
    one = gm[3]
    assert isinstance(one, GaussianMixtures) and len(one) == 1
    np.testing.assert_array_equal(one.means[0], gm.means[3])
    np.testing.assert_array_equal(gm[-1].weights[0], gm.weights[7])
    _assert_same(gm[np.int64(2)], gm[[2]])
    sliced = gm[2:7:2]
    np.testing.assert_array_equal(sliced.weights, gm.weights[2:7:2])
    indices = np.array([5, 0, 5])
    _assert_same(
        gm[indices],
        GaussianMixtures(
            gm.weights[indices], gm.means[indices], gm.covariances[indices], covariance_type
        ),
    )
    mask = np.arange(8) % 3 == 0
    _assert_same(gm[mask], gm[np.flatnonzero(mask)])
    _assert_same(gm[list(mask)], gm[mask])
    _assert_same(gm[indices, ...], gm[indices])
    assert len(gm[[]]) == 0
    assert [len(item) for item in gm] == [1] * 8
    with pytest.raises(IndexError, match="out of bounds"):
        gm[8]
    with pytest.raises(IndexError, match="boolean mask"):
        gm[np.ones(3, dtype=bool)]
    with pytest.raises(IndexError, match="one-dimensional"):
        gm[1, 2]
    with pytest.raises(IndexError):
        gm[np.array([0.5])]


def test_gaussian_mixtures_full_covariances_and_repr():
    gm = _mixtures(covariance_type="diag")
    full = gm.full_covariances()
    assert full.shape == (8, 3, 4, 4)
    np.testing.assert_array_equal(np.diagonal(full, axis1=-2, axis2=-1), gm.covariances)
    assert repr(gm) == (
        "GaussianMixtures(n_mixtures=8, n_components=3, n_features=4, covariance_type='diag')"
    )


def test_gaussian_mixtures_pickle():
    gm = _mixtures()
    _assert_same(pickle.loads(pickle.dumps(gm)), gm)


def test_gaussian_mixtures_validation():
    gm = _mixtures(n=2, K=2, d=3)
    w, m, c = gm.weights, gm.means, gm.covariances
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixtures(w * 2, m, c)
    with pytest.raises(ValueError, match="non-negative"):
        GaussianMixtures(np.array([[1.5, -0.5], [0.5, 0.5]]), m, c)
    with pytest.raises(ValueError, match=re.escape("must have shape (2, 2, 3, 3)")):
        GaussianMixtures(w, m, c[..., :2])
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixtures(w, m[:1], c)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixtures(w, m, -c)
    with pytest.raises(ValueError, match="symmetric"):
        bad = c.copy()
        bad[0, 0, 0, 1] += 1.0
        GaussianMixtures(w, m, bad)
    with pytest.raises(ValueError, match="diagonal covariances must be positive"):
        GaussianMixtures(w, m, np.zeros((2, 2, 3)), "diag")
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixtures(w, m * np.nan, c)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixtures(w, m, c, "spherical")


def test_gaussian_mixtures_survive_sklearn_splitting():
    gm = _mixtures(n=10)
    y = np.arange(10) % 2
    gm_train, gm_test, y_train, y_test = train_test_split(gm, y, test_size=0.3, random_state=0)
    assert isinstance(gm_train, GaussianMixtures) and isinstance(gm_test, GaussianMixtures)
    assert (len(gm_train), len(gm_test)) == (7, 3)
    for train, test in KFold(n_splits=5, shuffle=True, random_state=0).split(gm):
        part = _safe_indexing(gm, train)
        assert isinstance(part, GaussianMixtures)
        np.testing.assert_array_equal(part.means, gm.means[train])
        _assert_same(_safe_indexing(gm, test), gm[test])
    mask = np.zeros(10, dtype=bool)
    mask[[1, 4]] = True
    _assert_same(_safe_indexing(gm, mask), gm[[1, 4]])


class _MixtureCountingEstimator(BaseEstimator):
    """Scores by checking it received GaussianMixtures of the right length."""

    def fit(self, X, y=None):
        assert isinstance(X, GaussianMixtures)
        self.n_fit_ = len(X)
        return self

    def score(self, X, y=None):
        assert isinstance(X, GaussianMixtures)
        return float(self.n_fit_ + len(X))


def test_gaussian_mixtures_cross_val_score():
    gm = _mixtures(n=10)
    scores = cross_val_score(_MixtureCountingEstimator(), gm, cv=5)
    np.testing.assert_array_equal(scores, np.full(5, 10.0))


# ------------------------------------------------------------------------------------------
# GMMDescriptor
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gmm_descriptor_matches_sklearn(local, covariance_type):
    gmm = GMMDescriptor(n_components=2, covariance_type=covariance_type, random_state=0)
    out = gmm.fit_transform(local)
    assert isinstance(out, GaussianMixtures)
    assert out.covariance_type == covariance_type
    assert out.weights.shape == (6, 2) and out.means.shape == (6, 2, 5)
    expected_cov_shape = (6, 2, 5, 5) if covariance_type == "full" else (6, 2, 5)
    assert out.covariances.shape == expected_cov_shape
    for i, X in enumerate(local):
        # GMMDescriptor's default reg_covar is 1e-2 (scikit-learn's is 1e-6).
        model = GaussianMixture(
            2, covariance_type=covariance_type, reg_covar=1e-2, random_state=0
        ).fit(X)
        np.testing.assert_allclose(out.weights[i], model.weights_)
        np.testing.assert_allclose(out.means[i], model.means_)
        np.testing.assert_allclose(out.covariances[i], model.covariances_)


def test_gmm_descriptor_deterministic_and_parallel(local):
    a = GMMDescriptor(n_components=3, random_state=np.random.RandomState(5)).fit_transform(local)
    b = GMMDescriptor(n_components=3, random_state=np.random.RandomState(5), n_jobs=2)
    _assert_same(a, b.fit_transform(local))


def test_gmm_descriptor_convergence_warning(local):
    with pytest.warns(ConvergenceWarning, match=r"EM did not converge .* images \[0, 1"):
        GMMDescriptor(n_components=3, max_iter=1, tol=0, random_state=0).transform(local)


def test_gmm_descriptor_errors(local):
    few = [local[0], local[1][:2]]
    with pytest.raises(ValueError, match=r"X\[1\] has 2 local features, fewer than n_compon"):
        GMMDescriptor(n_components=3).fit_transform(few)
    bad = [X.copy() for X in local]
    bad[0][0, 0] = np.inf
    with pytest.raises(ValueError, match=r"X\[0\] contains NaN or infinity"):
        GMMDescriptor().fit_transform(bad)
    spread = np.random.default_rng(9).normal(size=(300, 5))
    collapsed = [spread, np.repeat(local[1][:2], 10, axis=0)]
    with pytest.raises(ValueError, match=r"Gaussian mixture of X\[1\] \(20 local features"):
        GMMDescriptor(n_components=2, reg_covar=0, random_state=0).fit_transform(collapsed)
    with pytest.raises(ValueError, match="covariance_type"):
        GMMDescriptor(covariance_type="tied").transform(local)


def test_gmm_descriptor_sklearn_api(local):
    gmm = GMMDescriptor(n_components=2, random_state=0)
    assert clone(gmm).get_params() == gmm.get_params()
    assert gmm.set_params(max_iter=50).max_iter == 50
    assert gmm.fit(local) is gmm
    assert gmm.n_features_in_ == 5
    restored = pickle.loads(pickle.dumps(gmm))
    _assert_same(restored.transform(local), gmm.transform(local))
    assert not gmm.__sklearn_tags__().input_tags.two_d_array


def test_full_chain(maps):
    local = LocalPCA(n_components=4, random_state=0).fit_transform(maps)
    covariances = SparseCovariance(estimator="graphical_lasso").fit_transform(local)
    assert covariances.shape == (8, 4, 4)
    assert np.all(np.linalg.eigvalsh(covariances) > 0)
    mixtures = GMMDescriptor(n_components=2, covariance_type="diag", random_state=0)
    assert len(mixtures.fit_transform(local)) == 8


def test_auto_reg_covar_is_three_times_the_median_within_image_variance():
    rng = np.random.default_rng(0)
    # Per-axis variances within each image: (1, 4) and (9, 16), in exact arithmetic.
    image_a = np.array([[-1.0, -2.0], [1.0, 2.0]]) + rng.normal(size=2)
    image_b = np.array([[-3.0, -4.0], [3.0, 4.0]])
    gmm = GMMDescriptor(n_components=1, reg_covar="auto").fit([image_a, image_b])
    assert gmm.reg_covar_ == pytest.approx(3 * np.median([1.0, 4.0, 9.0, 16.0]))
    assert GMMDescriptor(reg_covar=0.5).fit([image_a, image_b]).reg_covar_ == 0.5


def test_auto_reg_covar_follows_the_scale_of_the_features():
    # Whitened or raw, the learned floor keeps the same share of the variance: the mixtures of
    # features scaled by c are the mixtures of the features, scaled.
    rng = np.random.default_rng(1)
    local = [rng.normal(size=(60, 3)) * [1.0, 0.5, 0.2] for _ in range(4)]
    scale = 30.0
    small = GMMDescriptor(n_components=2, reg_covar="auto", random_state=0).fit_transform(local)
    large_gmm = GMMDescriptor(n_components=2, reg_covar="auto", random_state=0)
    large = large_gmm.fit_transform([scale * image for image in local])
    assert large_gmm.reg_covar_ > 0
    np.testing.assert_allclose(large.weights, small.weights, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(large.means, scale * small.means, rtol=1e-6, atol=1e-8)
    expected = scale**2 * small.covariances
    np.testing.assert_allclose(large.covariances, expected, rtol=1e-6, atol=1e-8)


def test_auto_reg_covar_needs_fit():
    from sklearn.exceptions import NotFittedError

    local = [np.random.default_rng(2).normal(size=(20, 3))]
    with pytest.raises(NotFittedError, match="reg_covar='auto'.*call fit"):
        GMMDescriptor(n_components=1, reg_covar="auto").transform(local)
    GMMDescriptor(n_components=1).transform(local)  # a number needs no fit
