"""The pooling functions: SPoC, MAC, GeM and R-MAC on batches of equally sized feature maps."""

from numbers import Real

import numpy as np

from skretrieval._utils.linalg import l2_normalize
from skretrieval._utils.validation import check_positive_int

# Candidate numbers of extra region positions along the long side of a map (R-MAC [2]).
_RMAC_EXTRA_STEPS = np.arange(1, 7)


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
    """SPoC (Babenko & Lempitsky 2015): sum-pool each channel, optionally with a centre prior.

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

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import spoc
    >>> fmap = np.array([[[1.0, 3.0], [2.0, 2.0]], [[0.0, 4.0], [0.0, 0.0]]])  # C=2, 2 x 2
    >>> spoc(fmap, center_prior=False)
    array([8., 4.])
    >>> spoc(fmap) / spoc(fmap, center_prior=False)  # all four positions equally central
    array([0.10539922, 0.10539922])
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
    """MAC: maximum of each channel over space (Tolias et al. 2016).

    Parameters
    ----------
    fmaps : array-like of shape (..., C, h, w)
        Feature maps of equal size.

    Returns
    -------
    descriptors : ndarray of shape (..., C)
        Same floating dtype as ``fmaps``. Not normalised.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import mac
    >>> mac(np.array([[[1.0, 3.0], [2.0, 2.0]], [[0.0, 4.0], [0.0, 0.0]]]))
    array([3., 4.])
    """
    fmaps = _check_batch(fmaps)
    return fmaps.max(axis=(-2, -1))


def gem(fmaps, *, p=3.0, eps=1e-6):
    """GeM (Radenovic et al. 2018): ``(mean over space of max(x, eps)**p) ** (1/p)`` per channel.

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

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import gem
    >>> fmap = np.array([[[1.0, 3.0], [2.0, 2.0]], [[0.0, 4.0], [0.0, 0.0]]])
    >>> gem(fmap, p=1.0)  # the mean; zeros are clamped to eps
    array([2.        , 1.00000075])
    >>> gem(fmap, p=3.0)  # between the mean and the maximum
    array([2.22398009, 2.5198421 ])
    >>> gem(fmap, p=np.inf)  # the maximum, as mac
    array([3., 4.])
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
    """Regions of the R-MAC grid (Tolias et al. 2016) for a ``height x width`` feature map.

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


def _level_region_maxima(fmaps, levels, overlap):
    """Per level of the R-MAC grid, the MAC vectors of its regions: ``(..., n_regions, C)``."""
    height, width = fmaps.shape[-2:]
    # Channels last, so that every window maximum below is an element-wise maximum of
    # contiguous C-vectors (a reduction over the small, strided spatial axes is much slower).
    channels_last = np.ascontiguousarray(np.moveaxis(fmaps, -3, -1))  # (..., h, w, C)
    for side, rows, columns in _rmac_grid(height, width, levels, overlap):
        # Regions of a level share one size, so the maximum is separable: over the row
        # windows first, then over the column windows, one slice per grid row or column.
        row_max = np.stack(
            [channels_last[..., y : y + side, :, :].max(axis=-3) for y in rows], axis=-3
        )  # (..., n_rows, w, C)
        region_max = np.stack(
            [row_max[..., x : x + side, :].max(axis=-2) for x in columns], axis=-2
        )  # (..., n_rows, n_columns, C)
        yield region_max.reshape(*region_max.shape[:-3], -1, region_max.shape[-1])


def rmac_region_vectors(fmaps, *, levels=3, overlap=0.4):
    """MAC vectors of the :func:`rmac_regions` grid (Tolias et al. 2016), one row per region.

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
    vectors : ndarray of shape (..., n_regions, C)
        Maximum of each channel over each region, in the order of :func:`rmac_regions`. Same
        floating dtype as ``fmaps``; not normalised.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import rmac_region_vectors
    >>> fmap = np.arange(9.0).reshape(1, 3, 3)  # one channel
    >>> rmac_region_vectors(fmap, levels=2)[..., 0]  # the whole map, then four 2x2 corners
    array([8., 4., 5., 7., 8.])
    """
    fmaps = _check_batch(fmaps)
    levels, overlap = _check_grid_params(levels, overlap)
    return np.concatenate(list(_level_region_maxima(fmaps, levels, overlap)), axis=-2)


def rmac(fmaps, *, levels=3, overlap=0.4):
    """R-MAC (Tolias et al. 2016): sum of the L2-normalised MACs of the :func:`rmac_regions` grid.

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

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.pooling import mac, rmac
    >>> fmap = np.arange(18.0).reshape(2, 3, 3)
    >>> rmac(fmap, levels=1)  # one region, the whole map: the L2-normalised MAC
    array([0.42579704, 0.9048187 ])
    >>> mac(fmap) / np.linalg.norm(mac(fmap))
    array([0.42579704, 0.9048187 ])
    >>> rmac(fmap, levels=2)  # and the four 2 x 2 regions of the second level
    array([1.88283515, 4.62331566])
    """
    fmaps = _check_batch(fmaps)
    levels, overlap = _check_grid_params(levels, overlap)
    total = np.zeros(fmaps.shape[:-2], dtype=fmaps.dtype)
    for region_max in _level_region_maxima(fmaps, levels, overlap):
        total += l2_normalize(region_max, axis=-1).sum(axis=-2)
    return total
