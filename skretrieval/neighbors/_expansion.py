"""Query expansion and database-side augmentation: vectors replaced by the weighted sum of
themselves and their nearest database vectors."""

import numpy as np
from scipy import sparse

from skretrieval._utils.linalg import l2_normalize


def aggregate_neighbours(vectors, database, indices, similarities, alpha=None):
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
    return l2_normalize(vectors + weight_matrix @ database)


def expanded_search(
    queries, search, *, first_search=None, neighbour_vectors=None, n_expansion=None, alpha=None
):
    """``search(queries)``, after query expansion when ``n_expansion`` is given.

    The flow of query expansion, whichever search runs it: search each query once, replace it
    by the weighted sum of itself and its ``n_expansion`` nearest database vectors
    (:func:`aggregate_neighbours`), and search again.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, d)
        Unit-norm queries, as the searches take them.
    search : callable
        ``search(queries)``, the search whose result is returned.
    first_search : callable, default=None
        ``first_search(queries, k) -> (distances, indices)``: cosine distances and database
        positions of the ``k`` nearest items of each query. Needed with ``n_expansion``.
    neighbour_vectors : callable, default=None
        ``neighbour_vectors(indices) -> (vectors, positions)``: unit-norm vectors holding those
        database items, and the row of each neighbour in them. Needed with ``n_expansion``.
    n_expansion : int, default=None
        Number of neighbours a query is expanded with; None searches once.
    alpha : float or None, default=None
        Exponent of the similarity weights, as in :func:`aggregate_neighbours`.
    """
    if n_expansion is not None:
        distances, indices = first_search(queries, n_expansion)
        vectors, positions = neighbour_vectors(indices)
        queries = aggregate_neighbours(queries, vectors, positions, 1 - distances, alpha)
    return search(queries)
