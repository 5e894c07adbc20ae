"""Tiled top-k search of ImageRetriever: same neighbours as full rows of distances.

The tiled route (vector kernels, ``kneighbors``) scores the database one tile of columns at a
time. The oracles are full-row searches: the retriever with tiling switched off (its previous
route) and, on data whose distances are exact in floating point, a plain stable sort of the
whole distance matrix, which orders equal distances by database index.
"""

import numpy as np
import pytest
import sklearn

import skretrieval.neighbors._search as blocked_search
from skretrieval.neighbors import ImageRetriever
from skretrieval.neighbors._quantized import Reconstructions
from skretrieval.neighbors._search import _row_slicer
from skretrieval.neighbors._topk import _merge_smallest_k, smallest_k, tiled_smallest_k


def _stable_top_k(distances, k):
    """Oracle: the k smallest of each row by a stable sort (ties by column index)."""
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


def _exact_unit_vectors(n, rng, n_features=8, n_distinct=12):
    """Rows with four entries +-1/2 and the rest 0: unit norm, dot products exact multiples of
    1/4, so every summation order gives the same distances and ties are exact. Only
    ``n_distinct`` different rows, so there are many duplicates."""
    distinct = np.zeros((n_distinct, n_features))
    for row in distinct:
        columns = rng.choice(n_features, size=4, replace=False)
        row[columns] = rng.choice([-0.5, 0.5], size=4)
    return distinct[rng.integers(0, n_distinct, size=n)]


@pytest.fixture
def tiny_tiles(monkeypatch):
    """Tiles of 16 database items and blocks of at most 8 queries, for small test databases."""
    monkeypatch.setattr(blocked_search, "_TILE_COLUMNS", 16)
    monkeypatch.setattr(blocked_search, "_TILE_ROWS", 8)


def _untiled(retriever, X=None, **kwargs):
    """``retriever.kneighbors`` through full rows of distances (tiles wider than any database)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(blocked_search, "_TILE_COLUMNS", 10**12)
        return retriever.kneighbors(X, **kwargs)


# --- the pure functions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tile_columns, k", [(1, 1), (3, 1), (3, 3), (16, 1), (16, 10), (50, 3), (50, 10)]
)
def test_tiled_smallest_k_matches_a_stable_sort_with_ties(tile_columns, k):
    rng = np.random.default_rng(0)
    # Few distinct values: ties everywhere, across tile boundaries too.
    distances = rng.integers(0, 4, size=(20, 97)).astype(np.float32)
    distances[3] = 1.0  # a row of equal values
    # (The retriever's tiles hold at least 4 k columns; the first tile needs k.)
    values, indices = tiled_smallest_k(
        lambda start, stop: distances[:, start:stop].copy(), 97, k, tile_columns
    )
    expected_values, expected_indices = _stable_top_k(distances, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(values, expected_values)


def test_merge_keeps_the_smaller_index_on_ties():
    distances = np.array([[0.0, 1.0]])
    indices = np.array([[5, 7]])
    # Column 0 of the tile (database item 10) equals the current 2nd smallest: it stays out;
    # column 1 (item 11) is smaller and enters at second place.
    _merge_smallest_k(distances, indices, np.array([[1.0, 0.5]]), offset=10)
    np.testing.assert_array_equal(indices, [[5, 11]])
    np.testing.assert_array_equal(distances, [[0.0, 0.5]])
    # Nothing below the k-th distance: nothing changes.
    _merge_smallest_k(distances, indices, np.array([[0.5, 2.0]]), offset=20)
    np.testing.assert_array_equal(indices, [[5, 11]])


@pytest.mark.parametrize("shape, k", [((6, 300), 7), ((6, 40_000), 10), ((3, 5), 5)])
def test_smallest_k_orders_ties_by_column_on_every_route(shape, k):
    rng = np.random.default_rng(1)
    # Values 0..2 only: ties cross the k-th place, where argpartition alone picks any column.
    distances = rng.integers(0, 3, size=shape).astype(np.float64)
    values, indices = smallest_k(distances, k)
    expected_values, expected_indices = _stable_top_k(distances, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(values, expected_values)


def test_row_slicer_takes_arrays_and_plain_tuples_of_rows_only():
    X = np.arange(12.0).reshape(6, 2)
    np.testing.assert_array_equal(_row_slicer(X, 6)(1, 3), X[1:3])
    sliced = _row_slicer((X, X[:, 0]), 6)(4, 6)
    assert isinstance(sliced, tuple)
    np.testing.assert_array_equal(sliced[1], X[4:6, 0])
    assert _row_slicer((X, X[:3]), 6) is None  # not one row per item
    assert _row_slicer([X], 6) is None
    assert _row_slicer(Reconstructions(X, X[:, 0]), 6) is None


# --- ImageRetriever: tiled against full rows --------------------------------------------------


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def data(request):
    rng = np.random.default_rng(0)
    database = rng.normal(size=(100, 6)).astype(request.param)
    # Duplicated rows: equal distances to several database items.
    database[50:60] = database[:10]
    queries = rng.normal(size=(21, 6)).astype(request.param)
    return database, queries


@pytest.mark.usefixtures("tiny_tiles")
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("n_neighbors", [1, 5, 30])
@pytest.mark.parametrize("n_jobs", [None, 2])
def test_tiled_kneighbors_equals_full_rows(data, metric, n_neighbors, n_jobs):
    database, queries = data
    retriever = ImageRetriever(n_neighbors, metric=metric, n_jobs=n_jobs).fit(database)
    for X in (queries, None):
        distances, indices = retriever.kneighbors(X)
        expected_distances, expected_indices = _untiled(retriever, X)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_allclose(distances, expected_distances, rtol=1e-5, atol=1e-6)
        assert distances.dtype == database.dtype
        assert indices.shape == (len(database) if X is None else len(queries), n_neighbors)


@pytest.mark.usefixtures("tiny_tiles")
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_every_neighbour_and_tiny_working_memory(data, metric):
    database, queries = data
    retriever = ImageRetriever(metric=metric, n_jobs=2).fit(database)
    expected = _untiled(retriever, queries, n_neighbors=len(database))
    expected_loo = _untiled(retriever, n_neighbors=len(database) - 1)
    with sklearn.config_context(working_memory=1e-4):  # one query per block
        found = retriever.kneighbors(queries, n_neighbors=len(database))
        found_loo = retriever.kneighbors(n_neighbors=len(database) - 1)
        few = retriever.kneighbors(queries, n_neighbors=3)
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_array_equal(found_loo[1], expected_loo[1])
    np.testing.assert_array_equal(few[1], expected[1][:, :3])
    np.testing.assert_allclose(few[0], expected[0][:, :3], rtol=1e-5, atol=1e-6)
    # Leave-one-out: no item among its own neighbours.
    assert not np.any(found_loo[1] == np.arange(len(database))[:, None])


@pytest.mark.usefixtures("tiny_tiles")
@pytest.mark.parametrize(
    "params",
    [
        {"query_expansion": "average", "qe_neighbors": 3},
        {"query_expansion": "alpha", "qe_neighbors": 2, "qe_alpha": 3.0},
        {"dba_neighbors": 3},
        {"dba_neighbors": 2, "dba_alpha": 1.0, "query_expansion": "alpha"},
    ],
)
@pytest.mark.parametrize("n_jobs", [None, 2])
def test_expansion_and_augmentation_equal_full_rows(data, params, n_jobs):
    database, queries = data
    retriever = ImageRetriever(7, n_jobs=n_jobs, **params).fit(database)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(blocked_search, "_TILE_COLUMNS", 10**12)
        reference = ImageRetriever(7, n_jobs=n_jobs, **params).fit(database)
        expected = reference.kneighbors(queries)
        expected_loo = reference.kneighbors()
        # score and the scorers read full rows: the same expanded queries.
        rows = np.concatenate([d for _, _, d in reference.distance_blocks(queries)])
    np.testing.assert_allclose(retriever._fit_state, reference._fit_state, rtol=1e-5, atol=1e-6)
    for found, wanted in (
        (retriever.kneighbors(queries), expected),
        (retriever.kneighbors(), expected_loo),
    ):
        np.testing.assert_array_equal(found[1], wanted[1])
        np.testing.assert_allclose(found[0], wanted[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        retriever.kneighbors(queries)[1], np.argsort(rows, axis=1, kind="stable")[:, :7]
    )


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_default_tiles_order_exact_ties_by_index(metric, dtype):
    """A database larger than one default tile, with exact distances and many duplicates."""
    rng = np.random.default_rng(2)
    n_database = blocked_search._TILE_COLUMNS * 2 + 123
    database = _exact_unit_vectors(n_database, rng).astype(dtype)
    queries = _exact_unit_vectors(13, rng).astype(dtype)
    if metric == "euclidean":
        database, queries = 2 * database, 2 * queries  # integer entries: exact distances
    retriever = ImageRetriever(metric=metric).fit(database)
    differences = queries[:, None, :] - database[None, :, :]
    squared = np.einsum("qnd,qnd->qn", differences, differences)
    all_distances = squared / 2 if metric == "cosine" else np.sqrt(squared)
    for k in (1, 10, 400):
        distances, indices = retriever.kneighbors(queries, n_neighbors=k)
        expected_distances, expected_indices = _stable_top_k(all_distances, k)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_allclose(distances, expected_distances, atol=1e-6)
    # Leave-one-out on the first 5 items: each skips itself, keeps its duplicates in order.
    loo_distances, loo_indices = retriever.kneighbors(n_neighbors=10)
    for item in range(5):
        row = np.sqrt(np.sum((database - database[item]) ** 2, axis=1))
        row = row**2 / 2 if metric == "cosine" else row
        row[item] = np.inf
        np.testing.assert_array_equal(loo_indices[item], np.argsort(row, kind="stable")[:10])
