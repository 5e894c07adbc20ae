"""Re-ranking of ImageRetriever: diffusion (Iscen et al. 2017), k-reciprocal (Zhong et al. 2017)."""

import numpy as np
import pytest
import sklearn
from scipy import sparse
from scipy.sparse.linalg import spsolve
from sklearn.datasets import make_moons
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.utils.estimator_checks import parametrize_with_checks

from skretrieval.neighbors import ImageRetriever
from skretrieval.neighbors._reranking import conjugate_gradient
from skretrieval.persistence import load, save


@parametrize_with_checks(
    [
        ImageRetriever(rerank="diffusion", rerank_neighbors=1),
        ImageRetriever(rerank="k_reciprocal", rerank_neighbors=1, reciprocal_expansion=1),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


# --- naive oracles: dense matrices, Python loops and sets, straight from the papers ----------


def _unit_rows(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _distance_matrix(A, B, metric):
    if metric == "cosine":
        return 1 - _unit_rows(A) @ _unit_rows(B).T
    return np.sqrt(np.maximum(((A[:, None, :] - B[None, :, :]) ** 2).sum(-1), 0))


def _query_rows(database, queries, metric, leave_one_out):
    if leave_one_out:
        rows = _distance_matrix(database, database, metric)
        np.fill_diagonal(rows, np.inf)
        return rows
    return _distance_matrix(queries, database, metric)


def _naive_diffusion(database, rows, k, alpha, gamma):
    n = len(database)
    similarities = _unit_rows(database) @ _unit_rows(database).T
    others = 1 - similarities
    np.fill_diagonal(others, np.inf)
    nearest = [list(np.argsort(others[i], kind="stable")[:k]) for i in range(n)]
    W = np.zeros((n, n))
    for i in range(n):
        for j in nearest[i]:
            if i in nearest[j]:
                W[i, j] = max(similarities[i, j], 0) ** gamma
    degrees = W.sum(axis=1)
    scale = np.array([1 / np.sqrt(d) if d > 0 else 0.0 for d in degrees])
    S = scale[:, None] * W * scale[None, :]
    result = []
    for d in rows:
        y = np.zeros(n)
        for j in np.argsort(d, kind="stable")[:k]:
            y[j] = max(1 - d[j], 0) ** gamma
        f = np.linalg.solve(np.eye(n) - alpha * S, y)
        row = 1 - f / f.max() if f.max() > 0 else np.ones(n)
        row[np.isinf(d)] = np.inf
        result.append(row)
    return np.array(result)


def _naive_k_reciprocal(database, rows, metric, k, k2, lambda_value):
    n = len(database)
    D = _distance_matrix(database, database, metric)
    np.fill_diagonal(D, 0)
    others = D.copy()
    np.fill_diagonal(others, np.inf)
    nearest = [list(np.argsort(others[g], kind="stable")[:k]) for g in range(n)]
    radius = np.array([others[g, nearest[g][-1]] for g in range(n)])

    def reciprocal(g, size):
        return {g} | {j for j in nearest[g][:size] if g in nearest[j][:size]}

    half = (k + 1) // 2

    def expand(R):
        expanded = set(R)
        for q in R:
            H = reciprocal(q, half)
            if len(R & H) >= 2 / 3 * len(H):
                expanded |= H
        return expanded

    def weights(distances, members):
        V = np.zeros(n)
        for j in members:
            V[j] = np.exp(-distances[j])
        return V

    V = np.array([weights(D[g], expand(reciprocal(g, k))) for g in range(n)])
    V_database = np.array([(V[g] + V[nearest[g][: k2 - 1]].sum(axis=0)) / k2 for g in range(n)])
    result = []
    for d in rows:
        order = np.argsort(d, kind="stable")
        R = {g for g in order[:k] if d[g] <= radius[g]}
        V_query = (weights(d, expand(R)) + V[order[: k2 - 1]].sum(axis=0)) / k2
        jaccard = np.array(
            [
                1
                - np.minimum(V_query, V_database[g]).sum()
                / np.maximum(V_query, V_database[g]).sum()
                for g in range(n)
            ]
        )
        with np.errstate(invalid="ignore"):
            row = (1 - lambda_value) * jaccard + lambda_value * d
        row[np.isinf(d)] = np.inf
        result.append(row)
    return np.array(result)


def _clustered(n_classes=20, per_class=15, n_features=32, noise=1.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, n_features))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(n_classes), per_class)
    X = centres[y] + noise / np.sqrt(n_features) * rng.normal(size=(len(y), n_features))
    return X, y


def _moons(n=200, seed=0):
    """Two interleaved half circles, lifted to 3-D so that cosine compares directions."""
    X, y = make_moons(n, noise=0.06, random_state=seed)
    return np.c_[X - X.mean(axis=0), np.full(n, 0.3)], y


@pytest.fixture(params=["random", "clusters"])
def data(request):
    if request.param == "random":
        rng = np.random.default_rng(0)
        return rng.normal(size=(40, 5)), rng.normal(size=(6, 5))
    X, _ = _clustered(n_classes=5, per_class=8, n_features=6, noise=1.0)
    return X, X[::7] + 0.05


def _full_rows(retriever, X):
    return np.concatenate([block for _, _, block in retriever.distance_blocks(X)])


def _check_against(retriever, expected, X, n, atol=1e-8):
    """distance_blocks equals the oracle; kneighbors ranks by it (ties aside)."""
    np.testing.assert_allclose(_full_rows(retriever, X), expected, atol=atol)
    distances, indices = retriever.kneighbors(X, n_neighbors=n)
    np.testing.assert_allclose(distances, np.sort(expected, axis=1)[:, :n], atol=atol)
    np.testing.assert_allclose(np.take_along_axis(expected, indices, axis=1), distances, atol=atol)
    assert all(len(set(row)) == n for row in indices)


# --- against the naive oracles ---------------------------------------------------------------


@pytest.mark.parametrize("leave_one_out", [False, True])
@pytest.mark.parametrize("k, alpha, gamma", [(5, 0.99, 3.0), (8, 0.8, 1.0)])
def test_diffusion_matches_a_naive_implementation(data, leave_one_out, k, alpha, gamma):
    database, queries = data
    retriever = ImageRetriever(
        rerank="diffusion", rerank_neighbors=k, diffusion_alpha=alpha, diffusion_gamma=gamma
    ).fit(database)
    rows = _query_rows(database, queries, "cosine", leave_one_out)
    expected = _naive_diffusion(database, rows, k, alpha, gamma)
    X = None if leave_one_out else queries
    # Conjugate gradient stops at a residual of 1e-6 |y|.
    _check_against(retriever, expected, X, len(database) - leave_one_out, atol=1e-5)


@pytest.mark.parametrize("leave_one_out", [False, True])
@pytest.mark.parametrize(
    "metric, k, k2, lambda_value",
    [("cosine", 6, 3, 0.3), ("euclidean", 7, 1, 0.0), ("euclidean", 4, 5, 0.5)],
)
def test_k_reciprocal_matches_a_naive_implementation(
    data, leave_one_out, metric, k, k2, lambda_value
):
    database, queries = data
    retriever = ImageRetriever(
        metric=metric,
        rerank="k_reciprocal",
        rerank_neighbors=k,
        reciprocal_expansion=k2,
        reciprocal_lambda=lambda_value,
    ).fit(database)
    rows = _query_rows(database, queries, metric, leave_one_out)
    expected = _naive_k_reciprocal(database, rows, metric, k, k2, lambda_value)
    X = None if leave_one_out else queries
    _check_against(retriever, expected, X, len(database) - leave_one_out)


def test_batched_conjugate_gradient_solves_each_column():
    rng = np.random.default_rng(0)
    W = sparse.random(60, 60, density=0.1, random_state=0)
    W = W + W.T
    degrees = np.asarray(W.sum(axis=1)).ravel()
    scale = sparse.diags(1 / np.sqrt(degrees))
    S = (scale @ W @ scale).tocsr()
    Y = rng.random((60, 4))
    F = conjugate_gradient(S, 0.95, Y)
    A = (sparse.identity(60) - 0.95 * S).tocsc()
    for j in range(4):
        np.testing.assert_allclose(F[:, j], spsolve(A, Y[:, j]), rtol=1e-5, atol=1e-8)


# --- the search around it --------------------------------------------------------------------


@pytest.mark.parametrize("rerank", ["diffusion", "k_reciprocal"])
def test_score_and_blocks_read_the_reranked_distances(rerank):
    X, y = _clustered(n_classes=4, per_class=10, n_features=8)
    queries, y_queries = X[::5] + 0.01, y[::5]
    retriever = ImageRetriever(rerank=rerank, rerank_neighbors=5).fit(X, y)
    distances, order = retriever.kneighbors(queries, n_neighbors=len(X))
    expected = np.mean(
        [
            average_precision_score(y[order[i]] == y_queries[i], -distances[i])
            for i in range(len(queries))
        ]
    )
    assert retriever.score(queries, y_queries) == pytest.approx(expected)
    plain = ImageRetriever().fit(X, y)
    assert not np.allclose(_full_rows(plain, queries), _full_rows(retriever, queries))


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("rerank", ["diffusion", "k_reciprocal"])
def test_blocked_reranking_equals_one_block(data, rerank, n_jobs):
    database, queries = data
    options = dict(rerank=rerank, rerank_neighbors=4, query_expansion="average", n_jobs=n_jobs)
    retriever = ImageRetriever(**options).fit(database)
    expected, expected_loo = retriever.kneighbors(queries), retriever.kneighbors()
    with sklearn.config_context(working_memory=1e-4):
        blocked = ImageRetriever(**options).fit(database)
        assert len(list(blocked.distance_blocks(queries))) == len(queries)
        np.testing.assert_allclose(blocked.kneighbors(queries)[0], expected[0], atol=1e-10)
        np.testing.assert_array_equal(blocked.kneighbors(queries)[1], expected[1])
        np.testing.assert_array_equal(blocked.kneighbors()[1], expected_loo[1])


def test_reranking_follows_query_expansion_and_dba(data):
    # The graph is built on the DBA-augmented database; queries are expanded before re-ranking:
    # the same as re-ranking the database that DBA gives, with the expanded queries.
    database, queries = data
    options = dict(rerank="k_reciprocal", rerank_neighbors=5)
    # alpha-DBA: uniform DBA gives items of one neighbourhood equal vectors, whose order ties.
    both = ImageRetriever(dba_neighbors=2, dba_alpha=3.0, **options).fit(database)
    augmented = ImageRetriever(dba_neighbors=2, dba_alpha=3.0).fit(database)._fit_state
    np.testing.assert_allclose(
        _full_rows(both, queries), _full_rows(ImageRetriever(**options).fit(augmented), queries)
    )
    expanded = ImageRetriever(query_expansion="average", **options).fit(database)
    assert not np.allclose(
        _full_rows(expanded, queries), _full_rows(ImageRetriever(**options).fit(database), queries)
    )


def test_float32_stays_float32(data):
    database, queries = (a.astype(np.float32) for a in data)
    for rerank in ("diffusion", "k_reciprocal"):
        retriever = ImageRetriever(rerank=rerank, rerank_neighbors=4).fit(database)
        assert retriever.kneighbors(queries)[0].dtype == np.float32


@pytest.mark.parametrize("rerank", ["diffusion", "k_reciprocal"])
def test_saved_and_loaded_retriever_reranks_the_same(tmp_path, data, rerank):
    database, queries = data
    retriever = ImageRetriever(rerank=rerank, rerank_neighbors=4).fit(database)
    save(retriever, tmp_path / "index.skr")
    restored = load(tmp_path / "index.skr")
    np.testing.assert_array_equal(
        restored.kneighbors(queries)[1], retriever.kneighbors(queries)[1]
    )


# --- evidence: re-ranking raises mAP where plain cosine is confused --------------------------


def _leave_one_out_map(retriever, X, y):
    retriever.fit(X, y)
    _, order = retriever.kneighbors(n_neighbors=len(X) - 1)
    relevant = y[order] == y[:, None]
    precision = np.cumsum(relevant, axis=1) / np.arange(1, relevant.shape[1] + 1)
    return float(np.mean((precision * relevant).sum(axis=1) / relevant.sum(axis=1)))


def test_diffusion_follows_the_manifold_of_two_moons():
    X, y = _moons()
    plain = _leave_one_out_map(ImageRetriever(), X, y)
    diffused = _leave_one_out_map(ImageRetriever(rerank="diffusion", rerank_neighbors=10), X, y)
    assert diffused > plain + 0.1, (plain, diffused)


def test_k_reciprocal_raises_map_on_noisy_clusters():
    X, y = _clustered()
    plain = _leave_one_out_map(ImageRetriever(), X, y)
    reranked = _leave_one_out_map(
        ImageRetriever(rerank="k_reciprocal", rerank_neighbors=10), X, y
    )
    assert reranked > plain + 0.05, (plain, reranked)


def test_grid_search_tunes_the_reranking():
    X, y = _moons()
    search = GridSearchCV(
        ImageRetriever(rerank_neighbors=10),
        {"rerank": [None, "diffusion"]},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    ).fit(X, y)
    assert search.best_params_ == {"rerank": "diffusion"}


# --- errors -----------------------------------------------------------------------------------


def test_unsupported_combinations_are_clear_errors(data):
    database, _ = data
    with pytest.raises(ValueError, match="rerank='diffusion' needs metric='cosine'.*'euclidean'"):
        ImageRetriever(metric="euclidean", rerank="diffusion").fit(database)
    from skretrieval.quantization import ProductQuantizer

    retriever = ImageRetriever(rerank="k_reciprocal", quantizer=ProductQuantizer(n_bits=2))
    with pytest.raises(ValueError, match="not supported with a quantizer"):
        retriever.fit(database.astype(np.float32))
    assert not hasattr(retriever, "n_samples_fit_")
    with pytest.raises(ValueError, match="rerank_neighbors=40 needs at least 41 .*n_samples=40"):
        ImageRetriever(rerank="diffusion", rerank_neighbors=40).fit(database)
    with pytest.raises(ValueError, match="reciprocal_expansion=41 needs at least 41"):
        ImageRetriever(rerank="k_reciprocal", rerank_neighbors=3, reciprocal_expansion=41).fit(
            database
        )
    # The sizes are only checked for the method in use.
    ImageRetriever(rerank_neighbors=40, reciprocal_expansion=41).fit(database)


def test_a_dask_database_is_a_clear_error(data):
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="rerank='k_reciprocal' is not supported with a dask"):
        ImageRetriever(rerank="k_reciprocal").fit(da.from_array(data[0], chunks=10))


@pytest.mark.parametrize(
    "params, name",
    [
        ({"rerank": "graph"}, "rerank"),
        ({"rerank_neighbors": 0}, "rerank_neighbors"),
        ({"diffusion_alpha": 1.0}, "diffusion_alpha"),
        ({"diffusion_gamma": 0}, "diffusion_gamma"),
        ({"reciprocal_expansion": 0}, "reciprocal_expansion"),
        ({"reciprocal_lambda": 1.5}, "reciprocal_lambda"),
    ],
)
def test_invalid_parameters_are_named(data, params, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter of ImageRetriever"):
        ImageRetriever(**params).fit(data[0])
