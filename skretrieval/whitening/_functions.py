"""The maths of PCA whitening as pure functions: principal axes and the scale of each axis.

Shared by the whitening estimators and by the whitening layer of
:class:`~skretrieval.learning.RetrievalFineTuner`.
"""

import numpy as np
from scipy import linalg


def flip_signs(components):
    """Make the largest-magnitude entry of every row positive, so that signs are reproducible."""
    largest = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), largest])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def principal_axes(X, n_components):
    """Mean, leading principal axes and their variances of the rows of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Data, at least 2 rows.
    n_components : int
        Number of axes, from 1 to ``n_features``. Beyond ``n_samples - 1`` the extra axes are
        directions of zero variance (any orthonormal completion).

    Returns
    -------
    mean : ndarray of shape (n_features,)
        Mean of the rows.
    components : ndarray of shape (n_components, n_features)
        Orthonormal principal axes, by decreasing variance. The sign of every axis is fixed by
        making its largest-magnitude entry positive, so that results are reproducible.
    variances : ndarray of shape (n_components,)
        Variance of the data along each axis: the eigenvalues of the covariance with
        ``n_samples - 1`` degrees of freedom, clipped at 0.
    total_variance : float
        Variance summed over all the axes (the trace of the covariance).

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.whitening import principal_axes
    >>> X = np.array([[0.0, 0.0], [2.0, 1.0], [4.0, 2.0]])
    >>> mean, components, variances, total_variance = principal_axes(X, 1)
    >>> mean, components.round(4), variances.round(6), round(float(total_variance), 6)
    (array([2., 1.]), array([[0.8944, 0.4472]]), array([5.]), 5.0)
    """
    n_samples, n_features = X.shape
    mean = X.mean(axis=0)
    centred = X - mean
    if n_samples > n_features or n_components > n_samples:
        # The d x d covariance: cheaper than an SVD of the n x d data when n > d, and the only
        # one of the two that gives more axes than samples.
        covariance = centred.T @ centred / (n_samples - 1)
        # Only the top n_components eigenpairs, returned in ascending order.
        variances, axes = linalg.eigh(
            covariance,
            subset_by_index=(n_features - n_components, n_features - 1),
            check_finite=False,
        )
        variances, components = variances[::-1], axes[:, ::-1].T
        total_variance = np.trace(covariance)
    else:
        _, singular_values, components = linalg.svd(
            centred, full_matrices=False, check_finite=False
        )
        all_variances = singular_values**2 / (n_samples - 1)
        variances, components = all_variances[:n_components], components[:n_components]
        total_variance = all_variances.sum()
    # Round-off can make null eigenvalues slightly negative.
    variances = np.maximum(variances, 0.0)
    return mean, flip_signs(components), variances, total_variance


def whitening_scale(variances, *, power=0.5, eps=1e-8, shrinkage=0.0):
    """Factor of each principal axis in (partial) whitening: ``(variances + eps) ** -power``.

    With ``shrinkage = s > 0`` the variances are first shrunk towards their mean,
    ``(1 - s) * variances + s * mean(variances)``: estimated from few samples, the smallest
    variances are too small, and whitening would blow their (noisy) axes up.

    Parameters
    ----------
    variances : ndarray of shape (n_components,)
        Variance along each axis, as :func:`principal_axes` returns them.
    power : float, default=0.5
        ``0.5`` is full whitening (unit variance along every axis), ``0`` no scaling.
    eps : float, default=1e-8
        Added to every variance, so that null or tiny variances do not blow up.
    shrinkage : float, default=0.0
        In ``[0, 1]``: 0 uses the variances as they are, 1 gives every axis their mean (all
        factors equal: after L2 normalisation, a plain PCA projection).

    Returns
    -------
    scale : ndarray of shape (n_components,)
        In the dtype of ``variances`` (for float ``power``, ``eps`` and ``shrinkage``).

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.whitening import whitening_scale
    >>> whitening_scale(np.array([4.0, 0.25]), eps=0.0)
    array([0.5, 2. ])
    >>> whitening_scale(np.array([4.0, 0.25]), eps=0.0, shrinkage=0.5)  # 3.0625 and 1.1875
    array([0.57142857, 0.91766294])
    """
    if not 0 <= shrinkage <= 1:
        raise ValueError(f"shrinkage must be in [0, 1]; got {shrinkage!r}.")
    if shrinkage > 0:
        variances = (1 - shrinkage) * variances + shrinkage * variances.mean()
    return (variances + eps) ** -power


def whiten(X, mean, components, explained_variance, power, eps, shrinkage=0.0):
    """Centre, project on ``components`` and scale by :func:`whitening_scale`.

    This is :class:`PCAWhitening`'s transform before the final L2 normalisation; ``X`` is
    expected to be L2-normalised already. Computed in the dtype of ``X``.
    """
    dtype = X.dtype
    scale = whitening_scale(
        explained_variance.astype(dtype),
        power=dtype.type(power),
        eps=dtype.type(eps),
        shrinkage=dtype.type(shrinkage),
    )
    return ((X - mean.astype(dtype)) @ components.astype(dtype).T) * scale
