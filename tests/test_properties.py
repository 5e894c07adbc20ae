"""Property-based tests (hypothesis) of the array estimators.

Random small shapes, float32 / float64 (and integer where accepted) values, and NaN or
infinities planted anywhere. The properties:

- finite input gives finite output of the documented shape and dtype, or a documented
  ``ValueError`` (too few samples, a single local feature, ...);
- any NaN or infinity is a ``ValueError`` that says so;
- L2-normalised outputs have unit rows (or zero rows);
- a database item queried finds itself first at distance ~0, and permuting the database
  permutes the neighbours consistently (checked against distances computed independently).
"""

import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose
from scipy import linalg
from sklearn.base import clone

from skretrieval._utils.linalg import l2_normalize
from skretrieval.descriptors import GMMDescriptor, LocalPCA, SparseCovariance
from skretrieval.neighbors import ImageRetriever
from skretrieval.pooling import RMAC, GeMPooling, MaxPooling, SumPooling
from skretrieval.whitening import PCAWhitening

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NON_FINITE = re.compile(r"NaN|[Ii]nfinit")
FLOAT_DTYPES = [np.float32, np.float64]


def elements(dtype, bound=1e4):
    """Finite values of ``dtype`` in ``[-bound, bound]``, subnormal ones included."""
    if np.issubdtype(dtype, np.integer):
        return st.integers(-100, 100)
    return st.floats(-bound, bound, width=np.dtype(dtype).itemsize * 8)


def arrays(draw, dtype, shape, bound=1e4):
    return draw(hnp.arrays(dtype, shape, elements=elements(dtype, bound)))


@st.composite
def with_non_finite(draw, strategy):
    """A draw of ``strategy`` (a float array or a list of them) with one NaN or infinity."""
    data = draw(strategy)
    parts = data if isinstance(data, list) else [data]
    part = parts[draw(st.integers(0, len(parts) - 1))]
    position = tuple(draw(st.integers(0, size - 1)) for size in part.shape)
    part[position] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return data


@st.composite
def feature_maps(draw, dtypes=(np.float32, np.float64, np.int64)):
    """A list of (C, h_i, w_i) maps, an (n, C, h, w) array or an (n, C) array."""
    dtype = draw(st.sampled_from(dtypes))
    n, channels = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    layout = draw(st.sampled_from(["list", "array", "table"]))
    if layout == "table":
        return arrays(draw, dtype, (n, channels))
    if layout == "array":
        h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        return arrays(draw, dtype, (n, channels, h, w))
    sizes = [(draw(st.integers(1, 5)), draw(st.integers(1, 5))) for _ in range(n)]
    return [arrays(draw, dtype, (channels, h, w)) for h, w in sizes]


def float_maps():
    return feature_maps(dtypes=FLOAT_DTYPES)


def is_table(maps):
    return isinstance(maps, np.ndarray) and maps.ndim == 2


def shape_and_dtype(maps):
    """(n, C) and the documented output dtype of the pooling of ``maps``."""
    items = list(maps)
    all_float32 = all(np.asarray(fmap).dtype == np.float32 for fmap in items)
    return (len(items), np.shape(items[0])[0]), np.float32 if all_float32 else np.float64


def assert_unit_or_zero_rows(X, atol=1e-5):
    norms = np.linalg.norm(np.asarray(X, dtype=np.float64), axis=-1)
    assert np.all((np.abs(norms - 1) <= atol) | (norms == 0)), norms


POOLINGS = [SumPooling(), SumPooling(center_prior=False), MaxPooling(), GeMPooling(), RMAC()]


@SETTINGS
@given(maps=feature_maps(), pooling=st.sampled_from(POOLINGS), normalize=st.booleans())
def test_pooling_finite_input(maps, pooling, normalize):
    shape, dtype = shape_and_dtype(maps)
    descriptors = clone(pooling).set_params(normalize=normalize).fit_transform(maps)
    assert descriptors.shape == shape
    assert descriptors.dtype == dtype
    assert np.isfinite(descriptors).all()
    if normalize:
        assert_unit_or_zero_rows(descriptors, atol=1e-5 if dtype == np.float32 else 1e-12)


@SETTINGS
@given(maps=with_non_finite(float_maps()), pooling=st.sampled_from(POOLINGS))
def test_pooling_non_finite_input(maps, pooling):
    with pytest.raises(ValueError, match=NON_FINITE):
        clone(pooling).fit_transform(maps)


@st.composite
def tables(draw, dtypes=(np.float32, np.float64, np.int64), min_rows=1):
    dtype = draw(st.sampled_from(dtypes))
    n, d = draw(st.integers(min_rows, 8)), draw(st.integers(1, 5))
    return arrays(draw, dtype, (n, d))


@SETTINGS
@given(X=tables(), power=st.sampled_from([0.5, 1.0]))
def test_pca_whitening_finite_input(X, power):
    whitening = PCAWhitening(power=power)
    if len(X) < 2:
        with pytest.raises(ValueError, match="at least 2 samples"):
            whitening.fit(X)
        return
    Y = whitening.fit(X).transform(X)
    assert Y.shape == (len(X), min(len(X) - 1, X.shape[1]))
    assert Y.dtype == (np.float32 if X.dtype == np.float32 else np.float64)
    assert np.isfinite(Y).all()
    assert_unit_or_zero_rows(Y, atol=1e-4 if X.dtype == np.float32 else 1e-10)


@SETTINGS
@given(X=with_non_finite(tables(dtypes=FLOAT_DTYPES, min_rows=2)), at_fit=st.booleans())
def test_pca_whitening_non_finite_input(X, at_fit):
    whitening = PCAWhitening()
    with pytest.raises(ValueError, match=NON_FINITE):
        if at_fit:
            whitening.fit(X)
        else:
            whitening.fit(np.random.default_rng(0).normal(size=X.shape)).transform(X)


@st.composite
def local_features(draw, dtypes=(np.float32, np.float64, np.int64)):
    dtype = draw(st.sampled_from(dtypes))
    n, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return [arrays(draw, dtype, (draw(st.integers(1, 8)), d)) for _ in range(n)]


@SETTINGS
@given(
    features=local_features(),
    estimator=st.sampled_from(["ledoit_wolf", "oas", "empirical"]),
    with_mean=st.booleans(),
)
def test_sparse_covariance_finite_input(features, estimator, with_mean):
    covariance = SparseCovariance(estimator=estimator, with_mean=with_mean)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the regularisation warning is documented
            S = covariance.fit_transform(features)
    except ValueError as error:
        # The documented refusals: one local feature, local features all equal, or (with
        # the mean) a covariance lost in the rounding of the embedding.
        assert re.search("single local feature|all equal|too small next to", str(error)), error
        return
    d = features[0].shape[1] + with_mean
    assert S.shape == (len(features), d, d)
    assert S.dtype == np.float64
    assert np.isfinite(S).all()
    assert_allclose(S, S.transpose(0, 2, 1))
    assert np.all(np.linalg.eigvalsh(S)[:, 0] > 0)


@SETTINGS
@given(features=with_non_finite(local_features(dtypes=FLOAT_DTYPES)))
def test_sparse_covariance_and_gmm_non_finite_input(features):
    for transformer in (SparseCovariance(), GMMDescriptor(n_components=1)):
        with pytest.raises(ValueError, match=NON_FINITE):
            transformer.fit_transform(features)


@SETTINGS
@given(
    features=local_features(),
    n_components=st.integers(1, 2),
    covariance_type=st.sampled_from(["full", "diag"]),
)
def test_gmm_descriptor_finite_input(features, n_components, covariance_type):
    gmm = GMMDescriptor(
        n_components=n_components, covariance_type=covariance_type, max_iter=20, random_state=0
    )
    if min(len(image) for image in features) < max(2, n_components):
        with pytest.raises(ValueError, match="fewer than n_components|single local feature"):
            gmm.fit_transform(features)
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence is documented and warned about
            mixtures = gmm.fit_transform(features)
    except ValueError as error:
        # Documented: EM's own failure, or a covariance lost to rounding, named by image.
        assert re.search(r"X\[\d+\].*(failed|not positive definite)", str(error)), error
        return
    d = features[0].shape[1]
    assert len(mixtures) == len(features)
    assert mixtures.means.shape == (len(features), n_components, d)
    for values in (mixtures.weights, mixtures.means, mixtures.covariances):
        assert np.isfinite(values).all()
    assert_allclose(mixtures.weights.sum(axis=1), 1)


@SETTINGS
@given(
    maps=feature_maps().filter(lambda maps: not is_table(maps)),
    normalize=st.sampled_from(["l2", "power", None]),
    whiten=st.booleans(),
    n_components=st.integers(1, 6),
)
# A single position: no variance to whiten by (it once gave NaN).
@example(maps=[np.ones((3, 1, 1), np.float32)], normalize=None, whiten=True, n_components=1)
def test_local_pca_finite_input(maps, normalize, whiten, n_components):
    maps = list(maps)
    channels = maps[0].shape[0]
    n_positions = sum(fmap.shape[1] * fmap.shape[2] for fmap in maps)
    local = LocalPCA(
        n_components=n_components, normalize=normalize, whiten=whiten, random_state=0
    )
    if n_positions < 2:
        with pytest.raises(ValueError, match="at least 2 local features"):
            local.fit(maps)
        return
    if n_components > min(channels, n_positions):
        with pytest.raises(ValueError, match="exceeds"):
            local.fit(maps)
        return
    features = local.fit(maps).transform(maps)
    dtype = np.float32 if all(fmap.dtype == np.float32 for fmap in maps) else np.float64
    assert len(features) == len(maps)
    for fmap, projected in zip(maps, features, strict=True):
        assert projected.shape == (fmap.shape[1] * fmap.shape[2], n_components)
        assert projected.dtype == dtype
        assert np.isfinite(projected).all()


@SETTINGS
@given(maps=with_non_finite(float_maps().filter(lambda maps: not is_table(maps))))
def test_local_pca_non_finite_input(maps):
    with pytest.raises(ValueError, match=NON_FINITE):
        LocalPCA(n_components=1).fit(maps)


# Retrieval. The oracle distances are computed here in float64, independently of the library.


def oracle_distances(metric, Q, D):
    Q, D = np.asarray(Q, dtype=np.float64), np.asarray(D, dtype=np.float64)
    if metric == "euclidean":
        return np.linalg.norm(Q[:, None, :] - D[None, :, :], axis=-1)
    if metric == "cosine":
        Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        Dn = D / np.linalg.norm(D, axis=1, keepdims=True)
        return 1 - Qn @ Dn.T
    # Affine-invariant: the generalised eigenvalues of each pair.
    return np.array(
        [[np.sqrt(np.sum(np.log(linalg.eigvalsh(d, q)) ** 2)) for d in D] for q in Q]
    )


@st.composite
def databases(draw):
    metric = draw(st.sampled_from(["cosine", "euclidean", "affine_invariant"]))
    n = draw(st.integers(2, 8))
    if metric == "affine_invariant":
        d = draw(st.integers(1, 3))
        A = arrays(draw, np.float64, (n, d, d), bound=3.0)
        return metric, A @ A.transpose(0, 2, 1) + 0.5 * np.eye(d)
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64]))
    X = arrays(draw, dtype, (n, draw(st.integers(1, 4))), bound=1e3)
    if metric == "cosine":
        # Cosine compares directions: a zero row has none (it is at distance 1 from all).
        X = X[np.abs(X.astype(np.float64)).max(axis=1) > 1e-3]
        assume(len(X) >= 2)
    return metric, X


def tolerance(metric, X):
    """How close to 0 a self-distance may be after rounding (float32 worst case)."""
    if metric == "euclidean":
        # |q|^2 + |d|^2 - 2 <q, d> cancels: the error is about sqrt(eps) times the norms.
        X = np.asarray(X, dtype=np.float64)
        largest_norm = np.linalg.norm(X, axis=1).max()
        return 8 * np.sqrt(np.finfo(np.float32).eps) * max(1.0, largest_norm)
    return 1e-5 if metric == "cosine" else 1e-6


@SETTINGS
@given(database=databases(), data=st.data())
def test_retriever_finds_each_item_first_and_permutes_consistently(database, data):
    metric, X = database
    n = len(X)
    retriever = ImageRetriever(n_neighbors=n, metric=metric).fit(X)
    distances, indices = retriever.kneighbors(X)
    assert distances.shape == indices.shape == (n, n)
    assert np.isfinite(distances).all()
    assert np.all(np.diff(distances, axis=1) >= 0)
    oracle = oracle_distances(metric, X, X)
    tol = tolerance(metric, X)
    rows = np.arange(n)
    # Itself first, or an item the oracle puts at distance ~0 from it (a duplicate).
    first = indices[:, 0]
    assert np.all(distances[:, 0] <= tol)
    assert np.all((first == rows) | (oracle[rows, first] <= 2 * tol))
    # Every returned distance is the oracle's, up to rounding.
    assert_allclose(distances, np.take_along_axis(oracle, indices, axis=1), atol=2 * tol, rtol=1e-4)

    permutation = np.array(data.draw(st.permutations(range(n))))
    permuted = clone(retriever).fit(X[permutation])
    permuted_distances, permuted_indices = permuted.kneighbors(X)
    assert_allclose(permuted_distances, distances, atol=2 * tol, rtol=1e-4)
    # The permuted search returns the same items (ties may swap places): the oracle distances
    # of the items returned, mapped back to the original numbering, are the same.
    returned = permutation[permuted_indices]
    assert_allclose(
        np.take_along_axis(oracle, returned, axis=1),
        np.take_along_axis(oracle, indices, axis=1),
        atol=4 * tol,
        rtol=1e-4,
    )


@st.composite
def non_finite_databases(draw):
    metric, X = draw(databases())
    X = np.array(X, dtype=np.float64)
    position = tuple(draw(st.integers(0, size - 1)) for size in X.shape)
    X[position] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return metric, X


@SETTINGS
@given(database=non_finite_databases(), at_fit=st.booleans())
def test_retriever_non_finite_input(database, at_fit):
    metric, X = database
    with pytest.raises(ValueError, match=NON_FINITE):
        if at_fit:
            ImageRetriever(n_neighbors=1, metric=metric).fit(X)
        else:
            clean = np.where(np.isfinite(X), X, 1.0)
            if metric == "affine_invariant":
                clean = np.broadcast_to(np.eye(X.shape[-1]), X.shape) * 2.0
            ImageRetriever(n_neighbors=1, metric=metric).fit(clean).kneighbors(X)


# l2_normalize over the whole finite range of the dtype.


@st.composite
def any_finite_rows(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64]))
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    if dtype == np.int64:
        return draw(hnp.arrays(dtype, shape, elements=st.integers(-(2**40), 2**40)))
    finite = st.floats(allow_nan=False, allow_infinity=False, width=np.dtype(dtype).itemsize * 8)
    return draw(hnp.arrays(dtype, shape, elements=finite))


@SETTINGS
@given(X=any_finite_rows())
def test_l2_normalize_unit_or_zero_rows(X):
    Y = l2_normalize(X)
    assert Y.shape == X.shape
    assert Y.dtype == (X.dtype if X.dtype.kind == "f" else np.float64)
    assert np.isfinite(Y).all()
    zero = ~X.any(axis=1)
    assert np.all(Y[zero] == 0)
    eps = np.finfo(Y.dtype).eps
    norms = np.linalg.norm(Y[~zero].astype(np.float64), axis=1)
    assert_allclose(norms, 1, atol=8 * eps * X.shape[1])
    # The direction of each row: the oracle divides by the largest entry in float64 first.
    reference = X[~zero].astype(np.float64)
    reference /= np.abs(reference).max(axis=1, keepdims=True)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert_allclose(Y[~zero], reference, atol=8 * eps * X.shape[1])


@SETTINGS
@given(X=with_non_finite(tables(dtypes=FLOAT_DTYPES)))
def test_l2_normalize_non_finite_rows_stay_apart(X):
    # Not a validating function: non-finite rows give NaN where they lie, the others are
    # normalised as if alone.
    bad = ~np.isfinite(X).all(axis=1)
    Y = l2_normalize(X)
    assert np.isnan(Y[bad]).any(axis=1).all() or np.all(np.isinf(X[bad]).sum(axis=1) == 1)
    assert_allclose(Y[~bad], l2_normalize(X[~bad]))
