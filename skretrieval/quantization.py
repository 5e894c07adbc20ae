"""Compressed approximate search with product quantisation (PQ and IVF-PQ).

:class:`ProductQuantizer` learns product-quantisation codebooks (Jegou, Douze and Schmid,
"Product quantization for nearest neighbor search", TPAMI 2011), stores a database as a few
bytes per vector, and searches it with asymmetric distance computation (ADC): the raw query is
compared with the reconstructed database vectors. Optionally an inverted file (IVF) of coarse
k-means cells restricts the search to the ``n_probe`` cells closest to each query and encodes
each vector as its residual from its cell centre (IVF-PQ, ibid. Section IV).

The k-means training, encoding and table-based search run in faiss.
"""

from numbers import Integral

import faiss
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from skretrieval._utils.faiss_threads import faiss_threads as _faiss_threads

__all__ = ["ProductQuantizer"]


def _as_faiss_input(X):
    """C-contiguous float32, the only layout faiss reads without copying in C++."""
    return np.ascontiguousarray(X, dtype=np.float32)


def _encoding_batches(n_samples, index, budget_bytes=2**26):
    """Row slices small enough for faiss's encoder.

    For sub-vectors of 16 or more dimensions faiss encodes through float32 distance tables of
    ``n * n_subquantizers * 2**n_bits`` entries for the whole call (8 GiB for a million vectors
    at 8 bytes each), so large inputs are encoded a batch at a time within ``budget_bytes``.
    """
    table_row_bytes = 4 * index.pq.M * index.pq.ksub
    batch_size = max(1, budget_bytes // table_row_bytes)
    return [slice(start, start + batch_size) for start in range(0, n_samples, batch_size)]


class ProductQuantizer(TransformerMixin, BaseEstimator):
    """Product-quantisation codes and approximate nearest-neighbour search (PQ or IVF-PQ).

    Each vector is cut into ``n_subquantizers`` contiguous sub-vectors; each sub-vector is
    replaced by the index of its nearest centroid in a k-means codebook of ``2**n_bits``
    centroids learned for that sub-space. A vector is thus stored in
    ``ceil(n_subquantizers * n_bits / 8)`` bytes instead of ``4 * n_features``.

    ``fit`` learns the codebooks *and* encodes ``X`` as the searchable database, as
    :class:`sklearn.neighbors.NearestNeighbors` stores its training data. :meth:`kneighbors`
    ranks the database by asymmetric distance computation: the squared Euclidean distance
    between the raw query and each reconstructed database vector, read from per-query lookup
    tables, so the database is never decompressed.

    With ``n_lists`` set, vectors are first assigned to the nearest of ``n_lists`` coarse
    k-means centroids and the residual from that centroid is product-quantised (IVF-PQ). A
    query then visits only the ``n_probe`` lists whose centroids are closest to it, which
    makes search sub-linear at the cost of missing neighbours stored in other lists.

    Parameters
    ----------
    n_subquantizers : int, default=8
        Number of sub-vectors M; must divide the number of features.
    n_bits : int, default=8
        Bits per sub-vector code: each codebook has ``2**n_bits`` centroids (1 to 16). ``fit``
        needs at least that many samples, and faiss recommends about 39 per centroid.
    n_lists : int or None, default=None
        Number of coarse cells of the inverted file. None means plain PQ: every query is
        compared with every database code.
    n_probe : int, default=8
        Number of inverted lists visited per query when ``n_lists`` is set (values above
        ``n_lists`` visit them all); ignored for plain PQ.
    random_state : int, RandomState instance or None, default=None
        Seeds the k-means initialisations of faiss (codebooks and coarse cells), so that an
        int gives the same codes on every fit.

    Attributes
    ----------
    codes_ : ndarray of shape (n_samples_fit_, code_size_), dtype uint8
        Codes of the database given to ``fit``, as returned by :meth:`transform` (a copy of
        what the faiss index holds).
    codebooks_ : ndarray of shape (n_subquantizers, 2**n_bits, n_features_in_ // n_subquantizers)
        The sub-space centroids, float32. With ``n_lists`` they quantise residuals from the
        coarse centroids.
    coarse_centroids_ : ndarray of shape (n_lists, n_features_in_) or None
        Centroids of the inverted lists; None for plain PQ.
    code_size_ : int
        Bytes per encoded vector. For IVF-PQ this includes the list number
        (``ceil(log2(n_lists) / 8)`` bytes) that :meth:`transform` prepends to the PQ code.
    n_samples_fit_ : int
        Number of database vectors.
    n_features_in_ : int
        Number of features seen during ``fit``.

    See Also
    --------
    skretrieval.neighbors.ImageRetriever : exact search over uncompressed descriptors.

    Notes
    -----
    The faiss index is kept in a private attribute; pickling (and joblib, and deepcopy) store
    it with ``faiss.serialize_index``. faiss runs with at most as many OpenMP threads as
    ``joblib.cpu_count()`` reports, restored afterwards. Distances and reconstructions are
    float32, as faiss computes them.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.quantization import ProductQuantizer
    >>> X = np.random.default_rng(0).normal(size=(1000, 16)).astype(np.float32)
    >>> pq = ProductQuantizer(n_subquantizers=4, n_bits=6, random_state=0).fit(X)
    >>> pq.codes_.shape, pq.code_size_
    ((1000, 3), 3)
    >>> pq.codebooks_.shape
    (4, 64, 4)
    >>> distances, indices = pq.kneighbors(X[:2], n_neighbors=3)
    >>> indices[:, 0]
    array([0, 1])
    >>> pq.inverse_transform(pq.transform(X[:2])).shape
    (2, 16)
    """

    _parameter_constraints: dict = {
        "n_subquantizers": [Interval(Integral, 1, None, closed="left")],
        "n_bits": [Interval(Integral, 1, 16, closed="both")],
        "n_lists": [Interval(Integral, 1, None, closed="left"), None],
        "n_probe": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, n_subquantizers=8, n_bits=8, *, n_lists=None, n_probe=8, random_state=None):
        self.n_subquantizers = n_subquantizers
        self.n_bits = n_bits
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the codebooks on ``X`` and store ``X``, encoded, as the search database.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors, also the database that :meth:`kneighbors` searches.
        y : None
            Ignored.

        Returns
        -------
        self : ProductQuantizer
            The fitted estimator.
        """
        X = validate_data(self, X, dtype=np.float32, order="C")
        n_samples, n_features = X.shape
        if n_features % self.n_subquantizers:
            raise ValueError(
                f"The number of features ({n_features}) must be divisible by n_subquantizers "
                f"({self.n_subquantizers}); each sub-quantizer encodes an equal slice."
            )
        n_centroids = 2**self.n_bits
        if n_samples < n_centroids:
            raise ValueError(
                f"n_bits={self.n_bits} needs at least 2**{self.n_bits} = {n_centroids} training "
                f"samples (one per centroid); got n_samples={n_samples}. Lower n_bits or give more "
                "samples."
            )
        if self.n_lists is not None and n_samples < self.n_lists:
            raise ValueError(
                f"n_lists={self.n_lists} needs at least {self.n_lists} training samples (one "
                f"per coarse centroid); got n_samples={n_samples}."
            )
        # faiss seeds are C ints.
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        index = self._make_index(n_features, seed)
        with _faiss_threads():
            index.train(X)
        self._index = index
        # Encode once and hand faiss the codes: the same index as index.add(X), without a
        # second encoding pass. IDs follow the order of addition, i.e. row numbers.
        self.codes_ = self._encode(X)
        index.add_sa_codes(self.codes_)
        self.n_samples_fit_ = n_samples
        self.code_size_ = int(index.sa_code_size())
        pq = index.pq
        self.codebooks_ = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
        if self.n_lists is None:
            self.coarse_centroids_ = None
        else:
            self.coarse_centroids_ = index.quantizer.reconstruct_n(0, self.n_lists)
        return self

    def _make_index(self, n_features, seed):
        """An untrained faiss index for the parameters, its k-means seeded with ``seed``."""
        if self.n_lists is None:
            index = faiss.IndexPQ(n_features, self.n_subquantizers, self.n_bits)
        else:
            coarse = faiss.IndexFlatL2(n_features)
            index = faiss.IndexIVFPQ(
                coarse, n_features, self.n_lists, self.n_subquantizers, self.n_bits
            )
            index.by_residual = True
            index.cp.seed = seed
            # faiss only prints its too-few-points advice to stderr; the docstring gives it.
            index.cp.min_points_per_centroid = 1
        index.pq.cp.seed = seed
        index.pq.cp.min_points_per_centroid = 1
        return index

    def _validate_queries(self, X):
        check_is_fitted(self)
        return _as_faiss_input(validate_data(self, X, dtype=np.float32, reset=False))

    def kneighbors(self, X, n_neighbors, return_distance=True):
        """Approximate nearest database vectors of each query (asymmetric distances).

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            The queries, not quantised.
        n_neighbors : int
            Number of neighbours per query, at most ``n_samples_fit_``.
        return_distance : bool, default=True
            Whether to return the distances too.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors), float32
            Squared Euclidean distances from each query to the reconstructions of its
            neighbours, ascending. Only if ``return_distance=True``.
        indices : ndarray of shape (n_queries, n_neighbors), int64
            Database positions of the neighbours, nearest first.

        Notes
        -----
        With ``n_lists`` set, the ``n_probe`` visited lists may together hold fewer than
        ``n_neighbors`` vectors. Those queries (only those) are searched again over every
        list, so each result is complete: no ``-1`` placeholder is ever returned.
        """
        X = self._validate_queries(X)
        if not isinstance(n_neighbors, Integral) or isinstance(n_neighbors, bool):
            raise TypeError(f"n_neighbors must be an integer; got {type(n_neighbors).__name__}.")
        if not 1 <= n_neighbors <= self.n_samples_fit_:
            raise ValueError(
                f"n_neighbors must be between 1 and the database size n_samples_fit_="
                f"{self.n_samples_fit_}; got {n_neighbors}."
            )
        with _faiss_threads():
            if self.n_lists is None:
                distances, indices = self._index.search(X, n_neighbors)
            else:
                # Search parameters per call, so the stored index is never mutated.
                params = faiss.SearchParametersIVF(nprobe=min(self.n_probe, self.n_lists))
                distances, indices = self._index.search(X, n_neighbors, params=params)
                incomplete = np.flatnonzero((indices < 0).any(axis=1))
                if len(incomplete):
                    every_list = faiss.SearchParametersIVF(nprobe=self.n_lists)
                    distances[incomplete], indices[incomplete] = self._index.search(
                        X[incomplete], n_neighbors, params=every_list
                    )
        return (distances, indices) if return_distance else indices

    def transform(self, X):
        """Encode vectors as PQ codes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Vectors to encode.

        Returns
        -------
        codes : ndarray of shape (n_samples, code_size_), dtype uint8
            The codes, bit-packed when ``n_bits`` is not 8. For IVF-PQ each code starts
            with the little-endian number of the vector's list.
        """
        return self._encode(self._validate_queries(X))

    def _encode(self, X):
        codes = np.empty((len(X), self._index.sa_code_size()), dtype=np.uint8)
        with _faiss_threads():
            for batch in _encoding_batches(len(X), self._index):
                codes[batch] = self._index.sa_encode(X[batch])
        return codes

    def inverse_transform(self, X):
        """Reconstruct vectors from their codes.

        Parameters
        ----------
        X : array-like of shape (n_samples, code_size_), integer
            Codes as returned by :meth:`transform`, bytes in ``[0, 255]``.

        Returns
        -------
        X_reconstructed : ndarray of shape (n_samples, n_features_in_), float32
            For each sub-vector its centroid (plus, for IVF-PQ, the list's centroid).
        """
        check_is_fitted(self)
        codes = np.asarray(X)
        if codes.ndim != 2 or codes.shape[1] != self.code_size_:
            raise ValueError(
                f"codes must be a 2-D array of shape (n_samples, code_size_={self.code_size_}); "
                f"got shape {codes.shape}."
            )
        if not np.issubdtype(codes.dtype, np.integer):
            raise TypeError(f"codes must be integer bytes (uint8); got dtype {codes.dtype}.")
        if codes.size and (codes.min() < 0 or codes.max() > 255):
            raise ValueError("codes must be bytes: every value in [0, 255].")
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if self.n_lists is not None:
            # A list number out of range would make faiss read out of bounds and abort.
            n_coarse_bytes = self._index.coarse_code_size()
            weights = 256 ** np.arange(n_coarse_bytes, dtype=np.int64)
            list_numbers = codes[:, :n_coarse_bytes].astype(np.int64) @ weights
            if list_numbers.size and list_numbers.max() >= self.n_lists:
                raise ValueError(
                    f"codes name inverted list {list_numbers.max()}, but there are only "
                    f"n_lists={self.n_lists}; these are not codes of this estimator."
                )
        with _faiss_threads():
            return self._index.sa_decode(codes)

    def __getstate__(self):
        # A copy: object.__getstate__ may return the instance's own __dict__.
        state = dict(super().__getstate__())
        if "_index" in state:
            # SWIG proxies do not pickle; the serialised index is a plain uint8 array.
            state["_index"] = faiss.serialize_index(state["_index"])
        return state

    def __setstate__(self, state):
        if "_index" in state:
            try:
                index = faiss.deserialize_index(np.asarray(state["_index"], dtype=np.uint8))
            except RuntimeError as exc:
                raise ValueError(f"The stored faiss index cannot be read: {exc}") from None
            # The index must be the one the fitted attributes describe, or searches and
            # decoding would read out of its bounds.
            n_lists = state.get("n_lists")
            expected = (
                (faiss.IndexPQ if n_lists is None else faiss.IndexIVFPQ),
                state.get("n_features_in_"),
                state.get("n_samples_fit_"),
                state.get("n_subquantizers"),
                state.get("n_bits"),
                n_lists,
            )
            found = (
                type(index),
                index.d,
                index.ntotal,
                getattr(getattr(index, "pq", None), "M", None),
                getattr(getattr(index, "pq", None), "nbits", None),
                getattr(index, "nlist", None),
            )
            if found != expected:
                raise ValueError(
                    f"The stored faiss index ({type(index).__name__}, d={index.d}, "
                    f"ntotal={index.ntotal}) does not match the ProductQuantizer's parameters "
                    "and fitted attributes; the saved estimator is damaged."
                )
            state = {**state, "_index": index}
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []
        return tags
