"""Unsupervised whitening: :class:`PCAWhitening`."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from skretrieval._utils.linalg import l2_normalize
from skretrieval.whitening._functions import principal_axes, whiten


class PCAWhitening(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """PCA whitening of global descriptors: L2 -> centre -> project and scale -> L2.

    :meth:`fit` L2-normalises the training descriptors, centres them and finds the principal
    axes of their covariance. :meth:`transform` applies the same chain to any descriptors:
    L2-normalise, subtract ``mean_``, project on ``components_``, multiply each coordinate by
    ``(explained_variance_ + eps) ** -power`` (the variances first shrunk towards their mean
    when ``shrinkage > 0``), and L2-normalise the result.

    Parameters
    ----------
    n_components : int or None, default=None
        Number of principal axes kept. ``None`` keeps all the well-defined ones,
        ``min(n_samples - 1, n_features)``: centred training data span at most ``n_samples - 1``
        directions, and axes beyond those would be arbitrary. Asking for more keeps those, with
        a warning naming both numbers (``n_components_`` holds the number kept), so that a
        setting meant for large collections also runs on a small one.
    power : float, default=0.5
        Exponent of the variance scaling, >= 0: ``0.5`` is full whitening (unit variance along
        every axis of the training set), ``0`` plain PCA projection, values in between partial
        whitening.
    eps : float, default=1e-8
        Added to every variance before the power (> 0), so that null or tiny variances of the
        training set (rank-deficient data) do not blow up. L2-normalised descriptors have a
        total variance of at most 1, so the default is negligible against real variances.
    shrinkage : float, default=0.0
        Regularisation for small training sets, in ``[0, 1]``: each variance ``lambda`` is
        replaced by ``(1 - shrinkage) * lambda + shrinkage * mean(lambda)`` (the mean over the
        kept axes) before the power. Estimated from few descriptors, the smallest variances are
        too small, and full whitening amplifies their noisy axes; ``shrinkage=1`` scales every
        axis alike (a plain PCA projection). ``explained_variance_`` stays unshrunk.

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
        Number of axes kept: ``n_components``, capped at ``min(n_samples - 1, n_features)``.
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
        "shrinkage": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(self, n_components=None, power=0.5, eps=1e-8, shrinkage=0.0):
        self.n_components = n_components
        self.power = power
        self.eps = eps
        self.shrinkage = shrinkage

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
            warnings.warn(
                f"n_components={self.n_components} is larger than min(n_samples - 1, "
                f"n_features) = min({n_samples - 1}, {n_features}) = {max_components}, the "
                f"number of directions spanned by the centred training data: keeping "
                f"{max_components} components. Fit on more descriptors to keep more.",
                UserWarning,
                stacklevel=2,
            )
            n_components = max_components
        else:
            n_components = self.n_components
        # Fit in float64 for accuracy; attributes follow the input dtype, as in scikit-learn.
        mean, components, variances, total_variance = principal_axes(
            l2_normalize(X.astype(np.float64)), n_components
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
        whitened = whiten(
            l2_normalize(X),
            self.mean_,
            self.components_,
            self.explained_variance_,
            self.power,
            self.eps,
            self.shrinkage,
        )
        return l2_normalize(whitened)

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
