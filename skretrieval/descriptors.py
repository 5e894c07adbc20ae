"""Images as distributions: statistical models of the local deep features of each image.

Each image is described by a probability distribution of its local CNN features (the
``C``-vectors at the spatial positions of its feature map) instead of one pooled vector
(Qian, Vazquez and Sengupta [1]_):

- :class:`LocalPCA` reduces the local features to ``d`` dimensions with one PCA learnt on a
  bounded random sample of them, giving *LocalFeatures*: a list of ``(h_i * w_i, d)`` arrays.
- :class:`SparseCovariance` turns each image's local features into one SPD covariance matrix
  (empirical, Ledoit-Wolf, OAS or sparse-precision graphical lasso), optionally embedding the
  whole Gaussian ``N(m, S)`` as a ``(d + 1) x (d + 1)`` SPD matrix.
- :class:`GMMDescriptor` fits a Gaussian mixture per image and returns them in a
  :class:`GaussianMixtures` container, which indexes like an array so that scikit-learn's
  cross-validation splitting keeps it intact.

These transformers take ragged lists (images differ in size), so they declare
``input_tags.two_d_array = False`` and are not run through ``check_estimator``.

References
----------
.. [1] Y. Qian, E. Vazquez and B. Sengupta, "Differential geometric retrieval of deep
   features", ICDM Workshops 2017.
.. [2] M. Lovric, M. Min-Oo and E. A. Ruh, "Multivariate normal distributions parametrized as
   a Riemannian symmetric space", J. Multivariate Analysis 74, 2000 (Gaussian-to-SPD embedding).
"""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.covariance import GraphicalLasso, empirical_covariance, ledoit_wolf, oas
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted

from ._validation import check_feature_maps

__all__ = [
    "GMMDescriptor",
    "GaussianMixtures",
    "LocalPCA",
    "RegularizationWarning",
    "SparseCovariance",
    "gaussian_to_spd",
    "local_features",
]


class RegularizationWarning(UserWarning):
    """An image's covariance estimate was singular and was shrunk towards a scaled identity."""


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


def local_features(fmap):
    """Local features of one feature map: one ``C``-vector per spatial position.

    Parameters
    ----------
    fmap : ndarray of shape (C, h, w)
        Feature map of one image.

    Returns
    -------
    features : ndarray of shape (h * w, C)
        Row ``y * w + x`` is the feature at position ``(y, x)`` (row-major order).

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import local_features
    >>> local_features(np.arange(12.0).reshape(3, 2, 2))[1]  # position (0, 1)
    array([1., 5., 9.])
    """
    fmap = np.asarray(fmap)
    if fmap.ndim != 3:
        raise ValueError(f"fmap must have shape (C, h, w); got an array of shape {fmap.shape}.")
    return fmap.reshape(fmap.shape[0], -1).T


def _normalize_local(features, normalize):
    """Normalise each row of ``features`` (``None``, ``"l2"`` or ``"power"``)."""
    if normalize is None:
        return features
    if normalize == "power":
        features = np.sign(features) * np.sqrt(np.abs(features))
    norms = np.sqrt(np.sum(features * features, axis=1, keepdims=True))
    # All-zero features (e.g. dead ReLU positions) stay zero instead of becoming NaN.
    return np.divide(features, norms, out=np.zeros_like(features), where=norms > 0)


def _proportional_quotas(counts, total):
    """Split ``total`` draws over groups of sizes ``counts`` proportionally (largest remainder).

    Requires ``total <= counts.sum()``; every quota is then at most its group size.
    """
    counts = np.asarray(counts, dtype=np.int64)
    exact = total * counts / counts.sum()
    quotas = np.floor(exact).astype(np.int64)
    remainder = int(total - quotas.sum())
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[:remainder]] += 1
    return quotas


def gaussian_to_spd(means, covariances):
    """Embed Gaussians ``N(m, S)`` as SPD matrices ``[[S + m m^T, m], [m^T, 1]]`` [2]_.

    The embedding is a bijection between ``d``-variate Gaussians and ``(d + 1) x (d + 1)``
    SPD matrices with last diagonal entry 1; its Schur complement is ``S``, so it is SPD
    exactly when ``S`` is.

    Parameters
    ----------
    means : ndarray of shape (..., d)
        Means.
    covariances : ndarray of shape (..., d, d)
        SPD covariance matrices.

    Returns
    -------
    embedded : ndarray of shape (..., d + 1, d + 1)

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import gaussian_to_spd
    >>> gaussian_to_spd(np.array([2.0]), np.array([[3.0]]))
    array([[7., 2.],
           [2., 1.]])
    """
    means = np.asarray(means, dtype=np.float64)
    covariances = np.asarray(covariances, dtype=np.float64)
    d = means.shape[-1]
    if covariances.shape[-2:] != (d, d) or covariances.shape[:-2] != means.shape[:-1]:
        raise ValueError(
            f"covariances of shape {covariances.shape} do not match means of shape "
            f"{means.shape}; expected {means.shape[:-1] + (d, d)}."
        )
    embedded = np.empty(means.shape[:-1] + (d + 1, d + 1))
    embedded[..., :d, :d] = covariances + means[..., :, None] * means[..., None, :]
    embedded[..., :d, d] = means
    embedded[..., d, :d] = means
    embedded[..., d, d] = 1.0
    return embedded


def _check_local_features(X, name="X"):
    """Validate LocalFeatures: a list of ``(n_i, d)`` arrays or an ``(n, m, d)`` array.

    Returns a list of float64 2-D arrays (views where possible).
    """
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim != 3:
            raise ValueError(
                f"{name} must be a list of (n_i, d) local-feature arrays or an (n, m, d) array; "
                f"got an array of shape {X.shape}. For a single image pass [features]."
            )
        X = list(X)
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        raise TypeError(
            f"{name} must be a list of (n_i, d) local-feature arrays; got {type(X).__name__}."
        )
    if len(X) == 0:
        raise ValueError(f"{name} is empty: at least one image is required.")
    checked = []
    n_features = None
    for i, features in enumerate(X):
        features = np.asarray(features)
        if features.ndim != 2:
            raise ValueError(
                f"{name}[{i}] must be an (n_i, d) array of local features; got an array of "
                f"shape {features.shape}."
            )
        if not np.issubdtype(features.dtype, np.number) or np.iscomplexobj(features):
            raise ValueError(f"{name}[{i}] has non-real dtype {features.dtype}.")
        features = features.astype(np.float64, copy=False)
        if 0 in features.shape:
            raise ValueError(f"{name}[{i}] is empty: shape {features.shape}.")
        if not np.isfinite(features).all():
            raise ValueError(f"{name}[{i}] contains NaN or infinity.")
        if n_features is None:
            n_features = features.shape[1]
        elif features.shape[1] != n_features:
            raise ValueError(
                f"{name}[{i}] has {features.shape[1]} dimensions but {name}[0] has "
                f"{n_features}; all images must have local features of the same dimension."
            )
        checked.append(features)
    return checked


def _check_n_features(estimator, n_features, *, reset):
    """Record (``reset``) or check ``n_features_in_`` like scikit-learn's ``validate_data``."""
    if reset:
        estimator.n_features_in_ = n_features
    elif hasattr(estimator, "n_features_in_") and n_features != estimator.n_features_in_:
        raise ValueError(
            f"X has local features of dimension {n_features}, but "
            f"{type(estimator).__name__} was fitted with dimension {estimator.n_features_in_}."
        )


# --------------------------------------------------------------------------------------------
# LocalPCA
# --------------------------------------------------------------------------------------------


# auto_wrap_output_keys=None: outputs are lists / 3-D arrays / containers, which set_output's
# pandas or polars containers cannot hold.
class LocalPCA(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """PCA of the local features of CNN feature maps, learnt on a bounded random sample.

    Every spatial position of a ``(C, h, w)`` feature map gives one local feature, a
    ``C``-vector. ``fit`` draws at most ``max_samples`` local features over all images, each
    image contributing in proportion to its number of positions (largest-remainder rounding,
    positions drawn without replacement), optionally normalises them, and fits a
    :class:`~sklearn.decomposition.PCA`. ``transform`` normalises and projects every position
    of every map.

    Parameters
    ----------
    n_components : int or None, default=64
        Dimension ``d`` of the projected local features. ``None`` keeps
        ``min(C, n_samples)``. More components than channels or than sampled local features
        raise a ``ValueError``.
    max_samples : int or None, default=100_000
        Largest number of local features used to fit the PCA; ``None`` uses all of them.
    normalize : {"l2", "power"} or None, default="l2"
        Normalisation of each local feature before the PCA (in ``fit`` and ``transform``):

        - ``"l2"``: divide by its Euclidean norm;
        - ``"power"``: signed square root ``sign(x) * sqrt(|x|)`` of every entry, then L2
          (power normalisation, which damps bursty activations);
        - ``None``: raw features.

        All-zero features stay zero.
    whiten : bool, default=False
        Scale the projected features to unit variance (see :class:`~sklearn.decomposition.PCA`).
    random_state : int, RandomState instance or None, default=None
        Controls the sampling of local features and the randomised PCA solver.

    Attributes
    ----------
    pca_ : PCA
        The fitted PCA.
    components_ : ndarray of shape (n_components_, n_features_in_)
        Principal axes.
    mean_ : ndarray of shape (n_features_in_,)
        Mean of the (normalised) sampled local features.
    explained_variance_ratio_ : ndarray of shape (n_components_,)
        Fraction of variance explained by each component.
    n_components_ : int
        Number of components kept.
    n_samples_ : int
        Number of local features the PCA was fitted on (at most ``max_samples``).
    n_samples_per_image_ : ndarray of shape (n_images,)
        How many local features were drawn from each training image.
    n_features_in_ : int
        Number of channels ``C`` of the feature maps.

    See Also
    --------
    SparseCovariance : One SPD covariance matrix per image from its local features.
    GMMDescriptor : One Gaussian mixture per image from its local features.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import LocalPCA
    >>> rng = np.random.default_rng(0)
    >>> maps = [rng.random((16, 6, 5)), rng.random((16, 4, 7))]
    >>> local = LocalPCA(n_components=8, random_state=0).fit_transform(maps)
    >>> [features.shape for features in local]
    [(30, 8), (28, 8)]
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "max_samples": [Interval(Integral, 1, None, closed="left"), None],
        "normalize": [StrOptions({"l2", "power"}), None],
        "whiten": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components=64,
        max_samples=100_000,
        normalize="l2",
        whiten=False,
        random_state=None,
    ):
        self.n_components = n_components
        self.max_samples = max_samples
        self.normalize = normalize
        self.whiten = whiten
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the PCA on a random sample of the local features of ``X``.

        Parameters
        ----------
        X : list of ndarray of shape (C, h_i, w_i), or ndarray of shape (n, C, h, w)
            Feature maps, e.g. the output of
            :class:`~skretrieval.extraction.CNNFeatureExtractor`.
        y : None
            Ignored.

        Returns
        -------
        self : LocalPCA
            Fitted estimator.
        """
        maps = check_feature_maps(X)
        n_channels = maps[0].shape[0]
        counts = np.array([fmap.shape[1] * fmap.shape[2] for fmap in maps], dtype=np.int64)
        total = int(counts.sum())
        rng = check_random_state(self.random_state)
        if self.max_samples is None or self.max_samples >= total:
            quotas = counts
            sample = [local_features(fmap) for fmap in maps]
        else:
            quotas = _proportional_quotas(counts, self.max_samples)
            sample = []
            for fmap, count, quota in zip(maps, counts, quotas, strict=True):
                if quota == 0:
                    continue
                positions = np.sort(rng.choice(count, size=quota, replace=False))
                sample.append(local_features(fmap)[positions])
        sample = _normalize_local(np.concatenate(sample, axis=0), self.normalize)
        n_samples = sample.shape[0]

        n_components = self.n_components
        if n_components is None:
            n_components = min(n_channels, n_samples)
        if n_components > n_channels:
            raise ValueError(
                f"n_components={n_components} exceeds the number of channels of the feature "
                f"maps ({n_channels})."
            )
        if n_components > n_samples:
            raise ValueError(
                f"n_components={n_components} exceeds the number of sampled local features "
                f"({n_samples}); lower n_components or provide more feature maps."
            )
        self.pca_ = PCA(n_components=n_components, whiten=self.whiten, random_state=rng).fit(sample)
        self.components_ = self.pca_.components_
        self.mean_ = self.pca_.mean_
        self.explained_variance_ratio_ = self.pca_.explained_variance_ratio_
        self.n_components_ = self.pca_.n_components_
        self.n_samples_ = n_samples
        self.n_samples_per_image_ = np.asarray(quotas, dtype=np.int64)
        self.n_features_in_ = n_channels
        return self

    def transform(self, X):
        """Project every local feature of every map.

        Parameters
        ----------
        X : list of ndarray of shape (C, h_i, w_i), or ndarray of shape (n, C, h, w)
            Feature maps with the channel count seen in ``fit``.

        Returns
        -------
        local_features : list of ndarray of shape (h_i * w_i, n_components_)
            Projected local features of each image, positions in row-major order; same
            floating dtype as the maps.
        """
        check_is_fitted(self)
        maps = check_feature_maps(X)
        n_channels = maps[0].shape[0]
        if n_channels != self.n_features_in_:
            raise ValueError(
                f"X has feature maps with {n_channels} channels, but LocalPCA was fitted with "
                f"{self.n_features_in_}."
            )
        return [
            self.pca_.transform(_normalize_local(local_features(fmap), self.normalize))
            for fmap in maps
        ]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Input is a ragged list of (C, h, w) feature maps; output a list of 2-D arrays.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


# --------------------------------------------------------------------------------------------
# SparseCovariance
# --------------------------------------------------------------------------------------------


def _estimate_covariance(features, estimator, alpha, assume_centered, max_iter, tol):
    """Covariance of one image's local features; returns ``(covariance, error, converged)``.

    Runs in joblib workers, whose warnings would be lost: convergence is reported back and
    warned about by the caller instead.
    """
    if estimator == "empirical":
        return empirical_covariance(features, assume_centered=assume_centered), None, True
    if estimator == "ledoit_wolf":
        return ledoit_wolf(features, assume_centered=assume_centered)[0], None, True
    if estimator == "oas":
        return oas(features, assume_centered=assume_centered)[0], None, True
    model = GraphicalLasso(alpha=alpha, assume_centered=assume_centered, max_iter=max_iter, tol=tol)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            model.fit(features)
        except FloatingPointError as error:
            return None, str(error), False
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model.covariance_, None, converged


def _shrink_to_identity(covariance, reg):
    """``(1 - reg) S + reg * (tr S / d) I``: smallest eigenvalue at least ``reg * tr S / d``."""
    d = covariance.shape[0]
    scale = np.trace(covariance) / d
    shrunk = (1.0 - reg) * covariance
    shrunk[np.diag_indices(d)] += reg * scale
    return shrunk


class SparseCovariance(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """One SPD covariance matrix per image from its local features.

    Each image is modelled by a Gaussian of its local features (e.g. the output of
    :class:`LocalPCA`) and described by its covariance [1]_, estimated with one of
    scikit-learn's estimators. The output is guaranteed SPD: an estimate whose smallest
    eigenvalue is at most ``reg * tr(S) / d`` (always the case for ``"empirical"`` when an
    image has no more local features than dimensions) is shrunk towards a scaled identity,
    ``(1 - reg) S + reg * tr(S) / d * I``, and a :class:`RegularizationWarning` names those
    images with their numbers of local features. Ledoit-Wolf, OAS and the graphical lasso
    are themselves well conditioned for few samples, so they rarely need it.

    The transformer is stateless: ``fit`` only validates ``X`` and records
    ``n_features_in_``, and ``transform`` works without it.

    Parameters
    ----------
    estimator : {"ledoit_wolf", "oas", "empirical", "graphical_lasso"}, default="ledoit_wolf"
        Covariance estimator applied to each image:
        :func:`~sklearn.covariance.ledoit_wolf`, :func:`~sklearn.covariance.oas`,
        :func:`~sklearn.covariance.empirical_covariance` (maximum likelihood), or
        :class:`~sklearn.covariance.GraphicalLasso` (sparse precision matrix, penalty
        ``alpha``). A graphical lasso that does not converge in ``max_iter`` iterations keeps
        its last (SPD) iterate and a ``ConvergenceWarning`` names the images; one whose
        system is too ill-conditioned to solve raises a ``ValueError`` naming the image
        (raise ``alpha`` or use ``"ledoit_wolf"``).
    alpha : float, default=0.01
        L1 penalty of the graphical lasso, > 0. Ignored by the other estimators.
    assume_centered : bool, default=False
        Treat the local features as zero-mean (second moments instead of covariances).
    with_mean : bool, default=False
        Describe each image by its whole Gaussian ``N(m, S)``, embedded as the
        ``(d + 1) x (d + 1)`` SPD matrix ``[[S + m m^T, m], [m^T, 1]]`` [2]_ (see
        :func:`gaussian_to_spd`). Incompatible with ``assume_centered=True``.
    reg : float, default=1e-6
        Relative shrinkage towards ``tr(S) / d * I`` applied to singular or ill-conditioned
        estimates, in (0, 1).
    max_iter : int, default=100
        Maximum number of iterations of the graphical lasso.
    tol : float, default=1e-4
        Convergence tolerance of the graphical lasso.
    n_jobs : int or None, default=None
        Number of jobs estimating images in parallel (joblib); ``None`` means 1 unless in a
        ``joblib.parallel_backend`` context, -1 means all processors.

    Attributes
    ----------
    n_features_in_ : int
        Dimension ``d`` of the local features seen in ``fit``.

    Notes
    -----
    A covariance needs two local features per image (unless ``assume_centered=True``), and
    local features that are all equal have no scale to regularise towards: both raise a
    ``ValueError`` naming the image rather than produce an arbitrary matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import SparseCovariance
    >>> rng = np.random.default_rng(0)
    >>> local = [rng.normal(size=(30, 4)), rng.normal(size=(50, 4))]
    >>> covariances = SparseCovariance().fit_transform(local)
    >>> covariances.shape
    (2, 4, 4)
    >>> bool(np.all(np.linalg.eigvalsh(covariances) > 0))
    True
    >>> SparseCovariance(with_mean=True).fit_transform(local).shape
    (2, 5, 5)
    """

    _parameter_constraints: dict = {
        "estimator": [StrOptions({"ledoit_wolf", "oas", "empirical", "graphical_lasso"})],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "assume_centered": ["boolean"],
        "with_mean": ["boolean"],
        "reg": [Interval(Real, 0, 1, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        estimator="ledoit_wolf",
        alpha=0.01,
        assume_centered=False,
        with_mean=False,
        reg=1e-6,
        max_iter=100,
        tol=1e-4,
        n_jobs=None,
    ):
        self.estimator = estimator
        self.alpha = alpha
        self.assume_centered = assume_centered
        self.with_mean = with_mean
        self.reg = reg
        self.max_iter = max_iter
        self.tol = tol
        self.n_jobs = n_jobs

    def _check_params(self):
        if self.with_mean and self.assume_centered:
            raise ValueError(
                "with_mean=True embeds each image's mean, which assume_centered=True fixes at "
                "zero; use one or the other."
            )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate ``X`` and record the dimension of its local features.

        Parameters
        ----------
        X : list of ndarray of shape (n_i, d), or ndarray of shape (n, m, d)
            Local features of each image, e.g. the output of :class:`LocalPCA`.
        y : None
            Ignored.

        Returns
        -------
        self : SparseCovariance
            Fitted estimator.
        """
        self._check_params()
        features = _check_local_features(X)
        _check_n_features(self, features[0].shape[1], reset=True)
        return self

    def transform(self, X):
        """Estimate one SPD covariance (or Gaussian embedding) per image.

        Parameters
        ----------
        X : list of ndarray of shape (n_i, d), or ndarray of shape (n, m, d)
            Local features of each image.

        Returns
        -------
        covariances : ndarray of shape (n, d, d), or (n, d + 1, d + 1) with ``with_mean``
            SPD matrices, float64.
        """
        self._validate_params()
        self._check_params()
        features = _check_local_features(X)
        d = features[0].shape[1]
        _check_n_features(self, d, reset=False)
        min_count = 1 if self.assume_centered else 2
        for i, image in enumerate(features):
            if image.shape[0] < min_count:
                raise ValueError(
                    f"X[{i}] has a single local feature: its covariance is undefined (set "
                    "assume_centered=True to use second moments, or drop the image)."
                )
        results = Parallel(n_jobs=self.n_jobs)(
            delayed(_estimate_covariance)(
                image, self.estimator, self.alpha, self.assume_centered, self.max_iter, self.tol
            )
            for image in features
        )
        covariances = np.empty((len(features), d, d))
        not_converged = []
        for i, (covariance, error, converged) in enumerate(results):
            if error is not None:
                raise ValueError(
                    f"The graphical lasso failed on X[{i}] ({features[i].shape[0]} local "
                    f"features of dimension {d}): {error} Increase alpha or use "
                    "estimator='ledoit_wolf'."
                )
            if not converged:
                not_converged.append(i)
            covariances[i] = covariance
        covariances = (covariances + np.swapaxes(covariances, 1, 2)) / 2.0
        scales = np.trace(covariances, axis1=1, axis2=2) / d
        zero_variance = np.flatnonzero(~(scales > 0))
        if zero_variance.size:
            i = zero_variance[0]
            raise ValueError(
                f"X[{i}] has {features[i].shape[0]} local features that are all equal: its "
                "covariance is zero and cannot be regularised to an SPD matrix."
            )
        regularised = np.flatnonzero(np.linalg.eigvalsh(covariances)[:, 0] <= self.reg * scales)
        for i in regularised:
            covariances[i] = _shrink_to_identity(covariances[i], self.reg)
        if not_converged:
            warnings.warn(
                f"The graphical lasso did not converge in max_iter={self.max_iter} iterations "
                f"for images {not_converged}; their last iterates are used. Increase max_iter "
                "or alpha.",
                ConvergenceWarning,
                stacklevel=2,
            )
        if regularised.size:
            details = ", ".join(
                f"X[{i}] ({features[i].shape[0]} local features)" for i in regularised
            )
            warnings.warn(
                f"Singular {self.estimator} covariance estimates for {details} in dimension "
                f"{d} were shrunk towards a scaled identity with reg={self.reg}.",
                RegularizationWarning,
                stacklevel=2,
            )
        if self.with_mean:
            means = np.stack([image.mean(axis=0) for image in features])
            return gaussian_to_spd(means, covariances)
        return covariances

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Input is a ragged list of (n_i, d) local-feature arrays.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


# --------------------------------------------------------------------------------------------
# GaussianMixtures container and GMMDescriptor
# --------------------------------------------------------------------------------------------


class GaussianMixtures:
    """A collection of ``n`` Gaussian mixtures with ``K`` components in dimension ``d``.

    One mixture per image, as returned by :class:`GMMDescriptor`. The container behaves like
    a one-dimensional array of mixtures: ``len(gm)`` and ``gm.shape == (n,)`` give the number
    of images, and ``gm[key]`` accepts slices, integer arrays and boolean masks (and the
    ``(key, ...)`` form), returning a ``GaussianMixtures``, so scikit-learn's cross-validation
    splitting (``train_test_split``, ``cross_val_score``, ``_safe_indexing``) keeps it intact.
    Unlike numpy, an integer key keeps the axis: ``gm[i]`` is the one-image container
    ``gm[[i]]``, directly usable as a query. As in numpy, slices share memory with the
    original and integer arrays and masks copy.

    Parameters
    ----------
    weights : array-like of shape (n, K)
        Mixture weights: non-negative, each row summing to 1 (within 1e-6).
    means : array-like of shape (n, K, d)
        Component means.
    covariances : array-like of shape (n, K, d, d) or (n, K, d)
        Component covariances: SPD matrices for ``"full"``, positive variances for ``"diag"``.
    covariance_type : {"full", "diag"}, default="full"
        Layout of ``covariances``.

    Attributes
    ----------
    weights, means, covariances : ndarray
        The parameters, float64.
    covariance_type : str
        ``"full"`` or ``"diag"``.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import GaussianMixtures
    >>> gm = GaussianMixtures(
    ...     weights=np.full((3, 2), 0.5),
    ...     means=np.zeros((3, 2, 4)),
    ...     covariances=np.ones((3, 2, 4)),
    ...     covariance_type="diag",
    ... )
    >>> gm
    GaussianMixtures(n_mixtures=3, n_components=2, n_features=4, covariance_type='diag')
    >>> len(gm[np.array([True, False, True])]), gm[1].shape
    (2, (1,))
    """

    def __init__(self, weights, means, covariances, covariance_type="full"):
        if covariance_type not in ("full", "diag"):
            raise ValueError(f"covariance_type must be 'full' or 'diag'; got {covariance_type!r}.")
        weights = np.asarray(weights, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        covariances = np.asarray(covariances, dtype=np.float64)
        if weights.ndim != 2:
            raise ValueError(f"weights must have shape (n, K); got {weights.shape}.")
        if means.ndim != 3 or means.shape[:2] != weights.shape:
            raise ValueError(
                f"means must have shape (n, K, d) = {weights.shape + ('d',)}; got {means.shape}."
            )
        n, n_components, d = means.shape
        expected = (n, n_components, d, d) if covariance_type == "full" else (n, n_components, d)
        if covariances.shape != expected:
            raise ValueError(
                f"covariances of a {covariance_type!r} mixture must have shape {expected}; got "
                f"{covariances.shape}."
            )
        for name, values in (("weights", weights), ("means", means), ("covariances", covariances)):
            if not np.isfinite(values).all():
                raise ValueError(f"{name} contains NaN or infinity.")
        if np.any(weights < 0) or not np.allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-6):
            raise ValueError("weights must be non-negative and each row must sum to 1.")
        if covariance_type == "diag":
            if np.any(covariances <= 0):
                raise ValueError("diagonal covariances must be positive.")
        elif covariances.size:
            if not np.allclose(
                covariances,
                np.swapaxes(covariances, -1, -2),
                rtol=1e-8,
                atol=1e-10 * np.abs(covariances).max(),
            ):
                raise ValueError("full covariances must be symmetric.")
            if np.linalg.eigvalsh(covariances)[..., 0].min() <= 0:
                raise ValueError("full covariances must be positive definite.")
        self.weights = weights
        self.means = means
        self.covariances = covariances
        self.covariance_type = covariance_type

    @classmethod
    def _from_valid(cls, weights, means, covariances, covariance_type):
        """Build from parameters known to be valid (sub-selections), skipping the checks."""
        mixtures = cls.__new__(cls)
        mixtures.weights = weights
        mixtures.means = means
        mixtures.covariances = covariances
        mixtures.covariance_type = covariance_type
        return mixtures

    @property
    def shape(self):
        """``(n,)``: the container is a one-dimensional array of mixtures."""
        return (self.weights.shape[0],)

    @property
    def ndim(self):
        """1, as ``len(self.shape)``."""
        return 1

    @property
    def n_components(self):
        """Number ``K`` of components per mixture."""
        return self.weights.shape[1]

    @property
    def n_features(self):
        """Dimension ``d`` of the Gaussians."""
        return self.means.shape[2]

    def __len__(self):
        return self.weights.shape[0]

    def __getitem__(self, key):
        # scikit-learn's _safe_indexing indexes objects with a shape as X[key, ...].
        if isinstance(key, tuple):
            if len(key) == 2 and key[1] is Ellipsis:
                key = key[0]
            elif len(key) == 1:
                key = key[0]
            else:
                raise IndexError(
                    "GaussianMixtures is one-dimensional: index it with one key (an int, a "
                    "slice, an integer array or a boolean mask)."
                )
        n = len(self)
        if isinstance(key, (Integral, np.integer)) and not isinstance(key, (bool, np.bool_)):
            if not -n <= key < n:
                raise IndexError(f"index {key} is out of bounds for {n} mixtures.")
            key = slice(int(key) % n, int(key) % n + 1)
        elif not isinstance(key, slice):
            key = np.asarray(key)
            if key.dtype == bool:
                if key.shape != (n,):
                    raise IndexError(
                        f"boolean mask of shape {key.shape} does not match {n} mixtures."
                    )
            elif key.size == 0:
                key = key.astype(np.intp)
            elif key.ndim != 1 or not np.issubdtype(key.dtype, np.integer):
                raise IndexError(
                    "GaussianMixtures accepts an int, a slice, a 1-D integer array or a boolean "
                    f"mask; got an array of dtype {key.dtype} and shape {key.shape}."
                )
        return self._from_valid(
            self.weights[key], self.means[key], self.covariances[key], self.covariance_type
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def full_covariances(self):
        """Covariances as ``(n, K, d, d)`` matrices (diagonal ones expanded)."""
        if self.covariance_type == "full":
            return self.covariances
        full = np.zeros(self.covariances.shape + (self.n_features,))
        index = np.arange(self.n_features)
        full[..., index, index] = self.covariances
        return full

    def __repr__(self):
        return (
            f"GaussianMixtures(n_mixtures={len(self)}, n_components={self.n_components}, "
            f"n_features={self.n_features}, covariance_type={self.covariance_type!r})"
        )


def _fit_mixture(index, features, n_components, covariance_type, reg_covar, max_iter, tol, seed):
    """Fit the GaussianMixture of image ``index``.

    Returns ``(weights, means, covariances, converged)``.
    """
    model = GaussianMixture(
        n_components=n_components,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
    )
    with warnings.catch_warnings():
        # Reported once by the caller: warnings raised in joblib workers would be lost.
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            model.fit(features)
        except ValueError as error:
            raise ValueError(
                f"Fitting the Gaussian mixture of X[{index}] ({features.shape[0]} local "
                f"features of dimension {features.shape[1]}) failed: {error}"
            ) from error
    return model.weights_, model.means_, model.covariances_, model.converged_


class GMMDescriptor(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """One Gaussian mixture per image, fitted to its local features.

    Each image's local features (e.g. the output of :class:`LocalPCA`) are modelled by a
    :class:`~sklearn.mixture.GaussianMixture` with ``n_components`` components, fitted by EM
    independently per image (in parallel with ``n_jobs``). The mixtures are returned in a
    :class:`GaussianMixtures` container. Images whose EM does not converge keep their last
    estimate and are named in one ``ConvergenceWarning``.

    The transformer is stateless: ``fit`` only validates ``X`` and records
    ``n_features_in_``, and ``transform`` works without it.

    Parameters
    ----------
    n_components : int, default=4
        Number ``K`` of components per image. An image with fewer local features raises a
        ``ValueError`` naming it.
    covariance_type : {"full", "diag"}, default="full"
        Full covariance matrices or diagonal (per-dimension) variances.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the covariance diagonals (keeps them positive).
    max_iter : int, default=100
        Maximum number of EM iterations.
    tol : float, default=1e-3
        EM convergence threshold on the lower bound.
    random_state : int, RandomState instance or None, default=None
        Seed of every image's ``GaussianMixture`` initialisation: each image is fitted with
        ``GaussianMixture(random_state=random_state)`` for an int. A RandomState instance is
        first reduced to one integer seed, so the result never depends on ``n_jobs``.
    n_jobs : int or None, default=None
        Number of images fitted in parallel (joblib); ``None`` means 1 unless in a
        ``joblib.parallel_backend`` context, -1 means all processors.

    Attributes
    ----------
    n_features_in_ : int
        Dimension ``d`` of the local features seen in ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import GMMDescriptor
    >>> rng = np.random.default_rng(0)
    >>> local = [rng.normal(size=(40, 3)), rng.normal(size=(30, 3))]
    >>> mixtures = GMMDescriptor(n_components=2, random_state=0).fit_transform(local)
    >>> mixtures
    GaussianMixtures(n_mixtures=2, n_components=2, n_features=3, covariance_type='full')
    >>> mixtures.covariances.shape
    (2, 2, 3, 3)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "diag"})],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        n_components=4,
        covariance_type="full",
        reg_covar=1e-6,
        max_iter=100,
        tol=1e-3,
        random_state=None,
        n_jobs=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.n_jobs = n_jobs

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate ``X`` and record the dimension of its local features.

        Parameters
        ----------
        X : list of ndarray of shape (n_i, d), or ndarray of shape (n, m, d)
            Local features of each image, e.g. the output of :class:`LocalPCA`.
        y : None
            Ignored.

        Returns
        -------
        self : GMMDescriptor
            Fitted estimator.
        """
        features = _check_local_features(X)
        _check_n_features(self, features[0].shape[1], reset=True)
        return self

    def transform(self, X):
        """Fit one Gaussian mixture per image.

        Parameters
        ----------
        X : list of ndarray of shape (n_i, d), or ndarray of shape (n, m, d)
            Local features of each image.

        Returns
        -------
        mixtures : GaussianMixtures
            ``n`` mixtures of ``n_components`` components in dimension ``d``.
        """
        self._validate_params()
        features = _check_local_features(X)
        _check_n_features(self, features[0].shape[1], reset=False)
        for i, image in enumerate(features):
            if image.shape[0] < self.n_components:
                raise ValueError(
                    f"X[{i}] has {image.shape[0]} local features, fewer than "
                    f"n_components={self.n_components}: a mixture needs at least one local "
                    "feature per component."
                )
        seed = self.random_state
        if isinstance(seed, np.random.RandomState):
            seed = int(seed.randint(np.iinfo(np.int32).max))
        results = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_mixture)(
                i,
                image,
                self.n_components,
                self.covariance_type,
                self.reg_covar,
                self.max_iter,
                self.tol,
                seed,
            )
            for i, image in enumerate(features)
        )
        weights, means, covariances, converged = zip(*results, strict=True)
        not_converged = [i for i, flag in enumerate(converged) if not flag]
        if not_converged:
            warnings.warn(
                f"EM did not converge in max_iter={self.max_iter} iterations for images "
                f"{not_converged}; their last estimates are used. Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return GaussianMixtures(
            np.stack(weights), np.stack(means), np.stack(covariances), self.covariance_type
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Input is a ragged list of (n_i, d) local-feature arrays; output a GaussianMixtures.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = []
        return tags
