"""Global pooling of CNN feature maps into image descriptors: SPoC, MAC, GeM and R-MAC.

Each pooling is a pure function working on a batch of equally sized maps, shape
``(..., C, h, w)`` -> ``(..., C)``, plus a stateless scikit-learn transformer around it that
accepts ragged collections of maps (a list of ``(C, h_i, w_i)`` arrays), an ``(n, C, h, w)``
array, or an ``(n, C)`` array read as ``n`` maps of size 1x1.

References
----------
.. [1] A. Babenko and V. Lempitsky, "Aggregating deep convolutional features for image
   retrieval", ICCV 2015 (SPoC).
.. [2] G. Tolias, R. Sicre and H. Jegou, "Particular object retrieval with integral
   max-pooling of CNN activations", ICLR 2016 (MAC, R-MAC).
.. [3] F. Radenovic, G. Tolias and O. Chum, "Fine-tuning CNN image retrieval with no human
   annotation", TPAMI 2018 (GeM).
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import FLOAT_DTYPES, check_is_fitted, validate_data

from ._validation import check_feature_maps, check_positive_int

__all__ = [
    "GeMPooling",
    "MaxPooling",
    "RMAC",
    "SumPooling",
    "center_prior_weights",
    "gem",
    "mac",
    "rmac",
    "rmac_regions",
    "spoc",
]

# Candidate numbers of extra region positions along the long side of a map (R-MAC [2]).
_RMAC_EXTRA_STEPS = np.arange(1, 7)

# Target size of the batches of small feature maps that the transformers pool together.
_BATCH_BYTES = 2**20


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


def _check_batch(fmaps, name="fmaps"):
    fmaps = np.asarray(fmaps)
    if fmaps.ndim < 3:
        raise ValueError(
            f"{name} must have shape (..., C, h, w); got an array of shape {fmaps.shape}."
        )
    if 0 in fmaps.shape[-3:]:
        raise ValueError(f"{name} has an empty channel or spatial dimension: {fmaps.shape}.")
    if not np.issubdtype(fmaps.dtype, np.floating):
        fmaps = fmaps.astype(np.float64)
    return fmaps


def _l2_normalize(X, axis=-1):
    """L2-normalise ``X`` along ``axis``; all-zero vectors stay zero instead of becoming NaN."""
    norms = np.sqrt(np.sum(X * X, axis=axis, keepdims=True))
    return np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)


def center_prior_weights(height, width):
    """Gaussian centre-prior weights of SPoC for an ``height x width`` feature map.

    The weight of position ``(y, x)`` (row, column; 0-based pixel centres) is
    ``exp(-((y - cy)**2 + (x - cx)**2) / (2 * sigma**2))`` with the centre
    ``cy = (height - 1) / 2``, ``cx = (width - 1) / 2`` and ``sigma`` one third of the
    distance from the centre to the nearest border. Pixel ``i`` covers ``[i - 1/2, i + 1/2]``,
    so the map spans ``[-1/2, height - 1/2] x [-1/2, width - 1/2]`` and that distance is
    ``min(height, width) / 2``, giving ``sigma = min(height, width) / 6``.

    Parameters
    ----------
    height, width : int
        Spatial size of the feature map, at least 1.

    Returns
    -------
    weights : ndarray of shape (height, width), dtype float64
        Weights in ``(0, 1]``, equal to 1 at the exact centre.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import center_prior_weights
    >>> weights = center_prior_weights(3, 3)  # sigma = 1/2: exp(-2 * squared distance)
    >>> np.allclose(weights, np.exp(-2 * np.array([[2, 1, 2], [1, 0, 1], [2, 1, 2]])))
    True
    """
    height = check_positive_int(height, "height")
    width = check_positive_int(width, "width")
    sigma = min(height, width) / 6.0
    dy = np.arange(height) - (height - 1) / 2.0
    dx = np.arange(width) - (width - 1) / 2.0
    squared_distance = dy[:, None] ** 2 + dx[None, :] ** 2
    return np.exp(-squared_distance / (2.0 * sigma**2))


def spoc(fmaps, *, center_prior=True):
    """SPoC: sum-pool each channel over space, optionally weighted by a centre prior [1]_.

    Parameters
    ----------
    fmaps : array-like of shape (..., C, h, w)
        Feature maps of equal size.
    center_prior : bool, default=True
        Weight every position by :func:`center_prior_weights`; ``False`` gives plain sum
        pooling.

    Returns
    -------
    descriptors : ndarray of shape (..., C)
        Same floating dtype as ``fmaps`` (float64 for non-float input). Not normalised.
    """
    fmaps = _check_batch(fmaps)
    if not center_prior:
        return fmaps.sum(axis=(-2, -1))
    height, width = fmaps.shape[-2:]
    weights = center_prior_weights(height, width).astype(fmaps.dtype).ravel()
    # einsum: numpy's stacked matmul and OpenBLAS's threaded gemv are both much slower here.
    flat = fmaps.reshape(*fmaps.shape[:-2], height * width)
    return np.einsum("...k,k->...", flat, weights)


def mac(fmaps):
    """MAC: maximum of each channel over space [2]_.

    Parameters
    ----------
    fmaps : array-like of shape (..., C, h, w)
        Feature maps of equal size.

    Returns
    -------
    descriptors : ndarray of shape (..., C)
        Same floating dtype as ``fmaps``. Not normalised.
    """
    fmaps = _check_batch(fmaps)
    return fmaps.max(axis=(-2, -1))


def gem(fmaps, *, p=3.0, eps=1e-6):
    """GeM: generalised mean ``(mean over space of max(x, eps)**p) ** (1/p)`` per channel [3]_.

    ``p = 1`` is average pooling of the clamped map and ``p -> inf`` tends to max pooling
    (``p = inf`` is exactly max pooling). The per-channel maximum ``m`` is factored out,
    ``m * (mean((x / m)**p)) ** (1/p)``, so that large ``p`` neither overflows nor underflows.

    Parameters
    ----------
    fmaps : array-like of shape (..., C, h, w)
        Feature maps of equal size.
    p : float, default=3.0
        Pooling exponent, > 0; ``np.inf`` gives max pooling.
    eps : float, default=1e-6
        Activations are clamped below at ``eps`` (> 0) before the power.

    Returns
    -------
    descriptors : ndarray of shape (..., C)
        Same floating dtype as ``fmaps``. Not normalised.
    """
    fmaps = _check_batch(fmaps)
    if not p > 0:
        raise ValueError(f"p must be > 0; got {p!r}.")
    if not eps > 0:
        raise ValueError(f"eps must be > 0; got {eps!r}.")
    ratio = np.maximum(fmaps, fmaps.dtype.type(eps))
    peak = ratio.max(axis=(-2, -1), keepdims=True)
    ratio /= peak
    mean_power = np.mean(_power(ratio, p), axis=(-2, -1))
    return peak[..., 0, 0] * mean_power ** fmaps.dtype.type(1.0 / p)


def _power(x, p):
    """``x ** p``, by repeated in-place products for small integer ``p`` (several times faster
    than the general power), overwriting ``x``."""
    if float(p).is_integer() and 1 <= p <= 8:
        base = x.copy() if p > 1 else x
        for _ in range(int(p) - 1):
            x *= base
        return x
    return np.power(x, x.dtype.type(p), out=x)


def _region_offsets(length, side, n_positions):
    """Top-left offsets of ``n_positions`` windows of ``side`` spread uniformly over ``length``.

    The first window starts at 0 and the last ends at ``length``. The R-MAC reference computes
    ``floor(wl2 + k * b) - wl2`` with an integer ``wl2`` and ``b = (length - side) / (n - 1)``,
    which is ``floor(k * (length - side) / (n - 1))``: done here in exact integer arithmetic.
    """
    if n_positions == 1:
        return np.zeros(1, dtype=np.intp)
    return np.arange(n_positions, dtype=np.intp) * (length - side) // (n_positions - 1)


def _check_grid_params(levels, overlap):
    levels = check_positive_int(levels, "levels")
    if not isinstance(overlap, Real) or isinstance(overlap, bool) or not 0 <= overlap <= 1:
        raise ValueError(f"overlap must be a number in [0, 1]; got {overlap!r}.")
    return levels, float(overlap)


def _rmac_grid(height, width, levels, overlap):
    """R-MAC regions level by level: a list of ``(side, row_offsets, column_offsets)``."""
    short, long = min(height, width), max(height, width)
    extra_rows = extra_columns = 0
    if height != width:
        # Among 1..6 extra positions on the long side, pick the one whose level-1 squares
        # overlap closest to ``overlap`` (first one on ties), as in the reference code.
        stride = (long - short) / _RMAC_EXTRA_STEPS
        achieved_overlap = (short**2 - short * stride) / short**2
        extra = int(_RMAC_EXTRA_STEPS[np.argmin(np.abs(achieved_overlap - overlap))])
        if width > height:
            extra_columns = extra
        else:
            extra_rows = extra
    grid = []
    for level in range(1, levels + 1):
        side = (2 * short) // (level + 1)
        if side == 0:  # the map is too small for this level and all finer ones
            break
        grid.append(
            (
                side,
                _region_offsets(height, side, level + extra_rows),
                _region_offsets(width, side, level + extra_columns),
            )
        )
    return grid


def rmac_regions(height, width, levels=3, overlap=0.4):
    """Regions of the R-MAC grid [2]_ for a ``height x width`` feature map.

    With ``s = min(height, width)``, level ``l = 1..levels`` has square regions of side
    ``floor(2 s / (l + 1))``, ``l`` positions along the short side and ``l + e`` along the long
    side, spread uniformly from border to border (offset of position ``k`` out of ``n``:
    ``floor(k (length - side) / (n - 1))``). The number ``e`` of extra positions on the long side
    is chosen in 1..6 so that two consecutive level-1 squares, offset by
    ``(long - s) / e``, overlap (as a fraction of the side) closest to ``overlap``; square maps
    have ``e = 0``, so level 1 is the whole map, level 2 is 2x2 regions, level 3 is 3x3.

    This reproduces the reference implementation of Tolias et al. (offsets computed in exact
    integer arithmetic). Consequences on tiny maps, kept on purpose so that descriptors match
    the reference weighting: levels whose side would be 0 are dropped (level 1 always has
    side >= 1), and when a dimension has fewer pixels than positions, some regions repeat and
    are counted as many times as they appear.

    Parameters
    ----------
    height, width : int
        Spatial size of the feature map, at least 1.
    levels : int, default=3
        Number of scales ``L``, at least 1.
    overlap : float, default=0.4
        Desired overlap of neighbouring regions, in [0, 1].

    Returns
    -------
    regions : ndarray of shape (n_regions, 4), dtype intp
        One row ``(y0, x0, h, w)`` per region: top row, left column, height and width, so the
        region is ``fmap[:, y0:y0 + h, x0:x0 + w]``. Ordered by level, then row-major (top to
        bottom, left to right). Every region lies inside the map and ``h == w >= 1``.

    Examples
    --------
    >>> from skretrieval.pooling import rmac_regions
    >>> rmac_regions(7, 7, levels=2)
    array([[0, 0, 7, 7],
           [0, 0, 4, 4],
           [0, 3, 4, 4],
           [3, 0, 4, 4],
           [3, 3, 4, 4]])
    """
    height = check_positive_int(height, "height")
    width = check_positive_int(width, "width")
    levels, overlap = _check_grid_params(levels, overlap)
    blocks = []
    for side, rows, columns in _rmac_grid(height, width, levels, overlap):
        y0, x0 = np.meshgrid(rows, columns, indexing="ij")
        sides = np.full(y0.size, side, dtype=np.intp)
        blocks.append(np.column_stack([y0.ravel(), x0.ravel(), sides, sides]))
    return np.concatenate(blocks).astype(np.intp, copy=False)


def rmac(fmaps, *, levels=3, overlap=0.4):
    """R-MAC: sum of the L2-normalised MAC vectors of the :func:`rmac_regions` grid [2]_.

    Parameters
    ----------
    fmaps : array-like of shape (..., C, h, w)
        Feature maps of equal size.
    levels : int, default=3
        Number of scales of the region grid.
    overlap : float, default=0.4
        Desired overlap of neighbouring regions.

    Returns
    -------
    descriptors : ndarray of shape (..., C)
        Same floating dtype as ``fmaps``. The sum itself is not normalised. An all-zero region
        contributes zero (instead of NaN).
    """
    fmaps = _check_batch(fmaps)
    height, width = fmaps.shape[-2:]
    levels, overlap = _check_grid_params(levels, overlap)
    # Channels last, so that every window maximum below is an element-wise maximum of
    # contiguous C-vectors (a reduction over the small, strided spatial axes is much slower).
    channels_last = np.ascontiguousarray(np.moveaxis(fmaps, -3, -1))  # (..., h, w, C)
    total = np.zeros(fmaps.shape[:-2], dtype=fmaps.dtype)
    for side, rows, columns in _rmac_grid(height, width, levels, overlap):
        # Regions of a level share one size, so the maximum is separable: over the row
        # windows first, then over the column windows, one slice per grid row or column.
        row_max = np.stack(
            [channels_last[..., y : y + side, :, :].max(axis=-3) for y in rows], axis=-3
        )  # (..., n_rows, w, C)
        region_max = np.stack(
            [row_max[..., x : x + side, :].max(axis=-2) for x in columns], axis=-2
        )  # (..., n_rows, n_columns, C)
        region_max = region_max.reshape(*region_max.shape[:-3], -1, region_max.shape[-1])
        total += _l2_normalize(region_max, axis=-1).sum(axis=-2)
    return total


# --------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------


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
            descriptors = _l2_normalize(descriptors, axis=1)
        return descriptors

    def _pool_ragged(self, maps):
        """Pool a list of maps in batches of equally sized ones.

        Small maps are stacked into batches of about ``_BATCH_BYTES`` so that per-call
        overhead does not dominate; a map bigger than that is pooled on its own, without the
        copy that stacking would cost.
        """
        all_float32 = all(fmap.dtype == np.float32 for fmap in maps)
        dtype = np.dtype(np.float32 if all_float32 else np.float64)
        by_size = {}
        for i, fmap in enumerate(maps):
            by_size.setdefault(fmap.shape[1:], []).append(i)
        descriptors = np.empty((len(maps), maps[0].shape[0]), dtype=dtype)
        for indices in by_size.values():
            map_bytes = maps[indices[0]].size * dtype.itemsize
            batch_size = max(1, _BATCH_BYTES // map_bytes)
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                if len(chunk) == 1:
                    batch = maps[chunk[0]][None].astype(dtype, copy=False)
                else:
                    batch = np.stack([maps[i] for i in chunk]).astype(dtype, copy=False)
                descriptors[chunk] = self._pool(batch)
        return descriptors

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
        return spoc(fmaps, center_prior=self.center_prior)


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

    Attributes
    ----------
    n_features_in_ : int
        Number of channels ``C`` of the maps seen in :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen in :meth:`fit`, only when ``X`` was a 2-D table with string
        column names.

    See Also
    --------
    rmac_regions, MaxPooling

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import RMAC
    >>> fmap = np.zeros((2, 2, 2))
    >>> fmap[0, 0, 0] = 1.0  # channel 0 fires top-left, channel 1 bottom-right
    >>> fmap[1, 1, 1] = 1.0
    >>> RMAC(levels=1, normalize=False).fit_transform([fmap]).round(4)
    array([[0.7071, 0.7071]])
    """

    _parameter_constraints: dict = {
        **_BasePooling._parameter_constraints,
        "levels": [Interval(Integral, 1, None, closed="left")],
        "overlap": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(self, levels=3, overlap=0.4, normalize=True):
        self.levels = levels
        self.overlap = overlap
        self.normalize = normalize

    def _pool(self, fmaps):
        return rmac(fmaps, levels=self.levels, overlap=self.overlap)
