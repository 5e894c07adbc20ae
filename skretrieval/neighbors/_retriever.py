"""The :class:`ImageRetriever` estimator: fit, exact and quantised search, scoring."""

from functools import partial
from numbers import Integral, Real

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils import check_consistent_length
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

import skretrieval.neighbors._distributed as dask_database
from skretrieval._utils.validation import is_integer
from skretrieval.geometry import get_kernel
from skretrieval.geometry._registry import descriptor_mismatch, descriptor_types
from skretrieval.metrics import map_scorer
from skretrieval.neighbors._expansion import aggregate_neighbours
from skretrieval.neighbors._options import (
    check_expansion_options,
    check_quantizer_option,
    check_rerank_options,
    is_spd_expansion,
)
from skretrieval.neighbors._quantized import quantized_search, reconstruction_state
from skretrieval.neighbors._reranking import fit_reranker, rerank_blocks
from skretrieval.neighbors._riemannian import riemannian_expansion
from skretrieval.neighbors._search import search_blocks
from skretrieval.neighbors._state import kernel_by_name, kernel_from_registry
from skretrieval.neighbors._topk import concatenate_top_k


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
        Query expansion, for ``metric="cosine"`` (and ``"average"`` for SPD metrics, below):
        each query ``q`` (unit norm) is searched
        once, replaced by ``q' = L2-normalise(q + sum_{i=1..k} w_i x_i)`` over its ``k =
        qe_neighbors`` nearest database vectors ``x_i``, and searched again; the distances
        returned are those of ``q'``. ``"average"``: ``w_i = 1`` (average query expansion,
        AQE; Chum et al., "Total recall", ICCV 2007). ``"alpha"``: ``w_i = (x_i^T q)^alpha``
        with ``alpha = qe_alpha`` (alpha-QE; Radenovic, Tolias and Chum, "Fine-tuning CNN image
        retrieval with no human annotation", TPAMI 2019); a negative similarity gets weight 0.
        The query itself has weight 1 in both. None searches once. On SPD matrices
        (``"affine_invariant"``, ``"log_euclidean"``, ``"stein"``, ``"wasserstein"``,
        ``"jeffreys"``, ``"kl"``) ``"average"`` replaces the query by the mean of itself and its
        ``k`` nearest database matrices in the metric's own geometry (pyriemann's
        ``mean_covariance`` with ``"riemann"``, ``"logeuclid"``, ``"logdet"``,
        ``"wasserstein"``, ``"kullback_sym"``, ``"harmonic"`` respectively).
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
    rerank : {"diffusion", "k_reciprocal"}, default=None
        Re-ranking of every query's full distance row with the database's neighbourhood graph
        (built at ``fit``; not with a ``quantizer`` or a dask array database), after query
        expansion. The distances returned are the re-ranked ones, smaller is closer.
        ``"diffusion"`` (``metric="cosine"`` only; Iscen, Tolias, Avrithis, Furon and Chum,
        "Efficient diffusion on region manifolds", CVPR 2017): the affinity ``W_ij = s_ij **
        diffusion_gamma`` (``s`` the cosine similarity, negative as 0) links mutual
        ``rerank_neighbors``-nearest database items, ``S = D^-1/2 W D^-1/2``; the query's ``y``
        holds ``s ** diffusion_gamma`` at its ``rerank_neighbors`` nearest items, ``(I -
        diffusion_alpha S) f = y`` is solved by conjugate gradient (batched over the queries)
        and the distance is ``1 - f / max(f)``: 0 for the top item, 1 for the items the
        diffusion does not reach (in database order). ``"k_reciprocal"`` (any metric; Zhong,
        Zheng, Cao and Li, "Re-ranking person re-identification with k-reciprocal encoding",
        CVPR 2017): ``R(p, k)`` holds those of the ``k = rerank_neighbors`` nearest items of
        ``p`` that have ``p`` among their own ``k`` nearest (a database item counts itself);
        ``R*(p, k)`` adds each ``R(q, ceil(k/2))``, ``q`` in ``R(p, k)``, sharing at least 2/3
        of its items with ``R(p, k)``; ``V_p`` holds ``exp(-d(p, g))`` on ``R*(p, k)`` and is
        averaged with the ``V`` of the ``reciprocal_expansion - 1`` nearest items of ``p``;
        the distance is ``(1 - reciprocal_lambda) d_J + reciprocal_lambda d``, ``d_J`` the
        Jaccard distance ``1 - sum min(V_p, V_g) / sum max(V_p, V_g)``. None does not re-rank.
    rerank_neighbors : int, default=20
        The ``k`` of the re-ranking graphs: diffusion's k-NN graph and query vector, and the
        ``k1`` of k-reciprocal re-ranking.
    diffusion_alpha : float, default=0.99
        The ``alpha`` of diffusion, in ``[0, 1)``: how far the scores spread along the graph.
    diffusion_gamma : float, default=3.0
        Exponent of the similarities in the affinities of diffusion.
    reciprocal_expansion : int, default=6
        The ``k2`` of k-reciprocal re-ranking: ``V`` is averaged over an item and its
        ``k2 - 1`` nearest; 1 disables the local expansion.
    reciprocal_lambda : float, default=0.3
        Weight of the original distance in the k-reciprocal distance, in ``[0, 1]``.

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
    :meth:`kneighbors_graph`, :meth:`distance_blocks`, :meth:`score` and the scorers of
    :mod:`skretrieval.metrics` -- because they all run the same search of query blocks.

    ``kneighbors(X=None)`` queries each database item as it was given to ``fit`` (not its
    DBA-augmented version) and leaves it out of its own result list. With ``rerank`` it is
    then a new query at distance ``+inf`` from its own item, which the database graph (built
    once at ``fit``) still holds. With query expansion it
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
        "rerank": [StrOptions({"diffusion", "k_reciprocal"}), None],
        "rerank_neighbors": [Interval(Integral, 1, None, closed="left")],
        "diffusion_alpha": [Interval(Real, 0, 1, closed="left")],
        "diffusion_gamma": [Interval(Real, 0, None, closed="neither")],
        "reciprocal_expansion": [Interval(Integral, 1, None, closed="left")],
        "reciprocal_lambda": [Interval(Real, 0, 1, closed="both")],
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
        rerank=None,
        rerank_neighbors=20,
        diffusion_alpha=0.99,
        diffusion_gamma=3.0,
        reciprocal_expansion=6,
        reciprocal_lambda=0.3,
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
        self.rerank = rerank
        self.rerank_neighbors = rerank_neighbors
        self.diffusion_alpha = diffusion_alpha
        self.diffusion_gamma = diffusion_gamma
        self.reciprocal_expansion = reciprocal_expansion
        self.reciprocal_lambda = reciprocal_lambda

    # False: the quantizer's own parameters are validated when its clone is fitted.
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Store and pre-process the database.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or another descriptor set
            The database descriptors, of the type the metric expects. A ``dask.array`` of
            vectors stays on its Dask cluster, searched where it lies (docs/scaling_out.md).
        y : array-like of shape (n_samples,), default=None
            Labels of the database items (e.g. the object or scene shown), needed by
            :meth:`score`.

        Returns
        -------
        self : ImageRetriever
            The fitted retriever.
        """
        if dask_database.is_dask_array(X):
            dask_database.check_distributed_metric(self.metric)
        self._kernel = get_kernel(self.metric, X)
        # Before any fitted attribute is set, so that a bad combination leaves no half fit.
        check_quantizer_option(self, self._kernel)
        if dask_database.is_dask_array(X):
            # The database stays on the cluster, block by block (neighbors/_distributed.py).
            check_expansion_options(self, self._kernel, X.shape[0])
            database = dask_database.fit_distributed(self, self._kernel, X, y)
            self.n_samples_fit_, self.y_ = database.n_samples, database.y
            self.quantizer_, self._fit_X, self._fit_state = database.quantizer, None, database
            return self
        X = self._validate_descriptors(X, reset=True)
        n_samples = self._kernel.n_samples(X)
        check_expansion_options(self, self._kernel, n_samples)
        check_rerank_options(self, self._kernel, n_samples)
        if y is not None:
            y = np.asarray(y)
            if y.ndim != 1:
                raise ValueError(
                    f"y must be 1-D, one label per database item; got shape {y.shape}."
                )
            check_consistent_length(np.empty(n_samples), y)
        fit_state = self._kernel.prepare(X, **(self.metric_params or {}))
        # Cosine: the unit rows are also the database items as queries (X=None), searched as
        # they are; the database as given is not kept (one float copy of it, not two).
        prepared = self._kernel.descriptor == "vectors" and self._kernel.name == "cosine"
        X = fit_state if prepared else X
        if self.dba_neighbors is not None:
            fit_state = self._augment_database(X, fit_state, n_samples, prepared)
        # The graph of the database as searched (DBA applied: its unit rows are the queries).
        rows = partial(
            self._search_blocks,
            fit_state if self.dba_neighbors else X,
            fit_state,
            prepared_queries=prepared and not self.dba_neighbors,
        )
        reranker = fit_reranker(
            self, partial(rows, exclude_self=True, n_database=n_samples), n_samples
        )
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
        self._reranker = reranker
        self._fit_X_prepared = prepared and quantizer is None
        if quantizer is None:
            self._fit_X = X
            self._fit_state = fit_state
        else:
            # The point of compression: no float copy of the database is kept.
            self._fit_X = self._fit_state = None
        return self

    def _augment_database(self, X, database, n_samples, prepared):
        """Database-side augmentation: one leave-one-out kNN of the database, one weighted sum."""
        distances, indices = concatenate_top_k(
            self._search_blocks(
                X,
                database,
                exclude_self=True,
                n_database=n_samples,
                n_neighbors=self.dba_neighbors,
                prepared_queries=prepared,
            )
        )
        return aggregate_neighbours(database, database, indices, 1 - distances, self.dba_alpha)

    def _validate_descriptors(self, X, *, reset):
        kernel = self._kernel
        if kernel.descriptor == "vectors":
            if kernel.accepts is not None and not kernel.accepts(X) and descriptor_types(X):
                # Queries of another registered type (SPD matrices, mixtures): say so, rather
                # than what converting them to a 2-D float array breaks on.
                raise descriptor_mismatch(self.metric, kernel.descriptor, X)
            # Records n_features_in_ (and feature names) at fit, checks them afterwards.
            return validate_data(self, X, dtype=[np.float64, np.float32], reset=reset)
        return kernel.validate(X, "X")

    def distance_blocks(self, X=None):
        """Yield ``(start, stop, distances)`` for consecutive blocks of queries.

        The full rows of distances from the queries to every database item, one block of
        queries at a time: blocks are sized by scikit-learn's ``working_memory`` setting, so a
        large database never needs the whole ``n_queries x n_samples_fit_`` matrix in memory.
        :meth:`score` and the scorers of :mod:`skretrieval.metrics` read these blocks;
        :meth:`kneighbors` runs the same search but keeps only the nearest items (tiled over
        the database for vectors).

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), or another descriptor set, default=None
            The queries. If None, each database item is queried, at distance ``+inf`` from
            itself so that it is never its own neighbour.

        Yields
        ------
        start, stop : int
            The block holds the queries ``start`` to ``stop - 1``.
        distances : ndarray of shape (stop - start, n_samples_fit_)
            Their distances to every database item, lower is more similar. With
            ``query_expansion``, the distances of the expanded queries.

        Notes
        -----
        With a quantizer the database is decoded once per call and the distances are the ADC
        distances to the decoded vectors (float32); with ``X=None`` the queries are the decoded
        database vectors.

        Examples
        --------
        >>> from skretrieval.neighbors import ImageRetriever
        >>> retriever = ImageRetriever(metric="euclidean").fit([[0.0, 0.0], [3.0, 4.0]])
        >>> for start, stop, distances in retriever.distance_blocks([[0.0, 0.0], [3.0, 0.0]]):
        ...     print(start, stop, distances.tolist())
        0 2 [[0.0, 5.0], [3.0, 4.0]]
        >>> for start, stop, distances in retriever.distance_blocks():  # leave-one-out
        ...     print(start, stop, distances.tolist())
        0 2 [[inf, 5.0], [5.0, inf]]
        """
        check_is_fitted(self)
        if isinstance(getattr(self, "_fit_state", None), dask_database.DistributedDatabase):
            queries = None if X is None else self._validate_descriptors(X, reset=False)
            yield from self._fit_state.distance_blocks(self, queries)
            return
        exclude_self = X is None
        quantizer = getattr(self, "quantizer_", None)
        if quantizer is None:
            database_state = self._fit_state
            queries = self._fit_X
        else:
            database_state = reconstruction_state(quantizer)
            queries = database_state.vectors
        if not exclude_self:
            queries = self._validate_descriptors(X, reset=False)
        blocks = self._search_blocks(
            queries,
            database_state,
            exclude_self=exclude_self,
            expand=self.query_expansion is not None,
            prepared_queries=exclude_self and getattr(self, "_fit_X_prepared", False),
        )
        reranker = getattr(self, "_reranker", None)
        yield from blocks if reranker is None else rerank_blocks(reranker, blocks)

    def _search(self, X, n_neighbors):
        """``(distances, indices)`` of the ``n_neighbors`` nearest database items of each query.

        Exact search by blocks of queries (tiled over the database for vectors), or the
        quantizer's own top-k search; query expansion included, ``X=None`` leave-one-out.
        """
        if isinstance(getattr(self, "_fit_state", None), dask_database.DistributedDatabase):
            queries = None if X is None else self._validate_descriptors(X, reset=False)
            return self._fit_state.kneighbors(self, queries, n_neighbors)
        if getattr(self, "quantizer_", None) is not None:
            queries = None if X is None else self._validate_descriptors(X, reset=False)
            return quantized_search(self, queries, n_neighbors)
        queries = self._fit_X if X is None else self._validate_descriptors(X, reset=False)
        reranker = getattr(self, "_reranker", None)
        blocks = self._search_blocks(
            queries,
            self._fit_state,
            exclude_self=X is None,
            expand=self.query_expansion is not None,
            # Re-ranking needs the full rows, then keeps the top n_neighbors of the new ones.
            n_neighbors=n_neighbors if reranker is None else None,
            prepared_queries=X is None and getattr(self, "_fit_X_prepared", False),
        )
        if reranker is not None:
            blocks = rerank_blocks(reranker, blocks, n_neighbors)
        return concatenate_top_k(blocks)

    def _search_blocks(
        self,
        queries,
        database_state,
        *,
        exclude_self,
        expand=False,
        n_database=None,
        n_neighbors=None,
        prepared_queries=False,
    ):
        """The blocks of :meth:`distance_blocks` against a given database state.

        Also used at ``fit`` (with ``exclude_self=True``) for the kNN of DBA, before the
        retriever's own database state exists (``n_database`` then gives its size).
        ``database_state`` is the kernel's prepared database, or the decoded vectors
        (``Reconstructions``) of a quantised one. With ``n_neighbors``, yield
        ``(start, stop, distances, indices)`` of the ``n_neighbors`` nearest only, tiled over
        the database for vectors.
        """
        expand_queries = None
        if expand and is_spd_expansion(self, self._kernel):
            expand_queries = partial(
                riemannian_expansion, database=self._fit_X, metric=self._kernel.name
            )
        yield from search_blocks(
            self._kernel,
            queries,
            database_state,
            n_database=self.n_samples_fit_ if n_database is None else n_database,
            exclude_self=exclude_self,
            metric=self.metric,
            metric_params=self.metric_params,
            n_jobs=self.n_jobs,
            n_neighbors=n_neighbors,
            n_expansion=self.qe_neighbors if expand else None,
            alpha=self.qe_alpha if self.query_expansion == "alpha" else None,
            expand_queries=expand_queries,
            prepared_queries=prepared_queries,
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
        if not is_integer(n_neighbors):
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
        distances, indices = self._search(X, n_neighbors)
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
        relevant item in the database are left out of the mean, with an
        :class:`~skretrieval.metrics.UndefinedRetrievalMetricWarning`. Step interpolation, as
        :func:`sklearn.metrics.average_precision_score`.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), another descriptor set, or None
            The queries. None scores the database against itself, leave-one-out: each item
            queries the others and is not its own match (``y`` then holds the database labels).
        y : array-like of shape (n_queries,)
            Labels of the queries.

        Returns
        -------
        score : float
            Mean average precision in ``[0, 1]``.
        """
        return map_scorer(self, X, y)

    def __getstate__(self):
        # The kernel by name, not its functions: a saved file holds no reference to code.
        return kernel_by_name(dict(super().__getstate__()))

    def __setstate__(self, state):
        super().__setstate__(kernel_from_registry(state))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.target_tags.required = False
        return tags
