"""Exact top-k search through faiss's kNN: the same neighbours, tie order and distances as the
numpy route, one copy of a cosine database, and faiss's thread setting left as it was.

The oracles are the retriever's numpy route (faiss hidden from the search) and a stable sort of
the full distance matrix on data whose distances are exact in float32, where every summation
order gives the same values and ties are exact.
"""

import faiss
import numpy as np
import pytest

import skretrieval.neighbors._flat as flat
import skretrieval.neighbors._search as blocked_search
from skretrieval.neighbors import ImageRetriever


@pytest.fixture
def small_blocks_use_faiss(monkeypatch):
    """faiss for any block size (it multiplies matrices only from 128,000 query entries on)."""
    monkeypatch.setattr(faiss.cvar, "distance_compute_blas_threshold", 0)


def _numpy_route(retriever, X=None, **kwargs):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(blocked_search, "flat_metric", lambda kernel, state: None)
        return retriever.kneighbors(X, **kwargs)


def _uses_faiss(monkeypatch):
    """Count the calls of faiss's kNN by the search."""
    calls = []
    candidates = flat._candidates

    def counted(*args):
        calls.append(len(args[0]))
        return candidates(*args)

    monkeypatch.setattr(flat, "_candidates", counted)
    return calls


def _exact_unit_rows(n, rng, n_features=8, n_distinct=40):
    """Unit rows of four entries +-1/2 (or one +-1): dot products are exact multiples of 1/4,
    so distances are exact and ties are exact; only ``n_distinct`` different rows."""
    distinct = np.zeros((n_distinct, n_features), dtype=np.float32)
    for i, row in enumerate(distinct):
        if i % 5 == 0:
            row[rng.integers(n_features)] = rng.choice([-1.0, 1.0])
        else:
            row[rng.choice(n_features, size=4, replace=False)] = rng.choice([-0.5, 0.5], size=4)
    return distinct[rng.integers(0, n_distinct, size=n)]


def _stable_top_k(distances, k):
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


@pytest.mark.usefixtures("small_blocks_use_faiss")
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("n_neighbors", [1, 7, 60])
def test_many_exact_ties_come_in_database_order(metric, n_neighbors, monkeypatch):
    rng = np.random.default_rng(0)
    database = _exact_unit_rows(3000, rng)
    queries = _exact_unit_rows(50, rng)
    if metric == "euclidean":
        database, queries = 2 * database, 2 * queries  # distances sqrt of integers
    calls = _uses_faiss(monkeypatch)
    retriever = ImageRetriever(n_neighbors, metric=metric).fit(database)
    distances, indices = retriever.kneighbors(queries)
    assert calls  # the faiss route ran, and had to widen: ~75 duplicates per distinct row
    assert len(calls) > 1
    # Oracle: every distance, exactly, and a stable sort.
    if metric == "cosine":
        full = 1 - queries.astype(np.float64) @ database.T.astype(np.float64)
    else:
        full = np.sqrt(((queries[:, None, :] - database[None]) ** 2).sum(-1, dtype=np.float64))
    expected_distances, expected_indices = _stable_top_k(full, n_neighbors)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, atol=1e-6)
    numpy_distances, numpy_indices = _numpy_route(retriever, queries)
    np.testing.assert_array_equal(indices, numpy_indices)
    np.testing.assert_allclose(distances, numpy_distances, atol=1e-6)


@pytest.mark.usefixtures("small_blocks_use_faiss")
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_leave_one_out_with_duplicates_matches_the_numpy_route(metric):
    rng = np.random.default_rng(1)
    database = _exact_unit_rows(500, rng, n_distinct=30)
    retriever = ImageRetriever(5, metric=metric).fit(database)
    distances, indices = retriever.kneighbors()
    numpy_distances, numpy_indices = _numpy_route(retriever)
    np.testing.assert_array_equal(indices, numpy_indices)
    np.testing.assert_allclose(distances, numpy_distances, atol=1e-6)
    assert not np.any(indices == np.arange(len(database))[:, None])
    # Each item has duplicates: its nearest neighbour is one of them, at distance 0.
    assert np.all(distances[:, 0] == 0)


@pytest.mark.usefixtures("small_blocks_use_faiss")
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("options", [{}, {"query_expansion": "alpha"}, {"n_jobs": 2}])
def test_random_data_gives_the_numpy_routes_neighbours(metric, options, monkeypatch):
    rng = np.random.default_rng(2)
    database = rng.normal(size=(2000, 16)).astype(np.float32)
    queries = rng.normal(size=(70, 16)).astype(np.float32)
    if metric == "cosine" or options.get("query_expansion"):
        metric = "cosine"
    calls = _uses_faiss(monkeypatch)
    retriever = ImageRetriever(10, metric=metric, **options).fit(database)
    for X in (queries, None):
        distances, indices = retriever.kneighbors(X)
        numpy_distances, numpy_indices = _numpy_route(retriever, X)
        np.testing.assert_allclose(distances, numpy_distances, rtol=1e-5, atol=1e-6)
        # Euclidean distances are recomputed from the differences, more exactly than the
        # numpy route's |q|^2 + |x|^2 - 2 <q, x>: two items within its rounding may swap.
        # Their exact (float64) distances must then agree to that rounding.
        if metric == "cosine":
            np.testing.assert_array_equal(indices, numpy_indices)
        else:
            assert np.mean(indices == numpy_indices) > 0.999
            Q = (database if X is None else queries).astype(np.float64)
            rows = np.arange(len(Q))[:, None]

            def exact(found, Q=Q, rows=rows):
                return np.linalg.norm(Q[rows] - database.astype(np.float64)[found], axis=-1)

            np.testing.assert_allclose(exact(indices), exact(numpy_indices), rtol=1e-5)
        assert distances.dtype == np.float32
        assert np.all(np.diff(distances, axis=1) >= 0)
    assert calls


def test_small_batches_and_float64_take_the_numpy_route(monkeypatch):
    rng = np.random.default_rng(3)
    database = rng.normal(size=(300, 8))
    calls = _uses_faiss(monkeypatch)
    ImageRetriever(3).fit(database).kneighbors(database[:5])  # float64
    ImageRetriever(3).fit(database.astype(np.float32)).kneighbors(database[:5].astype(np.float32))
    assert calls == []  # 40 query entries: below faiss's matrix-product threshold


@pytest.mark.usefixtures("small_blocks_use_faiss")
def test_huge_euclidean_values_take_the_scaled_numpy_route(monkeypatch):
    rng = np.random.default_rng(4)
    database = rng.normal(size=(200, 4)).astype(np.float32)
    calls = _uses_faiss(monkeypatch)
    retriever = ImageRetriever(3, metric="euclidean").fit(database * np.float32(1e25))
    distances, indices = retriever.kneighbors(database[:10] * np.float32(1e25))
    assert calls == []  # squared norms overflow float32
    assert np.all(np.isfinite(distances))
    np.testing.assert_array_equal(indices[:, 0], np.arange(10))


@pytest.mark.usefixtures("small_blocks_use_faiss")
def test_faiss_thread_setting_is_restored_and_capped(monkeypatch):
    rng = np.random.default_rng(5)
    database = rng.normal(size=(500, 8)).astype(np.float32)
    seen = []
    candidates = flat._candidates

    def recording(*args):
        seen.append(faiss.omp_get_max_threads())
        return candidates(*args)

    monkeypatch.setattr(flat, "_candidates", recording)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        ImageRetriever(4).fit(database).kneighbors(database[:20])
        assert seen and set(seen) == {1}  # the caller's lower setting is kept
        assert faiss.omp_get_max_threads() == 1
        # Restored on the error path too.
        monkeypatch.setattr(faiss, "knn_inner_product", _raise)
        with pytest.raises(RuntimeError, match="planted"):
            ImageRetriever(4).fit(database).kneighbors(database[:20])
        assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(previous)


def _raise(*args):
    raise RuntimeError("planted")


def test_cosine_fit_keeps_one_copy_of_the_database():
    rng = np.random.default_rng(6)
    database = rng.normal(size=(400, 16)).astype(np.float32)
    retriever = ImageRetriever().fit(database)
    assert retriever._fit_X is retriever._fit_state
    assert not np.shares_memory(retriever._fit_state, database)
    np.testing.assert_allclose(np.linalg.norm(retriever._fit_state, axis=1), 1, rtol=1e-6)
    # Leave-one-out queries the unit rows: the same as querying the database as given.
    distances, indices = retriever.kneighbors()
    given_distances, given_indices = retriever.kneighbors(database, n_neighbors=11)
    own = given_indices == np.arange(len(database))[:, None]
    assert own.any(axis=1).all()
    keep = ~own
    np.testing.assert_array_equal(indices, given_indices[keep].reshape(len(database), 10))
    np.testing.assert_allclose(
        distances, given_distances[keep].reshape(len(database), 10), atol=1e-6
    )


def test_an_old_pickle_with_the_raw_database_still_searches_right():
    rng = np.random.default_rng(7)
    database = 5 * rng.normal(size=(100, 8)).astype(np.float32)
    retriever = ImageRetriever(3).fit(database)
    expected = retriever.kneighbors()
    # As saved before: the database as given, and no flag saying the queries are prepared.
    old = ImageRetriever(3).fit(database)
    old._fit_X = database
    del old._fit_X_prepared
    distances, indices = old.kneighbors()
    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_allclose(distances, expected[0], atol=1e-6)
