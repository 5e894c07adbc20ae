"""Nearest-neighbour search over a database of image descriptors.

:class:`ImageRetriever` is the last step of a retrieval pipeline. It behaves like
:class:`sklearn.neighbors.NearestNeighbors` with the brute-force algorithm, but the distance
comes from a kernel of :mod:`skretrieval.geometry` (so descriptor types other than vectors plug
in), the database-side work is done once at ``fit``, and ``score`` returns the mean average
precision, so a whole pipeline can be tuned with ``GridSearchCV``.
"""

from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from scipy import sparse
from sklearn import get_config
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.preprocessing import normalize
from sklearn.utils import check_consistent_length
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from skretrieval.geometry import get_kernel
from skretrieval.metrics import map_scorer

__all__ = ["ImageRetriever"]

# Tiled top-k search (vector kernels): database items scored per tile, and at most this many
# queries per block. A 512 x 2,048 float32 tile of distances is 4 MiB, so it is reduced to the
# running top k while it is still in cache instead of being written out to memory. Measured on
# 2 cores at 300k and 1M x 128 and 100k x 512: tiles of 2 to 8 MiB were equally fast, within
# noise, and larger ones slower (benchmarks/README.md).
_TILE_COLUMNS = 2048
_TILE_ROWS = 512


def _smallest_k(distances, k):
    """Sorted distances and column indices of the ``k`` smallest entries of each row.

    On wide blocks a per-row threshold, the k-th smallest of an evenly spaced sample of the
    columns, bounds the answer from above: one vectorised comparison keeps the few entries below
    it and only those are sorted. That is several times faster than ``argpartition`` over every
    entry. When the threshold is loose (e.g. many ties) we fall back to ``argpartition``; both
    routes are exact, and equal distances come in column order (also across the k-th place).
    """
    n_rows, n_columns = distances.shape
    if k >= n_columns:
        return _sorted_rows(distances, np.broadcast_to(np.arange(n_columns), distances.shape))
    n_sampled = max(64 * k, n_columns // 16)
    if n_columns >= 4 * n_sampled:
        stride = n_columns // n_sampled
        threshold = np.partition(distances[:, ::stride], k - 1, axis=1)[:, k - 1 : k]
        # flatnonzero + divmod is several times faster than a 2-D nonzero.
        rows, columns = np.divmod(np.flatnonzero(distances <= threshold), n_columns)
        # Each row keeps at least its k sampled entries; expect about k * stride of them.
        if len(rows) <= 8 * k * stride * n_rows:
            values = distances[rows, columns]
            order = np.lexsort((columns, values, rows))
            rows, columns, values = rows[order], columns[order], values[order]
            rank_in_row = np.arange(len(rows)) - np.searchsorted(rows, rows)
            keep = rank_in_row < k
            return values[keep].reshape(n_rows, k), columns[keep].reshape(n_rows, k)
    # Candidates in column order, so that the stable sort puts equal distances by column.
    candidates = np.sort(np.argpartition(distances, k - 1, axis=1)[:, :k], axis=1)
    values, candidates = _sorted_rows(np.take_along_axis(distances, candidates, axis=1), candidates)
    # argpartition picks arbitrary columns among entries equal to the k-th smallest value; in
    # the rows where such ties cross the k-th place, keep the first columns instead.
    crossing = np.flatnonzero(np.count_nonzero(distances <= values[:, -1:], axis=1) > k)
    if len(crossing):
        order = np.argsort(distances[crossing], axis=1, kind="stable")[:, :k]
        candidates[crossing] = order
        values[crossing] = np.take_along_axis(distances[crossing], order, axis=1)
    return values, candidates


def _sorted_rows(distances, indices):
    """Sort each row of ``distances`` (ties by column order) and permute ``indices`` alike."""
    order = np.argsort(distances, axis=1, kind="stable")
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(indices, order, axis=1)


def _merge_smallest_k(distances, indices, tile, offset):
    """Merge a tile of distances into each row's running ``k`` smallest, in place.

    ``distances`` and ``indices`` (shape ``(n_rows, k)``, sorted, ties by index) hold the ``k``
    smallest distances to the database columns before ``offset``; ``tile`` holds the distances
    to the columns from ``offset`` on. A tile entry can only enter a row's list if it is
    strictly below the row's current ``k``-th distance (an equal one loses the tie to the
    smaller index already listed). Past the first tiles most rows have no such entry: a
    row-wise minimum (cheaper than an elementwise comparison) finds the rows that do, and only
    those are compared and re-sorted.
    """
    n_rows, k = distances.shape
    thresholds = distances[:, -1:]
    candidate_rows = np.flatnonzero(tile.min(axis=1) < thresholds[:, 0])
    if len(candidate_rows) == 0:
        return
    if 2 * len(candidate_rows) < n_rows:
        tile, thresholds = tile[candidate_rows], thresholds[candidate_rows]
    else:
        candidate_rows = np.arange(n_rows)
    rows, columns = np.divmod(np.flatnonzero(tile < thresholds), tile.shape[1])
    # Positions in the (possibly reduced) tile, and the rows they belong to.
    values = tile[rows, columns]
    rows = candidate_rows[rows]
    updated = np.unique(rows)
    all_rows = np.concatenate([np.repeat(updated, k), rows])
    all_values = np.concatenate([distances[updated].ravel(), values])
    all_columns = np.concatenate([indices[updated].ravel(), columns + offset])
    order = np.lexsort((all_columns, all_values, all_rows))
    all_rows, all_values, all_columns = all_rows[order], all_values[order], all_columns[order]
    keep = np.arange(len(all_rows)) - np.searchsorted(all_rows, all_rows) < k
    distances[updated] = all_values[keep].reshape(len(updated), k)
    indices[updated] = all_columns[keep].reshape(len(updated), k)


def _tiled_smallest_k(tile_distances, n_columns, k, tile_columns):
    """:func:`_smallest_k` of a distance matrix computed one tile of columns at a time.

    ``tile_distances(start, stop)`` returns the distances of every row to the columns
    ``start:stop``. Each tile is reduced to the running top ``k`` (:func:`_merge_smallest_k`)
    while it is still in cache, so the full ``(n_rows, n_columns)`` matrix is never formed.
    Same result as :func:`_smallest_k` of the full matrix: ties by column index.
    """
    distances, indices = _smallest_k(tile_distances(0, tile_columns), k)
    indices = indices.astype(np.intp, copy=False)
    for start in range(tile_columns, n_columns, tile_columns):
        tile = tile_distances(start, min(start + tile_columns, n_columns))
        _merge_smallest_k(distances, indices, tile, start)
    return distances, indices


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


def _aggregate_neighbours(vectors, database, indices, similarities, alpha=None):
    """Replace each vector by the normalised weighted sum of itself and its neighbours.

    Row ``i`` becomes ``L2-normalise(v_i + sum_j w_ij database[indices[i, j]])``: ``w_ij = 1``
    when ``alpha`` is None (average query expansion, average DBA), else
    ``w_ij = max(s_ij, 0) ** alpha`` with ``s_ij`` the cosine similarity of ``v_i`` and its
    ``j``-th neighbour (alpha-QE, alpha-DBA). The vector itself always has weight 1, which is
    also what the alpha weighting gives it (``<v, v> = 1`` for a unit vector).

    Parameters
    ----------
    vectors : ndarray of shape (n, d)
        Unit-norm vectors to expand (queries, or the database itself for DBA).
    database : ndarray of shape (n_database, d)
        Unit-norm database vectors the neighbours are taken from.
    indices : ndarray of shape (n, k)
        Database positions of the neighbours of each vector, none of them the vector itself.
    similarities : ndarray of shape (n, k)
        Their cosine similarities to the vector.
    alpha : float or None, default=None
        Exponent of the similarity weights; None for uniform weights.

    Returns
    -------
    expanded : ndarray of shape (n, d)
        Unit-norm rows.
    """
    n, k = indices.shape
    if alpha is None:
        weights = np.ones(indices.shape, dtype=database.dtype)
    else:
        # Negative similarities (the k-th neighbour is unrelated, far off) get weight 0
        # rather than a NaN from a fractional power of a negative number.
        weights = np.maximum(similarities, 0).astype(database.dtype, copy=False) ** alpha
    # One sparse (n x n_database) weight matrix times the database: no (n, k, d) temporary.
    weight_matrix = sparse.csr_matrix(
        (weights.ravel(), indices.ravel(), np.arange(0, n * k + 1, k)),
        shape=(n, database.shape[0]),
    )
    return normalize(vectors + weight_matrix @ database)


class _Reconstructions(NamedTuple):
    """Database state of a product-quantised retriever: the decoded database vectors."""

    vectors: np.ndarray  # (n_database, d) float32, ``quantizer_.inverse_transform(codes_)``
    squared_norms: np.ndarray  # (n_database,) float32


def _reconstruction_state(quantizer):
    """Decode the quantizer's whole database once (float32), with its squared norms."""
    vectors = _as_float32(quantizer.inverse_transform(quantizer.codes_))
    return _Reconstructions(vectors, np.einsum("ij,ij->i", vectors, vectors))


def _as_float32(X):
    return np.ascontiguousarray(X, dtype=np.float32)


def _prepare_quantized_queries(X, metric):
    """Queries as the quantizer compares them: float32, unit rows for the cosine metric."""
    return _as_float32(normalize(X) if metric == "cosine" else X)


def _squared_to_metric(squared_distances, metric):
    """Convert squared Euclidean (ADC) distances to the retriever's metric, in place.

    For unit vectors ``1 - <q, x> = |q - x|^2 / 2``, so the cosine distance is half the
    squared distance; the Euclidean distance is its square root. Rounding can make a squared
    distance slightly negative: it is clipped at 0.
    """
    np.maximum(squared_distances, 0, out=squared_distances)
    if metric == "cosine":
        squared_distances *= 0.5
        return squared_distances
    return np.sqrt(squared_distances, out=squared_distances)


def _reconstruction_distances(queries, reconstructions, metric):
    """Asymmetric (ADC) distances of float32 queries to every decoded database vector.

    ``|q - x_hat|^2 = |q|^2 + |x_hat|^2 - 2 <q, x_hat>`` with one matrix product, converted
    to ``metric``; these are the distances a product quantizer's table-based search computes.
    """
    distances = queries @ reconstructions.vectors.T
    distances *= -2
    distances += np.einsum("ij,ij->i", queries, queries)[:, None]
    distances += reconstructions.squared_norms[None, :]
    return _squared_to_metric(distances, metric)


def _drop_self(distances, indices, n_neighbors):
    """Remove each query's own row number from its ``n_neighbors + 1`` results.

    Row ``i`` loses the entry equal to ``i`` wherever it appears, or its last entry when ``i``
    is absent, keeping ``n_neighbors`` entries in order.
    """
    is_self = indices == np.arange(len(indices))[:, None]
    # A query whose own item is not among its results (ties, or quantisation error) drops its
    # farthest result instead, so every row keeps exactly n_neighbors entries.
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    shape = (len(indices), n_neighbors)
    return distances[keep].reshape(shape), indices[keep].reshape(shape)


def _concatenate_top_k(blocks):
    """Stack the ``(start, stop, distances, indices)`` top-k blocks of a search, in order."""
    blocks = list(blocks)
    return (
        np.concatenate([block[2] for block in blocks]),
        np.concatenate([block[3] for block in blocks]),
    )


class ImageRetriever(BaseEstimator):
    """Rank a database of image descriptors for each query.

    A NearestNeighbors-style estimator: ``fit`` stores (and pre-processes) the database,
    ``kneighbors`` returns the closest database items of each query, ``score`` the mean average
    precision of the queries against the database with relevance = equal labels.

    Without a ``quantizer``, search is exact and brute force: the distance from a block of
    queries to the whole database is one matrix product (or one batched decomposition for
    matrix descriptors), and the ``n_neighbors`` smallest are kept, equal distances in
    database order. Blocks are sized by scikit-learn's ``working_memory`` setting, so a large
    database never needs the full ``n_queries x n_database`` distance matrix in memory. For
    vectors, :meth:`kneighbors` goes further: it scores the database one tile of a few thousand
    items at a time and merges each tile into the running top ``n_neighbors`` while it is in
    cache, so not even one full row of distances is formed.

    Parameters
    ----------
    n_neighbors : int, default=10
        Number of neighbours returned by :meth:`kneighbors` when not given there.
    metric : str, default="cosine"
        Distance between descriptors, a name registered in :mod:`skretrieval.geometry`
        (``registered_metrics()`` lists them): ``"cosine"`` or ``"euclidean"`` for vectors;
        ``"affine_invariant"``, ``"log_euclidean"``, ``"kl"``, ``"jeffreys"``,
        ``"wasserstein"`` or ``"stein"`` for SPD matrices (an ``(n, d, d)`` array);
        ``"wasserstein"`` (MW2) or ``"kl"`` for ``GaussianMixtures``. The kernel
        is chosen by the type of the database given to ``fit``; a metric that does not fit
        the descriptor type is an error that says so.
    metric_params : dict, default=None
        Extra keyword arguments for the metric's kernel, e.g. ``{"shortlist": 200}`` for
        ``"affine_invariant"``: approximate search that ranks a tangent-space shortlist of
        200 candidates exactly (then ask for at most 200 neighbours).
    n_jobs : int, default=None
        Number of threads searching query blocks in parallel. ``None`` means 1 unless in a
        :func:`joblib.parallel_backend` context; ``-1`` means all processors. The matrix
        products themselves already use all cores through BLAS.
    query_expansion : {"average", "alpha"}, default=None
        Query expansion, for ``metric="cosine"`` only: each query ``q`` (unit norm) is searched
        once, replaced by ``q' = L2-normalise(q + sum_{i=1..k} w_i x_i)`` over its ``k =
        qe_neighbors`` nearest database vectors ``x_i``, and searched again; the distances
        returned are those of ``q'``. ``"average"``: ``w_i = 1`` (average query expansion,
        AQE; Chum et al., "Total recall", ICCV 2007). ``"alpha"``: ``w_i = (x_i^T q)^alpha``
        with ``alpha = qe_alpha`` (alpha-QE; Radenovic, Tolias and Chum, "Fine-tuning CNN image
        retrieval with no human annotation", TPAMI 2019); a negative similarity gets weight 0.
        The query itself has weight 1 in both. None searches once.
    qe_neighbors : int, default=2
        Number ``k`` of top-ranked database vectors a query is expanded with.
    qe_alpha : float, default=3.0
        Exponent of the alpha-QE weights; 0 gives average QE.
    dba_neighbors : int, default=None
        Database-side augmentation (DBA), for ``metric="cosine"`` only: at ``fit`` each database
        vector ``x`` (unit norm) is replaced by ``L2-normalise(x + sum_{i=1..k} w_i x_i)`` over
        its ``k = dba_neighbors`` nearest other database vectors (Arandjelovic and Zisserman,
        "Three things everyone should know to improve object retrieval", CVPR 2012), all
        computed from the original vectors, and the augmented database is then searched as
        usual. None disables it.
    dba_alpha : float, default=None
        Weights of DBA: None for the uniform average (``w_i = 1``), a float ``alpha`` for
        ``w_i = max(x_i^T x, 0)^alpha`` as in Radenovic et al. (alpha-DBA).
    quantizer : estimator, default=None
        An unfitted :class:`~skretrieval.quantization.ProductQuantizer` (or an estimator with
        the same ``fit`` / ``kneighbors`` / ``inverse_transform`` / ``codes_`` interface) to
        store the database compressed and search it approximately, for ``metric="cosine"`` or
        ``"euclidean"`` only. It is cloned at ``fit``, so its parameters can be tuned as
        ``quantizer__n_subquantizers`` and so on. None searches the uncompressed database
        exactly.

    Attributes
    ----------
    n_samples_fit_ : int
        Number of database items.
    n_features_in_ : int
        Descriptor length (for vector metrics).
    y_ : ndarray of shape (n_samples_fit_,) or None
        Labels of the database items given to ``fit``, used by :meth:`score`.
    quantizer_ : estimator or None
        The fitted clone of ``quantizer``, holding the database as codes; None without a
        quantizer.

    Notes
    -----
    Query expansion happens wherever queries are searched -- :meth:`kneighbors`,
    :meth:`kneighbors_graph`, :meth:`score` and the scorers of :mod:`skretrieval.metrics` --
    because they all run the same search of query blocks.

    ``kneighbors(X=None)`` queries each database item as it was given to ``fit`` (not its
    DBA-augmented version) and leaves it out of its own result list. With query expansion it
    is also left out of its own *first* search, so the expanded query is the item (weight 1)
    plus its ``qe_neighbors`` nearest *other* items: the item is neither counted twice nor
    spends one of the ``k`` expansion slots on itself. ``kneighbors(X_fit)`` differs: there
    each item finds itself first (at distance 0 without DBA) and is expanded with it.

    With a ``quantizer``, ``fit`` prepares the database as usual (L2-normalised for
    ``"cosine"``, DBA-augmented if asked, in floating point), fits ``quantizer_`` on it and then
    keeps only ``quantizer_`` (codes and codebooks), the labels and the sizes: not the float
    vectors. Distances are the quantizer's asymmetric ones (ADC: the raw query against the
    decoded database vectors ``x_hat``) in the retriever's metric: ``|q - x_hat|^2 / 2`` for
    ``"cosine"`` (``q`` normalised), ``|q - x_hat|`` for ``"euclidean"``. :meth:`kneighbors`
    asks ``quantizer_.kneighbors`` for the top ``n_neighbors`` (``n_jobs`` does not apply, the
    quantizer has its own threads); :meth:`score` and the scorers, which need every distance,
    decode the database once per call (float32) and compute the same ADC distances by matrix
    products, so both agree up to float32 rounding (about 1e-6 of the squared norms, which the
    square root of ``"euclidean"`` magnifies near 0). Query expansion sums the *decoded*
    neighbour vectors. ``kneighbors(X=None)`` queries the decoded database vectors (the only
    version left; with DBA, the augmented one) and excludes each item from its own list: the
    quantizer is asked for one more neighbour and the item is dropped wherever it appears, or
    the last neighbour when it does not.

    See Also
    --------
    sklearn.neighbors.NearestNeighbors : the model for this API.
    skretrieval.metrics.make_retrieval_scorer : scorers for ``GridSearchCV``.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.neighbors import ImageRetriever
    >>> database = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> retriever = ImageRetriever(n_neighbors=2).fit(database, y=[0, 1, 0])
    >>> distances, indices = retriever.kneighbors([[1.0, 0.1]])
    >>> indices
    array([[0, 2]])
    >>> round(retriever.score([[1.0, 0.1]], [0]), 3)
    1.0

    Unit vectors at 30, -35 and 40 degrees, and a query at 0 degrees. Average query expansion
    with the top result moves the query to 15 degrees, nearer 40 than -35 degrees:

    >>> angles = np.deg2rad([30, -35, 40])
    >>> circle = np.column_stack([np.cos(angles), np.sin(angles)])
    >>> plain = ImageRetriever(n_neighbors=3).fit(circle)
    >>> plain.kneighbors([[1.0, 0.0]], return_distance=False)
    array([[0, 1, 2]])
    >>> expanded = ImageRetriever(n_neighbors=3, query_expansion="average", qe_neighbors=1)
    >>> expanded.fit(circle).kneighbors([[1.0, 0.0]], return_distance=False)
    array([[0, 2, 1]])

    A database stored as 2-byte product-quantisation codes instead of 64-byte float vectors:

    >>> from skretrieval.quantization import ProductQuantizer
    >>> X = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    >>> quantizer = ProductQuantizer(n_subquantizers=4, n_bits=4, random_state=0)
    >>> compressed = ImageRetriever(quantizer=quantizer).fit(X)
    >>> compressed.quantizer_.codes_.shape
    (200, 2)
    >>> compressed.kneighbors(X[:3], n_neighbors=5)[1].shape
    (3, 5)
    """

    _parameter_constraints: dict = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "metric": [str],
        "metric_params": [dict, None],
        "n_jobs": [Integral, None],
        "query_expansion": [StrOptions({"average", "alpha"}), None],
        "qe_neighbors": [Interval(Integral, 1, None, closed="left")],
        "qe_alpha": [Interval(Real, 0, None, closed="left")],
        "dba_neighbors": [Interval(Integral, 1, None, closed="left"), None],
        "dba_alpha": [Interval(Real, 0, None, closed="left"), None],
        "quantizer": [HasMethods(["fit", "kneighbors", "inverse_transform"]), None],
    }

    def __init__(
        self,
        n_neighbors=10,
        *,
        metric="cosine",
        metric_params=None,
        n_jobs=None,
        query_expansion=None,
        qe_neighbors=2,
        qe_alpha=3.0,
        dba_neighbors=None,
        dba_alpha=None,
        quantizer=None,
    ):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.metric_params = metric_params
        self.n_jobs = n_jobs
        self.query_expansion = query_expansion
        self.qe_neighbors = qe_neighbors
        self.qe_alpha = qe_alpha
        self.dba_neighbors = dba_neighbors
        self.dba_alpha = dba_alpha
        self.quantizer = quantizer

    # False: the quantizer's own parameters are validated when its clone is fitted.
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Store and pre-process the database.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or another descriptor set
            The database descriptors, of the type the metric expects.
        y : array-like of shape (n_samples,), default=None
            Labels of the database items (e.g. the object or scene shown), needed by
            :meth:`score`.

        Returns
        -------
        self : ImageRetriever
            The fitted retriever.
        """
        self._kernel = get_kernel(self.metric, X)
        # Before any fitted attribute is set, so that a bad combination leaves no half fit.
        self._check_quantizer_option()
        X = self._validate_descriptors(X, reset=True)
        n_samples = self._kernel.n_samples(X)
        self._check_expansion_options(n_samples)
        if y is not None:
            y = np.asarray(y)
            if y.ndim != 1:
                raise ValueError(
                    f"y must be 1-D, one label per database item; got shape {y.shape}."
                )
            check_consistent_length(np.empty(n_samples), y)
        fit_state = self._kernel.prepare(X, **(self.metric_params or {}))
        if self.dba_neighbors is not None:
            fit_state = self._augment_database(X, fit_state, n_samples)
        quantizer = None
        if self.quantizer is not None:
            # The database as searched: unit rows for cosine, DBA applied. The quantizer's
            # errors (e.g. n_subquantizers not dividing the dimension) come before any fitted
            # attribute is replaced.
            vectors = fit_state if self.metric == "cosine" else fit_state[0]
            quantizer = clone(self.quantizer).fit(vectors)
        self.n_samples_fit_ = n_samples
        self.y_ = y
        self.quantizer_ = quantizer
        if quantizer is None:
            self._fit_X = X
            self._fit_state = fit_state
        else:
            # The point of compression: no float copy of the database is kept.
            self._fit_X = self._fit_state = None
        return self

    def _check_quantizer_option(self):
        """Product quantisation compares vectors by Euclidean distance: vector metrics only."""
        is_vectors = self._kernel.descriptor == "vectors" and self.metric in (
            "cosine",
            "euclidean",
        )
        if self.quantizer is not None and not is_vectors:
            raise ValueError(
                f"quantizer={self.quantizer!r} needs metric='cosine' or 'euclidean' (product "
                f"quantisation approximates Euclidean distances between vectors); got "
                f"metric={self.metric!r} on {self._kernel.descriptor}."
            )

    def _check_expansion_options(self, n_samples):
        """Query expansion and DBA average unit vectors: they need the cosine kernel."""
        is_cosine = self._kernel.name == "cosine" and self._kernel.descriptor == "vectors"
        for name in ("query_expansion", "dba_neighbors"):
            value = getattr(self, name)
            if value is not None and not is_cosine:
                raise ValueError(
                    f"{name}={value!r} needs metric='cosine' (it averages L2-normalised "
                    f"vectors); got metric={self.metric!r} on {self._kernel.descriptor}."
                )
        checked = {"dba_neighbors": self.dba_neighbors}
        if self.query_expansion is not None:
            checked["qe_neighbors"] = self.qe_neighbors
        for name, value in checked.items():
            # Leave-one-out search (and DBA) must find `value` items other than the query.
            if value is not None and value > n_samples - 1:
                raise ValueError(
                    f"{name}={value} needs at least {value + 1} database items (the neighbours "
                    f"plus the item itself); the database has n_samples={n_samples}."
                )

    def _augment_database(self, X, database, n_samples):
        """Database-side augmentation: one leave-one-out kNN of the database, one weighted sum."""
        distances, indices = _concatenate_top_k(
            self._search_blocks(
                X, database, exclude_self=True, n_database=n_samples, n_neighbors=self.dba_neighbors
            )
        )
        return _aggregate_neighbours(database, database, indices, 1 - distances, self.dba_alpha)

    def _validate_descriptors(self, X, *, reset):
        if self._kernel.descriptor == "vectors":
            # Records n_features_in_ (and feature names) at fit, checks them afterwards.
            return validate_data(self, X, dtype=[np.float64, np.float32], reset=reset)
        return self._kernel.validate(X, "X")

    def _distance_blocks(self, X=None, n_neighbors=None):
        """Yield ``(start, stop, distances)`` for consecutive blocks of queries.

        ``distances`` has shape ``(stop - start, n_samples_fit_)``, lower is more similar. With
        ``X=None`` the queries are the database items themselves, each at distance ``+inf``
        from itself so that it is never its own neighbour. With ``query_expansion`` the
        distances are those of the expanded queries. ``score`` and the retrieval scorers,
        which need every distance, read these; ``kneighbors`` runs the same search through
        :meth:`_search_blocks` keeping only the top k (tiled over the database for vectors).

        With a quantizer the database is decoded once per call and the distances are the ADC
        distances to the decoded vectors (float32); with ``X=None`` the queries are the decoded
        database vectors.

        With ``n_neighbors``, yield ``(start, stop, distances, indices)`` of the ``n_neighbors``
        nearest only (see :meth:`_search_blocks`).
        """
        check_is_fitted(self)
        exclude_self = X is None
        quantizer = getattr(self, "quantizer_", None)
        if quantizer is None:
            database_state = self._fit_state
            queries = self._fit_X
        else:
            database_state = _reconstruction_state(quantizer)
            queries = database_state.vectors
        if not exclude_self:
            queries = self._validate_descriptors(X, reset=False)
        yield from self._search_blocks(
            queries,
            database_state,
            exclude_self=exclude_self,
            expand=self.query_expansion is not None,
            n_neighbors=n_neighbors,
        )

    def _search_blocks(
        self,
        queries,
        database_state,
        *,
        exclude_self,
        expand=False,
        n_database=None,
        n_neighbors=None,
    ):
        """The blocks of :meth:`_distance_blocks` against a given database state.

        Also used at ``fit`` (with ``exclude_self=True``) for the kNN of DBA, before the
        retriever's own database state exists (``n_database`` then gives its size).
        ``database_state`` is the kernel's prepared database, or :class:`_Reconstructions`
        for a quantised one.

        With ``n_neighbors``, yield ``(start, stop, distances, indices)`` with only the
        ``n_neighbors`` smallest distances of each query instead (as :func:`_smallest_k`).
        Where the database state can be sliced by rows (the vector kernels), these top-k
        searches -- and the first search of query expansion -- go over the database one tile
        of :data:`_TILE_COLUMNS` items at a time and never form full rows of distances.
        """
        n_queries = self._kernel.n_samples(queries)
        if n_database is None:
            n_database = self.n_samples_fit_
        n_threads = effective_n_jobs(self.n_jobs)
        database_rows = None
        if self._kernel.descriptor == "vectors" and not isinstance(
            database_state, _Reconstructions
        ):
            database_rows = _row_slicer(database_state, n_database)

        def tile_columns(k):
            """Columns per tile for a top-``k`` search; None for full rows."""
            if database_rows is None:
                return None
            # A tile must hold the k smallest several times over for its filter to bite.
            columns = max(_TILE_COLUMNS, 4 * k)
            return columns if columns < n_database else None

        searches = [n_neighbors] + ([self.qe_neighbors] if expand else [])
        tiled = n_neighbors is not None and all(tile_columns(k) for k in searches)
        # Each thread holds one block of float64 distances (a conservative row size): full
        # rows, or one tile of them; at least one query per block even when that exceeds the
        # working memory.
        row_bytes = 8 * (max(map(tile_columns, searches)) if tiled else n_database) * n_threads
        rows_in_memory = int(get_config()["working_memory"] * 2**20 // row_bytes)
        block_size = min(n_queries, max(1, rows_in_memory))
        if tiled:
            # Blocks small enough for a tile to stay in cache, and one per thread at least.
            block_size = min(block_size, _TILE_ROWS, -(-n_queries // n_threads))
        alpha = self.qe_alpha if self.query_expansion == "alpha" else None
        if isinstance(database_state, _Reconstructions):
            metric = self.metric

            def prepare(X):
                return _prepare_quantized_queries(X, metric)

            def pairwise(query_state, database_state):
                return _reconstruction_distances(query_state, database_state, metric)

            # Query expansion adds the decoded neighbours: the database vectors it has.
            expansion_database = database_state.vectors
        else:
            params = self.metric_params or {}
            prepare_kernel = self._kernel.prepare_queries or self._kernel.prepare

            def prepare(X):
                return prepare_kernel(X, **params)

            pairwise = self._kernel.pairwise
            expansion_database = database_state

        def search(query_state, start, columns=None):
            """Distances of the queries from ``start`` on to the database items ``columns``.

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
                own = start + rows - first
                inside = (own >= 0) & (own < distances.shape[1])
                distances[rows[inside], own[inside]] = np.inf
            return distances

        def search_smallest_k(query_state, start, k):
            columns = tile_columns(k)
            if columns is None:
                return _smallest_k(search(query_state, start), k)
            return _tiled_smallest_k(
                lambda first, stop: search(query_state, start, (first, stop)),
                n_database,
                k,
                columns,
            )

        def block(start):
            stop = min(start + block_size, n_queries)
            query_state = prepare(queries[start:stop])
            if expand:
                # In leave-one-out mode the query is at +inf from itself, so its k expansion
                # neighbours are other items and it enters the sum once, with weight 1.
                top_distances, top_indices = search_smallest_k(
                    query_state, start, self.qe_neighbors
                )
                query_state = _aggregate_neighbours(
                    query_state, expansion_database, top_indices, 1 - top_distances, alpha
                )
            if n_neighbors is None:
                return start, stop, search(query_state, start)
            return start, stop, *search_smallest_k(query_state, start, n_neighbors)

        starts = range(0, n_queries, block_size)
        if n_threads == 1:
            yield from map(block, starts)
        else:
            # Threads, not processes: the heavy work (BLAS, LAPACK, argpartition) releases the GIL.
            yield from Parallel(n_jobs=self.n_jobs, prefer="threads", return_as="generator")(
                delayed(block)(start) for start in starts
            )

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """Find the nearest database items of each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), or another descriptor set, default=None
            The queries. If None, each database item is queried and excluded from its own
            result list (as in scikit-learn).
        n_neighbors : int, default=None
            Number of neighbours; defaults to the ``n_neighbors`` given at construction.
        return_distance : bool, default=True
            Whether to return the distances too.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Distances to the neighbours, ascending. Only if ``return_distance=True``.
        indices : ndarray of shape (n_queries, n_neighbors)
            Database positions of the neighbours, nearest first.
        """
        check_is_fitted(self)
        if n_neighbors is None:
            n_neighbors = self.n_neighbors
        if not isinstance(n_neighbors, Integral) or isinstance(n_neighbors, bool):
            raise TypeError(f"n_neighbors must be an integer; got {type(n_neighbors).__name__}.")
        if n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1; got {n_neighbors}.")
        available = self.n_samples_fit_ - (X is None)
        if n_neighbors > available:
            where = (
                "the database minus the query itself (X=None)" if X is None else "the database"
            )
            raise ValueError(
                f"n_neighbors={n_neighbors} is larger than {where}, which has {available} "
                f"items (n_samples_fit_={self.n_samples_fit_})."
            )
        if getattr(self, "quantizer_", None) is not None:
            distances, indices = self._quantized_kneighbors(X, n_neighbors)
            return (distances, indices) if return_distance else indices
        distances, indices = _concatenate_top_k(self._distance_blocks(X, n_neighbors))
        return (distances, indices) if return_distance else indices

    def _quantized_kneighbors(self, X, n_neighbors):
        """Top ``n_neighbors`` from the quantizer's table-based search, with query expansion.

        The same steps as a block of :meth:`_search_blocks`, with the quantizer's top-k search
        in place of full distance rows: search, expand with the decoded neighbours, search again.
        """
        quantizer = self.quantizer_
        exclude_self = X is None
        if exclude_self:
            queries = quantizer.inverse_transform(quantizer.codes_)
        else:
            queries = self._validate_descriptors(X, reset=False)
        queries = _prepare_quantized_queries(queries, self.metric)
        if self.query_expansion is not None:
            distances, indices = self._quantized_search(queries, self.qe_neighbors, exclude_self)
            # Decode only the neighbours, renumbered 0..n_unique-1 for the weighted sum.
            unique, local_indices = np.unique(indices, return_inverse=True)
            neighbours = _as_float32(quantizer.inverse_transform(quantizer.codes_[unique]))
            alpha = self.qe_alpha if self.query_expansion == "alpha" else None
            queries = _as_float32(
                _aggregate_neighbours(
                    queries, neighbours, local_indices.reshape(indices.shape), 1 - distances, alpha
                )
            )
        return self._quantized_search(queries, n_neighbors, exclude_self)

    def _quantized_search(self, queries, n_neighbors, exclude_self):
        """``quantizer_.kneighbors`` in the retriever's metric; without self-matches if asked."""
        k = n_neighbors + exclude_self
        squared_distances, indices = self.quantizer_.kneighbors(queries, n_neighbors=k)
        distances = _squared_to_metric(np.asarray(squared_distances, dtype=np.float32), self.metric)
        if exclude_self:
            distances, indices = _drop_self(distances, indices, n_neighbors)
        return distances, indices

    def kneighbors_graph(self, X=None, n_neighbors=None, mode="connectivity"):
        """Sparse graph of the nearest database items of each query.

        Parameters
        ----------
        X : array-like or descriptor set, default=None
            The queries; None queries the database against itself, excluding self-matches.
        n_neighbors : int, default=None
            Number of neighbours; defaults to ``self.n_neighbors``.
        mode : {"connectivity", "distance"}, default="connectivity"
            Entries are ones, or the distances.

        Returns
        -------
        graph : scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit_)
        """
        if mode not in ("connectivity", "distance"):
            raise ValueError(f"mode must be 'connectivity' or 'distance'; got {mode!r}.")
        distances, indices = self.kneighbors(X, n_neighbors, return_distance=True)
        n_queries, k = indices.shape
        data = np.ones(indices.size) if mode == "connectivity" else distances.ravel()
        indptr = np.arange(0, n_queries * k + 1, k)
        return sparse.csr_matrix(
            (data, indices.ravel(), indptr), shape=(n_queries, self.n_samples_fit_)
        )

    def score(self, X, y):
        """Mean average precision of the queries ``X`` against the database.

        A database item is relevant to a query when their labels are equal. Queries with no
        relevant item in the database are left out of the mean. Step interpolation, as
        :func:`sklearn.metrics.average_precision_score`.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), or another descriptor set
            The queries.
        y : array-like of shape (n_queries,)
            Labels of the queries.

        Returns
        -------
        score : float
            Mean average precision in ``[0, 1]``.
        """
        return map_scorer(self, X, y)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.target_tags.required = False
        return tags
