"""Batched pairwise distances between sets of descriptors.

Each distance is a *kernel* in two halves:

- ``prepare(X)`` does the per-set work once (normalising, norms, later matrix logarithms,
  Cholesky factors, inverses) and returns a state;
- ``pairwise(query_state, database_state)`` returns the ``(n_queries, n_database)`` distance block
  with one matrix product (or one batched decomposition) over the whole database, never a Python
  loop per pair.

:class:`~skretrieval.neighbors.ImageRetriever` prepares its database once at ``fit`` and then
calls ``pairwise`` on blocks of queries. New descriptor types plug in by calling
:func:`register_kernel`.

The plain functions (:func:`cosine_distances`, :func:`euclidean_distances`,
:func:`affine_invariant_distances`, ...) are the maths; :class:`DistanceKernel` binds them to a
descriptor type. One metric name may serve several descriptor types (``"wasserstein"`` and
``"kl"`` for SPD matrices and Gaussian mixtures): kernels are registered per
``(name, descriptor)`` and the one whose ``accepts`` predicate takes the input is used.

SPD matrices (an ``(n, d, d)`` array of covariance matrices, each read as the zero-mean Gaussian
``N(0, S)``) have these metrics:

- ``"affine_invariant"``: ``sqrt(sum_i log^2 lambda_i)`` over the generalised eigenvalues of
  ``(q, d)``; a true metric (the geodesic distance of the affine-invariant Riemannian metric).
  ``metric_params={"shortlist": k}`` makes the search approximate and faster: ``k`` candidates
  per query by Euclidean distance in the tangent space at the database's log-Euclidean mean
  (one matrix product), then the exact distance for those only; every other database item is
  at distance ``+inf``, so ask for at most ``k`` neighbours.
- ``"log_euclidean"``: ``|log q - log d|_F``; a true metric.
- ``"wasserstein"``: the Bures-Wasserstein (2-Wasserstein) distance between the Gaussians; a
  true metric.
- ``"stein"``: ``sqrt(logdet((q + d) / 2) - logdet(q) / 2 - logdet(d) / 2)``, the square root
  of the S-divergence (Jensen-Bregman LogDet); a true metric (Sra 2016), equal to pyriemann's
  ``distance_logdet``.
- ``"kl"``: ``KL(N(0, q) || N(0, d))``, query first, database second. Not symmetric and not a
  metric; ranking uses it as it is.
- ``"jeffreys"``: ``KL(q || d) + KL(d || q)`` (the sum, not the mean, as pyriemann's
  ``distance_kullback_sym``); symmetric but without the triangle inequality.

Every SPD kernel works in float64 whatever the input precision, and returns float64.

Gaussian mixtures (a :class:`~skretrieval.descriptors.GaussianMixtures` set, one mixture per
image, ``"full"`` or ``"diag"`` covariances) have these metrics:

- ``"wasserstein"``: the mixture Wasserstein distance MW2 (Delon and Desolneux 2020), optimal
  transport between the components with the squared Bures-Wasserstein cost; a true metric on
  mixtures. See :func:`mixture_wasserstein_distances`.
- ``"kl"``: ``KL(query || database)`` by ``metric_params={"approximation": ...}``:
  ``"variational"`` (default), ``"matched_bound"`` or ``"monte_carlo"`` (with ``n_samples``
  and ``random_state``). See :func:`mixture_kl_divergences`.
"""

from skretrieval.geometry._gaussians import (
    bures_wasserstein_distances,
    jeffreys_distances,
    kl_divergences,
)
from skretrieval.geometry._mixtures import (
    mixture_kl_divergences,
    mixture_wasserstein_distances,
)
from skretrieval.geometry._registry import (
    DistanceKernel,
    get_kernel,
    register_kernel,
    registered_metrics,
)
from skretrieval.geometry._spd import (
    affine_invariant_distances,
    log_euclidean_distances,
    stein_distances,
)
from skretrieval.geometry._vectors import cosine_distances, euclidean_distances

__all__ = [
    "DistanceKernel",
    "affine_invariant_distances",
    "bures_wasserstein_distances",
    "cosine_distances",
    "euclidean_distances",
    "get_kernel",
    "jeffreys_distances",
    "kl_divergences",
    "log_euclidean_distances",
    "mixture_kl_divergences",
    "mixture_wasserstein_distances",
    "register_kernel",
    "registered_metrics",
    "stein_distances",
]
