import pickle

import numpy as np
import pytest
import sklearn
from sklearn.exceptions import NotFittedError
from sklearn.metrics import average_precision_score
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.estimator_checks import parametrize_with_checks

from skretrieval.geometry import DistanceKernel, register_kernel
from skretrieval.neighbors import ImageRetriever
from skretrieval.neighbors._topk import smallest_k


@parametrize_with_checks([ImageRetriever(), ImageRetriever(metric="euclidean", n_neighbors=2)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    database = rng.normal(size=(60, 8))
    queries = rng.normal(size=(9, 8))
    return database, queries


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_kneighbors_matches_scikit_learn_brute_force(data, metric):
    database, queries = data
    ours = ImageRetriever(n_neighbors=5, metric=metric).fit(database)
    reference = NearestNeighbors(n_neighbors=5, metric=metric, algorithm="brute").fit(database)
    for X in (queries, None):
        distances, indices = ours.kneighbors(X)
        expected_distances, expected_indices = reference.kneighbors(X)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_allclose(distances, expected_distances, atol=1e-10)


def test_query_the_database_excludes_self_but_not_duplicates():
    database = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    _, indices = ImageRetriever(n_neighbors=1).fit(database).kneighbors()
    # Item 0's nearest is its duplicate 1, never itself, and vice versa.
    assert indices[0, 0] == 1 and indices[1, 0] == 0


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_blocked_search_equals_one_block(data, n_jobs):
    database, queries = data
    retriever = ImageRetriever(n_neighbors=7, n_jobs=n_jobs).fit(database)
    expected = retriever.kneighbors(queries)
    # A working memory this small forces one query per block.
    with sklearn.config_context(working_memory=1e-4):
        blocked = retriever.kneighbors(queries)
        blocks = list(retriever.distance_blocks(queries))
    assert len(blocks) == len(queries)
    np.testing.assert_array_equal(blocked[1], expected[1])
    np.testing.assert_allclose(blocked[0], expected[0])


def test_float32_descriptors_give_float32_distances(data):
    database, queries = (a.astype(np.float32) for a in data)
    distances, _ = ImageRetriever().fit(database).kneighbors(queries)
    assert distances.dtype == np.float32


def test_kneighbors_graph_matches_scikit_learn(data):
    database, queries = data
    ours = ImageRetriever(n_neighbors=3).fit(database)
    reference = NearestNeighbors(n_neighbors=3, metric="cosine", algorithm="brute").fit(database)
    for mode in ("connectivity", "distance"):
        np.testing.assert_allclose(
            ours.kneighbors_graph(queries, mode=mode).toarray(),
            reference.kneighbors_graph(queries, mode=mode).toarray(),
            atol=1e-10,
        )
    with pytest.raises(ValueError, match="mode"):
        ours.kneighbors_graph(queries, mode="weights")


def test_score_is_mean_average_precision_with_label_relevance(data):
    database, queries = data
    rng = np.random.default_rng(1)
    y_database = rng.integers(0, 3, size=len(database))
    y_queries = rng.integers(0, 3, size=len(queries))
    retriever = ImageRetriever().fit(database, y_database)
    similarities = -retriever.kneighbors(queries, n_neighbors=len(database))[0]
    order = retriever.kneighbors(queries, n_neighbors=len(database), return_distance=False)
    expected = np.mean(
        [
            average_precision_score(y_database[order[i]] == y_queries[i], similarities[i])
            for i in range(len(queries))
        ]
    )
    assert retriever.score(queries, y_queries) == pytest.approx(expected)


def test_n_neighbors_larger_than_database_is_a_clear_error(data):
    database, queries = data
    retriever = ImageRetriever(n_neighbors=61).fit(database)
    message = "n_neighbors=61 is larger than the database, which has 60"
    with pytest.raises(ValueError, match=message):
        retriever.kneighbors(queries)
    with pytest.raises(ValueError, match="minus the query itself"):
        retriever.kneighbors(n_neighbors=60)
    with pytest.raises(ValueError, match=">= 1"):
        retriever.kneighbors(queries, n_neighbors=0)


def test_unknown_metric_is_a_clear_error(data):
    with pytest.raises(ValueError, match="Unknown metric 'cosin'"):
        ImageRetriever(metric="cosin").fit(data[0])


def test_bad_descriptors_are_clear_errors(data):
    database, queries = data
    bad = database.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ImageRetriever().fit(bad)
    retriever = ImageRetriever().fit(database)
    with pytest.raises(ValueError, match="8 features"):
        retriever.kneighbors(queries[:, :5])
    with pytest.raises(ValueError, match="y must be 1-D"):
        ImageRetriever().fit(database, np.zeros((60, 2)))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        ImageRetriever().fit(database, np.zeros(59))


def test_score_needs_labels_at_fit(data):
    database, queries = data
    retriever = ImageRetriever().fit(database)
    with pytest.raises(ValueError, match="labels"):
        retriever.score(queries, np.zeros(len(queries)))


def test_not_fitted_and_pickle(data):
    database, queries = data
    with pytest.raises(NotFittedError):
        ImageRetriever().kneighbors(queries)
    retriever = ImageRetriever(n_neighbors=4).fit(database, np.arange(60) % 5)
    restored = pickle.loads(pickle.dumps(retriever))
    np.testing.assert_array_equal(restored.kneighbors(queries)[1], retriever.kneighbors(queries)[1])


def test_a_registered_kernel_plugs_into_the_retriever(data):
    database, queries = data
    register_kernel(
        DistanceKernel(
            name="_test_chebyshev",
            descriptor="vectors",
            validate=lambda X, name="X": np.asarray(X, dtype=float),
            prepare=lambda X: np.asarray(X),
            pairwise=lambda Q, D: np.abs(Q[:, None, :] - D[None, :, :]).max(-1),
        )
    )
    ours = ImageRetriever(n_neighbors=4, metric="_test_chebyshev").fit(database)
    reference = NearestNeighbors(n_neighbors=4, metric="chebyshev").fit(database)
    np.testing.assert_array_equal(ours.kneighbors(queries)[1], reference.kneighbors(queries)[1])


@pytest.mark.parametrize(
    "shape, k, kind",
    [
        ((30, 40_000), 10, "normal"),  # wide: the sampled-threshold route
        ((30, 40_000), 10, "ties"),  # heavy ties: the threshold is loose, argpartition route
        ((30, 40_000), 10, "sorted"),  # database sorted by distance: the sample is unrepresentative
        ((5, 300), 7, "normal"),  # narrow: argpartition route
        ((4, 6), 6, "normal"),  # k equals the database size
    ],
)
def test_smallest_k_is_exact_on_both_routes(shape, k, kind):
    rng = np.random.default_rng(3)
    if kind == "ties":
        distances = rng.integers(0, 3, size=shape).astype(np.float32)
    elif kind == "sorted":
        distances = np.sort(rng.normal(size=shape), axis=1)
    else:
        distances = rng.normal(size=shape)
    values, indices = smallest_k(distances, k)
    np.testing.assert_array_equal(values, np.sort(distances, axis=1)[:, :k])
    np.testing.assert_array_equal(np.take_along_axis(distances, indices, axis=1), values)
    assert all(len(set(row)) == k for row in indices)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_score_without_queries_is_leave_one_out(metric):
    # Oracle: scikit-learn's average precision of each item against all the others.
    from sklearn.metrics import average_precision_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skretrieval.metrics import map_scorer

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 4)
    X = rng.normal(size=(5, 8))[y] + 0.8 * rng.normal(size=(20, 8))
    retriever = ImageRetriever(metric=metric).fit(X, y)
    distances = retriever.kneighbors(X, n_neighbors=20, return_distance=True)[0]
    ranks = retriever.kneighbors(X, n_neighbors=20, return_distance=False)
    expected = []
    for i in range(20):
        others = ranks[i] != i
        expected.append(
            average_precision_score(y[ranks[i][others]] == y[i], -distances[i][others])
        )
    assert retriever.score(None, y) == pytest.approx(np.mean(expected), rel=1e-12)
    # The scorer on a pipeline too: the fitted database queries itself, nothing is transformed.
    pipeline = make_pipeline(StandardScaler(), ImageRetriever(metric=metric)).fit(X, y)
    Xt = StandardScaler().fit_transform(X)
    assert map_scorer(pipeline, None, y) == pytest.approx(
        ImageRetriever(metric=metric).fit(Xt, y).score(None, y), rel=1e-12
    )
