"""Re-ranking of full distance rows with the database's neighbourhood graph: diffusion
(Iscen et al. 2017) and k-reciprocal re-ranking (Zhong et al. 2017).

The offline part (the database's graph) is built once at ``fit`` from the database's
leave-one-out distance rows, read block by block; each block of query rows is then re-ranked
with sparse matrix products, never a Python loop over pairs.
"""

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from skretrieval.neighbors._topk import smallest_k

# Batched conjugate gradient: stop at a residual of this much of |y|, or after this many steps
# (alpha = 0.99 bounds the condition number of I - alpha S by 199: about 100 steps at 1e-6).
_CG_TOLERANCE = 1e-6
_CG_MAX_ITER = 1000


def _arrays(matrix):
    """A sparse matrix as plain arrays: a saved retriever holds no scipy.sparse object."""
    return (matrix.data, matrix.indices, matrix.indptr, tuple(map(int, matrix.shape)))


def _matrix(arrays, kind=sparse.csr_matrix):
    data, indices, indptr, shape = arrays
    return kind((data, indices, indptr), shape=tuple(shape))


@dataclass
class DiffusionGraph:
    """``S = D^-1/2 W D^-1/2`` of the database's mutual k-NN graph, and the search options."""

    affinity_arrays: tuple  # S, as CSR arrays
    n_neighbors: int
    alpha: float
    gamma: float

    @property
    def normalized_affinity(self):
        return _matrix(self.affinity_arrays)


@dataclass
class ReciprocalGraph:
    """The database side of k-reciprocal re-ranking (see :func:`fit_reciprocal`); matrices as
    CSR (CSC for the expanded weights, read by columns) arrays."""

    neighbors: np.ndarray  # (n, k) nearest other items, nearest first
    radius: np.ndarray  # (n,) distance to the k-th of them
    half_set_arrays: tuple  # R(q, ceil(k/2)) as a 0/1 matrix, q included
    weight_arrays: tuple  # V, the Gaussian-kernel weights on R*(g, k), before expansion
    expanded_weight_arrays: tuple  # V after local query expansion
    n_expansion: int
    lambda_value: float

    @property
    def half_sets(self):
        return _matrix(self.half_set_arrays)

    @property
    def weights(self):
        return _matrix(self.weight_arrays)

    @property
    def expanded_weights(self):
        return _matrix(self.expanded_weight_arrays, sparse.csc_matrix)


def _top_k_rows(row_blocks, n, k):
    """``(distances, indices)`` of the ``k`` nearest other items of each database item."""
    distances, indices = np.empty((n, k)), np.empty((n, k), dtype=np.intp)
    for start, stop, rows in row_blocks():
        distances[start:stop], indices[start:stop] = smallest_k(rows, k)
    return distances, indices


def _adjacency(indices, n):
    """0/1 CSR matrix with a one at ``(i, indices[i, j])``."""
    rows, k = indices.shape
    return sparse.csr_matrix(
        (np.ones(indices.size), indices.ravel(), np.arange(0, rows * k + 1, k)), shape=(rows, n)
    )


def fit_diffusion(row_blocks, n, n_neighbors, alpha, gamma):
    """The normalised affinity of the database's mutual ``n_neighbors``-NN graph.

    ``W_ij = max(1 - d_ij, 0) ** gamma`` (``1 - d`` is the cosine similarity) when ``i`` and
    ``j`` are each among the other's ``n_neighbors`` nearest items, else 0; ``S = D^-1/2 W
    D^-1/2`` with ``D`` the degrees (an isolated item keeps a zero row).

    ``row_blocks()`` yields ``(start, stop, distances)``: leave-one-out rows of the database.
    """
    distances, indices = _top_k_rows(row_blocks, n, n_neighbors)
    weights = np.maximum(1 - distances, 0) ** gamma
    directed = _adjacency(indices, n)
    directed.data = weights.ravel()
    mutual = directed.multiply(_adjacency(indices, n).T).tocsr()
    # Both directions hold the same similarity up to rounding: symmetrise exactly.
    affinity = (mutual + mutual.T) / 2
    degrees = np.asarray(affinity.sum(axis=1)).ravel()
    scale = np.zeros(n)
    scale[degrees > 0] = 1 / np.sqrt(degrees[degrees > 0])
    normalized = sparse.diags(scale) @ affinity @ sparse.diags(scale)
    return DiffusionGraph(_arrays(sparse.csr_matrix(normalized)), n_neighbors, alpha, gamma)


def conjugate_gradient(S, alpha, Y):
    """Solve ``(I - alpha S) F = Y`` for every column of ``Y`` at once (``S`` symmetric).

    Conjugate gradient with one step size per column; a column stops moving once its residual
    is below ``1e-6 |y|``.
    """
    F = np.zeros_like(Y)
    R = Y.copy()
    P = R.copy()
    rr = np.einsum("ij,ij->j", R, R)
    target = _CG_TOLERANCE**2 * rr
    for _ in range(_CG_MAX_ITER):
        active = rr > target
        if not active.any():
            break
        AP = P - alpha * (S @ P)
        curvature = np.einsum("ij,ij->j", P, AP)
        step = np.where(active, rr / np.where(active, curvature, 1), 0)
        F += step * P
        R -= step * AP
        rr_new = np.einsum("ij,ij->j", R, R)
        P = R + np.where(active, rr_new / np.where(active, rr, 1), 0) * P
        rr = rr_new
    return F


def diffusion_distances(graph, distances):
    """Re-rank a block of query rows by diffusion on the database graph.

    Each query's ``y`` holds ``max(1 - d, 0) ** gamma`` at its ``n_neighbors`` nearest items,
    0 elsewhere; ``f`` solves ``(I - alpha S) f = y``; the distance is ``1 - f / max(f)``
    (0 for the best item, 1 for items the diffusion does not reach) and stays ``+inf`` where
    the plain distance is.
    """
    n_queries, n = distances.shape
    nearest_distances, nearest = smallest_k(distances, graph.n_neighbors)
    Y = np.zeros((n, n_queries))
    columns = np.repeat(np.arange(n_queries), graph.n_neighbors)
    Y[nearest.ravel(), columns] = np.maximum(1 - nearest_distances.ravel(), 0) ** graph.gamma
    F = conjugate_gradient(graph.normalized_affinity, graph.alpha, Y).T
    top = F.max(axis=1, keepdims=True)
    reranked = 1 - np.divide(F, top, out=np.zeros_like(F), where=top > 0)
    reranked[np.isinf(distances)] = np.inf
    return reranked.astype(distances.dtype, copy=False)


def _reciprocal_sets(neighbors, n, radius_test):
    """0/1 matrix of ``R(p, k) = {g in N(p, k) : p in N(g, k)}`` for ``n_rows`` rows."""
    candidates = _adjacency(neighbors, n)
    candidates.data = radius_test.ravel().astype(float)
    candidates.eliminate_zeros()
    return candidates


def _expanded_sets(sets, half_sets):
    """``R*(p) = R(p, k)`` and every ``R(q, k/2)`` (q in it) sharing >= 2/3 of its items."""
    half_sizes = np.asarray(half_sets.sum(axis=1)).ravel()
    shared = (sets @ half_sets.T).multiply(sets).tocsr()
    keep = shared.data >= 2 / 3 * half_sizes[shared.indices]
    chosen = sparse.csr_matrix(
        (keep.astype(float), shared.indices, shared.indptr), shape=shared.shape
    )
    chosen.eliminate_zeros()
    expanded = (sets + chosen @ half_sets).tocsr()
    expanded.data[:] = 1
    return expanded


def _local_expansion(neighbors, n_expansion, n, weights, own=None):
    """``(own + sum of the weights rows of the n_expansion - 1 nearest) / n_expansion``."""
    if own is None:
        own = weights
    if n_expansion == 1:
        return sparse.csr_matrix(own)
    summed = own + _adjacency(neighbors[:, : n_expansion - 1], n) @ weights
    return sparse.csr_matrix(summed / n_expansion)


def fit_reciprocal(row_blocks, n, n_neighbors, n_expansion, lambda_value):
    """The database side of k-reciprocal re-ranking, from two passes over its distance rows.

    For every database item ``g``: ``R(g, k)`` is ``g`` and those of its ``k`` nearest other
    items that have ``g`` among their ``k`` nearest; ``R*(g, k)`` adds each ``R(q, ceil(k/2))``,
    ``q`` in ``R(g, k)``, that shares at least 2/3 of its items with ``R(g, k)``; ``V_g`` holds
    ``exp(-d(g, j))`` on ``R*(g, k)`` (``d(g, g) = 0``), then the mean of ``V`` over ``g`` and
    its ``n_expansion - 1`` nearest items (local query expansion).
    """
    distances, neighbors = _top_k_rows(row_blocks, n, n_neighbors)
    own = sparse.identity(n, format="csr")

    def sets(k):
        directed = _adjacency(neighbors[:, :k], n)
        return (directed.multiply(directed.T) + own).tocsr()

    half_sets = sets(max(1, (n_neighbors + 1) // 2))
    expanded = _expanded_sets(sets(n_neighbors), half_sets).tocoo()
    values = np.empty(expanded.nnz)
    order = np.argsort(expanded.row, kind="stable")
    rows, columns = expanded.row[order], expanded.col[order]
    bounds = np.searchsorted(rows, np.arange(n + 1))
    for start, stop, block in row_blocks():
        block = block.copy()
        block[np.arange(stop - start), np.arange(start, stop)] = 0  # d(g, g) = 0
        inside = slice(bounds[start], bounds[stop])
        values[order[inside]] = block[rows[inside] - start, columns[inside]]
    weights = sparse.csr_matrix((np.exp(-values), (expanded.row, expanded.col)), shape=(n, n))
    expanded_weights = _local_expansion(neighbors, n_expansion, n, weights)
    return ReciprocalGraph(
        neighbors,
        distances[:, -1].copy(),
        _arrays(half_sets),
        _arrays(weights),
        _arrays(expanded_weights.tocsc()),
        n_expansion,
        lambda_value,
    )


def _min_sums(query_weights, database_weights):
    """``sum_j min(a_pj, b_gj)`` for every query row ``p`` and database row ``g``.

    Through the inverted index (the columns of ``database_weights``): every non-zero ``a_pj``
    meets the non-zeros of column ``j`` only.
    """
    query = query_weights.tocoo()
    n_queries, n = query.shape
    indptr, rows, values = (
        database_weights.indptr,
        database_weights.indices,
        database_weights.data,
    )
    counts = indptr[query.col + 1] - indptr[query.col]
    owner = np.repeat(np.arange(query.nnz), counts)
    # Position of each pair inside its column of the database.
    offsets = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    positions = indptr[query.col][owner] + offsets
    minimum = np.minimum(query.data[owner], values[positions])
    flat = query.row[owner].astype(np.int64) * n + rows[positions]
    return np.bincount(flat, weights=minimum, minlength=n_queries * n).reshape(n_queries, n)


def reciprocal_distances(graph, distances):
    """Re-rank a block of query rows by k-reciprocal encoding and Jaccard distance.

    The query ``p`` is a new node of the database graph: ``R(p, k)`` is those of its ``k``
    nearest items ``g`` with ``d(p, g) <= `` the distance from ``g`` to its own ``k``-th
    nearest item (``p`` would enter ``g``'s list); ``R*(p, k)``, ``V_p`` and the local
    expansion follow as for the database (:func:`fit_reciprocal`), the query weighing as one
    of its ``n_expansion`` items; ``d_J(p, g) = 1 - sum_j min(V_pj, V_gj) / sum_j max(V_pj,
    V_gj)`` and the distance is ``(1 - lambda) d_J + lambda d``, ``+inf`` where ``d`` is.
    """
    n_queries, n = distances.shape
    k = graph.neighbors.shape[1]
    nearest_distances, nearest = smallest_k(distances, k)
    reciprocal = nearest_distances <= graph.radius[nearest]
    expanded = _expanded_sets(
        _reciprocal_sets(nearest, n, reciprocal), graph.half_sets
    ).tocoo()
    weights = sparse.csr_matrix(
        (np.exp(-distances[expanded.row, expanded.col]), (expanded.row, expanded.col)),
        shape=(n_queries, n),
    )
    query_weights = _local_expansion(nearest, graph.n_expansion, n, graph.weights, own=weights)
    query_weights.eliminate_zeros()
    database_weights = graph.expanded_weights
    minimum = _min_sums(query_weights, database_weights)
    total = (
        np.asarray(query_weights.sum(axis=1))
        + np.asarray(database_weights.sum(axis=1)).ravel()[None, :]
    )
    maximum = total - minimum
    jaccard = 1 - np.divide(minimum, maximum, out=np.zeros_like(minimum), where=maximum > 0)
    with np.errstate(invalid="ignore"):  # inf * 0 when lambda_value = 0
        reranked = (1 - graph.lambda_value) * jaccard + graph.lambda_value * distances
    reranked[np.isinf(distances)] = np.inf
    return reranked.astype(distances.dtype, copy=False)


def rerank_blocks(graph, blocks, n_neighbors=None):
    """Re-rank the ``(start, stop, distances)`` blocks of a search with ``graph``.

    With ``n_neighbors``, yield ``(start, stop, distances, indices)`` of the ``n_neighbors``
    smallest re-ranked distances instead (ties by database index).
    """
    rerank = diffusion_distances if isinstance(graph, DiffusionGraph) else reciprocal_distances
    for start, stop, distances in blocks:
        reranked = rerank(graph, distances)
        if n_neighbors is None:
            yield start, stop, reranked
        else:
            yield start, stop, *smallest_k(reranked, n_neighbors)


def fit_reranker(retriever, row_blocks, n_samples):
    """The database graph of ``retriever.rerank``, or None without re-ranking.

    ``row_blocks()`` yields the ``(start, stop, distances)`` leave-one-out rows of the
    database as searched; it is read once (diffusion) or twice (k-reciprocal).
    """
    if retriever.rerank is None:
        return None
    if retriever.rerank == "diffusion":
        return fit_diffusion(
            row_blocks,
            n_samples,
            retriever.rerank_neighbors,
            retriever.diffusion_alpha,
            retriever.diffusion_gamma,
        )
    return fit_reciprocal(
        row_blocks,
        n_samples,
        retriever.rerank_neighbors,
        retriever.reciprocal_expansion,
        retriever.reciprocal_lambda,
    )
