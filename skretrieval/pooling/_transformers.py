"""The pooling transformers: stateless estimators around the pooling functions."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
    clone,
)
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import FLOAT_DTYPES, check_is_fitted, validate_data

from skretrieval._utils.batching import batches_by_shape
from skretrieval._utils.linalg import l2_normalize
from skretrieval._utils.validation import check_feature_maps
from skretrieval.pooling._functions import gem, mac, rmac, rmac_region_vectors, spoc

# Target size of the batches of small feature maps that the transformers pool together.
_BATCH_BYTES = 2**20


def _array_ndim(X):
    """Number of dimensions of ``X`` if it is an array or table, None for a list of maps."""
    if isinstance(X, np.ndarray) and X.dtype == object and X.ndim == 1:
        return None  # an object array holding one map per image
    if isinstance(X, (list, tuple)):
        # A list of numbers or of 1-D rows is a table, as scikit-learn reads it.
        element_ndim = np.ndim(X[0]) if len(X) > 0 else None
        return element_ndim + 1 if element_ndim in (0, 1) else None
    if hasattr(X, "ndim"):  # ndarrays, sparse matrices, data frames
        return X.ndim
    if hasattr(X, "__array__"):
        return np.asarray(X).ndim
    return None


def _ragged_dtype(maps):
    """float32 if every map is float32, else float64."""
    all_float32 = all(fmap.dtype == np.float32 for fmap in maps)
    return np.dtype(np.float32 if all_float32 else np.float64)


class _BasePooling(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared fit/transform of the stateless pooling transformers."""

    _parameter_constraints: dict = {"normalize": ["boolean"]}

    def _pool(self, fmaps):
        """Pool a batch ``(n, C, h, w)`` of equally sized maps into ``(n, C)``."""
        raise NotImplementedError

    def _validate_maps(self, X, *, reset):
        """Check ``X``; return a list of ``(C, h, w)`` maps or one ``(n, C, 1, 1)`` batch."""
        ndim = _array_ndim(X)
        if ndim is not None and ndim < 2:
            raise ValueError(
                f"X must be a list of (C, h, w) feature maps, an (n, C, h, w) array or an (n, C) "
                f"array; got a {ndim}-D array. Reshape your data with array.reshape(1, -1) if it "
                "is a single descriptor."
            )
        if ndim == 2:
            # Goes through scikit-learn's own checks (feature names, n_features_in_, messages).
            X = validate_data(self, X, reset=reset, dtype=FLOAT_DTYPES)
            return X[:, :, None, None]
        maps = check_feature_maps(X)
        n_channels = maps[0].shape[0]
        if reset:
            self.n_features_in_ = n_channels
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif n_channels != self.n_features_in_:
            raise ValueError(
                f"X has {n_channels} features (channels), but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features (channels) as input, as in the data seen in fit."
            )
        return maps

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate ``X`` and record its number of channels; pooling learns nothing else.

        Parameters
        ----------
        X : list of ndarray of shape (C, h_i, w_i), or ndarray of shape (n, C, h, w) or (n, C)
            Feature maps, one per image; an ``(n, C)`` array is read as ``n`` maps of 1x1.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        self._validate_maps(X, reset=True)
        return self

    def transform(self, X):
        """Pool each feature map into a global descriptor.

        Parameters
        ----------
        X : list of ndarray of shape (C, h_i, w_i), or ndarray of shape (n, C, h, w) or (n, C)
            Feature maps with as many channels as those seen in :meth:`fit`.

        Returns
        -------
        X_new : ndarray of shape (n, C)
            One descriptor per map, float32 if every map is float32 and float64 otherwise,
            L2-normalised when ``normalize=True``.
        """
        check_is_fitted(self)
        maps = self._validate_maps(X, reset=False)
        if isinstance(maps, np.ndarray):
            descriptors = self._pool(maps)
        else:
            descriptors = self._pool_ragged(maps)
        if self.normalize:
            descriptors = l2_normalize(descriptors, axis=1)
        return descriptors

    def _pool_ragged(self, maps):
        """Pool a list of maps in batches of equally sized ones."""
        descriptors = np.empty((len(maps), self._n_features_out), dtype=_ragged_dtype(maps))
        for chunk, batch in self._batches(maps):
            descriptors[chunk] = self._pool(batch)
        return descriptors

    @staticmethod
    def _batches(maps):
        """``(positions, batch)`` pairs covering a list of maps, each batch of equal shapes.

        Small maps are stacked into batches of about ``_BATCH_BYTES`` so that per-call
        overhead does not dominate; a map bigger than that is pooled on its own, without the
        copy that stacking would cost.
        """
        dtype = _ragged_dtype(maps)
        shapes = (fmap.shape for fmap in maps)
        for chunk in batches_by_shape(shapes, max_elements=_BATCH_BYTES // dtype.itemsize):
            if len(chunk) == 1:
                batch = maps[chunk[0]][None].astype(dtype, copy=False)
            else:
                batch = np.stack([maps[i] for i in chunk]).astype(dtype, copy=False)
            yield chunk, batch

    @property
    def _n_features_out(self):
        return self.n_features_in_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class SumPooling(_BasePooling):
    """SPoC descriptor: sum pooling with a Gaussian centre prior (Babenko & Lempitsky 2015).

    Each channel is summed over space, position ``(y, x)`` weighted by
    ``exp(-((y - cy)**2 + (x - cx)**2) / (2 sigma**2))`` centred at
    ``(cy, cx) = ((h - 1) / 2, (w - 1) / 2)`` with ``sigma = min(h, w) / 6``: one third of the
    distance from the centre to the nearest border, pixels being unit squares so that the
    centre of an ``h x w`` map lies ``min(h, w) / 2`` from its nearest border (see
    :func:`center_prior_weights`).

    Parameters
    ----------
    center_prior : bool, default=True
        Apply the Gaussian centre prior; ``False`` gives plain sum pooling.
    normalize : bool, default=True
        L2-normalise each descriptor (an all-zero descriptor stays zero). Without it, a sum
        too large for the dtype is ``inf``.

    Attributes
    ----------
    n_features_in_ : int
        Number of channels ``C`` of the maps seen in :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen in :meth:`fit`, only when ``X`` was a 2-D table with string
        column names.

    See Also
    --------
    MaxPooling, GeMPooling, RMAC

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import SumPooling
    >>> maps = [np.ones((2, 3, 3)), np.ones((2, 5, 4))]
    >>> SumPooling(center_prior=False, normalize=False).fit_transform(maps)
    array([[ 9.,  9.],
           [20., 20.]])
    >>> SumPooling().fit_transform(maps).round(4)
    array([[0.7071, 0.7071],
           [0.7071, 0.7071]])
    """

    _parameter_constraints: dict = {
        **_BasePooling._parameter_constraints,
        "center_prior": ["boolean"],
    }

    def __init__(self, center_prior=True, normalize=True):
        self.center_prior = center_prior
        self.normalize = normalize

    def _pool(self, fmaps):
        with np.errstate(over="ignore"):
            descriptors = spoc(fmaps, center_prior=self.center_prior)
        if self.normalize:
            # A sum that overflowed (float32 activations near 1e37) has a direction all the
            # same: pool the map divided by its largest entry, which normalisation undoes.
            overflowed = ~np.isfinite(descriptors).all(axis=-1)
            if overflowed.any():
                maps = fmaps[overflowed]
                maps = maps / np.abs(maps).max(axis=(-3, -2, -1), keepdims=True)
                descriptors[overflowed] = spoc(maps, center_prior=self.center_prior)
        return descriptors


class MaxPooling(_BasePooling):
    """MAC descriptor: maximum of each channel over space (Tolias, Sicre & Jegou 2016).

    Parameters
    ----------
    normalize : bool, default=True
        L2-normalise each descriptor (an all-zero descriptor stays zero).

    Attributes
    ----------
    n_features_in_ : int
        Number of channels ``C`` of the maps seen in :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen in :meth:`fit`, only when ``X`` was a 2-D table with string
        column names.

    See Also
    --------
    SumPooling, GeMPooling, RMAC

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import MaxPooling
    >>> maps = [np.arange(8, dtype=np.float32).reshape(2, 2, 2), np.ones((2, 3, 1), np.float32)]
    >>> MaxPooling(normalize=False).fit_transform(maps)
    array([[3., 7.],
           [1., 1.]], dtype=float32)
    """

    def __init__(self, normalize=True):
        self.normalize = normalize

    def _pool(self, fmaps):
        return mac(fmaps)


class GeMPooling(_BasePooling):
    """Generalised-mean (GeM) pooling (Radenovic, Tolias & Chum 2018).

    Each channel becomes ``(mean over space of max(x, eps)**p) ** (1/p)``: average pooling for
    ``p = 1``, tending to max pooling as ``p`` grows. Computed with the per-channel maximum
    factored out, so large ``p`` (even ``inf``) is numerically safe.

    Parameters
    ----------
    p : float, default=3.0
        Pooling exponent, > 0; ``np.inf`` gives max pooling.
    eps : float, default=1e-6
        Activations are clamped below at ``eps`` (> 0).
    normalize : bool, default=True
        L2-normalise each descriptor.

    Attributes
    ----------
    n_features_in_ : int
        Number of channels ``C`` of the maps seen in :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen in :meth:`fit`, only when ``X`` was a 2-D table with string
        column names.

    See Also
    --------
    SumPooling, MaxPooling, RMAC

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import GeMPooling
    >>> fmap = np.array([[[1.0, 2.0], [2.0, 3.0]]])  # one channel, 2x2
    >>> GeMPooling(p=1, normalize=False).fit_transform([fmap])
    array([[2.]])
    >>> GeMPooling(p=3, normalize=False).fit_transform([fmap]).round(4)  # (44 / 4) ** (1/3)
    array([[2.224]])
    """

    _parameter_constraints: dict = {
        **_BasePooling._parameter_constraints,
        "p": [Interval(Real, 0, np.inf, closed="right")],
        "eps": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, p=3.0, eps=1e-6, normalize=True):
        self.p = p
        self.eps = eps
        self.normalize = normalize

    def _pool(self, fmaps):
        return gem(fmaps, p=self.p, eps=self.eps)


class RMAC(_BasePooling):
    """Regional maximum activation of convolutions (Tolias, Sicre & Jegou 2016).

    Each map is covered by the multi-scale square grid of :func:`rmac_regions`; every region is
    max-pooled and L2-normalised, and the region vectors are summed.

    With ``region_whitening``, a whitening of the region vectors (as in Tolias et al., who learn
    a PCA whitening on the regions of other images, and Gordo et al. 2017, who learn it end to
    end) is fitted in :meth:`fit` on the L2-normalised region vectors of the training maps, and
    applied to every region vector before the sum: region MAC -> L2 -> whitening -> L2 ->
    sum -> L2.

    Parameters
    ----------
    levels : int, default=3
        Number of scales ``L`` of the region grid, at least 1.
    overlap : float, default=0.4
        Desired overlap of neighbouring regions, in [0, 1]; it sets the number of extra region
        positions along the long side of non-square maps.
    normalize : bool, default=True
        L2-normalise the summed descriptor. Region vectors are always L2-normalised before the
        sum, as R-MAC is defined.
    region_whitening : transformer or None, default=None
        A transformer of ``(n, C)`` vectors, such as
        :class:`~skretrieval.whitening.PCAWhitening`: a clone of it is fitted on the region
        vectors of the maps given to :meth:`fit` (every region of every map, so learn it on
        images other than those searched) and stored as ``region_whitening_``. None: plain
        R-MAC, which learns nothing. Its parameters are tunable as
        ``region_whitening__<name>``.

    Attributes
    ----------
    n_features_in_ : int
        Number of channels ``C`` of the maps seen in :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen in :meth:`fit`, only when ``X`` was a 2-D table with string
        column names.
    region_whitening_ : transformer
        The fitted clone of ``region_whitening``; only when it is not None.
    n_regions_fit_ : int
        Number of region vectors the whitening was fitted on; only with ``region_whitening``.

    See Also
    --------
    rmac_regions, rmac_region_vectors, MaxPooling

    Notes
    -----
    In the fused mode of :class:`~skretrieval.extraction.CNNFeatureExtractor` (``pooling=``)
    the pooling is fitted on the first batch of the images it describes: give an R-MAC with
    ``region_whitening`` the feature maps in a pipeline instead, and fit it on a training
    collection.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import RMAC
    >>> fmap = np.zeros((2, 2, 2))
    >>> fmap[0, 0, 0] = 1.0  # channel 0 fires top-left, channel 1 bottom-right
    >>> fmap[1, 1, 1] = 1.0
    >>> RMAC(levels=1, normalize=False).fit_transform([fmap]).round(4)
    array([[0.7071, 0.7071]])
    >>> from skretrieval.whitening import PCAWhitening
    >>> rng = np.random.default_rng(0)
    >>> maps = [rng.uniform(size=(16, 6, 8)) for _ in range(10)]
    >>> rmac = RMAC(region_whitening=PCAWhitening(n_components=8)).fit(maps)
    >>> rmac.n_regions_fit_, rmac.transform(maps[:3]).shape
    (200, (3, 8))
    """

    _parameter_constraints: dict = {
        **_BasePooling._parameter_constraints,
        "levels": [Interval(Integral, 1, None, closed="left")],
        "overlap": [Interval(Real, 0, 1, closed="both")],
        "region_whitening": [HasMethods(["fit", "transform"]), None],
    }

    def __init__(self, levels=3, overlap=0.4, normalize=True, region_whitening=None):
        self.levels = levels
        self.overlap = overlap
        self.normalize = normalize
        self.region_whitening = region_whitening

    @_fit_context(
        # The region whitening is validated when it is fitted.
        prefer_skip_nested_validation=False
    )
    def fit(self, X, y=None):
        """Validate ``X``; with ``region_whitening``, fit it on the regions of ``X``.

        Parameters
        ----------
        X : list of ndarray of shape (C, h_i, w_i), or ndarray of shape (n, C, h, w) or (n, C)
            Feature maps, one per image; an ``(n, C)`` array is read as ``n`` maps of 1x1.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        maps = self._validate_maps(X, reset=True)
        if self.region_whitening is None:
            for attribute in ("region_whitening_", "n_regions_fit_"):
                self.__dict__.pop(attribute, None)
            return self
        batches = [maps] if isinstance(maps, np.ndarray) else (b for _, b in self._batches(maps))
        vectors = np.concatenate(
            [self._region_vectors(batch).reshape(-1, self.n_features_in_) for batch in batches]
        )
        self.region_whitening_ = clone(self.region_whitening).fit(vectors)
        self.n_regions_fit_ = vectors.shape[0]
        return self

    def _region_vectors(self, fmaps):
        """L2-normalised region MAC vectors of a batch of maps, ``(n, n_regions, C)``."""
        vectors = rmac_region_vectors(fmaps, levels=self.levels, overlap=self.overlap)
        return l2_normalize(vectors, axis=-1)

    def _pool(self, fmaps):
        if self.region_whitening is None:
            return rmac(fmaps, levels=self.levels, overlap=self.overlap)
        vectors = self._region_vectors(fmaps)
        n_maps, n_regions, n_channels = vectors.shape
        whitened = self.region_whitening_.transform(vectors.reshape(-1, n_channels))
        whitened = l2_normalize(np.asarray(whitened, dtype=vectors.dtype), axis=-1)
        return whitened.reshape(n_maps, n_regions, -1).sum(axis=1)

    @property
    def _n_features_out(self):
        if self.region_whitening is None:
            return self.n_features_in_
        return self.region_whitening_.transform(np.ones((1, self.n_features_in_))).shape[1]
