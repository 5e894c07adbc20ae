"""The registry of distance kernels: :class:`DistanceKernel` and the choice by metric name."""

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class DistanceKernel:
    """A distance between descriptors of one type, split into per-set and per-block work.

    Parameters
    ----------
    name : str
        The ``metric`` name users pass to :class:`~skretrieval.neighbors.ImageRetriever`.
    descriptor : str
        What the descriptors are, for error messages: ``"vectors"`` (an ``(n, d)`` array),
        ``"SPD matrices"`` (an ``(n, d, d)`` array), later ``"Gaussian mixtures"``.
    validate : callable
        ``validate(X, name) -> X``; checks the type and values of a descriptor set, raising a
        ``ValueError``/``TypeError`` that names the problem.
    prepare : callable
        ``prepare(X, **metric_params) -> state``; the work done once per set.
    pairwise : callable
        ``pairwise(query_state, database_state) -> (n_queries, n_database)`` distances.
    n_samples : callable
        ``n_samples(X) -> int`` for a validated set.
    accepts : callable or None, default=None
        ``accepts(X) -> bool``, a cheap test of whether ``X`` is of this descriptor type (its
        container and shape, not its values). Used to choose among kernels registered under the
        same name for different descriptor types; None accepts anything.
    prepare_queries : callable or None, default=None
        ``prepare_queries(X, **metric_params) -> state`` for blocks of queries, when they need
        less than the database (e.g. no search index of their own); None uses ``prepare``.
    by_default : bool, default=True
        Whether ``get_kernel(name)`` without descriptors may return this kernel. False for
        kernels of a dedicated container type (``GaussianMixtures``), which is never ambiguous:
        code that asks for a metric by name alone keeps getting the array kernel it was written
        for, and error messages list such kernels last.
    """

    name: str
    descriptor: str
    validate: Callable[..., Any]
    prepare: Callable[..., Any]
    pairwise: Callable[[Any, Any], np.ndarray]
    n_samples: Callable[[Any], int] = len
    accepts: Callable[[Any], bool] | None = None
    prepare_queries: Callable[..., Any] | None = None
    by_default: bool = True


# metric name -> {descriptor: kernel}, in registration order.
_KERNELS = {}


def register_kernel(kernel):
    """Make ``kernel.name`` available as an ``ImageRetriever`` metric for its descriptor type.

    A kernel replaces any previous one with the same name and descriptor; kernels with the same
    name and different descriptors live side by side and are chosen by their ``accepts``.
    """
    _KERNELS.setdefault(kernel.name, {})[kernel.descriptor] = kernel
    return kernel


def registered_metrics():
    """Names of all registered metrics, sorted."""
    return sorted(_KERNELS)


def get_kernel(metric, X=None):
    """Return the :class:`DistanceKernel` for ``metric`` (and input ``X``), or raise.

    Parameters
    ----------
    metric : str
        A registered metric name.
    X : descriptor set, default=None
        The descriptors to be compared. Required when several descriptor types share the
        name: the kernel whose ``accepts`` takes ``X`` is returned. Without ``X``, the one
        kernel registered with ``by_default=True`` (for ``"kl"`` and ``"wasserstein"``: the SPD
        one), if there is exactly one.

    Returns
    -------
    kernel : DistanceKernel
    """
    try:
        kernels = tuple(_KERNELS[metric].values())
    except KeyError:
        raise ValueError(
            f"Unknown metric {metric!r}; registered metrics are {registered_metrics()}."
        ) from None
    if len(kernels) == 1:
        return kernels[0]
    # Kernels that get_kernel(metric) may return first; dedicated container types last.
    kernels = tuple(sorted(kernels, key=lambda kernel: not kernel.by_default))
    if X is None and sum(kernel.by_default for kernel in kernels) == 1:
        return kernels[0]
    if X is None:
        raise ValueError(
            f"Metric {metric!r} is defined for several descriptor types "
            f"({', '.join(kernel.descriptor for kernel in kernels)}); pass the descriptors as X "
            "to choose."
        )
    return _select_kernel(metric, kernels, X)


def describe(X):
    """What ``X`` is, for error messages: its type, and its shape if it has one."""
    shape = getattr(X, "shape", None)
    if isinstance(shape, tuple):
        return f"{type(X).__name__} of shape {shape}"
    return f"a {type(X).__name__}"


def vectors_hint(X):
    """A hint, for error messages, that a 2-D ``X`` holds vectors; empty otherwise."""
    try:
        is_matrix = np.ndim(X) == 2
    except (ValueError, TypeError):
        is_matrix = False
    return " -- vectors go with metric='cosine' or 'euclidean'" if is_matrix else ""


def _select_kernel(metric, kernels, X):
    for kernel in kernels:
        if kernel.accepts is None or kernel.accepts(X):
            return kernel
    expected = " or ".join(kernel.descriptor for kernel in kernels)
    raise ValueError(f"metric {metric!r} expects {expected}; got {describe(X)}{vectors_hint(X)}.")
