"""Exact search by blocks of queries: full rows of distances, or the top k of each query tiled
over the database (by faiss's kNN for float32 vectors, neighbors/_flat.py), with query
expansion in every block."""

import numpy as np
from joblib import Parallel, cpu_count, delayed, effective_n_jobs
from sklearn import get_config

from skretrieval.neighbors._expansion import expanded_search
from skretrieval.neighbors._flat import (
    FLAT_BLOCK_ROWS,
    flat_metric,
    flat_queries_fit,
    flat_smallest_k,
)
from skretrieval.neighbors._quantized import (
    Reconstructions,
    prepare_quantized_queries,
    reconstruction_distances,
)
from skretrieval.neighbors._topk import smallest_k, tiled_smallest_k

# Tiled top-k search (vector kernels): database items scored per tile, and at most this many
# queries per block. A 512 x 2,048 float32 tile of distances is 4 MiB, so it is reduced to the
# running top k while it is still in cache instead of being written out to memory. Measured on
# 2 cores at 300k and 1M x 128 and 100k x 512: tiles of 2 to 8 MiB were equally fast, within
# noise, and larger ones slower (benchmarks/README.md).
_TILE_COLUMNS = 2048
_TILE_ROWS = 512


def _row_slicer(state, n_rows):
    """``slicer(start, stop)`` taking rows of a prepared database state, or None.

    A state is sliceable when it is an array, or a plain tuple of arrays, with one row per
    database item (the vector kernels: unit rows for cosine, rows and their squared norms for
    Euclidean). Other states (named tuples of decompositions, quantised databases) are not.
    """

    def is_rows(part):
        return isinstance(part, np.ndarray) and part.ndim >= 1 and len(part) == n_rows

    if is_rows(state):
        return lambda start, stop: state[start:stop]
    if type(state) is tuple and state and all(map(is_rows, state)):
        return lambda start, stop: tuple(part[start:stop] for part in state)
    return None


def _take_rows(state, rows):
    """The rows ``rows`` of a prepared vector state: an array, or a tuple of arrays."""
    if isinstance(state, np.ndarray):
        return state[rows]
    return tuple(part[rows] for part in state)


def _block_size(n_queries, n_database, n_threads, tiles=None):
    """Number of queries searched together, one block per thread at a time.

    Each thread holds one block of float64 distances (a conservative row size): full rows, or,
    when every search of the block is tiled, the widest of its ``tiles``. Blocks fit
    scikit-learn's ``working_memory``, with at least one query per block even when that
    exceeds it.
    """
    row_bytes = 8 * (max(tiles) if tiles else n_database) * n_threads
    rows_in_memory = int(get_config()["working_memory"] * 2**20 // row_bytes)
    block_size = min(n_queries, max(1, rows_in_memory))
    if tiles:
        # Blocks small enough for a tile to stay in cache, and one per thread at least.
        block_size = min(block_size, _TILE_ROWS, -(-n_queries // n_threads))
    return block_size


def search_blocks(
    kernel,
    queries,
    database_state,
    *,
    n_database,
    exclude_self,
    metric,
    metric_params=None,
    n_jobs=None,
    n_neighbors=None,
    n_expansion=None,
    alpha=None,
    expand_queries=None,
    prepared_queries=False,
):
    """Yield ``(start, stop, distances)`` for consecutive blocks of queries.

    ``distances`` has shape ``(stop - start, n_database)``. With ``n_neighbors``, yield
    ``(start, stop, distances, indices)`` with only the ``n_neighbors`` smallest distances of
    each query instead (as :func:`~skretrieval.neighbors._topk.smallest_k`: ties by database
    index). Where the database state can be sliced by rows (the vector kernels), these top-k
    searches -- and the first search of query expansion -- go over the database one tile of
    :data:`_TILE_COLUMNS` items at a time and never form full rows of distances.

    Parameters
    ----------
    kernel : DistanceKernel
        The retriever's kernel: ``prepare`` / ``prepare_queries``, ``pairwise``, ``n_samples``.
    queries : descriptor set
        The queries, validated.
    database_state : object
        The kernel's prepared database, or :class:`~skretrieval.neighbors._quantized.
        Reconstructions` for a product-quantised one (ADC distances in ``metric``).
    n_database : int
        Number of database items.
    exclude_self : bool
        Whether the queries are the database items themselves, each put at distance ``+inf``
        from itself so that it is never its own neighbour (leave-one-out).
    metric : str
        The retriever's metric, for a quantised database.
    metric_params : dict, default=None
        Keyword arguments of the kernel's ``prepare``.
    n_jobs : int, default=None
        Number of threads searching blocks in parallel.
    n_neighbors : int, default=None
        Number of neighbours kept per query; None for full rows.
    n_expansion, alpha : default=None
        Query expansion with ``n_expansion`` neighbours and weight exponent ``alpha``, as in
        :func:`~skretrieval.neighbors._expansion.expanded_search`; None searches once.
    expand_queries : callable, default=None
        ``expand_queries(queries, indices) -> queries``: query expansion of descriptors that
        are not vectors (the Riemannian mean of SPD matrices), given the raw queries of a
        block and their ``n_expansion`` nearest database items; used instead of the vector
        expansion.
    prepared_queries : bool, default=False
        Whether ``queries`` are already prepared by the kernel (the unit rows of a cosine
        database, searched against itself): they are then searched as they are.
    """
    n_queries = kernel.n_samples(queries)
    n_threads = effective_n_jobs(n_jobs)
    quantized = isinstance(database_state, Reconstructions)
    database_rows = None
    if kernel.descriptor == "vectors" and not quantized:
        database_rows = _row_slicer(database_state, n_database)

    def tile_columns(k):
        """Columns per tile for a top-``k`` search; None for full rows."""
        if database_rows is None:
            return None
        # A tile must hold the k smallest several times over for its filter to bite.
        columns = max(_TILE_COLUMNS, 4 * k)
        return columns if columns < n_database else None

    # float32 vectors: the top k by faiss's kNN where it can (neighbors/_flat.py); n_jobs
    # threads search blocks at once and share the CPUs.
    flat = None
    if not quantized and getattr(queries, "dtype", None) == np.float32:
        flat = flat_metric(kernel, database_state)
    flat_threads = max(1, cpu_count() // n_threads)
    searches = [n_neighbors] + ([n_expansion] if n_expansion is not None else [])
    tiled = n_neighbors is not None and all(tile_columns(k) for k in searches)
    tiles = list(map(tile_columns, searches)) if tiled else None
    block_size = _block_size(n_queries, n_database, n_threads, tiles)
    if flat is not None and n_neighbors is not None:
        # faiss tiles the database itself and multiplies matrices only for large blocks.
        block_size = max(block_size, min(FLAT_BLOCK_ROWS, -(-n_queries // n_threads)))
    if quantized:

        def prepare(X):
            return prepare_quantized_queries(X, metric)

        def pairwise(query_state, database_state):
            return reconstruction_distances(query_state, database_state, metric)

        # Query expansion adds the decoded neighbours: the database vectors it has.
        expansion_database = database_state.vectors
    else:
        params = metric_params or {}
        prepare_kernel = kernel.prepare_queries or kernel.prepare

        def prepare(X):
            return prepare_kernel(X, **params)

        pairwise = kernel.pairwise
        expansion_database = database_state

    def search(query_state, query_ids, columns=None):
        """Distances of the queries ``query_ids`` to the database items ``columns``.

        ``columns`` is a ``(first, stop)`` range of database items, or None for all.
        """
        if columns is None:
            first = 0
            distances = pairwise(query_state, database_state)
        else:
            first = columns[0]
            distances = pairwise(query_state, database_rows(*columns))
        if exclude_self:
            rows = np.arange(len(distances))
            own = query_ids - first
            inside = (own >= 0) & (own < distances.shape[1])
            distances[rows[inside], own[inside]] = np.inf
        return distances

    def numpy_smallest_k(query_state, query_ids, k):
        columns = tile_columns(k)
        if columns is None:
            return smallest_k(search(query_state, query_ids), k)
        return tiled_smallest_k(
            lambda first, stop: search(query_state, query_ids, (first, stop)),
            n_database,
            k,
            columns,
        )

    def search_smallest_k(query_state, query_ids, k):
        if flat is None or not flat_queries_fit(flat, query_state):
            return numpy_smallest_k(query_state, query_ids, k)
        distances, indices, unresolved = flat_smallest_k(
            query_state,
            database_state,
            flat,
            k,
            own=query_ids if exclude_self else None,
            max_threads=flat_threads,
        )
        if len(unresolved):
            # Rows with a great many ties across the k-th place.
            distances[unresolved], indices[unresolved] = numpy_smallest_k(
                _take_rows(query_state, unresolved), query_ids[unresolved], k
            )
        return distances, indices

    def block(start):
        stop = min(start + block_size, n_queries)
        query_ids = np.arange(start, stop)

        def final_search(query_state):
            if n_neighbors is None:
                return (search(query_state, query_ids),)
            return search_smallest_k(query_state, query_ids, n_neighbors)

        # In leave-one-out mode the query is at +inf from itself, so its k expansion
        # neighbours are other items and it enters the sum once, with weight 1.
        if expand_queries is not None:
            raw = queries[start:stop]
            _, indices = search_smallest_k(prepare(raw), query_ids, n_expansion)
            return start, stop, *final_search(prepare(expand_queries(raw, indices)))
        block_queries = queries[start:stop]
        return start, stop, *expanded_search(
            block_queries if prepared_queries else prepare(block_queries),
            final_search,
            first_search=lambda query_state, k: search_smallest_k(query_state, query_ids, k),
            neighbour_vectors=lambda indices: (expansion_database, indices),
            n_expansion=n_expansion,
            alpha=alpha,
        )

    starts = range(0, n_queries, block_size)
    if n_threads == 1:
        yield from map(block, starts)
    else:
        # Threads, not processes: the heavy work (BLAS, LAPACK, argpartition) releases the GIL.
        yield from Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
            delayed(block)(start) for start in starts
        )
