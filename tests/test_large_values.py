"""Normalisation and distances over the whole finite range of float32 (and float64).

Squaring float32 entries of 1e19 and more overflows, and entries of 1e-19 and less lose their
digits, although the unit vectors, cosines and distances are representable. The oracle: a
positive scale changes no direction, so scaled rows must give the unit vectors, cosine
distances and neighbours of the unscaled rows (and Euclidean distances times the scale).
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skretrieval._utils.linalg import (
    l2_normalize,
    scaled_squared_euclidean_distances,
    squared_euclidean_distances,
)
from skretrieval.descriptors import LocalPCA
from skretrieval.geometry import cosine_distances, euclidean_distances
from skretrieval.neighbors import ImageRetriever
from skretrieval.pooling import RMAC, GeMPooling, MaxPooling, SumPooling
from skretrieval.whitening import LearnedWhitening, PCAWhitening

# The scales of the task: large finite values, subnormal-ish ones, and near the largest float.
SCALES = {
    np.float32: [1e19, 1e25, 1e-30, float(np.finfo(np.float32).max) / 10],
    np.float64: [1e160, 1e300, 1e-170, float(np.finfo(np.float64).max) / 10],
}
CASES = [(dtype, scale) for dtype, scales in SCALES.items() for scale in scales]


def rows(n=20, d=16, dtype=np.float32, seed=0):
    """Rows of norm at most 1, so that scaling by max/10 keeps every distance finite."""
    X = np.random.default_rng(seed).normal(size=(n, d))
    X /= 2 * np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(dtype)


def scaled(X, scale):
    with np.errstate(under="ignore"):  # the smallest entries of 1e-30 rows are subnormal
        return (X * X.dtype.type(scale)).astype(X.dtype)


@pytest.mark.parametrize("dtype, scale", CASES)
def test_l2_normalize_gives_the_unit_vectors_of_the_unscaled_rows(dtype, scale):
    X = rows(dtype=dtype)
    expected = (X / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)).astype(dtype)
    eps = np.finfo(dtype).eps
    for Y in (l2_normalize(scaled(X, scale)), l2_normalize(scaled(X, scale).T, axis=0).T):
        assert Y.dtype == dtype
        assert_allclose(Y, expected, rtol=0, atol=64 * eps)
        assert_allclose(np.linalg.norm(Y.astype(np.float64), axis=1), 1, atol=16 * eps)


def test_l2_normalize_rows_of_mixed_scales_and_zero_rows():
    X = rows(n=5, dtype=np.float32)
    mixed = np.vstack(
        [scaled(X[0], 1e25), scaled(X[1], 1e-30), X[2], np.zeros(16, np.float32), X[4] * 3e37]
    )
    Y = l2_normalize(mixed)
    norms = np.linalg.norm(Y.astype(np.float64), axis=1)
    assert_allclose(norms[[0, 1, 2, 4]], 1, atol=1e-6)
    # A zero row stays zero (documented), never NaN.
    assert_array_equal(Y[3], 0)
    assert_allclose(Y[0], l2_normalize(X[0]), atol=1e-6)
    # Batches of maps (R-MAC normalises region vectors along the last axis of a 3-D array).
    stack = np.stack([mixed, mixed[::-1]])
    assert_allclose(l2_normalize(stack)[0], Y, atol=1e-7)


def test_integer_input_is_normalised_in_float64():
    assert_allclose(l2_normalize(np.array([[3, 4]])), [[0.6, 0.8]])


@pytest.mark.parametrize("dtype, scale", CASES)
def test_distance_functions(dtype, scale):
    Q, D = rows(n=5, dtype=dtype, seed=1), rows(n=30, dtype=dtype, seed=2)
    Qs, Ds = scaled(Q, scale), scaled(D, scale)
    eps = np.finfo(dtype).eps
    assert_allclose(cosine_distances(Qs, Ds), cosine_distances(Q, D), atol=64 * eps)
    expected = euclidean_distances(Q.astype(np.float64), D.astype(np.float64))
    assert_allclose(euclidean_distances(Qs, Ds) / dtype(scale), expected, rtol=64 * eps)
    distances, factor = scaled_squared_euclidean_distances(Qs, Ds)
    assert_allclose(np.sqrt(distances) * factor / scale, expected, rtol=64 * eps)


def test_squared_distances_out_of_range_are_inf_or_zero():
    # The squares themselves do not fit float32: inf above, 0 below; never NaN.
    X = rows(n=4, dtype=np.float32)
    assert np.isinf(squared_euclidean_distances(scaled(X, 1e25), scaled(X[::-1], 1e25))).any()
    tiny = squared_euclidean_distances(scaled(X, 1e-30), scaled(X[::-1], 1e-30))
    assert not np.isnan(tiny).any()
    assert_array_equal(tiny, 0)


def retrievers():
    return [
        ImageRetriever(n_neighbors=5),
        ImageRetriever(n_neighbors=5, metric="euclidean"),
        ImageRetriever(n_neighbors=5, query_expansion="alpha", qe_neighbors=2),
        ImageRetriever(n_neighbors=5, dba_neighbors=2),
    ]


@pytest.mark.parametrize("scale", SCALES[np.float32])
@pytest.mark.parametrize("n_database", [40, 5000])  # full rows, and tiles of the database
def test_retriever_finds_the_neighbours_of_the_unscaled_rows(scale, n_database):
    X, Q = rows(n=n_database, seed=3), rows(n=6, seed=4)
    for retriever in retrievers():
        if n_database > 40 and retriever.dba_neighbors is not None:
            continue  # DBA is the same search, run at fit: the small case covers it
        distances, indices = retriever.fit(X).kneighbors(Q)
        scaled_distances, scaled_indices = retriever.fit(scaled(X, scale)).kneighbors(
            scaled(Q, scale)
        )
        assert_array_equal(scaled_indices, indices)
        if retriever.metric == "euclidean":
            scaled_distances = scaled_distances / np.float32(scale)
        assert_allclose(scaled_distances, distances, rtol=1e-5, atol=1e-6)
        blocks = np.vstack([block for _, _, block in retriever.distance_blocks(scaled(Q, scale))])
        assert np.isfinite(blocks).all()


def maps(dtype=np.float32):
    rng = np.random.default_rng(5)
    return [rng.random((8, h, w)).astype(dtype) for h, w in [(5, 5), (3, 7), (5, 5), (4, 4)]]


@pytest.mark.parametrize("pooling", [SumPooling(), MaxPooling(), GeMPooling(eps=1e-45), RMAC()])
@pytest.mark.parametrize("scale", SCALES[np.float32])
def test_pooling_gives_the_descriptors_of_the_unscaled_maps(pooling, scale):
    expected = pooling.fit_transform(maps())
    actual = pooling.fit_transform([scaled(fmap, scale) for fmap in maps()])
    assert_allclose(actual, expected, atol=1e-6)


@pytest.mark.parametrize("scale", SCALES[np.float32])
def test_whitening_transform_of_scaled_descriptors(scale):
    # Well separated variances, so that the principal axes are stable under the float32
    # rounding that scaling by a power of ten brings.
    rng = np.random.default_rng(6)
    y = np.arange(200) % 5
    X = (rng.normal(size=(200, 8)) * np.linspace(1, 4, 8) + 2 * np.eye(8)[y]).astype(np.float32)
    X /= 2 * np.linalg.norm(X, axis=1, keepdims=True)
    for whitening in (PCAWhitening(n_components=4), LearnedWhitening(n_components=4)):
        expected = whitening.fit(X, y).transform(X)
        assert_allclose(whitening.transform(scaled(X, scale)), expected, atol=1e-5)
        assert_allclose(whitening.fit(scaled(X, scale), y).transform(X), expected, atol=1e-4)


@pytest.mark.parametrize("scale", SCALES[np.float32])
def test_local_pca_normalises_scaled_local_features(scale):
    local = LocalPCA(n_components=4, random_state=0).fit(maps())
    expected = local.transform(maps())
    actual = local.transform([scaled(fmap, scale) for fmap in maps()])
    for a, e in zip(actual, expected, strict=True):
        assert_allclose(a, e, atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_a_clear_error(bad):
    X = rows(n=10)
    X[3, 2] = bad
    fmaps = maps()
    fmaps[1][0, 0, 0] = bad
    pattern = "NaN|infinity"
    for fit in (
        lambda: ImageRetriever().fit(X),
        lambda: ImageRetriever().fit(rows(n=10)).kneighbors(X),
        lambda: PCAWhitening().fit(X),
        lambda: PCAWhitening().fit(rows(n=10)).transform(X),
        lambda: SumPooling().fit_transform(fmaps),
        lambda: GeMPooling().fit_transform(X),
        lambda: LocalPCA(n_components=2).fit(fmaps),
    ):
        with pytest.raises(ValueError, match=pattern):
            fit()
