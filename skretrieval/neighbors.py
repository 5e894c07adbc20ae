"""Nearest-neighbour search over a database of image descriptors.

:class:`ImageRetriever` is the last step of a retrieval pipeline. It behaves like
:class:`sklearn.neighbors.NearestNeighbors` with the brute-force algorithm, but the distance
comes from a kernel of :mod:`skretrieval.geometry` (so descriptor types other than vectors plug
in), the database-side work is done once at ``fit``, and ``score`` returns the mean average
precision, so a whole pipeline can be tuned with ``GridSearchCV``.
"""

from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from scipy import sparse
from sklearn import get_config
from sklearn.base import BaseEstimator, _fit_context
from sklearn.preprocessing import normalize
from sklearn.utils import check_consistent_length
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from skretrieval.geometry import get_kernel
from skretrieval.metrics import map_scorer

__all__ = ["ImageRetriever"]


def _smallest_k(distances, k):
    """Sorted distances and column indices of the ``k`` smallest entries of each row.

    On wide blocks a per-row threshold, the k-th smallest of an evenly spaced sample of the
    columns, bounds the answer from above: one vectorised comparison keeps the few entries below
    it and only those are sorted. That is several times faster than ``argpartition`` over every
    entry. When the threshold is loose (e.g. many ties) we fall back to ``argpartition``; both
    routes are exact.
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
    candidates = np.argpartition(distances, k - 1, axis=1)[:, :k]
    return _sorted_rows(np.take_along_axis(distances, candidates, axis=1), candidates)


def _sorted_rows(distances, indices):
    """Sort each row of ``distances`` (ties by column order) and permute ``indices`` alike."""
    order = np.argsort(distances, axis=1, kind="stable")
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(indices, order, axis=1)


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


class ImageRetriever(BaseEstimator):
    """Rank a database of image descriptors for each query.

    A NearestNeighbors-style estimator: ``fit`` stores (and pre-processes) the database,
    ``kneighbors`` returns the closest database items of each query, ``score`` the mean average
    precision of the queries against the database with relevance = equal labels.

    Search is exact and brute force: the distance from a block of queries to the whole database
    is one matrix product (or one batched decomposition for matrix descriptors), and the
    ``n_neighbors`` smallest are found with ``argpartition``. Blocks are sized by scikit-learn's
    ``working_memory`` setting, so a large database never needs the full
    ``n_queries x n_database`` distance matrix in memory.

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

    Attributes
    ----------
    n_samples_fit_ : int
        Number of database items.
    n_features_in_ : int
        Descriptor length (for vector metrics).
    y_ : ndarray of shape (n_samples_fit_,) or None
        Labels of the database items given to ``fit``, used by :meth:`score`.

    Notes
    -----
    Query expansion happens wherever queries are searched -- :meth:`kneighbors`,
    :meth:`kneighbors_graph`, :meth:`score` and the scorers of :mod:`skretrieval.metrics` --
    because they all read the same blocks of distances.

    ``kneighbors(X=None)`` queries each database item as it was given to ``fit`` (not its
    DBA-augmented version) and leaves it out of its own result list. With query expansion it
    is also left out of its own *first* search, so the expanded query is the item (weight 1)
    plus its ``qe_neighbors`` nearest *other* items: the item is neither counted twice nor
    spends one of the ``k`` expansion slots on itself. ``kneighbors(X_fit)`` differs: there
    each item finds itself first (at distance 0 without DBA) and is expanded with it.

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

    @_fit_context(prefer_skip_nested_validation=True)
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
        X = self._validate_descriptors(X, reset=True)
        # Before any fitted attribute is set, so that a bad combination leaves no half fit.
        self._check_expansion_options(self._kernel.n_samples(X))
        self.n_samples_fit_ = self._kernel.n_samples(X)
        if y is None:
            self.y_ = None
        else:
            y = np.asarray(y)
            if y.ndim != 1:
                raise ValueError(
                    f"y must be 1-D, one label per database item; got shape {y.shape}."
                )
            check_consistent_length(np.empty(self.n_samples_fit_), y)
            self.y_ = y
        self._fit_X = X
        self._fit_state = self._kernel.prepare(X, **(self.metric_params or {}))
        if self.dba_neighbors is not None:
            self._fit_state = self._augment_database(X, self._fit_state)
        return self

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

    def _augment_database(self, X, database):
        """Database-side augmentation: one leave-one-out kNN of the database, one weighted sum."""
        neighbours = [
            _smallest_k(distances, self.dba_neighbors)
            for _, _, distances in self._search_blocks(X, database, exclude_self=True)
        ]
        distances = np.concatenate([d for d, _ in neighbours])
        indices = np.concatenate([i for _, i in neighbours])
        return _aggregate_neighbours(database, database, indices, 1 - distances, self.dba_alpha)

    def _validate_descriptors(self, X, *, reset):
        if self._kernel.descriptor == "vectors":
            # Records n_features_in_ (and feature names) at fit, checks them afterwards.
            return validate_data(self, X, dtype=[np.float64, np.float32], reset=reset)
        return self._kernel.validate(X, "X")

    def _distance_blocks(self, X=None):
        """Yield ``(start, stop, distances)`` for consecutive blocks of queries.

        ``distances`` has shape ``(stop - start, n_samples_fit_)``, lower is more similar. With
        ``X=None`` the queries are the database items themselves, each at distance ``+inf``
        from itself so that it is never its own neighbour. With ``query_expansion`` the
        distances are those of the expanded queries. Every search goes through here
        (``kneighbors``, ``score`` and the retrieval scorers).
        """
        check_is_fitted(self)
        exclude_self = X is None
        queries = self._fit_X if exclude_self else self._validate_descriptors(X, reset=False)
        yield from self._search_blocks(
            queries,
            self._fit_state,
            exclude_self=exclude_self,
            expand=self.query_expansion is not None,
        )

    def _search_blocks(self, queries, database_state, *, exclude_self, expand=False):
        """The blocks of :meth:`_distance_blocks` against a given database state.

        Also used at ``fit`` (with ``exclude_self=True``) for the kNN of DBA, before the
        retriever's own database state exists.
        """
        n_queries = self._kernel.n_samples(queries)
        n_threads = effective_n_jobs(self.n_jobs)
        # Each thread holds one block of float64 distances (a conservative row size); at least
        # one query per block even when that exceeds the working memory.
        row_bytes = 8 * self.n_samples_fit_ * n_threads
        rows_in_memory = int(get_config()["working_memory"] * 2**20 // row_bytes)
        block_size = min(n_queries, max(1, rows_in_memory))
        params = self.metric_params or {}
        prepare = self._kernel.prepare_queries or self._kernel.prepare
        alpha = self.qe_alpha if self.query_expansion == "alpha" else None

        def search(query_state, start):
            distances = self._kernel.pairwise(query_state, database_state)
            if exclude_self:
                rows = np.arange(len(distances))
                distances[rows, start + rows] = np.inf
            return distances

        def block(start):
            stop = min(start + block_size, n_queries)
            query_state = prepare(queries[start:stop], **params)
            distances = search(query_state, start)
            if expand:
                # In leave-one-out mode the query is already at +inf here, so its k expansion
                # neighbours are other items and it enters the sum once, with weight 1.
                top_distances, top_indices = _smallest_k(distances, self.qe_neighbors)
                query_state = _aggregate_neighbours(
                    query_state, database_state, top_indices, 1 - top_distances, alpha
                )
                distances = search(query_state, start)
            return start, stop, distances

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
        blocks = [
            _smallest_k(distances, n_neighbors) for _, _, distances in self._distance_blocks(X)
        ]
        distances = np.concatenate([d for d, _ in blocks])
        indices = np.concatenate([i for _, i in blocks])
        return (distances, indices) if return_distance else indices

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
