"""Query expansion (AQE, alpha-QE) and database-side augmentation of ImageRetriever."""

import numpy as np
import pytest
import sklearn
from sklearn.datasets import load_digits
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.utils.estimator_checks import parametrize_with_checks

from skretrieval.neighbors import ImageRetriever
from skretrieval.neighbors._expansion import aggregate_neighbours


@parametrize_with_checks(
    [
        ImageRetriever(query_expansion="alpha", qe_neighbors=1, dba_neighbors=1, dba_alpha=2.0),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def _unit(degrees):
    radians = np.deg2rad(np.atleast_1d(degrees))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def _cosine_distance(degrees):
    return 1 - np.cos(np.deg2rad(degrees))


# --- naive oracles: one query at a time, full sorts, no blocks, no sparse matrices ------------


def _unit_rows(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _naive_expand(vector, database, alpha, k, excluded=None):
    similarities = database @ vector
    if excluded is not None:
        similarities[excluded] = -np.inf
    top = np.argsort(-similarities, kind="stable")[:k]
    weights = np.ones(k) if alpha is None else np.maximum(similarities[top], 0) ** alpha
    expanded = vector + (weights[:, None] * database[top]).sum(axis=0)
    return expanded / np.linalg.norm(expanded)


def _naive_distances(queries, database, *, qe=None, qe_k=2, qe_alpha=3.0, dba_k=None,
                     dba_alpha=None, leave_one_out=False):
    """Cosine distances of every (expanded) query to every (augmented) item, written plainly."""
    queries, database = _unit_rows(queries), _unit_rows(database)
    if dba_k is not None:
        database = np.stack(
            [
                _naive_expand(x, database, dba_alpha, dba_k, excluded=i)
                for i, x in enumerate(database)
            ]
        )
    rows = []
    for i, query in enumerate(queries):
        excluded = i if leave_one_out else None
        if qe is not None:
            query = _naive_expand(
                query, database, qe_alpha if qe == "alpha" else None, qe_k, excluded=excluded
            )
        distances = 1 - database @ query
        if leave_one_out:
            distances[i] = np.inf
        rows.append(distances)
    return np.array(rows)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(50, 6)), rng.normal(size=(7, 6))


# --- hand-worked cases on the unit circle ---------------------------------------------------


def test_average_query_expansion_flips_a_ranking_by_hand():
    # Query at 0 degrees; database at 30, -35 and 40 degrees: plain order 0, 1, 2. AQE with the
    # top one moves the query to 15 degrees (bisector of 0 and 30): now 15, 50 and 25 degrees.
    database = _unit([30, -35, 40])
    query = _unit(0)
    plain = ImageRetriever(n_neighbors=3).fit(database)
    np.testing.assert_array_equal(plain.kneighbors(query)[1], [[0, 1, 2]])
    expanded = ImageRetriever(n_neighbors=3, query_expansion="average", qe_neighbors=1)
    distances, indices = expanded.fit(database).kneighbors(query)
    np.testing.assert_array_equal(indices, [[0, 2, 1]])
    np.testing.assert_allclose(distances, [_cosine_distance([15, 25, 50])], atol=1e-12)


def test_alpha_query_expansion_by_hand():
    # Expanded with both neighbours, weights cos(30)^3 and cos(35)^3: the pull of the -35 degree
    # item nearly cancels that of the 30 degree one, and the query stays at about -0.3 degrees.
    database = _unit([30, -35, 40])
    w0, w1 = np.cos(np.deg2rad(30)) ** 3, np.cos(np.deg2rad(35)) ** 3
    expanded = _unit(0)[0] + w0 * _unit(30)[0] + w1 * _unit(-35)[0]
    angle = np.rad2deg(np.arctan2(expanded[1], expanded[0]))
    retriever = ImageRetriever(n_neighbors=3, query_expansion="alpha", qe_neighbors=2)
    distances, indices = retriever.fit(database).kneighbors(_unit(0))
    np.testing.assert_array_equal(indices, [[0, 1, 2]])
    np.testing.assert_allclose(
        distances, [_cosine_distance([30 - angle, 35 + angle, 40 - angle])], atol=1e-12
    )
    # alpha = 0 weighs every neighbour 1: average query expansion.
    for k in (1, 2):
        zero = ImageRetriever(n_neighbors=3, query_expansion="alpha", qe_alpha=0, qe_neighbors=k)
        average = ImageRetriever(n_neighbors=3, query_expansion="average", qe_neighbors=k)
        np.testing.assert_allclose(
            zero.fit(database).kneighbors(_unit(0))[0],
            average.fit(database).kneighbors(_unit(0))[0],
        )


def test_database_side_augmentation_flips_a_ranking_by_hand():
    # Database at 0, 40, 85, 95, 100 degrees, query at 60: plain order 1, 2, 3, 4, 0. DBA with
    # one neighbour averages mutual neighbours: 0 and 40 -> 20, 85 -> 90 (with 95), 95 and 100
    # -> 97.5. The query is then 40, 40, 30, 37.5, 37.5 degrees away: item 2 comes first and
    # item 1, first before, is among the last two.
    database = _unit([0, 40, 85, 95, 100])
    query = _unit(60)
    plain = ImageRetriever(n_neighbors=5).fit(database)
    np.testing.assert_array_equal(plain.kneighbors(query)[1], [[1, 2, 3, 4, 0]])
    distances, indices = ImageRetriever(n_neighbors=5, dba_neighbors=1).fit(database).kneighbors(
        query
    )
    assert indices[0, 0] == 2
    assert set(indices[0, 1:3]) == {3, 4} and set(indices[0, 3:]) == {0, 1}
    np.testing.assert_allclose(
        distances, [_cosine_distance([30, 37.5, 37.5, 40, 40])], atol=1e-12
    )


def test_aggregate_neighbours_handles_negative_similarities():
    database = _unit([0, 180])
    # The second neighbour is opposite (similarity -1): weight 0 under alpha, 1 when uniform.
    expanded = aggregate_neighbours(
        _unit(90), database, np.array([[0, 1]]), np.array([[0.5, -1.0]]), alpha=1.5
    )
    np.testing.assert_allclose(expanded, _unit_rows(_unit(90) + 0.5**1.5 * database[:1]))
    uniform = aggregate_neighbours(
        _unit(90), database, np.array([[0, 1]]), np.array([[0.5, -1.0]]), alpha=None
    )
    np.testing.assert_allclose(uniform, _unit(90))


# --- against the naive oracle on random data -------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"qe": "average", "qe_k": 3},
        {"qe": "alpha", "qe_k": 4, "qe_alpha": 2.5},
        {"dba_k": 3},
        {"dba_k": 2, "dba_alpha": 3.0},
        {"qe": "alpha", "qe_k": 2, "dba_k": 4, "dba_alpha": 1.0},
    ],
)
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_matches_a_naive_implementation(data, options, leave_one_out):
    database, queries = data
    retriever = ImageRetriever(
        n_neighbors=len(database) - leave_one_out,
        query_expansion=options.get("qe"),
        qe_neighbors=options.get("qe_k", 2),
        qe_alpha=options.get("qe_alpha", 3.0),
        dba_neighbors=options.get("dba_k"),
        dba_alpha=options.get("dba_alpha"),
    ).fit(database)
    expected = _naive_distances(
        database if leave_one_out else queries, database, leave_one_out=leave_one_out, **options
    )
    distances, indices = retriever.kneighbors(None if leave_one_out else queries)
    # Uniform DBA gives items with the same neighbourhood the same vector: exact ties, whose
    # order rounding decides. So check the ranking through the oracle's distances.
    n_kept = len(database) - leave_one_out
    np.testing.assert_allclose(distances, np.sort(expected, axis=1)[:, :n_kept], atol=1e-12)
    np.testing.assert_allclose(
        np.take_along_axis(expected, indices, axis=1), distances, atol=1e-12
    )
    assert all(len(set(row)) == n_kept for row in indices)
    if leave_one_out:
        assert not (indices == np.arange(len(database))[:, None]).any()
    if "dba_k" not in options or "dba_alpha" in options:  # no structural ties
        np.testing.assert_array_equal(indices, np.argsort(expected, axis=1)[:, :n_kept])


def test_leave_one_out_expansion_uses_the_query_once(data):
    # Leave-one-out AQE of item i is normalise(x_i + its k nearest *other* items); querying the
    # database with X is different: each item first finds itself, at distance 0.
    database, _ = data
    retriever = ImageRetriever(n_neighbors=5, query_expansion="average", qe_neighbors=1)
    retriever.fit(database)
    leave_one_out = retriever.kneighbors()[1]
    units = _unit_rows(database)
    similarities = units @ units.T
    np.fill_diagonal(similarities, -np.inf)
    nearest_other = similarities.argmax(axis=1)
    expected = _unit_rows(units + units[nearest_other])
    distances = 1 - expected @ units.T
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(leave_one_out, np.argsort(distances, axis=1)[:, :5])
    # With X = the database and k = 1 the expansion neighbour is the item itself: the
    # expanded query is unchanged, so the ranking is the plain one (self first).
    with_self = retriever.kneighbors(database)[1]
    plain = ImageRetriever(n_neighbors=5).fit(database).kneighbors(database)[1]
    np.testing.assert_array_equal(with_self, plain)


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_blocked_expansion_equals_one_block(data, n_jobs):
    database, queries = data
    retriever = ImageRetriever(
        n_neighbors=6, query_expansion="alpha", dba_neighbors=2, dba_alpha=1.0, n_jobs=n_jobs
    ).fit(database)
    expected = retriever.kneighbors(queries)
    expected_loo = retriever.kneighbors()
    with sklearn.config_context(working_memory=1e-4):
        blocked = ImageRetriever(
            n_neighbors=6, query_expansion="alpha", dba_neighbors=2, dba_alpha=1.0, n_jobs=n_jobs
        ).fit(database)
        assert len(list(blocked.distance_blocks(queries))) == len(queries)
        np.testing.assert_array_equal(blocked.kneighbors(queries)[1], expected[1])
        np.testing.assert_allclose(blocked.kneighbors(queries)[0], expected[0])
        np.testing.assert_array_equal(blocked.kneighbors()[1], expected_loo[1])


def test_float32_stays_float32(data):
    database, queries = (a.astype(np.float32) for a in data)
    retriever = ImageRetriever(query_expansion="alpha", dba_neighbors=2, dba_alpha=3.0)
    distances, _ = retriever.fit(database).kneighbors(queries)
    assert distances.dtype == np.float32
    assert retriever._fit_state.dtype == np.float32


def test_score_and_graph_use_the_expanded_queries(data):
    database, queries = data
    rng = np.random.default_rng(1)
    y_database = rng.integers(0, 3, size=len(database))
    y_queries = rng.integers(0, 3, size=len(queries))
    retriever = ImageRetriever(query_expansion="average", qe_neighbors=3, dba_neighbors=2)
    retriever.fit(database, y_database)
    distances, order = retriever.kneighbors(queries, n_neighbors=len(database))
    expected = np.mean(
        [
            average_precision_score(y_database[order[i]] == y_queries[i], -distances[i])
            for i in range(len(queries))
        ]
    )
    assert retriever.score(queries, y_queries) == pytest.approx(expected)
    plain = ImageRetriever().fit(database, y_database).score(queries, y_queries)
    assert retriever.score(queries, y_queries) != pytest.approx(plain)
    graph = retriever.kneighbors_graph(queries, n_neighbors=4, mode="distance").toarray()
    np.testing.assert_allclose(
        np.take_along_axis(graph, order[:, :4], axis=1), distances[:, :4]
    )


# --- errors -----------------------------------------------------------------------------------


def test_other_metrics_are_a_clear_error(data):
    database, _ = data
    with pytest.raises(ValueError, match="query_expansion='average' needs metric='cosine'.*"
                       "metric='euclidean'"):
        ImageRetriever(metric="euclidean", query_expansion="average").fit(database)
    with pytest.raises(ValueError, match="dba_neighbors=3 needs metric='cosine'.*'euclidean'"):
        ImageRetriever(metric="euclidean", dba_neighbors=3).fit(database)
    spd = np.broadcast_to(np.eye(3), (5, 3, 3)).copy()
    with pytest.raises(ValueError, match="got metric='log_euclidean' on SPD matrices"):
        ImageRetriever(metric="log_euclidean", query_expansion="alpha").fit(spd)
    # A failed fit leaves the estimator unfitted.
    retriever = ImageRetriever(metric="euclidean", dba_neighbors=3)
    with pytest.raises(ValueError):
        retriever.fit(database)
    assert not hasattr(retriever, "n_samples_fit_")


def test_too_many_expansion_neighbours_is_a_clear_error(data):
    database, _ = data
    with pytest.raises(ValueError, match="qe_neighbors=50 needs at least 51 .*n_samples=50"):
        ImageRetriever(query_expansion="average", qe_neighbors=50).fit(database)
    with pytest.raises(ValueError, match="dba_neighbors=60 needs at least 61"):
        ImageRetriever(dba_neighbors=60).fit(database)
    # qe_neighbors is only checked when query expansion is on.
    ImageRetriever(qe_neighbors=50).fit(database)


@pytest.mark.parametrize(
    "params, name",
    [
        ({"query_expansion": "diffusion"}, "query_expansion"),
        ({"qe_neighbors": 0}, "qe_neighbors"),
        ({"qe_alpha": -1.0}, "qe_alpha"),
        ({"dba_neighbors": 0}, "dba_neighbors"),
        ({"dba_alpha": "3"}, "dba_alpha"),
    ],
)
def test_invalid_parameters_are_named(data, params, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter of ImageRetriever"):
        ImageRetriever(**params).fit(data[0])


# --- evidence: expansion helps on clustered data ---------------------------------------------


def _clustered(n_classes=20, per_class=15, n_features=32, noise=1.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, n_features))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(n_classes), per_class)
    X = centres[y] + noise / np.sqrt(n_features) * rng.normal(size=(len(y), n_features))
    return X, y


def _leave_one_out_map(retriever, X, y):
    retriever.fit(X, y)
    distances, order = retriever.kneighbors(n_neighbors=len(X) - 1)
    relevant = y[order] == y[:, None]
    # Step-interpolated AP over the full leave-one-out ranking.
    precision = np.cumsum(relevant, axis=1) / np.arange(1, relevant.shape[1] + 1)
    return float(np.mean((precision * relevant).sum(axis=1) / relevant.sum(axis=1)))


@pytest.mark.parametrize(
    "options, margin",
    [
        ({"query_expansion": "average", "qe_neighbors": 3}, 0.05),
        ({"query_expansion": "alpha", "qe_neighbors": 5}, 0.05),
        ({"dba_neighbors": 3}, 0.05),
        ({"dba_neighbors": 5, "dba_alpha": 3.0, "query_expansion": "alpha",
          "qe_neighbors": 5}, 0.10),
    ],
)
def test_expansion_raises_map_on_clustered_data(options, margin):
    X, y = _clustered()
    plain = _leave_one_out_map(ImageRetriever(), X, y)
    expanded = _leave_one_out_map(ImageRetriever(**options), X, y)
    assert expanded > plain + margin, (plain, expanded)


def test_expansion_raises_map_on_digits():
    X, y = load_digits(return_X_y=True)
    X = X - X.mean(axis=0)  # centred, so that cosine similarity is informative
    queries, database = X[::5], np.delete(X, np.s_[::5], axis=0)
    y_queries, y_database = y[::5], np.delete(y, np.s_[::5])
    plain = ImageRetriever().fit(database, y_database).score(queries, y_queries)
    expanded = ImageRetriever(
        query_expansion="alpha", qe_neighbors=5, dba_neighbors=5, dba_alpha=3.0
    ).fit(database, y_database).score(queries, y_queries)
    assert expanded > plain + 0.05, (plain, expanded)


def test_grid_search_tunes_the_expansion():
    X, y = _clustered()
    search = GridSearchCV(
        ImageRetriever(),
        {"query_expansion": [None, "average"], "dba_neighbors": [None, 3]},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    ).fit(X, y)
    scores = dict(
        zip(
            [tuple(p.values()) for p in search.cv_results_["params"]],
            search.cv_results_["mean_test_score"],
            strict=True,
        )
    )
    assert search.best_params_ != {"dba_neighbors": None, "query_expansion": None}
    assert max(scores.values()) > scores[(None, None)]


# --- SPD matrices: average query expansion with the metric's Riemannian mean ------------------


def _pyriemann_mean(stack, metric):
    try:
        from pyriemann.geometry.mean import gmean
    except ImportError:  # older pyriemann
        from pyriemann.utils.mean import mean_covariance as gmean
    return gmean(stack, metric=metric)


def _spd(n, d, seed):
    A = np.random.default_rng(seed).normal(size=(n, d, d))
    return A @ A.transpose(0, 2, 1) + 0.5 * np.eye(d)


def _rows(retriever, X):
    return np.concatenate([block for _, _, block in retriever.distance_blocks(X)])


@pytest.mark.parametrize(
    "metric, mean",
    [
        ("affine_invariant", "riemann"),
        ("log_euclidean", "logeuclid"),
        ("stein", "logdet"),
        ("wasserstein", "wasserstein"),
        ("jeffreys", "kullback_sym"),
        ("kl", "harmonic"),
    ],
)
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_spd_average_expansion_is_pyriemanns_mean(metric, mean, leave_one_out):
    database, queries = _spd(20, 3, 0), _spd(4, 3, 1)
    k = 3
    X = None if leave_one_out else queries
    plain = ImageRetriever(metric=metric).fit(database)
    first = plain.kneighbors(X, n_neighbors=k, return_distance=False)
    raw = database if leave_one_out else queries
    means = np.stack(
        [
            _pyriemann_mean(np.concatenate([raw[i][None], database[first[i]]]), mean)
            for i in range(len(raw))
        ]
    )
    expected = _rows(plain, means)
    if leave_one_out:
        np.fill_diagonal(expected, np.inf)
    retriever = ImageRetriever(metric=metric, query_expansion="average", qe_neighbors=k)
    retriever.fit(database)
    np.testing.assert_allclose(_rows(retriever, X), expected, rtol=1e-6, atol=1e-9)
    n = len(database) - leave_one_out
    np.testing.assert_array_equal(
        retriever.kneighbors(X, n_neighbors=n)[1], np.argsort(expected, axis=1)[:, :n]
    )
    # The expansion moves the queries.
    assert not np.allclose(_rows(retriever, X), _rows(plain, X))


def test_spd_expansion_errors_are_clear():
    spd = _spd(6, 2, 0)
    with pytest.raises(ValueError, match="on SPD matrices use query_expansion='average'"):
        ImageRetriever(metric="affine_invariant", query_expansion="alpha").fit(spd)
    with pytest.raises(ValueError, match="dba_neighbors=2 needs metric='cosine'"):
        ImageRetriever(metric="log_euclidean", dba_neighbors=2).fit(spd)
    from skretrieval.descriptors import GaussianMixtures

    mixtures = GaussianMixtures(np.full((4, 1), 1.0), np.zeros((4, 1, 2)), spd[:4, None])
    with pytest.raises(ValueError, match="query_expansion='average' needs metric='cosine'.*"
                       "got metric='wasserstein' on Gaussian mixtures"):
        ImageRetriever(metric="wasserstein", query_expansion="average").fit(mixtures)
