"""ImageRetriever with a product quantizer: compressed database, ADC distances, same API."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import normalize
from sklearn.utils.estimator_checks import parametrize_with_checks

from skretrieval.metrics import map_scorer
from skretrieval.neighbors import ImageRetriever
from skretrieval.neighbors._topk import drop_self
from skretrieval.persistence import load, save
from skretrieval.quantization import ProductQuantizer

pytestmark = pytest.mark.usefixtures("single_faiss_thread")


@parametrize_with_checks(
    # One sub-quantizer divides any feature count; 4 centroids fit the checks' small data.
    [ImageRetriever(quantizer=ProductQuantizer(n_subquantizers=1, n_bits=2, random_state=0))]
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def _clustered(n=300, d=16, n_clusters=12, spread=0.4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    labels = rng.integers(0, n_clusters, size=n)
    return centres[labels] + spread * rng.normal(size=(n, d)), labels


def _pq(n_subquantizers=4, n_bits=6):
    return ProductQuantizer(n_subquantizers=n_subquantizers, n_bits=n_bits, random_state=0)


def _fitted(metric="cosine", quantizer=None, **params):
    X, y = _clustered()
    retriever = ImageRetriever(metric=metric, quantizer=quantizer or _pq(), **params)
    return retriever.fit(X, y), X, y


# --- independent oracles: float64, broadcasting, no faiss search, no blocks --------------------


def _decoded(retriever):
    quantizer = retriever.quantizer_
    return quantizer.inverse_transform(quantizer.codes_).astype(np.float64)


def _oracle_distances(queries, decoded, metric):
    """ADC distances of raw queries (normalised for cosine) to decoded vectors, in the metric."""
    queries = np.asarray(queries, dtype=np.float64)
    if metric == "cosine":
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    squared = ((queries[:, None, :] - decoded[None, :, :]) ** 2).sum(axis=-1)
    return squared / 2 if metric == "cosine" else np.sqrt(squared)


def _blocks(retriever, X=None):
    return np.concatenate([d for _, _, d in retriever.distance_blocks(X)])


def _assert_same_top_k(distances, indices, full, metric="cosine", atol=1e-5):
    """kneighbors agrees with the full rows: same distances, same items except float ties.

    Euclidean distances are compared squared: the full rows come from a float32 matrix product,
    whose rounding (about 1e-6 of the squared norms) the square root magnifies near 0.
    """
    if metric == "euclidean":
        distances, full = distances**2, full**2
    k = indices.shape[1]
    order = np.argsort(full, axis=1, kind="stable")[:, :k]
    expected = np.take_along_axis(full, order, axis=1)
    np.testing.assert_allclose(distances, expected, atol=atol)
    np.testing.assert_allclose(np.take_along_axis(full, indices, axis=1), distances, atol=atol)
    # Items may swap only with an item at (nearly) the same distance.
    differs = order != indices
    gaps = np.abs(np.diff(expected, axis=1))
    near_tie = np.zeros_like(differs)
    near_tie[:, 1:] |= gaps < atol
    near_tie[:, :-1] |= gaps < atol
    assert not (differs & ~near_tie).any()


# --- distances ---------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_distances_are_adc_distances_in_the_metric(metric):
    retriever, X, _ = _fitted(metric)
    queries = X[:40] + 0.1
    expected = _oracle_distances(queries, _decoded(retriever), metric)
    np.testing.assert_allclose(_blocks(retriever, queries), expected, atol=2e-5)
    distances, indices = retriever.kneighbors(queries, n_neighbors=7)
    np.testing.assert_allclose(distances, np.take_along_axis(expected, indices, axis=1), atol=2e-5)
    _assert_same_top_k(distances, indices, expected, metric)


def test_cosine_distances_are_half_the_squared_euclidean_of_unit_queries():
    cosine, X, _ = _fitted("cosine")
    unit = normalize(X)
    euclidean = ImageRetriever(metric="euclidean", quantizer=_pq()).fit(unit)
    # Both quantise the same unit vectors with the same seed, hence the same codes.
    np.testing.assert_array_equal(cosine.quantizer_.codes_, euclidean.quantizer_.codes_)
    d_cos, i_cos = cosine.kneighbors(X[:20], n_neighbors=5)
    d_euc, i_euc = euclidean.kneighbors(unit[:20], n_neighbors=5)
    np.testing.assert_array_equal(i_cos, i_euc)
    np.testing.assert_allclose(d_cos, d_euc**2 / 2, atol=1e-5)


@pytest.mark.parametrize(
    "params",
    [
        {"metric": "cosine"},
        {"metric": "euclidean"},
        {"metric": "cosine", "query_expansion": "average", "qe_neighbors": 3},
        {"metric": "cosine", "query_expansion": "alpha", "qe_neighbors": 4},
    ],
)
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_kneighbors_agrees_with_the_distance_blocks(params, leave_one_out):
    retriever, X, _ = _fitted(**params)
    X_query = None if leave_one_out else X[:60]
    distances, indices = retriever.kneighbors(X_query, n_neighbors=12)
    _assert_same_top_k(distances, indices, _blocks(retriever, X_query), retriever.metric)


def test_kneighbors_graph_and_small_working_memory():
    import sklearn

    retriever, X, _ = _fitted()
    graph = retriever.kneighbors_graph(X[:10], n_neighbors=3, mode="distance")
    distances, indices = retriever.kneighbors(X[:10], n_neighbors=3)
    np.testing.assert_allclose(np.sort(graph.toarray(), axis=1)[:, -3:], distances, atol=1e-6)
    whole = _blocks(retriever, X[:50])
    with sklearn.config_context(working_memory=0.01):  # blocks of a few queries
        assert len(list(retriever.distance_blocks(X[:50]))) > 1
        # BLAS may round a product of fewer rows differently.
        np.testing.assert_allclose(_blocks(retriever, X[:50]), whole, atol=1e-6)


# --- leave-one-out -----------------------------------------------------------------------------


def test_leave_one_out_queries_the_decoded_database_without_self_matches():
    retriever, X, _ = _fitted()
    n = len(X)
    distances, indices = retriever.kneighbors(n_neighbors=n - 1)
    assert not (indices == np.arange(n)[:, None]).any()
    assert all(len(np.unique(row)) == n - 1 for row in indices)
    decoded = _decoded(retriever)
    expected = _oracle_distances(decoded, decoded, "cosine")
    np.testing.assert_allclose(distances, np.take_along_axis(expected, indices, axis=1), atol=2e-5)
    full = _blocks(retriever)
    assert np.isinf(np.diag(full)).all()


def test_drop_self_removes_the_item_wherever_it_is_else_the_last():
    indices = np.array([[0, 5, 6], [7, 1, 8], [3, 4, 2], [9, 8, 7]])
    distances = np.arange(12.0).reshape(4, 3)
    kept_distances, kept = drop_self(distances, indices, 2)
    np.testing.assert_array_equal(kept, [[5, 6], [7, 8], [3, 4], [9, 8]])
    np.testing.assert_array_equal(kept_distances, [[1, 2], [3, 5], [6, 7], [9, 10]])


# --- query expansion and DBA -------------------------------------------------------------------


@pytest.mark.parametrize("expansion, alpha", [("average", None), ("alpha", 3.0)])
def test_query_expansion_sums_the_decoded_neighbours(expansion, alpha):
    k = 3
    retriever, X, _ = _fitted(query_expansion=expansion, qe_neighbors=k, qe_alpha=3.0)
    queries = X[:25]
    decoded = _decoded(retriever)
    first = _oracle_distances(queries, decoded, "cosine")
    top = np.argsort(first, axis=1, kind="stable")[:, :k]
    similarities = 1 - np.take_along_axis(first, top, axis=1)
    weights = np.ones_like(similarities) if alpha is None else np.maximum(similarities, 0) ** alpha
    expanded = normalize(normalize(queries) + np.einsum("qk,qkd->qd", weights, decoded[top]))
    expected = _oracle_distances(expanded, decoded, "cosine")
    distances, indices = retriever.kneighbors(queries, n_neighbors=10)
    np.testing.assert_allclose(distances, np.take_along_axis(expected, indices, axis=1), atol=1e-4)
    np.testing.assert_allclose(_blocks(retriever, queries), expected, atol=1e-4)


def test_dba_augments_the_float_vectors_before_quantising():
    X, y = _clustered()
    params = {"dba_neighbors": 2, "dba_alpha": 3.0}
    exact = ImageRetriever(**params).fit(X, y)
    compressed = ImageRetriever(quantizer=_pq(), **params).fit(X, y)
    # The quantizer was fitted on exactly the augmented database of the exact retriever.
    reference = _pq().fit(exact._fit_state)
    np.testing.assert_array_equal(compressed.quantizer_.codes_, reference.codes_)
    distances, indices = compressed.kneighbors(X[:30], n_neighbors=5)
    _assert_same_top_k(distances, indices, _blocks(compressed, X[:30]))
    assert abs(compressed.score(X, y) - exact.score(X, y)) < 0.05


# --- scores, tuning ----------------------------------------------------------------------------


def test_score_is_close_to_exact_at_32_bytes():
    # Overlapping clusters, so that the exact mAP is far from 1 (about 0.74) and errors show.
    X, y = _clustered(n=400, d=64, n_clusters=20, spread=1.5)
    exact = ImageRetriever().fit(X, y).score(X, y)
    compressed_retriever = ImageRetriever(quantizer=_pq(n_subquantizers=32, n_bits=8))
    compressed = compressed_retriever.fit(X, y).score(X, y)
    assert 0.5 < exact < 0.9
    assert abs(compressed - exact) < 0.01


def test_grid_search_tunes_the_quantizer():
    X, y = _clustered(n=360, spread=1.2)
    search = GridSearchCV(
        ImageRetriever(quantizer=_pq()),
        {"quantizer__n_subquantizers": [1, 4, 8]},
        scoring=map_scorer,
        cv=StratifiedKFold(n_splits=2, shuffle=True, random_state=0),
    ).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores > 0) & (scores < 1))
    assert len(np.unique(scores)) == 3  # the parameter reached the quantizer
    assert (
        search.best_estimator_.quantizer_.n_subquantizers
        == search.best_params_["quantizer__n_subquantizers"]
    )


# --- state, errors, persistence ----------------------------------------------------------------


def test_the_float_database_is_not_kept_and_the_quantizer_is_cloned():
    quantizer = _pq()
    retriever = ImageRetriever(quantizer=quantizer).fit(_clustered()[0])
    assert retriever._fit_X is None and retriever._fit_state is None
    assert retriever.quantizer_ is not quantizer
    assert not hasattr(quantizer, "codes_")
    exact = ImageRetriever().fit(_clustered()[0])
    assert exact.quantizer_ is None
    # Refitting without a quantizer searches exactly again.
    retriever.set_params(quantizer=None).fit(_clustered()[0])
    assert retriever.quantizer_ is None and retriever._fit_X is not None


def test_a_quantizer_needs_a_vector_metric():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 3, 3))
    spd = A @ A.transpose(0, 2, 1) + 3 * np.eye(3)
    retriever = ImageRetriever(metric="log_euclidean", quantizer=_pq(1, 2))
    with pytest.raises(
        ValueError,
        match=r"quantizer=.*metric='cosine' or 'euclidean'.*"
        r"metric='log_euclidean'",
    ):
        retriever.fit(spd)
    assert not [name for name in vars(retriever) if name.endswith("_")]


def test_quantizer_errors_are_raised_at_fit():
    X, y = _clustered(d=10)
    with pytest.raises(ValueError, match="divisible by n_subquantizers"):
        ImageRetriever(quantizer=_pq(n_subquantizers=4)).fit(X, y)
    with pytest.raises(ValueError, match="n_bits"):
        ImageRetriever(quantizer=_pq(n_subquantizers=2, n_bits=17)).fit(X, y)


def test_pickle_and_persistence_round_trip(tmp_path):
    retriever, X, y = _fitted(query_expansion="alpha", qe_neighbors=2)
    expected = retriever.kneighbors(X[:20], n_neighbors=6)
    expected_loo = retriever.kneighbors(n_neighbors=6)
    for restored in (
        pickle.loads(pickle.dumps(retriever)),
        load(save(retriever, tmp_path / "retriever.joblib")),
        clone(retriever).fit(X, y),
    ):
        for got, want in zip(restored.kneighbors(X[:20], n_neighbors=6), expected, strict=True):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(restored.kneighbors(n_neighbors=6), expected_loo, strict=True):
            np.testing.assert_array_equal(got, want)
        assert restored.score(X, y) == retriever.score(X, y)
