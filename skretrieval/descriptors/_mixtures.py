"""The :class:`GaussianMixtures` container: one Gaussian mixture per image."""

from numbers import Integral

import numpy as np


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
