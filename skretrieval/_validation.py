"""Input checks shared by the estimators: feature maps and descriptor arrays.

Every check raises a ``ValueError`` (or ``TypeError``) whose message names the problem, so bad
input is never silently dropped or coerced.
"""

import numbers

import numpy as np
from sklearn.utils.validation import check_array


def check_feature_maps(X, *, dtype=(np.float64, np.float32), name="X"):
    """Validate a collection of CNN feature maps and return them as a list of 3-D arrays.

    Parameters
    ----------
    X : list of ndarray of shape (C, h_i, w_i), or ndarray of shape (n, C, h, w) or (n, C)
        Feature maps, one per image. Maps may differ in spatial size but not in channel count.
        A 2-D array ``(n, C)`` is read as ``n`` maps of spatial size 1x1, so that a global
        descriptor pools to itself.
    dtype : dtype or tuple of dtypes, default=(float64, float32)
        Accepted floating dtypes; other dtypes are converted to the first.
    name : str, default="X"
        Name used in error messages.

    Returns
    -------
    maps : list of ndarray of shape (C, h_i, w_i)
        Views of the input where possible.
    """
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim == 2:
            X = check_array(X, dtype=dtype, input_name=name)
            return list(X[:, :, None, None])
        if X.ndim != 4:
            raise ValueError(
                f"{name} must be a list of (C, h, w) feature maps, an (n, C, h, w) array or an "
                f"(n, C) array; got an array of shape {X.shape}."
            )
        X = check_array(X, dtype=dtype, allow_nd=True, input_name=name)
        return list(X)
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        raise TypeError(
            f"{name} must be a list of (C, h, w) feature maps or an array; got {type(X).__name__}."
        )
    if len(X) == 0:
        raise ValueError(f"{name} is empty: at least one feature map is required.")
    accepted = dtype if isinstance(dtype, tuple) else (dtype,)
    maps = []
    n_channels = None
    for i, fmap in enumerate(X):
        fmap = np.asarray(fmap)
        if fmap.ndim != 3:
            raise ValueError(
                f"{name}[{i}] must be a (C, h, w) feature map; got an array of shape {fmap.shape}."
            )
        if fmap.dtype not in accepted:
            if not np.issubdtype(fmap.dtype, np.number):
                raise ValueError(f"{name}[{i}] has non-numeric dtype {fmap.dtype}.")
            fmap = fmap.astype(accepted[0])
        if 0 in fmap.shape:
            raise ValueError(f"{name}[{i}] has an empty dimension: shape {fmap.shape}.")
        if not np.isfinite(fmap).all():
            raise ValueError(f"{name}[{i}] contains NaN or infinity.")
        if n_channels is None:
            n_channels = fmap.shape[0]
        elif fmap.shape[0] != n_channels:
            raise ValueError(
                f"{name}[{i}] has {fmap.shape[0]} channels but {name}[0] has {n_channels}; all "
                "feature maps must come from the same network layer."
            )
        maps.append(fmap)
    return maps


def check_positive_int(value, name, *, minimum=1):
    """Return ``value`` as an int, raising a ``ValueError`` naming ``name`` if it is too small."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)
