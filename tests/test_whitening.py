"""Tests of skretrieval.whitening.PCAWhitening."""

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skretrieval.pooling import GeMPooling
from skretrieval.whitening import PCAWhitening, _whiten


@parametrize_with_checks([PCAWhitening(), PCAWhitening(n_components=1, power=0.0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _l2(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _correlated_data(n_samples, n_features, seed=0):
    """Positive, anisotropic descriptors, like pooled post-ReLU activations."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features)) * np.linspace(2.0, 0.2, n_features)
    return np.abs(rng.normal(size=(n_samples, n_features)) @ mixing) + 0.1


# Both fitting paths: covariance eigendecomposition (n > d) and SVD of the data (n <= d).
SHAPES = [(200, 10), (8, 20)]


def _pre_normalisation(whitening, X):
    return _whiten(
        _l2(X),
        whitening.mean_,
        whitening.components_,
        whitening.explained_variance_,
        whitening.power,
        whitening.eps,
    )


@pytest.mark.parametrize("n_samples, n_features", SHAPES)
def test_whitened_training_data_has_identity_covariance(n_samples, n_features):
    X = _correlated_data(n_samples, n_features)
    whitening = PCAWhitening().fit(X)
    k = min(n_samples - 1, n_features)
    assert whitening.n_components_ == k
    Z = _pre_normalisation(whitening, X)
    assert Z.shape == (n_samples, k)
    assert_allclose(Z.mean(axis=0), 0.0, atol=1e-10)
    # Unit variance up to the eps guard: lambda / (lambda + eps).
    variances = whitening.explained_variance_
    assert_allclose(np.cov(Z, rowvar=False), np.diag(variances / (variances + 1e-8)), atol=1e-10)
    Z = _pre_normalisation(PCAWhitening(eps=1e-15).fit(X), X)
    assert_allclose(np.cov(Z, rowvar=False), np.eye(k), atol=1e-8)


@pytest.mark.parametrize("power", [0.25, 0.0])
def test_partial_whitening_scales_variances(power):
    X = _correlated_data(300, 6)
    whitening = PCAWhitening(power=power).fit(X)
    variances = whitening.explained_variance_
    Z = _pre_normalisation(whitening, X)
    expected = np.diag(variances * (variances + whitening.eps) ** (-2 * power))
    assert_allclose(np.cov(Z, rowvar=False), expected, atol=1e-10)


@pytest.mark.parametrize("n_samples, n_features", SHAPES)
@pytest.mark.parametrize("n_components", [None, 3])
def test_power_zero_is_pca_projection_of_normalised_data(n_samples, n_features, n_components):
    X = _correlated_data(n_samples, n_features, seed=1)
    Y = _correlated_data(15, n_features, seed=2)
    whitening = PCAWhitening(n_components=n_components, power=0.0).fit(X)
    k = min(n_samples - 1, n_features) if n_components is None else n_components
    pca = PCA(n_components=k, svd_solver="full").fit(_l2(X))
    assert_allclose(whitening.mean_, pca.mean_)
    assert_allclose(whitening.explained_variance_, pca.explained_variance_, rtol=1e-8)
    assert_allclose(whitening.explained_variance_ratio_, pca.explained_variance_ratio_, rtol=1e-8)
    # Compare up to the sign of each axis.
    signs = np.sign(np.sum(whitening.components_ * pca.components_, axis=1))
    assert_allclose(whitening.components_, pca.components_ * signs[:, None], atol=1e-8)
    expected = _l2(pca.transform(_l2(Y)) * signs)
    assert_allclose(whitening.transform(Y), expected, atol=1e-8)


@pytest.mark.parametrize("n_samples, n_features", SHAPES)
def test_components_are_orthonormal_sorted_and_sign_fixed(n_samples, n_features):
    X = _correlated_data(n_samples, n_features, seed=3)
    whitening = PCAWhitening().fit(X)
    components = whitening.components_
    assert components.shape == (whitening.n_components_, n_features)
    assert_allclose(components @ components.T, np.eye(whitening.n_components_), atol=1e-10)
    assert np.all(np.diff(whitening.explained_variance_) <= 0)
    largest = components[np.arange(len(components)), np.argmax(np.abs(components), axis=1)]
    assert np.all(largest > 0)
    # Reordering the training rows does not change the result.
    permuted = PCAWhitening().fit(X[np.random.default_rng(0).permutation(n_samples)])
    assert_allclose(permuted.components_, components, atol=1e-8)


def test_transform_of_another_set_uses_the_fitted_statistics():
    X = _correlated_data(100, 8, seed=4)
    Y = _correlated_data(20, 8, seed=5) + 3.0  # a shifted set with a different mean
    whitening = PCAWhitening(n_components=5).fit(X)
    mean = _l2(X).mean(axis=0)
    assert_allclose(whitening.mean_, mean)
    scale = (whitening.explained_variance_ + whitening.eps) ** -0.5
    expected = _l2(((_l2(Y) - mean) @ whitening.components_.T) * scale)
    transformed = whitening.transform(Y)
    assert_allclose(transformed, expected)
    assert_allclose(np.linalg.norm(transformed, axis=1), 1.0)
    assert not np.allclose(transformed, PCAWhitening(n_components=5).fit_transform(Y))
    # Row-wise: scaling an input descriptor does not change its output (first step is L2).
    assert_allclose(whitening.transform(7.0 * Y), transformed)


def test_rank_deficient_data_stays_finite():
    rng = np.random.default_rng(6)
    base = np.abs(rng.normal(size=(50, 3)))
    X = np.hstack([base, base])  # 6 features, rank 3 after normalisation
    whitening = PCAWhitening().fit(X)
    assert whitening.n_components_ == 6
    assert_allclose(whitening.explained_variance_[3:], 0.0, atol=1e-12)
    transformed = whitening.transform(X)
    assert np.isfinite(transformed).all()
    assert_allclose(np.linalg.norm(transformed, axis=1), 1.0)


def test_float32_is_preserved():
    X = _correlated_data(60, 7, seed=7)
    whitening32 = PCAWhitening(n_components=4).fit(X.astype(np.float32))
    whitening64 = PCAWhitening(n_components=4).fit(X)
    for attribute in ("mean_", "components_", "explained_variance_"):
        assert getattr(whitening32, attribute).dtype == np.float32
    out32 = whitening32.transform(X.astype(np.float32))
    assert out32.dtype == np.float32
    assert_allclose(out32, whitening64.transform(X), atol=1e-4)
    assert whitening64.transform(X.astype(np.float32)).dtype == np.float32


def test_n_components_too_large():
    X = _correlated_data(5, 10)
    with pytest.raises(ValueError, match=r"n_components=5 is larger than .* = min\(4, 10\) = 4"):
        PCAWhitening(n_components=5).fit(X)
    assert PCAWhitening(n_components=4).fit(X).n_components_ == 4
    with pytest.raises(ValueError, match=r"n_components=4 is larger than .* = 3"):
        PCAWhitening(n_components=4).fit(_correlated_data(20, 3))


@pytest.mark.parametrize(
    "X, match",
    [
        (np.ones((1, 4)), "at least 2 samples.*got 1 sample"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
        (np.ones(4), "Expected 2D array"),
    ],
)
def test_bad_input(X, match):
    with pytest.raises(ValueError, match=match):
        PCAWhitening().fit(X)


def test_transform_errors_and_parameters():
    X = _correlated_data(30, 5)
    with pytest.raises(NotFittedError):
        PCAWhitening().transform(X)
    whitening = PCAWhitening().fit(X)
    with pytest.raises(ValueError, match="X has 4 features, but PCAWhitening is expecting 5"):
        whitening.transform(X[:, :4])
    with pytest.raises(InvalidParameterError, match="'power' parameter"):
        PCAWhitening(power=-0.5).fit(X)
    with pytest.raises(InvalidParameterError, match="'eps' parameter"):
        PCAWhitening(eps=0.0).fit(X)
    with pytest.raises(InvalidParameterError, match="'n_components' parameter"):
        PCAWhitening(n_components=0).fit(X)


def test_feature_names_pickle_and_pipeline():
    X = _correlated_data(30, 5)
    whitening = PCAWhitening(n_components=3).fit(X)
    assert list(whitening.get_feature_names_out()) == [
        "pcawhitening0",
        "pcawhitening1",
        "pcawhitening2",
    ]
    restored = pickle.loads(pickle.dumps(whitening))
    assert_array_equal(restored.transform(X), whitening.transform(X))
    # Ragged feature maps -> GeM -> whitening, as in a retrieval pipeline.
    rng = np.random.default_rng(8)
    maps = [rng.uniform(size=(5, h, w)) for h, w in [(3, 4), (6, 2), (3, 4), (5, 5)] * 3]
    pipeline = make_pipeline(GeMPooling(), PCAWhitening(n_components=4)).fit(maps)
    descriptors = pipeline.transform(maps)
    assert descriptors.shape == (12, 4)
    assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0)
