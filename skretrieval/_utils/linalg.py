"""L2 normalisation and squared Euclidean distances.

The distance helpers take numpy arrays, and also torch tensors (through which gradients flow):
they use only the operators the two share, so the losses of :mod:`skretrieval.learning` and the
numpy kernels of :mod:`skretrieval.geometry` compute distances the same way. This module does
not import torch.
"""

import numpy as np


def l2_normalize(X, axis=-1):
    """``X`` divided by its L2 norm along ``axis``; all-zero vectors stay zero instead of NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval._utils.linalg import l2_normalize
    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    norms = np.sqrt(np.sum(X * X, axis=axis, keepdims=True))
    return np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)


def squared_row_norms(X):
    """``|x|^2`` of every row of a 2-D numpy array or torch tensor."""
    if isinstance(X, np.ndarray):
        return np.einsum("ij,ij->i", X, X)
    return (X * X).sum(1)


def squared_euclidean_distances(Q, D, *, D_squared_norms=None):
    """``|q - d|^2`` between every row of ``Q`` and every row of ``D``, by one matrix product.

    ``|q|^2 + |d|^2 - 2 <q, d>``: no ``(n_q, n_d, n_features)`` temporary. Rounding can take
    the result slightly below zero: it is clipped at 0 (in place for numpy arrays; out of place
    for torch tensors, so that autograd sees the clip).

    Parameters
    ----------
    Q : ndarray or torch.Tensor of shape (n_queries, n_features)
    D : ndarray or torch.Tensor of shape (n_database, n_features)
    D_squared_norms : array of shape (n_database,), default=None
        Precomputed :func:`squared_row_norms` of ``D``, to reuse across blocks of queries.

    Returns
    -------
    distances : ndarray or torch.Tensor of shape (n_queries, n_database)

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval._utils.linalg import squared_euclidean_distances
    >>> squared_euclidean_distances(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [1.0, 0.0]]))
    array([[25.,  1.]])
    """
    if D_squared_norms is None:
        D_squared_norms = squared_row_norms(D)
    distances = Q @ D.T
    distances *= -2
    distances += squared_row_norms(Q)[:, None]
    distances += D_squared_norms[None, :]
    if isinstance(distances, np.ndarray):
        return np.maximum(distances, 0, out=distances)
    return distances.clamp(min=0)
