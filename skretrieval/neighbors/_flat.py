"""Exact top-k search of float32 vectors by faiss's brute-force kNN, with the numpy search's
results: the same distances (up to float32 rounding) and ties by database index.

faiss computes the inner products by the same kind of matrix product as the numpy route and
reduces each cache-sized tile to a heap on all its OpenMP threads at once, where the numpy
merge runs on one core. It reads the prepared database in place: no copy of it is made.
"""

import numpy as np

from skretrieval._utils.faiss_threads import faiss_threads


def _float32_rows(X):
    return isinstance(X, np.ndarray) and X.dtype == np.float32 and X.ndim == 2


def _safe_squared_norms(squared_norms):
    """Whether ``|q|^2 + |x|^2 - 2 <q, x>`` neither overflows nor loses its digits in float32.

    The bounds of :func:`skretrieval._utils.linalg.squared_euclidean_distances`, outside which
    it rescales the data first (rows of norm above about 1e19 or below 1e-19).
    """
    info = np.finfo(np.float32)
    largest = np.max(squared_norms, initial=0.0)
    return bool(np.isfinite(largest)) and info.tiny / info.eps <= largest <= info.max / 4


def flat_metric(kernel, database_state):
    """``"cosine"`` or ``"euclidean"`` where faiss can search this prepared database, else None.

    Only the two vector kernels on float32 data, held C-contiguous (faiss would copy any other
    layout at every call), and for Euclidean distances only norms whose squares fit float32.
    """
    if kernel.descriptor != "vectors":
        return None
    if kernel.name == "cosine" and _float32_rows(database_state):
        vectors = database_state
    elif (
        kernel.name == "euclidean"
        and type(database_state) is tuple
        and len(database_state) == 2
        and _float32_rows(database_state[0])
        and _safe_squared_norms(database_state[1])
    ):
        vectors = database_state[0]
    else:
        return None
    return kernel.name if vectors.flags.c_contiguous else None


# faiss scores at most this many queries per matrix product; blocks this size keep it busy.
FLAT_BLOCK_ROWS = 4096


def flat_queries_fit(metric, query_state):
    """Whether faiss can search these prepared queries fast (float32; norms in range).

    faiss uses matrix products only from ``distance_compute_blas_threshold`` query entries on
    (1,000 queries of 128-d); below, its per-pair loop is several times slower than numpy's
    tiles, which then search instead.
    """
    import faiss

    queries = query_state if metric == "cosine" else query_state[0]
    if not _float32_rows(queries):
        return False
    if queries.size < faiss.cvar.distance_compute_blas_threshold:
        return False
    return metric == "cosine" or _safe_squared_norms(query_state[1])


def _candidates(queries, database, database_norms, metric, n_candidates, max_threads):
    """faiss's ``n_candidates`` nearest items of each query, as retriever distances."""
    import faiss

    n_queries = len(queries)
    values = np.empty((n_queries, n_candidates), dtype=np.float32)
    indices = np.empty((n_queries, n_candidates), dtype=np.int64)
    pointers = (faiss.swig_ptr(queries), faiss.swig_ptr(database), queries.shape[1])
    sizes = (n_queries, len(database), n_candidates)
    outputs = (faiss.swig_ptr(values), faiss.swig_ptr(indices))
    with faiss_threads(max_threads):
        if metric == "cosine":
            faiss.knn_inner_product(*pointers, *sizes, *outputs)
        else:
            # The database's squared norms are already known: faiss need not recompute them.
            faiss.knn_L2sqr(*pointers, *sizes, *outputs, faiss.swig_ptr(database_norms))
    if metric == "cosine":
        np.subtract(np.float32(1), values, out=values)
        return np.clip(values, 0, 2, out=values), indices
    # faiss's |q|^2 + |x|^2 - 2 <q, x> is off by the rounding of the squared norms, which the
    # square root magnifies near 0 (a duplicate at 7e-4 instead of 0): the candidates'
    # distances are recomputed from their differences, exact to float32 rounding.
    differences = queries[:, None, :] - database[indices]
    return np.sqrt(np.einsum("ijk,ijk->ij", differences, differences)), indices


def flat_smallest_k(query_state, database_state, metric, k, *, own=None, max_threads=None):
    """The ``k`` smallest distances of each query and the rows whose answer faiss leaves open.

    faiss returns the ``m = k + 1`` largest inner products (smallest squared distances); they
    are turned into the retriever's distances (``1 - s`` clipped to ``[0, 2]`` in float32 as in
    :mod:`skretrieval.geometry`, or the Euclidean distances recomputed from the differences)
    and sorted by distance, then database index. Where the ``m``-th distance is strictly above
    the ``k``-th, every item left out is at least as far as it, so the first ``k`` are exactly
    the numpy search's top ``k``, ties included. Where they are equal (a tie across the
    ``k``-th place: faiss may have kept any of the tied items), ``m`` doubles for those rows
    until the ties are all in, up to ``max_candidates``; rows with more ties than that are
    returned in ``unresolved``, for the caller to search otherwise.

    Parameters
    ----------
    query_state, database_state : ndarray or tuple
        Prepared by the kernel: unit rows (cosine), or rows and squared norms (Euclidean).
    metric : {"cosine", "euclidean"}
        As given by :func:`flat_metric`.
    k : int
        Number of neighbours, at most the database size (minus one with ``own``).
    own : ndarray of shape (n_queries,), default=None
        The database index of each query, left out of its results (leave-one-out), or None.
    max_threads : int, default=None
        Most OpenMP threads faiss may use (the caller's setting is kept if lower).

    Returns
    -------
    distances : ndarray of shape (n_queries, k), float32
    indices : ndarray of shape (n_queries, k), int64
    unresolved : ndarray of int
        Rows whose top ``k`` must be searched again.
    """
    if metric == "cosine":
        queries, database, database_norms = query_state, database_state, None
    else:
        (queries, _), (database, database_norms) = query_state, database_state
        database_norms = np.ascontiguousarray(database_norms, dtype=np.float32)
    queries = np.ascontiguousarray(queries)
    n_database = len(database)
    left_out = own is not None
    distances = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    rows = np.arange(len(queries))
    # Ties are rare on real descriptors; a row with thousands of them is left to the caller.
    max_candidates = max(4 * (k + 1 + left_out), 1024)
    n_candidates = k + 1 + left_out
    while len(rows) and n_candidates <= max_candidates:
        n_candidates = min(n_candidates, n_database)
        values, candidates = _candidates(
            queries[rows], database, database_norms, metric, n_candidates, max_threads
        )
        if left_out:
            values[candidates == own[rows, None]] = np.inf
        order = np.lexsort((candidates, values))
        values = np.take_along_axis(values, order, axis=1)
        candidates = np.take_along_axis(candidates, order, axis=1)
        # The (m - 1)-th with a query left out: past the query itself, wherever it came.
        done = values[:, n_candidates - 1 - left_out] > values[:, k - 1]
        if n_candidates == n_database:
            done[:] = True
        distances[rows[done]] = values[done, :k]
        indices[rows[done]] = candidates[done, :k]
        rows = rows[~done]
        n_candidates *= 2
    return distances, indices, rows
