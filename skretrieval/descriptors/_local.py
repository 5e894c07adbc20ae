"""Local features of feature maps: one vector per spatial position, and their PCA."""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.decomposition import PCA
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from skretrieval._utils.linalg import l2_normalize
from skretrieval._utils.validation import check_feature_maps


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
    # All-zero features (e.g. dead ReLU positions) stay zero instead of becoming NaN.
    return l2_normalize(features, axis=1)


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


def check_n_features(estimator, n_features, *, reset):
    """Record (``reset``) or check the local-feature dimension ``n_features_in_``.

    For the transformers of local features, like scikit-learn's ``validate_data``.
    """
    if reset:
        estimator.n_features_in_ = n_features
    elif hasattr(estimator, "n_features_in_") and n_features != estimator.n_features_in_:
        raise ValueError(
            f"X has local features of dimension {n_features}, but "
            f"{type(estimator).__name__} was fitted with dimension {estimator.n_features_in_}."
        )


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

        All-zero features stay zero. ``"l2"`` is the default because it gave the best mean
        leave-one-out mAP over the covariance and mixture descriptors of three datasets
        (``benchmarks/bench_defaults.py``), but only by 0.005 and not for both: ``None`` suits
        :class:`SparseCovariance` better (mean mAP 0.58 against 0.54, 0.49 against 0.34 on
        hard Copydays-style copies), ``"l2"`` suits :class:`GMMDescriptor` and its mixture KL
        (0.50 against 0.45).
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
        if n_samples < 2:
            # One sample has no variance: PCA's would be NaN, and so would whitened output.
            raise ValueError(
                f"LocalPCA needs at least 2 local features (positions) to fit; the feature "
                f"maps give {n_samples}. Provide more or larger feature maps"
                + (", or raise max_samples." if self.max_samples is not None else ".")
            )

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
