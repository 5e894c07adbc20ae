"""Supervised whitening from matching pairs: :class:`LearnedWhitening`."""

from numbers import Integral, Real

import numpy as np
from scipy import linalg, sparse
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import column_or_1d
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from skretrieval._utils.linalg import l2_normalize
from skretrieval.whitening._functions import flip_signs


def matching_pair_scatter(X, labels):
    """Sum of ``(x_i - x_j)(x_i - x_j)^T`` over all unordered pairs ``i < j`` of equal label.

    No loop over pairs: within a class ``c`` of ``n_c`` samples with mean ``mu_c``, the ordered
    double sum expands as ``sum_ij ((x_i - mu_c) - (x_j - mu_c))(...)^T = 2 n_c S_c``, where
    ``S_c = sum_i (x_i - mu_c)(x_i - mu_c)^T`` is the class scatter (the cross terms vanish
    because the deviations from ``mu_c`` sum to zero). Every unordered pair appears twice and
    ``i = j`` adds nothing, so the pair sum is ``n_c S_c``: one weighted product of the
    deviations from the class means.

    Returns the ``(d, d)`` scatter and the number of matching pairs ``sum_c n_c (n_c - 1) / 2``.
    """
    n_samples = X.shape[0]
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    membership = sparse.csr_array(
        (np.ones(n_samples), (codes, np.arange(n_samples))), shape=(len(counts), n_samples)
    )
    class_means = (membership @ X) / counts[:, None]
    deviations = X - class_means[codes]
    weights = counts[codes].astype(X.dtype)
    scatter = (deviations * weights[:, None]).T @ deviations
    n_pairs = int(np.sum(counts * (counts - 1) // 2))
    return scatter, n_pairs


def _check_pairs(pairs, n_samples):
    """Validate explicit matching pairs: an ``(n_pairs, 2)`` array of distinct sample indices."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise ValueError(
            f"pairs must be an array of shape (n_pairs, 2) with at least one pair; got shape "
            f"{pairs.shape}."
        )
    if pairs.dtype.kind not in "iu":
        raise TypeError(f"pairs must hold integer sample indices; got dtype {pairs.dtype}.")
    out_of_range = (pairs < 0) | (pairs >= n_samples)
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range.any(axis=1))[0])
        raise ValueError(
            f"pairs[{row}] = {pairs[row].tolist()} is not a pair of sample indices in "
            f"[0, {n_samples})."
        )
    self_pairs = pairs[:, 0] == pairs[:, 1]
    if self_pairs.any():
        row = int(np.flatnonzero(self_pairs)[0])
        raise ValueError(
            f"pairs[{row}] = {pairs[row].tolist()} pairs a sample with itself; matching pairs "
            "must join two distinct samples."
        )
    return pairs


def _inverse_square_root(covariance, shrinkage):
    """Symmetric ``C^{-1/2}`` of a shrunk covariance ``(1 - s) C + s (tr C / d) I``.

    Raises ``ValueError`` when the (shrunk) matrix is numerically singular, with the same
    relative tolerance as :func:`numpy.linalg.matrix_rank`.
    """
    n_features = covariance.shape[0]
    average_variance = np.trace(covariance) / n_features
    shrunk = (1.0 - shrinkage) * covariance + shrinkage * average_variance * np.eye(n_features)
    eigenvalues, eigenvectors = linalg.eigh(shrunk, check_finite=False)
    tolerance = max(eigenvalues[-1], 0.0) * n_features * np.finfo(np.float64).eps
    rank = int(np.sum(eigenvalues > tolerance))
    if rank < n_features:
        if average_variance <= 0:
            reason = (
                "all matching pairs are identical after L2 normalisation, so the matching-pair "
                "difference covariance is zero and no shrinkage can fix it"
            )
        else:
            reason = (
                f"the matching-pair difference covariance is singular (rank {rank} < "
                f"n_features = {n_features}); use shrinkage > 0 (e.g. 0.1) to regularise it, "
                "or provide more matching pairs or fewer features"
            )
        raise ValueError(f"LearnedWhitening cannot whiten: {reason}.")
    return (eigenvectors * eigenvalues**-0.5) @ eigenvectors.T


class LearnedWhitening(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Supervised (learned) whitening of global descriptors from matching pairs.

    The linear discriminant projection of Mikolajczyk & Matas (2007) as used for CNN retrieval
    by Radenovic, Tolias & Chum (2016, 2018). Training descriptors with equal labels (the same
    object, landmark or class) form the matching pairs: all pairs of same-label samples;
    alternatively ``fit(X, pairs=...)`` takes explicit pairs of sample indices. :meth:`fit`

    1. L2-normalises the training descriptors and takes their mean ``mean_``;
    2. computes the covariance of the matching-pair differences
       ``C_S = sum_{y_i = y_j, i < j} (x_i - x_j)(x_i - x_j)^T / n_pairs_``
       (from per-class scatters, without a loop over pairs), optionally shrunk towards a
       multiple of the identity;
    3. whitens by ``C_S^{-1/2}`` (symmetric square root), so that matching differences have
       identity covariance;
    4. eigen-decomposes the covariance of the whitened, centred training data and keeps the
       ``n_components`` axes of largest variance as the rotation.

    :meth:`transform` applies ``L2 -> subtract mean_ -> multiply by components_.T -> L2``, with
    ``components_ = rotation_ @ whitening_``.

    Radenovic et al. rotate onto the eigenvectors of the whitened covariance of the
    non-matching differences instead. Without shrinkage the two give the same axes in the same
    order when the pairs come from labels: summed over all pairs, differences give ``n`` times
    the data scatter, and the matching pairs, once whitened, add a multiple of the identity,
    which shifts every eigenvalue equally. With shrinkage the matching part is no longer exactly
    isotropic and they differ slightly; the data covariance is what is used here, also with
    explicit pairs, where "non-matching" would be ill-defined.

    Parameters
    ----------
    n_components : int or None, default=None
        Number of axes kept, at most ``n_features``; ``None`` keeps ``n_features``.
    shrinkage : float, default=0.0
        Regularisation of the matching-pair covariance, in ``[0, 1]``: ``C_S`` is replaced by
        ``(1 - shrinkage) C_S + shrinkage (trace(C_S) / n_features) I`` before its inverse
        square root. Needed when ``C_S`` is singular (fewer independent matching differences
        than features, or features constant within every class), in which case ``fit`` with
        ``shrinkage=0`` raises an error saying so. ``shrinkage=1`` ignores the labels and reduces
        to a PCA rotation without scaling (``PCAWhitening(power=0)``).

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Mean of the L2-normalised training descriptors.
    whitening_ : ndarray of shape (n_features, n_features)
        The symmetric inverse square root of the (shrunk) matching-pair covariance.
    rotation_ : ndarray of shape (n_components_, n_features)
        Orthonormal principal axes of the whitened training data, by decreasing variance; the
        sign of every axis is fixed by making its largest-magnitude entry positive.
    components_ : ndarray of shape (n_components_, n_features)
        The whole projection ``rotation_ @ whitening_`` applied to centred descriptors.
    explained_variance_ : ndarray of shape (n_components_,)
        Variance (``n_samples - 1`` degrees of freedom) of the whitened training data along each
        axis, in units of the matching-difference variance: large values are directions in
        which different labels are far apart compared with matching pairs.
    explained_variance_ratio_ : ndarray of shape (n_components_,)
        Fraction of the total whitened variance along each axis.
    n_pairs_ : int
        Number of matching pairs: ``sum_c n_c (n_c - 1) / 2`` over the label counts ``n_c``, or
        the number of rows of ``pairs``.
    n_components_ : int
        Number of axes kept.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during :meth:`fit`, only when ``X`` has string feature names.

    See Also
    --------
    PCAWhitening : unsupervised whitening.
    sklearn.discriminant_analysis.LinearDiscriminantAnalysis : a related supervised projection.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.whitening import LearnedWhitening
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(size=(5, 8))
    >>> labels = np.repeat(np.arange(5), 10)
    >>> train = centres[labels] + 0.3 * rng.normal(size=(50, 8))
    >>> whitening = LearnedWhitening(n_components=4).fit(train, labels)
    >>> whitening.components_.shape, whitening.n_pairs_
    ((4, 8), 225)
    >>> descriptors = whitening.transform(train[:3])
    >>> descriptors.shape, np.allclose(np.linalg.norm(descriptors, axis=1), 1.0)
    ((3, 4), True)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "shrinkage": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(self, n_components=None, shrinkage=0.0):
        self.n_components = n_components
        self.shrinkage = shrinkage

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, pairs=None):
        """Learn the whitening and rotation from labelled descriptors or explicit pairs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training descriptors.
        y : array-like of shape (n_samples,)
            Labels: all pairs of samples with equal labels are the matching pairs. At least two
            distinct labels, and at least one label shared by two samples. Labels seen once
            still count in the mean and the rotation. Required unless ``pairs`` is given.
        pairs : array-like of shape (n_pairs, 2), default=None
            Explicit matching pairs instead of labels: rows of two distinct sample indices
            (e.g. query and positive pairs mined from a structure-from-motion model, as in
            Radenovic et al.). Repeated rows count repeatedly. Give either ``y`` or ``pairs``.
            In a pipeline, pass it as ``<step name>__pairs``.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        name = type(self).__name__
        if pairs is None:
            if y is None:
                raise ValueError(
                    f"This {name} estimator requires y to be passed, but the target y is None: "
                    "give labels y defining the matching pairs, or explicit pairs=..."
                )
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
            y = column_or_1d(y)
        elif y is not None:
            raise ValueError(f"{name}.fit takes labels y or explicit pairs, not both.")
        else:
            X = validate_data(self, X, dtype=[np.float64, np.float32])
            pairs = _check_pairs(pairs, X.shape[0])
        n_samples, n_features = X.shape
        if n_features < 2:
            # L2 normalisation leaves a single feature nothing but its sign.
            raise ValueError(
                f"{name} needs at least 2 features; got n_features = 1, which L2 normalisation "
                "reduces to a sign."
            )
        if pairs is None:
            classes, counts = np.unique(y, return_counts=True)
            if len(classes) < 2:
                raise ValueError(
                    f"{name} needs at least 2 distinct labels in y (matching and non-matching "
                    f"pairs); got 1 class, label {classes[0]!r}."
                )
            if counts.max() < 2:
                raise ValueError(
                    f"{name} needs matching pairs, i.e. at least one label shared by 2 "
                    f"samples; all {n_samples} labels in y are distinct."
                )
        if self.n_components is not None and self.n_components > n_features:
            raise ValueError(
                f"n_components={self.n_components} is larger than n_features={n_features}."
            )
        n_components = n_features if self.n_components is None else self.n_components

        # Fit in float64 for accuracy; attributes follow the input dtype, as in scikit-learn.
        X_normalised = l2_normalize(X.astype(np.float64))
        if pairs is None:
            scatter, n_pairs = matching_pair_scatter(X_normalised, y)
        else:
            differences = X_normalised[pairs[:, 0]] - X_normalised[pairs[:, 1]]
            scatter, n_pairs = differences.T @ differences, len(pairs)
        whitening = _inverse_square_root(scatter / n_pairs, self.shrinkage)
        mean = X_normalised.mean(axis=0)
        centred = X_normalised - mean
        covariance = centred.T @ centred / (n_samples - 1)
        whitened_covariance = whitening @ covariance @ whitening
        variances, axes = linalg.eigh(
            whitened_covariance,
            subset_by_index=(n_features - n_components, n_features - 1),
            check_finite=False,
        )
        # Round-off can make null eigenvalues slightly negative.
        variances = np.maximum(variances[::-1], 0.0)
        rotation = flip_signs(axes[:, ::-1].T)
        total_variance = np.trace(whitened_covariance)

        self.mean_ = mean.astype(X.dtype)
        self.whitening_ = whitening.astype(X.dtype)
        self.rotation_ = rotation.astype(X.dtype)
        self.components_ = (rotation @ whitening).astype(X.dtype)
        self.explained_variance_ = variances.astype(X.dtype)
        ratio = variances / total_variance if total_variance > 0 else np.zeros_like(variances)
        self.explained_variance_ratio_ = ratio.astype(X.dtype)
        self.n_pairs_ = n_pairs
        self.n_components_ = n_components
        return self

    def transform(self, X):
        """Project descriptors with the whitening learned in :meth:`fit`.

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
        dtype = X.dtype
        projected = (l2_normalize(X) - self.mean_.astype(dtype)) @ self.components_.astype(dtype).T
        return l2_normalize(projected)

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
