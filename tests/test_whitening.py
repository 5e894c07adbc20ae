"""Tests of skretrieval.whitening: PCAWhitening and LearnedWhitening."""

import itertools
import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skretrieval.neighbors import ImageRetriever
from skretrieval.persistence import load, save
from skretrieval.pooling import GeMPooling
from skretrieval.whitening import LearnedWhitening, PCAWhitening, whitening_scale
from skretrieval.whitening._functions import whiten
from skretrieval.whitening._learned import matching_pair_scatter


@parametrize_with_checks(
    [
        PCAWhitening(),
        PCAWhitening(n_components=1, power=0.0),
        PCAWhitening(n_components=2, shrinkage=0.5),
        LearnedWhitening(),
        LearnedWhitening(n_components=1, shrinkage=0.5),
    ]
)
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
    return whiten(
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


def test_n_components_too_large_is_capped_with_a_warning():
    X = _correlated_data(5, 10)
    with pytest.warns(UserWarning, match=r"n_components=5 is larger than .* = min\(4, 10\) = 4"):
        capped = PCAWhitening(n_components=5).fit(X)
    assert capped.n_components_ == 4 and capped.components_.shape == (4, 10)
    # Exactly what asking for the largest possible number gives.
    exact = PCAWhitening(n_components=4).fit(X)
    assert_array_equal(capped.transform(X), exact.transform(X))
    with pytest.warns(UserWarning, match=r"n_components=4 is larger than .* = 3.*keeping 3"):
        assert PCAWhitening(n_components=4).fit(_correlated_data(20, 3)).n_components_ == 3


def test_readme_quick_start_setting_runs_on_fifty_images():
    # n_components=128 on 50 GeM descriptors of 1280 channels: 49 components, not an error.
    X = _correlated_data(50, 1280, seed=3)
    with pytest.warns(UserWarning, match=r"n_components=128 .* min\(49, 1280\) = 49"):
        whitening = PCAWhitening(n_components=128).fit(X)
    assert whitening.n_components_ == 49
    assert whitening.transform(X[:3]).shape == (3, 49)


@pytest.mark.parametrize("shrinkage", [0.1, 0.5, 1.0])
def test_shrinkage_shrinks_variances_towards_their_mean(shrinkage):
    X = _correlated_data(12, 20, seed=4)
    whitening = PCAWhitening(shrinkage=shrinkage, eps=1e-12).fit(X)
    variances = whitening.explained_variance_
    # explained_variance_ is the data's; the scaling uses the shrunk variances.
    assert_allclose(variances, PCAWhitening().fit(X).explained_variance_)
    shrunk = (1 - shrinkage) * variances + shrinkage * variances.mean()
    projected = (_l2(X) - whitening.mean_) @ whitening.components_.T
    assert_allclose(whitening.transform(X), _l2(projected / np.sqrt(shrunk + 1e-12)), atol=1e-12)
    # Along each axis the training variance after scaling is lambda / shrunk lambda.
    Z = whiten(_l2(X), whitening.mean_, whitening.components_, variances, 0.5, 1e-12, shrinkage)
    assert_allclose(Z.var(axis=0, ddof=1), variances / (shrunk + 1e-12), rtol=1e-8)
    if shrinkage == 1.0:  # every axis alike: the plain PCA projection, once normalised
        plain = PCAWhitening(power=0.0).fit(X)
        assert_allclose(whitening.transform(X), plain.transform(X), atol=1e-12)


def test_shrinkage_zero_changes_nothing_and_is_validated():
    X = _correlated_data(30, 6)
    assert_array_equal(
        PCAWhitening(shrinkage=0.0).fit(X).transform(X), PCAWhitening().fit(X).transform(X)
    )
    assert_allclose(
        whitening_scale(np.array([4.0, 0.25]), eps=0.0, shrinkage=0.5), [3.0625**-0.5, 1.1875**-0.5]
    )
    with pytest.raises(InvalidParameterError, match="'shrinkage' parameter"):
        PCAWhitening(shrinkage=1.5).fit(X)
    with pytest.raises(ValueError, match=r"shrinkage must be in \[0, 1\]; got -0.1"):
        whitening_scale(np.ones(2), shrinkage=-0.1)


@pytest.mark.parametrize(
    "whitening", [PCAWhitening(n_components=4, shrinkage=0.2), LearnedWhitening(n_components=4)]
)
def test_whitening_learned_on_one_collection_applies_to_another_after_save_load(
    tmp_path, whitening
):
    rng = np.random.default_rng(11)
    collection_a = _correlated_data(40, 8, seed=5)
    labels_a = rng.integers(0, 5, size=40)
    collection_b = _correlated_data(25, 8, seed=6)
    fitted = clone(whitening).fit(collection_a, labels_a)
    path = save(fitted, tmp_path / "whitening.skr")
    # No trusted=: a whitening file holds nothing but trusted types.
    restored = load(path)
    assert type(restored) is type(whitening)
    assert restored.get_params() == fitted.get_params()
    assert_array_equal(restored.transform(collection_b), fitted.transform(collection_b))
    assert_array_equal(
        restored.transform(collection_b.astype(np.float32)),
        fitted.transform(collection_b.astype(np.float32)),
    )


def test_saved_files_name_the_public_module(tmp_path):
    # Files saved before the module became a package name skretrieval.whitening.<class>:
    # such a file must still load without trusted=, so the classes keep that module.
    import json
    import zipfile

    path = save(PCAWhitening(n_components=2).fit(_correlated_data(10, 4)), tmp_path / "w.skr")
    payload = path.read_bytes()
    start = payload.index(b"\n", 16) + 1  # after the magic bytes and the header line
    (tmp_path / "payload.zip").write_bytes(payload[start:])
    with zipfile.ZipFile(tmp_path / "payload.zip") as archive:
        schema = json.loads(archive.read("schema.json"))
    assert (schema["__module__"], schema["__class__"]) == ("skretrieval.whitening", "PCAWhitening")
    assert isinstance(load(path), PCAWhitening)


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


# ---------------------------------------------------------------------------------------------
# LearnedWhitening


def _labelled_data(n_classes, n_per_class, n_features, spread=0.3, seed=0):
    """Positive clustered descriptors with anisotropic within-class noise, and their labels."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(n_classes, n_features))) + 0.5
    labels = np.repeat(np.arange(n_classes), n_per_class)
    noise_shape = np.linspace(1.5, 0.1, n_features) * rng.normal(size=(n_features, n_features))
    noise = spread * rng.normal(size=(len(labels), n_features)) @ noise_shape
    return centres[labels] + noise, labels


def _pairs(labels, matching):
    """Brute-force list of the unordered pairs i < j with (non-)equal labels."""
    return [
        (i, j)
        for i, j in itertools.combinations(range(len(labels)), 2)
        if (labels[i] == labels[j]) == matching
    ]


def _pair_covariance(Z, pairs):
    differences = np.array([Z[i] - Z[j] for i, j in pairs])
    return differences.T @ differences / len(pairs)


def test_matching_pair_scatter_equals_brute_force():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 3))
    # Unsorted string labels, a singleton ("c") and classes of 2, 3 and 3.
    labels = np.array(["a", "b", "a", "d", "c", "b", "d", "b", "d"])
    scatter, n_pairs = matching_pair_scatter(X, labels)
    pairs = _pairs(labels, matching=True)
    assert n_pairs == len(pairs) == 1 + 3 + 3
    expected = sum(np.outer(X[i] - X[j], X[i] - X[j]) for i, j in pairs)
    assert_allclose(scatter, expected, atol=1e-12)
    # Hand-worked: one pair in 1-D, (1 - 4)^2 = 9.
    scatter, n_pairs = matching_pair_scatter(np.array([[1.0], [4.0], [7.0]]), [0, 0, 1])
    assert n_pairs == 1
    assert_allclose(scatter, [[9.0]])


def test_matching_differences_are_whitened():
    X, labels = _labelled_data(n_classes=6, n_per_class=12, n_features=5)
    whitening = LearnedWhitening().fit(X, labels)
    matching = _pairs(labels, matching=True)
    assert whitening.n_pairs_ == len(matching)
    normalised = _l2(X)
    assert_allclose(whitening.mean_, normalised.mean(axis=0))
    # The matching-pair difference covariance, whitened, is the identity ...
    covariance = _pair_covariance(normalised, matching)
    assert_allclose(whitening.whitening_ @ covariance @ whitening.whitening_, np.eye(5), atol=1e-9)
    assert_allclose(whitening.whitening_, whitening.whitening_.T)
    # ... and stays so after the rotation: the whole projection whitens matching differences.
    projected = (normalised - whitening.mean_) @ whitening.components_.T
    assert_allclose(_pair_covariance(projected, matching), np.eye(5), atol=1e-9)
    # The rotation diagonalises the whitened training covariance.
    assert_allclose(
        np.cov(projected, rowvar=False), np.diag(whitening.explained_variance_), atol=1e-9
    )


def test_rotation_is_orthonormal_sorted_sign_fixed_and_matches_non_matching_pairs():
    X, labels = _labelled_data(n_classes=5, n_per_class=10, n_features=4, seed=1)
    whitening = LearnedWhitening().fit(X, labels)
    rotation = whitening.rotation_
    assert rotation.shape == (4, 4)
    assert_allclose(rotation @ rotation.T, np.eye(4), atol=1e-10)
    assert_allclose(whitening.components_, rotation @ whitening.whitening_)
    assert np.all(np.diff(whitening.explained_variance_) < 0)
    assert_allclose(whitening.explained_variance_ratio_.sum(), 1.0)
    largest = rotation[np.arange(4), np.argmax(np.abs(rotation), axis=1)]
    assert np.all(largest > 0)
    # Radenovic et al.'s rotation, from the whitened non-matching differences, has the same
    # axes in the same order (see the class docstring).
    whitened = _l2(X) @ whitening.whitening_
    non_matching = _pair_covariance(whitened, _pairs(labels, matching=False))
    eigenvalues, eigenvectors = np.linalg.eigh(non_matching)
    cosines = np.abs(np.sum(eigenvectors[:, ::-1].T * rotation, axis=1))
    assert_allclose(cosines, 1.0, atol=1e-8)
    # Training order does not matter.
    order = np.random.default_rng(0).permutation(len(labels))
    permuted = LearnedWhitening().fit(X[order], labels[order])
    assert_allclose(permuted.components_, whitening.components_, atol=1e-8)


def test_transform_formula_normalisation_and_n_components():
    X, labels = _labelled_data(n_classes=6, n_per_class=10, n_features=6, seed=2)
    Y = np.abs(np.random.default_rng(3).normal(size=(7, 6)))
    whitening = LearnedWhitening(n_components=3).fit(X, labels)
    full = LearnedWhitening().fit(X, labels)
    assert whitening.n_components_ == 3 and full.n_components_ == 6
    assert whitening.components_.shape == (3, 6)
    # The kept axes are the leading axes of the full fit.
    assert_allclose(whitening.components_, full.components_[:3], atol=1e-10)
    assert_allclose(whitening.explained_variance_, full.explained_variance_[:3], atol=1e-12)
    transformed = whitening.transform(Y)
    expected = _l2((_l2(Y) - whitening.mean_) @ whitening.components_.T)
    assert_allclose(transformed, expected)
    assert_allclose(np.linalg.norm(transformed, axis=1), 1.0)
    # The first step is L2 normalisation: scaling an input does not change its output.
    assert_allclose(whitening.transform(5.0 * Y), transformed)


def test_full_shrinkage_ignores_labels_and_is_pca_rotation():
    X, labels = _labelled_data(n_classes=4, n_per_class=15, n_features=5, seed=4)
    Y = np.abs(np.random.default_rng(5).normal(size=(6, 5)))
    learned = LearnedWhitening(n_components=3, shrinkage=1.0).fit(X, labels)
    pca = PCAWhitening(n_components=3, power=0.0).fit(X)
    assert_allclose(learned.rotation_, pca.components_, atol=1e-10)
    assert_allclose(learned.transform(Y), pca.transform(Y), atol=1e-10)
    shuffled = np.random.default_rng(6).permutation(labels)
    relabelled = LearnedWhitening(n_components=3, shrinkage=1.0).fit(X, shuffled)
    assert_allclose(relabelled.transform(Y), learned.transform(Y), atol=1e-10)


def test_singular_matching_covariance_needs_shrinkage():
    X, labels = _labelled_data(n_classes=5, n_per_class=8, n_features=4, seed=7)
    X = np.hstack([X, X[:, :1]])  # a duplicated feature: C_S has rank 4 < 5
    with pytest.raises(ValueError, match=r"singular \(rank 4 < n_features = 5\).*shrinkage > 0"):
        LearnedWhitening().fit(X, labels)
    whitening = LearnedWhitening(shrinkage=0.1).fit(X, labels)
    transformed = whitening.transform(X)
    assert np.isfinite(transformed).all()
    assert_allclose(np.linalg.norm(transformed, axis=1), 1.0)
    # Matching pairs that are all identical leave nothing to whiten, shrinkage or not.
    X = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    with pytest.raises(ValueError, match="all matching pairs are identical"):
        LearnedWhitening(shrinkage=0.5).fit(X, [0, 0, 1, 1])


def test_float32_is_preserved_learned():
    X, labels = _labelled_data(n_classes=5, n_per_class=10, n_features=4, seed=8)
    whitening32 = LearnedWhitening(n_components=3).fit(X.astype(np.float32), labels)
    whitening64 = LearnedWhitening(n_components=3).fit(X, labels)
    for attribute in ("mean_", "whitening_", "rotation_", "components_", "explained_variance_"):
        assert getattr(whitening32, attribute).dtype == np.float32
    out32 = whitening32.transform(X.astype(np.float32))
    assert out32.dtype == np.float32
    assert_allclose(out32, whitening64.transform(X), atol=1e-4)


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.eye(4), None, "requires y to be passed"),
        (np.eye(4), [1, 1, 1, 1], "at least 2 distinct labels.*got 1 class"),
        (np.eye(4), [0, 1, 2, 3], "at least one label shared by 2 samples.*all 4 labels"),
        (np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), [0, 0, 1], "NaN"),
        (np.eye(4), [0, 0, 1, np.nan], "y contains NaN"),
        (np.eye(4), [0, 0, 1], "inconsistent numbers of samples"),
        (np.ones((4, 1)), [0, 0, 1, 1], "at least 2 features; got n_features = 1"),
        (np.eye(4), np.zeros((4, 2)), "y should be a 1d array"),
    ],
)
def test_learned_bad_input(X, y, match):
    with pytest.raises(ValueError, match=match):
        LearnedWhitening().fit(X, y)


def test_learned_errors_and_parameters():
    X, labels = _labelled_data(n_classes=3, n_per_class=6, n_features=4, seed=9)
    with pytest.raises(ValueError, match="requires y to be passed.*or explicit pairs"):
        LearnedWhitening().fit(X)
    with pytest.raises(NotFittedError):
        LearnedWhitening().transform(X)
    with pytest.raises(ValueError, match="n_components=5 is larger than n_features=4"):
        LearnedWhitening(n_components=5).fit(X, labels)
    for shrinkage in (-0.1, 1.5):
        with pytest.raises(InvalidParameterError, match="'shrinkage' parameter"):
            LearnedWhitening(shrinkage=shrinkage).fit(X, labels)
    with pytest.raises(InvalidParameterError, match="'n_components' parameter"):
        LearnedWhitening(n_components=0).fit(X, labels)
    whitening = LearnedWhitening(n_components=2).fit(X, labels)
    with pytest.raises(ValueError, match="X has 3 features, but LearnedWhitening is expecting 4"):
        whitening.transform(X[:, :3])


def test_learned_clone_pickle_feature_names_and_fit_returns_self():
    X, labels = _labelled_data(n_classes=3, n_per_class=6, n_features=4, seed=10)
    whitening = LearnedWhitening(n_components=2, shrinkage=0.2)
    assert whitening.fit(X, labels) is whitening
    unfitted = clone(whitening)
    assert unfitted.get_params() == {"n_components": 2, "shrinkage": 0.2}
    assert not hasattr(unfitted, "components_")
    restored = pickle.loads(pickle.dumps(whitening))
    assert_array_equal(restored.transform(X), whitening.transform(X))
    assert list(whitening.get_feature_names_out()) == ["learnedwhitening0", "learnedwhitening1"]
    assert_allclose(whitening.fit_transform(X, labels), whitening.transform(X))


def test_learned_whitening_beats_pca_whitening_on_digits():
    # Supervised whitening on real data: 8x8 digit images as descriptors, relevance = same digit.
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:600], order[600:1000]

    def mean_average_precision(transformer):
        database = transformer.transform(X[train])
        retriever = ImageRetriever(metric="cosine").fit(database, y[train])
        return retriever.score(transformer.transform(X[test]), y[test])

    # PCA whitening gets its best of several settings; learned whitening one default-ish one.
    # Some pixels are blank in every image, so C_S is singular and needs shrinkage.
    pca_scores = {
        (k, power): mean_average_precision(PCAWhitening(n_components=k, power=power).fit(X[train]))
        for k in (None, 32, 16, 9)
        for power in (0.5, 0.25, 0.0)
    }
    learned = mean_average_precision(
        LearnedWhitening(n_components=9, shrinkage=0.1).fit(X[train], y[train])
    )
    # Measured: raw 0.68, PCAWhitening() 0.38, best PCA setting 0.71 (power 0, 16 axes),
    # learned whitening 0.89.
    assert max(pca_scores.values()) < 0.75
    assert learned > max(pca_scores.values()) + 0.12


def test_explicit_pairs_equal_labels_and_pipeline_routing():
    X, labels = _labelled_data(n_classes=4, n_per_class=8, n_features=4, seed=11)
    from_labels = LearnedWhitening(n_components=3).fit(X, labels)
    pairs = np.array(_pairs(labels, matching=True))
    # Pair order and orientation do not matter.
    shuffled = pairs[np.random.default_rng(0).permutation(len(pairs))][:, ::-1]
    from_pairs = LearnedWhitening(n_components=3).fit(X, pairs=shuffled)
    assert from_pairs.n_pairs_ == from_labels.n_pairs_ == len(pairs)
    for attribute in ("mean_", "whitening_", "components_", "explained_variance_"):
        assert_allclose(getattr(from_pairs, attribute), getattr(from_labels, attribute))
    # A sparse set of pairs, as mined from a structure-from-motion model: every 2 consecutive.
    few = np.array([[0, 1], [2, 3], [8, 9], [10, 11], [16, 17], [18, 19], [24, 25], [26, 27]])
    whitening = LearnedWhitening().fit(X, pairs=few)
    projected = (_l2(X) - whitening.mean_) @ whitening.components_.T
    assert_allclose(_pair_covariance(projected, few), np.eye(4), atol=1e-9)
    pipeline = make_pipeline(LearnedWhitening(n_components=2))
    pipeline.fit(X, learnedwhitening__pairs=few)
    assert_allclose(pipeline[0].components_, whitening.components_[:2])


@pytest.mark.parametrize(
    "pairs, error, match",
    [
        (np.zeros((0, 2), dtype=int), ValueError, r"shape \(n_pairs, 2\).*got shape \(0, 2\)"),
        ([0, 1], ValueError, r"shape \(n_pairs, 2\).*got shape \(2,\)"),
        ([[0, 1, 2]], ValueError, r"got shape \(1, 3\)"),
        ([[0.0, 1.0]], TypeError, "integer sample indices; got dtype float64"),
        ([[0, 1], [2, 6]], ValueError, r"pairs\[1\] = \[2, 6\] is not a pair .* \[0, 6\)"),
        ([[0, 1], [-1, 2]], ValueError, r"pairs\[1\] = \[-1, 2\]"),
        ([[0, 1], [3, 3]], ValueError, r"pairs\[1\] = \[3, 3\] pairs a sample with itself"),
    ],
)
def test_bad_pairs(pairs, error, match):
    X, _ = _labelled_data(n_classes=2, n_per_class=3, n_features=3, seed=12)
    with pytest.raises(error, match=match):
        LearnedWhitening(shrinkage=0.5).fit(X, pairs=pairs)


def test_labels_and_pairs_together_is_an_error():
    X, labels = _labelled_data(n_classes=2, n_per_class=3, n_features=3, seed=13)
    with pytest.raises(ValueError, match="labels y or explicit pairs, not both"):
        LearnedWhitening().fit(X, labels, pairs=[[0, 1]])
