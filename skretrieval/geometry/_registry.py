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
        ``"SPD matrices"`` (an ``(n, d, d)`` array), ``"Gaussian mixtures"``.
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
        same name for different descriptor types, and to tell a user who passes another type
        which metrics it has; None accepts anything.
    prepare_queries : callable or None, default=None
        ``prepare_queries(X, **metric_params) -> state`` for blocks of queries, when they need
        less than the database (e.g. no search index of their own); None uses ``prepare``.
    by_default : bool, default=True
        Whether ``get_kernel(name)`` without descriptors may return this kernel. False for
        kernels of a dedicated container type (``GaussianMixtures``), which is never ambiguous:
        code that asks for a metric by name alone keeps getting the array kernel it was written
        for, and error messages list such kernels last.
    layout : str, default=""
        How a set of these descriptors comes, completing ``descriptor`` in error messages:
        ``"of shape (n, d)"`` for vectors, ``"in a GaussianMixtures set"``.
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
    layout: str = ""


# metric name -> {descriptor: kernel}, in registration order.
_KERNELS = {}


def register_kernel(kernel):
    """Make ``kernel.name`` available as an ``ImageRetriever`` metric for its descriptor type.

    A kernel replaces any previous one with the same name and descriptor; kernels with the same
    name and different descriptors live side by side and are chosen by their ``accepts``.

    Parameters
    ----------
    kernel : DistanceKernel
        The kernel to register.

    Returns
    -------
    kernel : DistanceKernel
        The same kernel, so that ``register_kernel`` can wrap its construction.

    Examples
    --------
    The Chebyshev distance between vectors, for every query against the whole database at
    once (``pairwise`` receives blocks of queries):

    >>> import numpy as np
    >>> from skretrieval.geometry import DistanceKernel, register_kernel
    >>> from skretrieval.neighbors import ImageRetriever
    >>> chebyshev = register_kernel(
    ...     DistanceKernel(
    ...         name="chebyshev",
    ...         descriptor="vectors",
    ...         validate=lambda X, name="X": np.asarray(X, dtype=float),
    ...         prepare=lambda X: X,
    ...         pairwise=lambda Q, D: np.abs(Q[:, None, :] - D[None, :, :]).max(axis=-1),
    ...         accepts=lambda X: getattr(X, "ndim", None) == 2,
    ...         layout="of shape (n, d)",
    ...     )
    ... )
    >>> database = np.array([[0.0, 0.0], [1.0, 3.0], [2.0, 2.0]])
    >>> retriever = ImageRetriever(n_neighbors=2, metric="chebyshev").fit(database)
    >>> retriever.kneighbors(np.array([[1.5, 2.0]]))
    (array([[0.5, 1. ]]), array([[2, 1]]))
    """
    _KERNELS.setdefault(kernel.name, {})[kernel.descriptor] = kernel
    return kernel


def registered_metrics(X=None):
    """Names of the registered metrics, sorted; with ``X``, those that compare such descriptors.

    Parameters
    ----------
    X : descriptor set, default=None
        Descriptors (an ``(n, d)`` array of vectors, an ``(n, d, d)`` array of SPD matrices, a
        :class:`~skretrieval.descriptors.GaussianMixtures` set, ...). None lists every metric.

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.geometry import registered_metrics
    >>> registered_metrics(np.stack([np.eye(3)] * 5))  # five SPD matrices
    ['affine_invariant', 'jeffreys', 'kl', 'log_euclidean', 'stein', 'wasserstein']
    """
    if X is None:
        return sorted(_KERNELS)
    return sorted(
        name
        for name, kernels in _KERNELS.items()
        if any(kernel.accepts is None or kernel.accepts(X) for kernel in kernels.values())
    )


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

    Raises
    ------
    ValueError
        For an unknown name (the message lists the registered metrics), or an ``X`` that
        none of the metric's kernels accepts: the message says which descriptor type ``X``
        is and which metrics that type has.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.geometry import get_kernel
    >>> get_kernel("cosine", np.ones((3, 2))).descriptor
    'vectors'
    >>> get_kernel("cosine", np.stack([np.eye(2)] * 3))
    Traceback (most recent call last):
    ...
    ValueError: metric 'cosine' expects vectors; got ndarray of shape (3, 2, 2), read as SPD \
matrices of shape (n, d, d); the metrics for SPD matrices are 'affine_invariant', 'jeffreys', \
'kl', 'log_euclidean', 'stein' and 'wasserstein'.
    """
    try:
        kernels = tuple(_KERNELS[metric].values())
    except KeyError:
        raise ValueError(
            f"Unknown metric {metric!r}; registered metrics are {registered_metrics()}."
        ) from None
    # Kernels that get_kernel(metric) may return first; dedicated container types last.
    kernels = tuple(sorted(kernels, key=lambda kernel: not kernel.by_default))
    if X is not None:
        return _select_kernel(metric, kernels, X)
    if len(kernels) == 1 or sum(kernel.by_default for kernel in kernels) == 1:
        return kernels[0]
    raise ValueError(
        f"Metric {metric!r} is defined for several descriptor types "
        f"({', '.join(kernel.descriptor for kernel in kernels)}); pass the descriptors as X "
        "to choose."
    )


def metrics_by_descriptor():
    """``{descriptor: (label, sorted metric names)}`` over the registry, in registration order.

    ``label`` is the descriptor with its layout, e.g. ``"vectors of shape (n, d)"``.
    """
    labels, names = {}, {}
    for name, kernels in _KERNELS.items():
        for kernel in kernels.values():
            names.setdefault(kernel.descriptor, set()).add(name)
            # The first layout given for the descriptor, if any.
            if labels.get(kernel.descriptor, kernel.descriptor) == kernel.descriptor:
                labels[kernel.descriptor] = f"{kernel.descriptor} {kernel.layout}".strip()
    return {descriptor: (labels[descriptor], sorted(names[descriptor])) for descriptor in names}


def descriptor_types(X):
    """The descriptor types that ``X`` is, by the ``accepts`` of the registered kernels.

    Kernels without ``accepts`` take anything and so tell nothing: they are left out.
    """
    types = []
    for kernels in _KERNELS.values():
        for kernel in kernels.values():
            if kernel.descriptor in types or kernel.accepts is None:
                continue
            try:
                accepted = kernel.accepts(X)
            except Exception:  # a test of the container; any failure means "not this type"
                accepted = False
            if accepted:
                types.append(kernel.descriptor)
    return types


def _quoted(names, conjunction="and"):
    names = [repr(name) for name in names]
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def descriptor_mismatch(metric, expected, X):
    """The ``ValueError`` for a metric given descriptors of a type it does not take.

    ``expected`` says what the metric takes (e.g. ``"vectors"``); the message says what ``X``
    is and the metrics for that type, or, for something of no registered type, all types with
    their metrics.
    """
    catalogue = metrics_by_descriptor()
    types = [kind for kind in descriptor_types(X) if kind in catalogue]
    message = f"metric {metric!r} expects {expected}; got {describe(X)}"
    if types:
        label, names = catalogue[types[0]]
        return ValueError(
            f"{message}, read as {label}; the metrics for {types[0]} are {_quoted(names)}."
        )
    listing = "; ".join(f"{label}: {_quoted(names)}" for label, names in catalogue.values())
    hint = ""
    if _ndim(X) == 1:
        hint = " A single vector is X.reshape(1, -1)."
    return ValueError(
        f"{message}, which is none of the descriptor types of the registered metrics ("
        f"{listing}).{hint}"
    )


def describe(X):
    """What ``X`` is, for error messages: its type, and its shape if it has one."""
    shape = getattr(X, "shape", None)
    if isinstance(shape, tuple):
        return f"{type(X).__name__} of shape {shape}"
    return f"a {type(X).__name__}"


def _ndim(X):
    """``X.ndim`` without converting ``X``, or ``np.ndim`` of a nested list; None if neither."""
    ndim = getattr(X, "ndim", None)
    if isinstance(ndim, int):
        return ndim
    if isinstance(X, (list, tuple)):
        try:
            return np.ndim(X)
        except (ValueError, TypeError):  # ragged
            return None
    return None


def looks_like_vectors(X):
    """Whether ``X`` is a 2-D array, table or nested list, whatever its values: vectors."""
    return _ndim(X) == 2


def vectors_hint(X):
    """A hint, for error messages, that a 2-D ``X`` holds vectors; empty otherwise."""
    if not looks_like_vectors(X):
        return ""
    _, names = metrics_by_descriptor().get("vectors", ("", ["cosine", "euclidean"]))
    return f" -- vectors go with metric={_quoted(names, 'or')}"


def _select_kernel(metric, kernels, X):
    for kernel in kernels:
        if kernel.accepts is None or kernel.accepts(X):
            return kernel
    expected = " or ".join(kernel.descriptor for kernel in kernels)
    raise descriptor_mismatch(metric, expected, X)
