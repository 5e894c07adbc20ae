"""Query expansion of SPD matrices: a query replaced by the mean of itself and its nearest
database matrices, the mean of the retriever's metric (pyriemann's means)."""

import numpy as np

try:  # pyriemann >= 0.11: gmean, batched over leading axes
    from pyriemann.geometry.mean import gmean
except ImportError:  # pragma: no cover - older pyriemann: one set at a time
    gmean = None
    from pyriemann.utils.mean import mean_covariance

# SPD metric -> the pyriemann mean that minimises the sum of that metric's squared distances
# (or divergences, for "kl" and "jeffreys") to the averaged matrices.
SPD_MEANS = {
    "affine_invariant": "riemann",
    "log_euclidean": "logeuclid",
    "stein": "logdet",
    "wasserstein": "wasserstein",
    "jeffreys": "kullback_sym",
    # argmin_C sum_i KL(N(0, C) || N(0, X_i)) is the harmonic mean (inverse of the mean inverse):
    # the query is the first argument of the retriever's KL.
    "kl": "harmonic",
}


def riemannian_expansion(queries, indices, database, metric):
    """Replace each SPD query by the mean of itself and its neighbours, in ``metric``.

    Row ``i`` becomes the mean of ``queries[i]`` and ``database[indices[i]]`` (uniform weights,
    the SPD analogue of average query expansion) with pyriemann's mean of :data:`SPD_MEANS`,
    batched over the queries:
    affine-invariant (Karcher) mean for ``"affine_invariant"``, log-Euclidean mean for
    ``"log_euclidean"``, and so on.

    Parameters
    ----------
    queries : ndarray of shape (n, d, d)
        SPD queries.
    indices : ndarray of shape (n, k)
        Database positions of the neighbours of each query.
    database : ndarray of shape (n_database, d, d)
        SPD database matrices the neighbours are taken from.
    metric : str
        The retriever's metric, a key of :data:`SPD_MEANS`.

    Returns
    -------
    expanded : ndarray of shape (n, d, d)
        The means, float64.

    Examples
    --------
    >>> import numpy as np
    >>> database = np.array([np.eye(2), 4 * np.eye(2)])
    >>> riemannian_expansion(np.eye(2)[None], np.array([[1]]), database, "log_euclidean")
    array([[[2., 0.],
            [0., 2.]]])
    """
    stacks = np.concatenate(
        [np.asarray(queries, dtype=np.float64)[:, None], np.asarray(database)[indices]], axis=1
    ).astype(np.float64, copy=False)
    name = SPD_MEANS[metric]
    if gmean is not None:
        return gmean(stacks, metric=name)
    return np.stack([mean_covariance(stack, metric=name) for stack in stacks])
