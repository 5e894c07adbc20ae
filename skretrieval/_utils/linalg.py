"""L2 normalisation and squared Euclidean distances, safe for the whole floating range.

The distance helpers take numpy arrays, and also torch tensors (through which gradients flow):
they use only the operators the two share, so the losses of :mod:`skretrieval.learning` and the
numpy kernels of :mod:`skretrieval.geometry` compute distances the same way. This module does
not import torch.

Squaring a float32 entry above about 1.8e19 overflows and one below about 1e-19 loses its
digits (float64: 1.3e154 and 1e-154), although the norms and distances themselves are
representable. The numpy paths therefore compute sums of squares the fast way, check the
results (a vector per call, not a pass over the data), and redo only what went out of range
with the rows scaled by a power of two: ordinary data costs what it did.
"""

import numpy as np

# Rows of the database rescaled together on the rare path of squared_euclidean_distances:
# bounds its temporary copy whatever the database size.
_RESCALED_ROWS = 4096


def _floating(X):
    """``X`` as a numpy array of a floating dtype (float64 for any other)."""
    X = np.asarray(X)
    return X if np.issubdtype(X.dtype, np.floating) else X.astype(np.float64)


def _inaccurate(squared_norms, dtype):
    """Where sums of squares overflowed, or are too small for squares to keep their digits.

    Below ``tiny / eps`` the squares of the entries are subnormal or zero. All-zero rows are
    flagged too, and NaN (which only non-finite input produces).
    """
    info = np.finfo(dtype)
    return ~(squared_norms >= info.tiny / info.eps) | (squared_norms == np.inf)


def l2_normalize(X, axis=-1):
    """``X`` divided by its L2 norm along ``axis``; all-zero vectors stay zero instead of NaN.

    Accurate over the whole finite range of the dtype: vectors whose sum of squares would
    overflow or underflow (e.g. float32 entries of 1e25 or 1e-30) are divided by their largest
    absolute entry first. Non-floating input is converted to float64. Non-finite input gives
    NaN where it lies; the estimators reject it before.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval._utils.linalg import l2_normalize
    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ]])
    >>> l2_normalize(np.array([[3e30, 4e30]], dtype=np.float32)).round(6)
    array([[0.6, 0.8]], dtype=float32)
    """
    X = _floating(X)
    moved = np.moveaxis(X, axis, -1)
    with np.errstate(over="ignore", under="ignore"):
        squared = np.asarray(np.einsum("...i,...i->...", moved, moved))
    redo = _inaccurate(squared, X.dtype)
    norms = np.sqrt(squared, out=squared)
    norms[redo] = 1
    normalized = moved / norms[..., None]
    if redo.any():
        rows = moved[redo]
        with np.errstate(invalid="ignore"):
            scale = np.max(np.abs(rows), axis=-1, keepdims=True)
            rows = np.divide(rows, scale, out=np.zeros_like(rows), where=scale != 0)
            # Entries now lie in [-1, 1] with one of them +-1: the sum of squares is in [1, d].
            norms = np.sqrt(np.einsum("...i,...i->...", rows, rows))[..., None]
            normalized[redo] = np.divide(rows, norms, out=rows, where=norms > 0)
    return np.moveaxis(normalized, -1, axis)


def squared_row_norms(X):
    """``|x|^2`` of every row of a 2-D numpy array or torch tensor.

    ``inf`` where the square does not fit the dtype (float32 rows of norm above 1.8e19):
    :func:`squared_euclidean_distances` recognises it and rescales.
    """
    if isinstance(X, np.ndarray):
        with np.errstate(over="ignore", under="ignore"):
            return np.einsum("ij,ij->i", X, X)
    return (X * X).sum(1)


def _squared_distances(Q, D, Q_squared_norms, D_squared_norms):
    """``|q|^2 + |d|^2 - 2 <q, d>``, clipped at 0, without a range check."""
    distances = Q @ D.T
    distances *= -2
    distances += Q_squared_norms[:, None]
    distances += D_squared_norms[None, :]
    if isinstance(distances, np.ndarray):
        return np.maximum(distances, 0, out=distances)
    return distances.clamp(min=0)


def _out_of_range(Q_squared_norms, D_squared_norms, dtype):
    """Whether the fast computation of squared distances may overflow or lose its digits.

    Every term is at most ``4 max(|q|^2, |d|^2)``; rows much smaller than the largest one are
    negligible next to it, so only the largest norm decides (besides non-finite norms).
    """
    info = np.finfo(dtype)
    largest = max(
        np.max(Q_squared_norms, initial=0.0),
        np.max(D_squared_norms, initial=0.0),
    )
    if not np.isfinite(largest):
        return True
    # 0 too: all-zero data, or squares that all underflowed.
    return largest > info.max / 4 or largest < info.tiny / info.eps


def _power_of_two_scale(Q, D):
    """A power of two ``s`` with ``max |x| / s`` in ``[1, 2)`` over ``Q`` and ``D``; 1 for zeros.

    A power of two so that dividing by it is exact, and never above the largest entry, so
    that it is representable in the dtype.
    """
    with np.errstate(invalid="ignore"):
        largest = max(np.max(np.abs(Q), initial=0.0), np.max(np.abs(D), initial=0.0))
    if not np.isfinite(largest) or largest == 0:
        return Q.dtype.type(1)
    _, exponent = np.frexp(largest)
    return Q.dtype.type(np.ldexp(1.0, int(exponent) - 1))


def scaled_squared_euclidean_distances(Q, D, *, D_squared_norms=None):
    """Squared Euclidean distances divided by ``scale ** 2``, and ``scale``.

    ``(distances, scale)`` with ``|q - d|^2 = distances * scale ** 2``. For ordinary data
    ``scale`` is 1 and ``distances`` are those of :func:`squared_euclidean_distances`. When the
    squared norms overflow the dtype or lose their digits (float32 entries above about 1e19 or
    all below about 1e-19), ``Q`` and ``D`` are divided by a power of two that brings their
    largest entry to ``[1, 2)`` (the database a few thousand rows at a time) and ``scale`` is
    that power of two: the distances themselves, ``sqrt(distances) * scale``, stay
    representable and accurate even where their squares are not.

    Parameters
    ----------
    Q : ndarray or torch.Tensor of shape (n_queries, n_features)
    D : ndarray or torch.Tensor of shape (n_database, n_features)
    D_squared_norms : array of shape (n_database,), default=None
        Precomputed :func:`squared_row_norms` of ``D``, to reuse across blocks of queries.

    Returns
    -------
    distances : ndarray or torch.Tensor of shape (n_queries, n_database)
    scale : float
        1 except on the rescaled path (numpy arrays only).

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval._utils.linalg import scaled_squared_euclidean_distances
    >>> Q, D = np.array([[0.0, 0.0]], np.float32), np.array([[3e30, 4e30]], np.float32)
    >>> distances, scale = scaled_squared_euclidean_distances(Q, D)
    >>> print(f"{np.sqrt(distances[0, 0]) * scale:.4g}")
    5e+30
    """
    if D_squared_norms is None:
        D_squared_norms = squared_row_norms(D)
    Q_squared_norms = squared_row_norms(Q)
    rescale = (
        isinstance(Q, np.ndarray)
        and np.issubdtype(Q.dtype, np.floating)
        and _out_of_range(Q_squared_norms, D_squared_norms, Q.dtype)
    )
    if not rescale:
        return _squared_distances(Q, D, Q_squared_norms, D_squared_norms), 1.0
    scale = _power_of_two_scale(Q, D)
    Q = Q / scale
    Q_squared_norms = squared_row_norms(Q)
    distances = np.empty((Q.shape[0], D.shape[0]), dtype=np.result_type(Q, D))
    for start in range(0, D.shape[0], _RESCALED_ROWS):
        part = slice(start, start + _RESCALED_ROWS)
        rows = D[part] / scale
        distances[:, part] = _squared_distances(Q, rows, Q_squared_norms, squared_row_norms(rows))
    return distances, float(scale)


def squared_euclidean_distances(Q, D, *, D_squared_norms=None):
    """``|q - d|^2`` between every row of ``Q`` and every row of ``D``, by one matrix product.

    ``|q|^2 + |d|^2 - 2 <q, d>``: no ``(n_q, n_d, n_features)`` temporary. Rounding can take
    the result slightly below zero: it is clipped at 0 (in place for numpy arrays; out of place
    for torch tensors, so that autograd sees the clip). Numpy data whose squares leave the
    dtype's range is rescaled (:func:`scaled_squared_euclidean_distances`); a squared distance
    that itself does not fit the dtype is then ``inf`` (or 0 below its smallest value), so
    compute the distances themselves with that function when the data may be that large.

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
    distances, scale = scaled_squared_euclidean_distances(Q, D, D_squared_norms=D_squared_norms)
    if scale != 1:
        with np.errstate(over="ignore", under="ignore"):
            distances *= scale
            distances *= scale
    return distances
