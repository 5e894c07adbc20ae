"""Images as distributions: statistical models of the local deep features of each image.

Each image is described by a probability distribution of its local CNN features (the
``C``-vectors at the spatial positions of its feature map) instead of one pooled vector
(Qian, Vazquez and Sengupta [1]_):

- :class:`LocalPCA` reduces the local features to ``d`` dimensions with one PCA learnt on a
  bounded random sample of them, giving *LocalFeatures*: a list of ``(h_i * w_i, d)`` arrays.
- :class:`SparseCovariance` turns each image's local features into one SPD covariance matrix
  (empirical, Ledoit-Wolf, OAS or sparse-precision graphical lasso), optionally embedding the
  whole Gaussian ``N(m, S)`` as a ``(d + 1) x (d + 1)`` SPD matrix [2]_.
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

from skretrieval.descriptors._covariance import (
    RegularizationWarning,
    SparseCovariance,
    gaussian_to_spd,
)
from skretrieval.descriptors._gmm import GMMDescriptor
from skretrieval.descriptors._local import LocalPCA, local_features
from skretrieval.descriptors._mixtures import GaussianMixtures

__all__ = [
    "GMMDescriptor",
    "GaussianMixtures",
    "LocalPCA",
    "RegularizationWarning",
    "SparseCovariance",
    "gaussian_to_spd",
    "local_features",
]
