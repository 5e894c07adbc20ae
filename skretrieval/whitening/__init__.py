"""Whitening of global image descriptors.

:class:`PCAWhitening` is the standard post-processing of pooled CNN descriptors (Jegou & Chum
2012; Babenko & Lempitsky 2015; Tolias et al. 2016): L2-normalise, centre, project on the
principal axes, divide each axis by a power of its variance, and L2-normalise again, so that
cosine similarity down-weights the co-occurring (bursty) directions of the training set.

:class:`LearnedWhitening` is its supervised counterpart (Mikolajczyk & Matas 2007; Radenovic,
Tolias & Chum 2016, 2018): labelled training descriptors define matching pairs, the
descriptors are whitened by the covariance of the matching-pair differences, so that nuisance
variation between views of the same object is shrunk, and then rotated onto the principal axes
of the whitened data, the directions that separate different objects best.

The maths of PCA whitening are pure functions, shared with the whitening layer of
:class:`~skretrieval.learning.RetrievalFineTuner`: :func:`principal_axes` (mean, axes and
variances of a set of descriptors) and :func:`whitening_scale` (the factor of each axis).

Whitening learned on one collection applies to any other: fit it on a training collection,
:func:`skretrieval.persistence.save` it, and :func:`~skretrieval.persistence.load` it wherever
another collection is described; the loaded object transforms exactly as the fitted one.

The private modules, one concept each: ``_functions`` (the pure maths), ``_pca``
(:class:`PCAWhitening`) and ``_learned`` (:class:`LearnedWhitening`).
"""

from skretrieval.whitening._functions import principal_axes, whitening_scale
from skretrieval.whitening._learned import LearnedWhitening
from skretrieval.whitening._pca import PCAWhitening

__all__ = ["LearnedWhitening", "PCAWhitening", "principal_axes", "whitening_scale"]

# Files written by skretrieval.persistence name each class by its module, and load trusts a
# class only in the module that defines it: the estimators keep the public module they had
# before the package was split, so that files saved then still load, and files saved now do
# not depend on the private layout.
for _estimator in (LearnedWhitening, PCAWhitening):
    _estimator.__module__ = __name__
del _estimator
