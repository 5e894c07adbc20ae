"""Checks of user input shared by the estimators: integers and lists of arrays.

Every check raises a ``ValueError`` (or ``TypeError``) whose message names the problem, so bad
input is never silently dropped or coerced.
"""

import numbers

import numpy as np
from sklearn.utils.validation import check_array


def is_integer(value):
    """Whether ``value`` is an integer (a Python or numpy one), booleans excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(value, name, *, minimum=1):
    """Return ``value`` as an int, raising a ``ValueError`` naming ``name`` if it is too small.

    Examples
    --------
    >>> from skretrieval._utils.validation import check_positive_int
    >>> check_positive_int(3, "levels")
    3
    >>> check_positive_int(0, "levels")
    Traceback (most recent call last):
    ...
    ValueError: levels must be an integer >= 1; got 0.
    """
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def check_array_list(X, *, item, items, ndim, shared_axis, shared_name, dtype, name="X"):
    """Validate a list of arrays that may differ in size, one per image.

    Parameters
    ----------
    X : list of array-like
        One array per image.
    item, items : str
        What one array is and what the list holds, for the messages: ``"a (C, h, w) feature
        map"`` and ``"(C, h, w) feature maps"``.
    ndim : int
        Number of dimensions of every array.
    shared_axis : int
        Axis whose length all arrays must share (the channels of feature maps, the dimension of
        local features).
    shared_name : str
        What that length is, for the messages: ``"channels"``, ``"dimensions"``.
    dtype : dtype or tuple of dtypes
        Accepted floating dtypes; arrays of other real dtypes are converted to the first.
    name : str, default="X"
        Name of ``X`` in the messages.

    Returns
    -------
    arrays : list of ndarray
        Views of the input where possible.
    """
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        raise TypeError(f"{name} must be a list of {items}; got {type(X).__name__}.")
    if len(X) == 0:
        raise ValueError(f"{name} is empty: at least one image is required.")
    accepted = dtype if isinstance(dtype, tuple) else (dtype,)
    arrays = []
    for i, array in enumerate(X):
        array = np.asarray(array)
        if array.ndim != ndim:
            raise ValueError(f"{name}[{i}] must be {item}; got an array of shape {array.shape}.")
        if array.dtype not in accepted:
            if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
                raise ValueError(f"{name}[{i}] has non-real dtype {array.dtype}.")
            array = array.astype(accepted[0])
        if 0 in array.shape:
            raise ValueError(f"{name}[{i}] is empty: shape {array.shape}.")
        if not np.isfinite(array).all():
            raise ValueError(f"{name}[{i}] contains NaN or infinity.")
        if arrays and array.shape[shared_axis] != arrays[0].shape[shared_axis]:
            raise ValueError(
                f"{name}[{i}] has {array.shape[shared_axis]} {shared_name} but {name}[0] has "
                f"{arrays[0].shape[shared_axis]}; all {items} must have the same number of "
                f"{shared_name}."
            )
        arrays.append(array)
    return arrays


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
    return check_array_list(
        X,
        item="a (C, h, w) feature map",
        items="(C, h, w) feature maps",
        ndim=3,
        shared_axis=0,
        shared_name="channels",
        dtype=dtype,
        name=name,
    )


def check_local_features(X, name="X"):
    """Validate local features: a list of ``(n_i, d)`` arrays or an ``(n, m, d)`` array.

    Returns a list of float64 2-D arrays (views where possible).
    """
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim != 3:
            raise ValueError(
                f"{name} must be a list of (n_i, d) local-feature arrays or an (n, m, d) array; "
                f"got an array of shape {X.shape}. For a single image pass [features]."
            )
        X = list(X)
    return check_array_list(
        X,
        item="an (n_i, d) array of local features",
        items="(n_i, d) local-feature arrays",
        ndim=2,
        shared_axis=1,
        shared_name="dimensions",
        dtype=np.float64,
        name=name,
    )
