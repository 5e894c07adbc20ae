"""Search of a database held on a Dask cluster: each block's top k where the block lives, merged
into the global top k by a tree reduction.

:class:`~skretrieval.neighbors.ImageRetriever` hands a ``dask.array`` database to
:func:`fit_distributed`: the blocks are prepared (L2-normalised for cosine, squared norms for
Euclidean, or product-quantised) on the workers and stay there, persisted. A search sends the
prepared queries to the workers once, computes each block's ``k`` nearest items with the
in-memory code (the kernel's ``pairwise`` over tiles of the block, the top-k of ``_topk``) and
merges the per-block lists pairwise up a tree: only ``n_queries x k`` entries ever travel, never a
block. Equal distances are ordered by database index, as in memory.

dask is imported inside the functions only: importing this module, or the retriever, never needs
it.
"""

import sys
from functools import partial

import numpy as np
from sklearn import get_config
from sklearn.base import clone

from skretrieval._utils.linalg import squared_row_norms
from skretrieval.neighbors._expansion import expanded_search
from skretrieval.neighbors._quantized import (
    Reconstructions,
    as_float32,
    prepare_quantized_queries,
    reconstruction_distances,
)
from skretrieval.neighbors._topk import smallest_k, tiled_smallest_k

INSTALL_HINT = (
    'pip install "scikit-retrieval[distributed]" (from a source checkout: '
    'pip install -e ".[distributed]")'
)

# Database items scored at once per query (as the in-memory search tiles its database), and
# queries per tile, so that a tile of distances stays in cache while it is reduced to the top k.
_TILE_COLUMNS = 2048
_TILE_ROWS = 512
# Per-block lists merged per task of the tree reduction.
_MERGE_FAN_IN = 4
# Rows a product quantizer is trained on: evenly spaced, at most this many (faiss's k-means
# itself keeps at most 256 points per centroid, so 2**8 centroids use 65,536).
_QUANTIZER_SAMPLE = 131_072


def import_dask():
    """Import and return ``dask``, or raise an ImportError that names the optional extra."""
    try:
        import dask
        import dask.array  # noqa: F401  (dask installed without its array extra fails here)
    except ImportError as exc:
        raise ImportError(
            f"Distributed extraction and search need dask: {INSTALL_HINT}. ({exc})"
        ) from exc
    return dask


def current_client():
    """The ``distributed`` client dask's collections would use now, or None.

    None also when a local scheduler is configured (``dask.config.set(scheduler=...)``).
    """
    from dask.base import get_scheduler

    client = getattr(get_scheduler(), "__self__", None)
    return client if hasattr(client, "submit") and hasattr(client, "scatter") else None


def check_distributed_metric(metric):
    """Exact search of a dask array database is blockwise: vector metrics only."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(
            f"A dask array database is searched with metric='cosine' or 'euclidean'; got "
            f"metric={metric!r}. Fit on an in-memory array (X.compute()) for this metric."
        )


def is_dask_array(X):
    """Whether ``X`` is a ``dask.array.Array``, without importing dask.

    A dask array can only exist once ``dask.array`` has been imported by someone.
    """
    array_module = sys.modules.get("dask.array")
    return array_module is not None and isinstance(X, array_module.Array)


def _n_rows(state):
    return len(state[0]) if isinstance(state, tuple) else len(state)


def _like(state, parts):
    """A tuple of the type of ``state`` (plain or named) holding ``parts``."""
    parts = list(parts)
    return tuple(parts) if type(state) is tuple else type(state)(*parts)


def _rows(state, start, stop):
    """Rows ``start:stop`` of a prepared state: an array, or a tuple of row-aligned arrays."""
    if isinstance(state, tuple):
        return _like(state, (part[start:stop] for part in state))
    return state[start:stop]


def _take(state, indices):
    if isinstance(state, tuple):
        return _like(state, (part[indices] for part in state))
    return state[indices]


def _concatenate(states):
    if isinstance(states[0], tuple):
        return _like(states[0], (np.concatenate(parts) for parts in zip(*states, strict=True)))
    return np.concatenate(states)


def _prepare_block(prepare, block, offset, params):
    """``prepare(block)`` on the worker holding it, after the finiteness check of ``fit``."""
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        row = offset + int(np.argmin(finite))
        raise ValueError(
            f"Input X contains NaN or infinity (row {row} of the dask array database, and maybe "
            "others). Rows of images skipped by skretrieval.distributed.transform are NaN: keep "
            "the valid ones, X[result.valid]."
        )
    return prepare(block, **params)


def _encode_block(quantizer, state, metric):
    """PQ codes of a prepared block: the database as searched, as the in-memory fit encodes it."""
    return quantizer.transform(state if metric == "cosine" else state[0])


def _decoded(quantizer, codes):
    """Decoded database vectors of a block of codes, as the in-memory ADC search sees them."""
    vectors = as_float32(quantizer.inverse_transform(codes))
    return Reconstructions(vectors, squared_row_norms(vectors))


def _decoded_queries(quantizer, codes, metric):
    """A block of the quantised database as queries (``kneighbors(X=None)``)."""
    return prepare_quantized_queries(quantizer.inverse_transform(codes), metric)


def _block_distances(pairwise, queries, state, offset, *, quantizer=None, self_start=None):
    """Full rows of distances from the queries to one block (database items from ``offset``)."""
    if quantizer is not None:
        state = _decoded(quantizer, state)
    distances = pairwise(queries, state)
    _exclude_self(distances, self_start, offset)
    return distances


def _exclude_self(distances, self_start, first):
    """Put query ``self_start + r`` at ``+inf`` from itself, where its column ``first + c`` is."""
    if self_start is None:
        return
    rows = np.arange(len(distances))
    own = self_start + rows - first
    inside = (own >= 0) & (own < distances.shape[1])
    distances[rows[inside], own[inside]] = np.inf


def block_top_k(pairwise, queries, state, offset, k, *, quantizer=None, self_start=None):
    """The ``k`` nearest items of each query within one database block, global indices.

    Runs on the worker holding the block. The block is scored one tile of
    :data:`_TILE_COLUMNS` items at a time for at most :data:`_TILE_ROWS` queries, each tile
    merged into the running top k while in cache (:func:`tiled_smallest_k`); equal distances
    by index. A block smaller than ``k`` returns all its items.

    Parameters
    ----------
    pairwise : callable
        ``pairwise(query_state, database_state)``: the kernel's, or ADC distances.
    queries : prepared query state
    state : prepared block, or its PQ codes when ``quantizer`` is given
    offset : int
        Database index of the block's first item.
    k : int
    quantizer : fitted quantizer, default=None
        Decodes the block's codes first.
    self_start : int, default=None
        Database index of the first query when the queries are database items
        (``kneighbors(X=None)``): each is at ``+inf`` from itself.
    """
    if quantizer is not None:
        state = _decoded(quantizer, state)
    n_columns = _n_rows(state)
    k = min(k, n_columns)
    columns = max(_TILE_COLUMNS, 4 * k)
    n_queries = _n_rows(queries)
    results = []
    for start in range(0, n_queries, _TILE_ROWS):
        block = _rows(queries, start, min(start + _TILE_ROWS, n_queries))
        block_start = None if self_start is None else self_start + start

        def tile(first, stop, block=block, block_start=block_start):
            distances = pairwise(block, _rows(state, first, stop))
            _exclude_self(distances, block_start, offset + first)
            return distances

        if columns >= n_columns:
            results.append(smallest_k(tile(0, n_columns), k))
        else:
            results.append(tiled_smallest_k(tile, n_columns, k, columns))
    distances = np.concatenate([result[0] for result in results])
    indices = np.concatenate([result[1] for result in results]).astype(np.intp, copy=False)
    return distances, indices + offset


def merge_top_k(*parts, k):
    """The ``k`` smallest of several per-block top-k lists; equal distances by lower index.

    Each part holds a disjoint set of database items with its own smallest entries under the
    order (distance, index), so the smallest ``k`` of their union are the global ones.
    """
    distances = np.concatenate([part[0] for part in parts], axis=1)
    indices = np.concatenate([part[1] for part in parts], axis=1)
    order = np.lexsort((indices, distances), axis=1)[:, :k]
    return (
        np.take_along_axis(distances, order, axis=1),
        np.take_along_axis(indices, order, axis=1),
    )


def _tree_merge(dask, parts, k):
    """Merge delayed top-k lists :data:`_MERGE_FAN_IN` at a time, up to one."""
    merge = dask.delayed(merge_top_k, pure=True)
    while len(parts) > 1:
        parts = [
            merge(*parts[start : start + _MERGE_FAN_IN], k=k)
            for start in range(0, len(parts), _MERGE_FAN_IN)
        ]
    return parts[0]


def _check_options(retriever):
    check_distributed_metric(retriever.metric)
    if retriever.dba_neighbors is not None:
        raise ValueError(
            f"dba_neighbors={retriever.dba_neighbors} is not supported with a dask array "
            "database (DBA rewrites every block from neighbours in all the others); fit on an "
            "in-memory array (X.compute()), or set dba_neighbors=None."
        )
    if getattr(retriever, "rerank", None) is not None:
        raise ValueError(
            f"rerank={retriever.rerank!r} is not supported with a dask array database (it "
            "re-ranks full distance rows with a graph of the whole database); fit on an "
            "in-memory array (X.compute()), or set rerank=None."
        )


def _validated(X):
    """The dask database as a 2-D float32/float64 array with one chunk of columns."""
    if X.ndim != 2:
        raise ValueError(
            f"A dask array database must be 2-D, (n_samples, n_features); got shape {X.shape}."
        )
    if any(np.isnan(size) for size in X.shape):
        raise ValueError(
            "The dask array database has unknown chunk sizes; call X.compute_chunk_sizes() first."
        )
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(
            f"The dask array database must hold at least one sample and one feature; got "
            f"shape {X.shape}."
        )
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    return X.rechunk({1: -1})


def fit_distributed(retriever, kernel, X, y):
    """Prepare a dask array database on its workers; return the :class:`DistributedDatabase`.

    Sets ``retriever.n_features_in_``; ``y`` is validated by the caller's rules here.
    """
    dask = import_dask()
    _check_options(retriever)
    X = _validated(X)
    n_samples, n_features = X.shape
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n_samples:
            raise ValueError(
                f"y must be 1-D, one label per database item ({n_samples}); got shape {y.shape}."
            )
    sizes = [int(size) for size in X.chunks[0]]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
    params = retriever.metric_params or {}
    prepare = dask.delayed(_prepare_block, pure=True)
    states = [
        prepare(kernel.prepare, block, offset, params)
        for block, offset, size in zip(X.to_delayed().ravel(), offsets, sizes, strict=True)
        if size
    ]
    offsets = [offset for offset, size in zip(offsets, sizes, strict=True) if size]
    # The cluster of the fit is the one searched later, whichever client is current then.
    client = current_client()
    states = list(dask.persist(*states, scheduler=client))
    # Waits for the blocks (and raises the errors of their preparation) now, at fit.
    dask.compute(*[dask.delayed(_n_rows)(state) for state in states], scheduler=client)
    quantizer = None
    if retriever.quantizer is not None:
        n_sample = max(_QUANTIZER_SAMPLE, 256 * (getattr(retriever.quantizer, "n_lists", 0) or 0))
        rows = np.unique(np.linspace(0, n_samples - 1, min(n_samples, n_sample)).astype(int))
        sample = gather_rows(dask, states, offsets, n_samples, rows, client)
        quantizer = clone(retriever.quantizer).fit(_encode_input(sample, retriever.metric))
        encode = dask.delayed(_encode_block, pure=True)
        shared = dask.delayed(quantizer, traverse=False)
        codes = [encode(shared, state, retriever.metric) for state in states]
        # Only the codes stay on the workers: the float blocks are released.
        states = list(dask.persist(*codes, scheduler=client))
        dask.compute(*[dask.delayed(_n_rows)(state) for state in states], scheduler=client)
    retriever.n_features_in_ = n_features
    database = DistributedDatabase(
        kernel, retriever.metric, params, states, offsets, n_samples, quantizer, y
    )
    database.client = client
    return database


def gather_rows(dask, states, offsets, n_samples, rows, scheduler=None):
    """The prepared states of the database items ``rows`` (sorted, unique), fetched from the
    blocks that hold them: only those rows travel to the client."""
    bounds = np.searchsorted(rows, [*offsets, n_samples])
    take = dask.delayed(_take, pure=True)
    parts = [
        take(state, rows[bounds[i] : bounds[i + 1]] - offsets[i])
        for i, state in enumerate(states)
        if bounds[i + 1] > bounds[i]
    ]
    return _concatenate(dask.compute(*parts, scheduler=scheduler))


def _encode_input(state, metric):
    return state if metric == "cosine" else state[0]


class DistributedDatabase:
    """The prepared blocks of a database on a Dask cluster, and their search.

    The retriever's fitted state when ``fit`` was given a ``dask.array``: ``states`` are
    persisted ``dask.delayed`` blocks (on the workers with a distributed scheduler), each
    ``kernel.prepare`` of a block of rows starting at ``offsets[i]``, or its PQ codes.
    """

    def __init__(self, kernel, metric, params, states, offsets, n_samples, quantizer, y):
        self.kernel = kernel
        self.metric = metric
        self.params = params
        self.states = states
        self.offsets = offsets
        self.n_samples = n_samples
        self.quantizer = quantizer
        self.y = y
        self.client = None

    def __reduce__(self):
        raise TypeError(
            "An ImageRetriever fitted on a dask array cannot be pickled or saved: its database "
            "lives on the cluster. Fit it on an in-memory array (X.compute()) to save it."
        )

    def _dask(self):
        return import_dask()

    def _compute(self, *collections):
        """``dask.compute`` on the cluster that holds the blocks."""
        return self._dask().compute(*collections, scheduler=self.client)

    def _pairwise(self):
        if self.quantizer is None:
            return self.kernel.pairwise
        return partial(reconstruction_distances, metric=self.metric)

    def _prepare_queries(self, X):
        if self.quantizer is not None:
            return prepare_quantized_queries(X, self.metric)
        return self.kernel.prepare(X, **self.params)

    def _shared(self, value):
        """One graph key for an object every task reads: sent once to each worker."""
        return self._dask().delayed(value, traverse=False)

    def _top_k(self, queries, k, *, self_start=None):
        dask = self._dask()
        task = dask.delayed(block_top_k, pure=True)
        shared_queries = self._shared(queries)
        quantizer = None if self.quantizer is None else self._shared(self.quantizer)
        parts = [
            task(
                self._pairwise(),
                shared_queries,
                state,
                offset,
                k,
                quantizer=quantizer,
                self_start=self_start,
            )
            for state, offset in zip(self.states, self.offsets, strict=True)
        ]
        (result,) = self._compute(_tree_merge(dask, parts, k))
        return result

    def _expansion(self, retriever):
        """``(n_expansion, alpha)`` of the retriever's query expansion, as its own search reads."""
        if retriever.query_expansion is None:
            return None, None
        alpha = retriever.qe_alpha if retriever.query_expansion == "alpha" else None
        return retriever.qe_neighbors, alpha

    def _neighbour_vectors(self, indices):
        """``(vectors, positions)`` of the database items in ``indices``, gathered from the
        blocks holding them (decoded for a quantised database)."""
        unique, positions = np.unique(indices, return_inverse=True)
        vectors = gather_rows(
            self._dask(), self.states, self.offsets, self.n_samples, unique, self.client
        )
        if self.quantizer is not None:
            vectors = as_float32(self.quantizer.inverse_transform(vectors))
        return vectors, positions.reshape(indices.shape)

    def _expanded_queries(self, retriever, query_state):
        n_expansion, alpha = self._expansion(retriever)
        return expanded_search(
            query_state,
            lambda queries: queries,
            first_search=self._top_k,
            neighbour_vectors=self._neighbour_vectors,
            n_expansion=n_expansion,
            alpha=alpha,
        )

    def _check_leave_one_out(self, retriever):
        if retriever.query_expansion is not None:
            raise ValueError(
                f"query_expansion={retriever.query_expansion!r} with X=None is not supported for "
                "a dask array database (every item would be expanded on the client); pass the "
                "queries as X."
            )

    def kneighbors(self, retriever, X, n_neighbors):
        """``(distances, indices)`` of the ``n_neighbors`` nearest items of each query.

        ``X`` holds the validated queries, or is None to query every database item, excluded
        from its own list: then each block of queries is searched on the cluster against every
        block of the database, and only the merged lists come back.
        """
        if X is not None:
            queries = self._expanded_queries(retriever, self._prepare_queries(X))
            return self._top_k(queries, n_neighbors)
        self._check_leave_one_out(retriever)
        dask = self._dask()
        task = dask.delayed(block_top_k, pure=True)
        quantizer = None if self.quantizer is None else self._shared(self.quantizer)
        results = []
        for query_state, self_start in zip(self.states, self.offsets, strict=True):
            if quantizer is not None:
                query_state = dask.delayed(_decoded_queries)(quantizer, query_state, self.metric)
            parts = [
                task(
                    self._pairwise(),
                    query_state,
                    state,
                    offset,
                    n_neighbors,
                    quantizer=quantizer,
                    self_start=self_start,
                )
                for state, offset in zip(self.states, self.offsets, strict=True)
            ]
            results.append(_tree_merge(dask, parts, n_neighbors))
        results = self._compute(*results)
        return (
            np.concatenate([result[0] for result in results]),
            np.concatenate([result[1] for result in results]),
        )

    def _query_rows(self, start, stop):
        """The database items ``start:stop`` as prepared queries, gathered from their blocks."""
        dask = self._dask()
        ends = [offset + size for offset, size in zip(self.offsets, self._sizes(), strict=True)]
        rows = dask.delayed(_rows, pure=True)
        parts = [
            rows(state, max(start, offset) - offset, min(stop, end) - offset)
            for state, offset, end in zip(self.states, self.offsets, ends, strict=True)
            if offset < stop and end > start
        ]
        queries = _concatenate(self._compute(*parts))
        if self.quantizer is not None:
            return _decoded_queries(self.quantizer, queries, self.metric)
        return queries

    def _sizes(self):
        return np.diff([*self.offsets, self.n_samples]).tolist()

    def distance_blocks(self, retriever, X):
        """Yield ``(start, stop, distances)``: full rows for blocks of queries.

        A block of queries is as many rows of ``n_samples`` float64 distances as scikit-learn's
        ``working_memory`` holds; each database block computes its columns on its worker and
        the client joins them.
        """
        dask = self._dask()
        exclude_self = X is None
        if exclude_self:
            self._check_leave_one_out(retriever)
            n_queries = self.n_samples
        else:
            queries = self._expanded_queries(retriever, self._prepare_queries(X))
            n_queries = _n_rows(queries)
        rows_in_memory = int(get_config()["working_memory"] * 2**20 // (8 * self.n_samples))
        block_size = min(n_queries, max(1, rows_in_memory))
        task = dask.delayed(_block_distances, pure=True)
        quantizer = None if self.quantizer is None else self._shared(self.quantizer)
        for start in range(0, n_queries, block_size):
            stop = min(start + block_size, n_queries)
            if exclude_self:
                block = self._query_rows(start, stop)
            else:
                block = _rows(queries, start, stop)
            shared = self._shared(block)
            parts = [
                task(
                    self._pairwise(),
                    shared,
                    state,
                    offset,
                    quantizer=quantizer,
                    self_start=start if exclude_self else None,
                )
                for state, offset in zip(self.states, self.offsets, strict=True)
            ]
            yield start, stop, np.concatenate(self._compute(*parts), axis=1)
