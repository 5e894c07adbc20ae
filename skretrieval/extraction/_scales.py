"""Multi-scale descriptors: the image sizes of each scale, and the combination over scales.

An image is described at several sizes, ``max_size`` times each scale, and its per-scale
descriptors are combined as the reference implementations do: by the generalised mean
``(mean_s v_s**p) ** (1/p)`` with the GeM exponent ``p`` (Radenovic, Tolias & Chum 2018, who
use the scales 1, 1/sqrt(2) and 1/2), by the sum for the other poolings (Gordo et al. 2017),
then L2-normalised.
"""

from numbers import Real

import numpy as np

from skretrieval._utils.linalg import l2_normalize


def scaled_max_sizes(max_size, scales, pooling):
    """``max_size`` times each scale, rounded (at least 1 pixel); checks the settings.

    Raises ``ValueError`` naming the fix when ``scales`` is empty or holds a value that is not a
    positive number, when there is no ``pooling`` to combine, or when ``max_size`` is None.
    """
    scales = list(np.ravel(np.asarray(scales, dtype=object)))
    if not scales or not all(
        isinstance(s, Real) and not isinstance(s, bool) and np.isfinite(s) and s > 0 for s in scales
    ):
        raise ValueError(
            f"scales must be a non-empty sequence of positive numbers, fractions of max_size "
            f"such as (1, 2 ** -0.5, 0.5); got {scales!r}."
        )
    if pooling is None:
        raise ValueError(
            "scales needs a pooling: multi-scale descriptors combine the pooled descriptors of "
            "each scale. Set pooling= (e.g. GeMPooling()), or scales=None for feature maps."
        )
    if max_size is None:
        raise ValueError(
            "scales are fractions of max_size, which is None: set max_size (e.g. 1024), or "
            "scales=None to keep the original image sizes."
        )
    return [max(1, round(max_size * float(s))) for s in scales]


class ScaleCombination:
    """Running combination of per-scale descriptors, one scale at a time.

    Keeps two ``(n, d)`` arrays whatever the number of scales. With a finite ``p`` it keeps the
    running maximum ``m`` of every entry and the sum of ``(v / m)**p``, rescaled when ``m``
    grows, so that neither large ``p`` nor small descriptors underflow; ``p = inf`` keeps the
    maximum; ``p = None`` the sum.

    Parameters
    ----------
    p : float or None
        Exponent of the generalised mean (> 0, ``inf`` for the maximum), or None for the sum.
    """

    def __init__(self, p):
        self.p = None if p is None else float(p)
        self.n_scales = 0
        self._peak = None
        self._total = None

    def add(self, descriptors):
        """Fold in the ``(n, d)`` descriptors of one more scale."""
        v = np.asarray(descriptors)
        if self.p is not None and v.size and v.min() < 0:
            raise ValueError(
                "the generalised mean over scales needs non-negative descriptors, as GeM "
                "pooling gives; got a negative entry."
            )
        self.n_scales += 1
        if self.p is None:
            self._total = v.copy() if self._total is None else self._total + v
        elif self._peak is None:
            self._peak = v.copy()
            self._total = np.where(v > 0, 1.0, 0.0).astype(v.dtype)
        else:
            peak = np.maximum(self._peak, v)
            if np.isfinite(self.p):
                with np.errstate(invalid="ignore", divide="ignore"):
                    # Entries where both are 0 have ratios 0 / 0: they add nothing.
                    old = np.nan_to_num((self._peak / peak) ** self.p)
                    new = np.nan_to_num((v / peak) ** self.p)
                self._total = self._total * old + new
            self._peak = peak
        return self

    def result(self, normalize=True):
        """The combined descriptors, L2-normalised when ``normalize``."""
        if self.p is None:
            combined = self._total
        elif np.isinf(self.p):
            combined = self._peak
        else:
            mean = self._total / self.n_scales
            combined = self._peak * mean ** (1.0 / self.p)
        return l2_normalize(combined, axis=1) if normalize else combined
