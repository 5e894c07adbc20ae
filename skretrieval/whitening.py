"""Whitening of global image descriptors.

:class:`PCAWhitening` is the standard post-processing of pooled CNN descriptors (Jegou & Chum
2012; Babenko & Lempitsky 2015; Tolias et al. 2016): L2-normalise, centre, project on the
principal axes, divide each axis by a power of its variance, and L2-normalise again, so that
cosine similarity down-weights the co-occurring (bursty) directions of the training set.
"""

from numbers import Integral, Real

import numpy as np
from scipy import linalg
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.preprocessing import normalize
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["PCAWhitening"]


def _flip_signs(components):
    """Make the largest-magnitude entry of every row positive, so that signs are reproducible."""
    largest = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), largest])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def _principal_axes(X, n_components):
    """Mean, top principal axes and their variances (unbiased, ddof=1) of the rows of ``X``.

    Returns ``mean (d,)``, ``components (n_components, d)`` with orthonormal rows sorted by
    decreasing variance, ``variances (n_components,)`` and the total variance of ``X``.
    """
    n_samples, n_features = X.shape
    mean = X.mean(axis=0)
    centred = X - mean
    if n_samples > n_features:
        # The d x d covariance is cheaper than an SVD of the n x d data when n > d.
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
    return mean, _flip_signs(components), variances, total_variance


def _whiten(X, mean, components, explained_variance, power, eps):
    """Centre, project on ``components`` and scale by ``(explained_variance + eps) ** -power``.

    This is :class:`PCAWhitening`'s transform before the final L2 normalisation; ``X`` is
    expected to be L2-normalised already. Computed in the dtype of ``X``.
    """
    dtype = X.dtype
    scale = (explained_variance.astype(dtype) + dtype.type(eps)) ** dtype.type(-power)
    return ((X - mean.astype(dtype)) @ components.astype(dtype).T) * scale


class PCAWhitening(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """PCA whitening of global descriptors: L2 -> centre -> project and scale -> L2.

    :meth:`fit` L2-normalises the training descriptors, centres them and finds the principal
    axes of their covariance. :meth:`transform` applies the same chain to any descriptors:
    L2-normalise, subtract ``mean_``, project on ``components_``, multiply each coordinate by
    ``(explained_variance_ + eps) ** -power``, and L2-normalise the result.

    Parameters
    ----------
    n_components : int or None, default=None
        Number of principal axes kept. ``None`` keeps all the well-defined ones,
        ``min(n_samples - 1, n_features)``: centred training data span at most ``n_samples - 1``
        directions, and axes beyond those would be arbitrary. Asking for more raises an error.
    power : float, default=0.5
        Exponent of the variance scaling, >= 0: ``0.5`` is full whitening (unit variance along
        every axis of the training set), ``0`` plain PCA projection, values in between partial
        whitening.
    eps : float, default=1e-8
        Added to every variance before the power (> 0), so that null or tiny variances of the
        training set (rank-deficient data) do not blow up. L2-normalised descriptors have a
        total variance of at most 1, so the default is negligible against real variances.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Mean of the L2-normalised training descriptors.
    components_ : ndarray of shape (n_components_, n_features)
        Principal axes, orthonormal rows by decreasing variance. The sign of every axis is fixed
        by making its largest-magnitude entry positive, so results are reproducible.
    explained_variance_ : ndarray of shape (n_components_,)
        Variance of the training set along each axis (eigenvalues of the covariance with
        ``n_samples - 1`` degrees of freedom).
    explained_variance_ratio_ : ndarray of shape (n_components_,)
        Fraction of the total training variance along each axis.
    n_components_ : int
        Number of axes kept.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during :meth:`fit`, only when ``X`` has string feature names.

    See Also
    --------
    sklearn.decomposition.PCA : PCA with optional (non-normalised) whitening.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.whitening import PCAWhitening
    >>> rng = np.random.default_rng(0)
    >>> train, queries = rng.normal(size=(50, 8)), rng.normal(size=(3, 8))
    >>> whitening = PCAWhitening(n_components=4).fit(train)
    >>> whitening.components_.shape
    (4, 8)
    >>> descriptors = whitening.transform(queries)
    >>> descriptors.shape, np.allclose(np.linalg.norm(descriptors, axis=1), 1.0)
    ((3, 4), True)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "power": [Interval(Real, 0, None, closed="left")],
        "eps": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, n_components=None, power=0.5, eps=1e-8):
        self.n_components = n_components
        self.power = power
        self.eps = eps

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the mean and principal axes of the L2-normalised descriptors ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training descriptors, at least 2.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        n_samples, n_features = X.shape
        if n_samples < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 samples to estimate a covariance; got "
                f"{n_samples} sample."
            )
        max_components = min(n_samples - 1, n_features)
        if self.n_components is None:
            n_components = max_components
        elif self.n_components > max_components:
            raise ValueError(
                f"n_components={self.n_components} is larger than min(n_samples - 1, "
                f"n_features) = min({n_samples - 1}, {n_features}) = {max_components}, the "
                "number of directions spanned by the centred training data."
            )
        else:
            n_components = self.n_components
        # Fit in float64 for accuracy; attributes follow the input dtype, as in scikit-learn.
        mean, components, variances, total_variance = _principal_axes(
            normalize(X.astype(np.float64)), n_components
        )
        self.mean_ = mean.astype(X.dtype)
        self.components_ = components.astype(X.dtype)
        self.explained_variance_ = variances.astype(X.dtype)
        ratio = variances / total_variance if total_variance > 0 else np.zeros_like(variances)
        self.explained_variance_ratio_ = ratio.astype(X.dtype)
        self.n_components_ = n_components
        return self

    def transform(self, X):
        """Whiten descriptors with the statistics learned in :meth:`fit`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Descriptors to whiten.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components_)
            Whitened, L2-normalised descriptors (an all-zero result stays zero), float32 for
            float32 input and float64 otherwise.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        whitened = _whiten(
            normalize(X),
            self.mean_,
            self.components_,
            self.explained_variance_,
            self.power,
            self.eps,
        )
        return normalize(whitened, copy=False)

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
